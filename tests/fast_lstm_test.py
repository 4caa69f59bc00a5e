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

    results = {}
    for fast in (False, True):
      opt = l2l.MetaOptimizer(cw={"net": "CoordinateWiseDeepLSTM", "net_options": dict(
          layers=(5, 5), preprocess_name="LogAndSign", preprocess_options={"k": 5}, scale=0.1,
          seed=0)})
      opt.nets["cw"].core.fast_path = fast
      meta_loss = opt.meta_loss(make_loss, len_unroll=6, second_derivatives=second_derivatives,
                                use_while_loop=use_while_loop)

      @tf.function(autograph=False)
      def step():
        with tf.GradientTape() as tape:
          loss = meta_loss()
        return loss, tape.gradient(loss, opt.trainable_variables)

      loss, grads = step()
      results[fast] = (loss.numpy(), meta_loss.losses.numpy(), [g.numpy() for g in grads])
    self.assertAllClose(results[False][0], results[True][0], **TOL)
    self.assertAllClose(results[False][1], results[True][1], **TOL)
    for a, b in zip(results[False][2], results[True][2]):
      _assert_close(self, a, b)

  def test_default_nets_use_the_fast_path(self):
    net = nets.CoordinateWiseDeepLSTM(layers=(3,), seed=0)
    self.assertTrue(net.core.fast_path)


if __name__ == "__main__":
  tf.test.main()
