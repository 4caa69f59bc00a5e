"""The fast LSTM path (fused C++ gate kernels, hand-written backward) against the reference.

`DeepLSTMCore` runs `fast_deep_lstm` by default; `deep_lstm` (plain TF ops, autodiff) is the
reference. Both must give the same outputs, states and gradients with respect to the inputs,
the states and every weight, up to float32 round-off: the kernels use the same gate maths and
Eigen's logistic / tanh approximations, in another order of operations (observed differences
<= 7e-7 of the largest entry).
"""

import os
import shutil

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
import nets
from nets import lstm

TOL = dict(rtol=1e-5, atol=1e-6)


def _assert_close(test, a, b):
  """float32 round-off: relative 1e-5, absolute 1e-6 of the largest entry (gradients sum many
  terms of either sign, so small entries carry the absolute error of large ones)."""
  test.assertAllClose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, float(np.max(np.abs(a)))))


def _random_core(layers, input_size, output_size, seed):
  core = lstm.DeepLSTMCore(input_size, layers, output_size, initializer=0.5, seed=seed)
  for b in core.biases + [core.out_b]:  # Non-zero biases, so that their gradients are tested.
    b.assign(tf.random.stateless_normal(b.shape, seed=[seed, 7]) * 0.3)
  return core


def _unroll(core, xs, state, fast):
  """Runs the core over `xs`; returns (outputs, final state)."""
  core.fast_path = fast
  outputs = []
  for x in xs:
    out, state = core(x, state)
    outputs.append(out)
  return outputs, state


def meta_step(make_loss, layers, scale, len_unroll, fast, **meta_loss_options):
  """(meta-loss, losses f(x_0..x_T), meta-gradients) as NumPy of one MetaOptimizer unroll of a
  coordinatewise LSTM (LogAndSign k=5, seed 0), through the fused ops or the reference ops.
  tests/threads_test.py runs it in fresh processes under other thread settings."""
  opt = l2l.MetaOptimizer(cw={"net": "CoordinateWiseDeepLSTM", "net_options": dict(
      layers=layers, preprocess_name="LogAndSign", preprocess_options={"k": 5}, scale=scale,
      seed=0)})
  opt.nets["cw"].core.fast_path = fast
  meta_loss = opt.meta_loss(make_loss, len_unroll=len_unroll, **meta_loss_options)

  @tf.function(autograph=False)
  def step():
    with tf.GradientTape() as tape:
      loss = meta_loss()
    return loss, tape.gradient(loss, opt.trainable_variables)

  loss, grads = step()
  return loss.numpy(), meta_loss.losses.numpy(), [g.numpy() for g in grads]


class FastLSTMTest(tf.test.TestCase, parameterized.TestCase):

  def test_kernels_are_built_where_a_compiler_exists(self):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
      self.skipTest("no C++ compiler: the fast path falls back to the reference")
    self.assertIsNotNone(lstm.lstm_kernels(), lstm._kernels.get("error"))

  @parameterized.named_parameters(("two_layers", (4, 6), 3, 2), ("one_layer", (5,), 2, 1),
                                  ("paper", (20, 20), 2, 1))
  def test_values_and_gradients_match_the_reference(self, layers, input_size, output_size):
    rows, steps = 37, 4
    rng = np.random.RandomState(0)
    xs = [tf.constant(rng.randn(rows, input_size), tf.float32) for _ in range(steps)]
    state0 = tuple((tf.constant(rng.randn(rows, n) * 0.5, tf.float32),
                    tf.constant(rng.randn(rows, n) * 0.5, tf.float32)) for n in layers)
    out_weights = [tf.constant(rng.randn(rows, output_size), tf.float32) for _ in range(steps)]
    state_weights = tf.nest.map_structure(
        lambda t: tf.constant(rng.randn(*t.shape), tf.float32), state0)
    core = _random_core(layers, input_size, output_size, seed=1)

    results = {}
    for fast in (False, True):
      @tf.function(autograph=False)
      def run(xs, state0):
        with tf.GradientTape() as tape:
          tape.watch([xs, state0])
          outputs, state = _unroll(core, xs, state0, fast)
          # Gradients reach every output, the final state (as in truncated unrolls that carry
          # it on) and, through the recurrence, every earlier step.
          loss = tf.add_n([tf.reduce_sum(w * o) for w, o in zip(out_weights, outputs)])
          loss += tf.add_n([tf.reduce_sum(w * s) for w, s in
                            zip(tf.nest.flatten(state_weights), tf.nest.flatten(state))])
        grads = tape.gradient(loss, [xs, state0, core.trainable_variables])
        return outputs, state, grads
      results[fast] = tf.nest.map_structure(lambda t: t.numpy(), run(xs, state0))
    tf.nest.map_structure(lambda a, b: _assert_close(self, a, b), results[False], results[True])

  def test_eager_and_graph_agree(self):
    core = _random_core((4,), 2, 1, seed=2)
    x = tf.constant(np.random.RandomState(3).randn(9, 2), tf.float32)
    state = core.initial_state(9)
    eager = core(x, state)
    graph = tf.function(core)(x, state)
    tf.nest.map_structure(lambda a, b: self.assertAllClose(a, b, **TOL), eager, graph)

  def test_falls_back_to_the_reference_without_kernels(self):
    core = _random_core((4,), 2, 1, seed=4)
    x = tf.constant(np.random.RandomState(5).randn(6, 2), tf.float32)
    state = core.initial_state(6)
    expected = lstm.deep_lstm(x, state, core.weights, core.biases, core.out_w, core.out_b)
    saved = dict(lstm._kernels)
    try:
      lstm._kernels.clear()
      lstm._kernels["lib"] = None
      result = core(x, state)
    finally:
      lstm._kernels.clear()
      lstm._kernels.update(saved)
    tf.nest.map_structure(self.assertAllEqual, expected, result)

  @parameterized.named_parameters(("first_order", False, False), ("second_order", True, False),
                                  ("while_loop", False, True))
  def test_meta_gradients_match_the_reference(self, second_derivatives, use_while_loop):
    """A MetaOptimizer unroll: the same meta-loss, trajectory and meta-gradient either way."""
    rng = np.random.RandomState(6)
    w, y = rng.randn(8, 8).astype(np.float32) * 0.5, rng.randn(8).astype(np.float32)

    def make_loss():
      x = tf.Variable(tf.constant(np.linspace(-1, 1, 8), tf.float32), name="x")
      return tf.reduce_sum(tf.square(tf.linalg.matvec(tf.constant(w), x) - y))

    results = {fast: meta_step(make_loss, (5, 5), 0.1, 6, fast,
                               second_derivatives=second_derivatives,
                               use_while_loop=use_while_loop)
               for fast in (False, True)}
    self.assertAllClose(results[False][0], results[True][0], **TOL)
    self.assertAllClose(results[False][1], results[True][1], **TOL)
    for a, b in zip(results[False][2], results[True][2]):
      _assert_close(self, a, b)

  @parameterized.named_parameters(
      ("paper", (20, 20), "LogAndSign", [[600]]),            # 2 threads, 64-row blocks
      ("several_tensors", (20, 20), "LogAndSign", [[7, 3], [5], [1], [300]]),
      ("odd_sizes", (5, 7, 3), "LogAndSign", [[45]]),        # 4H not a multiple of 16
      # Every gate layout of lstm_kernels.cc (16-unit groups and a rest of 4, none, 12 or 4
      # units alone), over 601 rows: several parts, and a last block of 25 rows.
      ("gate_layouts", (36, 16, 12, 4), "LogAndSign", [[601]]),
      # The input-gradient matmul's column tiles: 82 and 84 inputs (5 chunks and a 256-bit
      # rest: two tiles), 68 (4 chunks and the rest in one tile). Wide layers' longer sums
      # round differently in the two paths by up to 3e-5 of the largest entry (the same with
      # the kernels before the tiles changed); a wrong tile is off by O(1).
      ("wide_layers", (80, 4, 64), "LogAndSign", [[130]], 1e-4),
      ("identity", (8,), None, [[37]]))
  def test_fused_coordinatewise_step_matches_the_reference(self, layers, preprocess, shapes,
                                                           rtol=1e-5):
    """The whole coordinatewise step as one op (`fused_coordinatewise_step`) against the
    reference ops: updates, states, and gradients to the gradient input (the second-order
    path), the state and every weight, over two steps so the recurrence is differentiated."""
    net = nets.CoordinateWiseDeepLSTM(layers, preprocess, {"k": 5} if preprocess else None,
                                      scale=0.1, initializer=0.5, seed=1)
    for b in net.core.biases + [net.core.out_b]:
      b.assign(tf.random.stateless_normal(b.shape, seed=[1, 7]) * 0.3)
    rng = np.random.RandomState(0)
    # Gradients over many magnitudes (both LogAndSign branches), and some exact zeros.
    def draw_grads():
      return [tf.constant((rng.randn(*s) * 10.0 ** rng.uniform(-5, 1, s)
                           * (rng.rand(*s) > 0.05)).astype(np.float32)) for s in shapes]
    grads, grads2 = draw_grads(), draw_grads()
    state = tf.nest.map_structure(lambda t: tf.constant(rng.randn(*t.shape), tf.float32),
                                  net.initial_state(grads))
    weights = [tf.constant(rng.randn(*g.shape), tf.float32) for g in grads]
    state_weights = tf.nest.map_structure(lambda t: tf.constant(rng.randn(*t.shape), tf.float32),
                                          state)
    results = {}
    for fast in (False, True):
      net.core.fast_path = fast

      @tf.function(autograph=False)
      def run(grads, state):
        with tf.GradientTape() as tape:
          tape.watch([grads, state])
          updates, s = net(grads, state)
          # The second step's gradients depend on the first step's updates.
          updates, s = net([g + u for g, u in zip(grads2, updates)], s)
          loss = tf.add_n([tf.reduce_sum(w * u) for w, u in zip(weights, updates)])
          loss += tf.add_n([tf.reduce_sum(w * t) for w, t in
                            zip(tf.nest.flatten(state_weights), tf.nest.flatten(s))])
        return updates, s, tape.gradient(loss, [grads, state, net.trainable_variables])

      results[fast] = tf.nest.map_structure(lambda t: t.numpy(), run(grads, state))
      if fast:
        op_types = {op.type for op in run.get_concrete_function(grads, state).graph
                    .get_operations()}
        self.assertIn("L2lCwLstm", op_types)
        self.assertIn("L2lCwLstmGrad", op_types)
    # Relative to the largest entry of each result: the LogAndSign features of small gradients
    # amplify round-off (d log|g| / dg = 1 / |g|), so single entries differ by more than
    # _assert_close allows.
    for a, b in zip(tf.nest.flatten(results[False]), tf.nest.flatten(results[True])):
      self.assertLessEqual(np.max(np.abs(a - b)), rtol * max(np.max(np.abs(a)), 1e-30))

  def test_fused_gradient_is_deterministic(self):
    """Rows are split into fixed parts (whichever thread claims them) with the weight gradients
    summed per part and the parts added in a fixed order, so a seeded run repeats bit for bit."""
    net = nets.CoordinateWiseDeepLSTM((20, 20), "LogAndSign", {"k": 5}, scale=0.1, seed=2)
    rng = np.random.RandomState(1)
    grads = [tf.constant(rng.randn(3000).astype(np.float32))]

    @tf.function(autograph=False)
    def run():
      with tf.GradientTape() as tape:
        updates, state = net(grads, net.initial_state(grads))
        updates, _ = net([g + u for g, u in zip(grads, updates)], state)
        loss = tf.reduce_sum(tf.square(updates[0]))
      return tape.gradient(loss, net.trainable_variables)

    first = [g.numpy() for g in run()]
    for _ in range(3):
      for a, b in zip(first, run()):
        self.assertAllEqual(a, b)

  def test_fused_ops_give_the_same_results_with_either_helper_pool(self):
    """The ops' helper threads come from the inter-op pool (then the intra-op one) or from the
    intra-op pool alone (`inter_op_helpers`); the rows' parts and their sums do not change."""
    kernels = lstm.lstm_kernels()
    if kernels is None:
      self.skipTest("no kernels")
    rng = np.random.RandomState(3)
    rows, hidden = 3000, (20, 20)
    normal = lambda *shape: tf.constant(rng.randn(*shape).astype(np.float32))
    inputs = dict(g=normal(rows), h=[normal(rows, n) for n in hidden],
                  c=[normal(rows, n) for n in hidden],
                  w=[normal(k + n, 4 * n) * 0.3 for k, n in zip((2, 20), hidden)],
                  b=[normal(4 * n) for n in hidden], out_w=normal(20, 1), out_b=normal(1))
    attrs = dict(log_and_sign=True, k=5.0, eps=1e-10, forget_bias=1.0, scale=0.1)
    grads = dict(d_update=normal(rows), d_h_new=[normal(rows, n) for n in hidden],
                 d_c_new=[normal(rows, n) for n in hidden])
    results = []
    for inter_op_helpers in (True, False):
      update, h_new, c_new, saved = kernels.l2l_cw_lstm(
          **inputs, **attrs, inter_op_helpers=inter_op_helpers)
      grad = kernels.l2l_cw_lstm_grad(**inputs, **grads, h_new=h_new, c_new=c_new, saved=saved,
                                      **attrs, inter_op_helpers=inter_op_helpers)
      results.append(tf.nest.map_structure(lambda t: t.numpy(), [update, h_new, c_new, grad]))
    for a, b in zip(tf.nest.flatten(results[0]), tf.nest.flatten(results[1])):
      self.assertAllEqual(a, b)

  def test_fused_step_checks_its_inputs(self):
    kernels = lstm.lstm_kernels()
    if kernels is None:
      self.skipTest("no kernels")
    args = dict(g=tf.zeros([4]), h=[tf.zeros([4, 3])], c=[tf.zeros([4, 3])],
                w=[tf.zeros([5, 12])], b=[tf.zeros([12])], out_w=tf.zeros([3, 1]),
                out_b=tf.zeros([1]), log_and_sign=True, k=5.0, eps=1e-10, forget_bias=1.0,
                scale=1.0)
    kernels.l2l_cw_lstm(**args)  # well-formed
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"w 0 must be \[5, 12\]"):
      kernels.l2l_cw_lstm(**{**args, "w": [tf.zeros([4, 12])]})
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "state 0 must be"):
      kernels.l2l_cw_lstm(**{**args, "h": [tf.zeros([3, 3])]})

  def test_default_nets_use_the_fast_path(self):
    net = nets.CoordinateWiseDeepLSTM(layers=(3,), seed=0)
    self.assertTrue(net.core.fast_path)


if __name__ == "__main__":
  tf.test.main()
