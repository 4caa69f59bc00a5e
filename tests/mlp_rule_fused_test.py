"""The fused forward step of `nets.PerParameterMLP` (nets/mlp_rule_kernels.cc) against the reference.

The reference is `nets.mlp_rule.rule_step`: the pure functions `tensor_features`,
`progress_features` and `mlp_update` in TF ops. The fused op computes the same maths in another
order (reciprocals of the bias corrections and per-tensor rms, sums in double, Cephes' exp,
Eigen's tanh), so results agree to float32 round-off: relative 1e-5 of each tensor's largest
entry (observed <= 6e-7). Gradients through the fused path are the reference's by construction
(the backward pass recomputes the reference ops), compared to the same tolerance because the
forward values they feed into the loss differ by round-off.
"""

import os
import shutil
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
import nets
from nets import mlp_rule
from nets import mlp_rule_fused

# Scalars, vectors, matrices, rank 3 and 4, sizes that are no multiple of the kernel's vector
# width (8), a column vector (rows of one coordinate), and one tensor large enough to be split
# over threads (>= 2 * 2^15 coordinates).
SHAPES = [[], [1], [7], [13, 11], [40, 1], [1, 9], [3, 5, 9], [2, 3, 4, 17], [3, 3, 2, 5]]
LARGE = [[70, 1000], [33]]


def _assert_close(test, a, b, rtol=1e-5):
  a, b = np.asarray(a), np.asarray(b)
  test.assertEqual(a.shape, b.shape)
  test.assertAllClose(a, b, rtol=rtol, atol=rtol * max(1e-30, float(np.max(np.abs(a)))))


def _trained_looking_rule(fused, seed=0, hidden_sizes=(8, 8), tensor_features=False):
  """A rule with every weight drawn (the untrained rule's last layers are zero: Adam)."""
  rule = nets.PerParameterMLP(hidden_sizes=hidden_sizes, seed=seed, fused=fused,
                              tensor_features=tensor_features)
  rng = np.random.default_rng(seed + 1)
  for w, b in [*rule.layers, *rule.schedule_layers]:
    w.assign(rng.normal(size=w.shape).astype(np.float32) / np.sqrt(w.shape[0]))
    b.assign(rng.normal(size=b.shape).astype(np.float32) * 0.3)
  rule.log_lr.assign(np.log(0.01))
  return rule


def _tensors(shapes, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return [tf.constant(rng.normal(size=s).astype(np.float32) * scale) for s in shapes]


def _run(rule, shapes, steps, num_steps=5):
  """`steps` steps of `rule` on fixed parameters; returns every step's updates and states."""
  params = _tensors(shapes, 0, scale=0.5)
  state = rule.initial_state(params, num_steps=num_steps)
  out = []
  for t in range(steps):
    # Gradient scales that differ per step and tensor (features are scale-free, the sums not).
    grads = [g * 10. ** (t % 3 - 1) for g in _tensors(shapes, 100 + t)]
    updates, state = rule(grads, state, params=params)
    out.append((updates, state))
  return out


class MlpRuleFusedTest(tf.test.TestCase, parameterized.TestCase):

  def test_op_is_built_where_a_compiler_exists(self):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
      self.skipTest("no C++ compiler: the rule falls back to the reference ops")
    self.assertIsNotNone(mlp_rule_fused.mlp_rule_kernels(), mlp_rule_fused._kernels.get("error"))

  def setUp(self):
    super().setUp()
    if mlp_rule_fused.mlp_rule_kernels() is None:
      self.skipTest(f"fused op unavailable: {mlp_rule_fused._kernels.get('error')}")

  @parameterized.named_parameters(("shapes", SHAPES, (8, 8), False),
                                  ("large", LARGE, (8, 8), False),
                                  ("other_widths", SHAPES, (5, 16, 3), False),
                                  ("tensor_features", SHAPES + LARGE, (8, 8), True))
  def test_steps_match_the_reference(self, shapes, hidden_sizes, tensor_features):
    # 7 steps over a horizon of 5: the progress features saturate on the last ones.
    fused = _run(_trained_looking_rule(True, hidden_sizes=hidden_sizes,
                                       tensor_features=tensor_features), shapes, 7)
    reference = _run(_trained_looking_rule(False, hidden_sizes=hidden_sizes,
                                           tensor_features=tensor_features), shapes, 7)
    for (fu, fs), (ru, rs) in zip(fused, reference):
      for a, b in zip(ru, fu):
        self.assertGreater(float(tf.reduce_max(tf.abs(a))), 0.)
        _assert_close(self, a, b)
      for a, b in zip(tf.nest.flatten(rs), tf.nest.flatten(fs)):
        _assert_close(self, a, b)

  @parameterized.parameters(False, True)
  def test_fused_step_matches_the_pure_functions(self, tensor_features):
    rule = _trained_looking_rule(True, tensor_features=tensor_features)
    params = _tensors(SHAPES, 0)
    grads = _tensors(SHAPES, 1)
    state = rule.initial_state(params, num_steps=10)
    state = state._replace(m=tuple(tf.abs(t) for t in _tensors([t.shape for t in state.m], 2)),
                           v=tuple(tf.abs(t) for t in _tensors([t.shape for t in state.v], 3)),
                           row=tuple(tf.abs(t) for t in _tensors([t.shape for t in state.row], 4)),
                           col=tuple(tf.abs(t) for t in _tensors([t.shape for t in state.col], 5)),
                           step=tf.constant(3.))
    updates, new_state = rule(grads, state, params=params)
    step = state.step + 1.
    features, directions = [], []
    for i, (g, p) in enumerate(zip(grads, params)):
      f, d, stats = mlp_rule.tensor_features(g, p, state.m[i], state.v[i], state.row[i],
                                             state.col[i], step)
      features.append(f)
      directions.append(d)
      for a, b in zip(stats, (new_state.m[i], new_state.v[i], new_state.row[i],
                              new_state.col[i])):
        _assert_close(self, a, b)
    progress = mlp_rule.progress_features(step, state.num_steps)
    sizes = mlp_rule.tensor_step_sizes(grads, state.m, state.v, step, progress,
                                       rule.schedule_layers, rule.log_lr, rule.schedule_scale,
                                       rule.tensor_features)
    flat = mlp_rule.mlp_update(tf.concat(features, 0), tf.concat(directions, 0), progress,
                               rule.layers, tf.repeat(sizes, [int(g.shape.num_elements())
                                                              for g in grads]),
                               rule.direction_scale, rule.magnitude_scale)
    _assert_close(self, flat, tf.concat([tf.reshape(u, [-1]) for u in updates], 0))

  def test_bit_for_bit_repeatable(self):
    rule = _trained_looking_rule(True)
    first = _run(rule, SHAPES + LARGE, 3)
    second = _run(rule, SHAPES + LARGE, 3)
    for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(second)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def _gradients(self, fused, order, use_tf_function, tensor_features=False):
    """Gradients of a two-step unroll's loss to every input and weight (order 1), or of the
    squared norm of its gradient to the parameters to the weights (order 2)."""
    rule = _trained_looking_rule(fused, tensor_features=tensor_features)
    shapes = [[], [7], [13, 11], [3, 5, 9]]
    params0 = _tensors(shapes, 0)
    targets = _tensors(shapes, 1)
    state0 = rule.initial_state(params0, num_steps=4)

    def unrolled_loss(params, state):
      loss = 0.
      for _ in range(2):
        with tf.GradientTape() as inner:
          inner.watch(params)
          f = tf.add_n([tf.reduce_sum(tf.sin(p) * t) for p, t in zip(params, targets)])
        grads = inner.gradient(f, params)
        updates, state = rule(grads, state, params=params)
        params = [p + u for p, u in zip(params, updates)]
        loss += tf.add_n([tf.reduce_sum(tf.square(p - t)) for p, t in zip(params, targets)])
      loss += tf.add_n([tf.reduce_sum(w * t) for w, t in zip(
          tf.nest.flatten(state), _tensors([t.shape for t in tf.nest.flatten(state)], 9))])
      return loss

    def run(params, state):
      weights = rule.trainable_variables
      if order == 1:
        with tf.GradientTape() as tape:
          tape.watch([params, state])
          loss = unrolled_loss(params, state)
        return tape.gradient(loss, [params, state, weights])
      with tf.GradientTape() as outer:
        with tf.GradientTape() as tape:
          tape.watch(params)
          loss = unrolled_loss(params, state)
        d_params = tape.gradient(loss, params)
        norm = tf.add_n([tf.reduce_sum(tf.square(d)) for d in d_params])
      return outer.gradient(norm, weights)

    if use_tf_function:
      run = tf.function(run)
    return run(params0, state0)

  @parameterized.named_parameters(("eager", 1, False, False), ("tf_function", 1, True, False),
                                  ("second_order_eager", 2, False, False),
                                  ("second_order_tf_function", 2, True, False),
                                  ("tensor_features", 1, True, True),
                                  ("tensor_features_second_order", 2, False, True))
  def test_gradients_match_the_reference(self, order, use_tf_function, tensor_features):
    fused = tf.nest.flatten(self._gradients(True, order, use_tf_function, tensor_features))
    reference = tf.nest.flatten(self._gradients(False, order, use_tf_function,
                                                tensor_features))
    self.assertLen(fused, len(reference))
    nonzero = 0
    for a, b in zip(reference, fused):
      self.assertEqual(a is None, b is None)
      if a is not None:
        nonzero += bool(np.any(np.asarray(a) != 0))
        _assert_close(self, a, b, rtol=1e-4)
    self.assertGreater(nonzero, 5)

  def test_fused_is_an_option_in_the_config(self):
    rule = nets.PerParameterMLP(hidden_sizes=(4,), fused=False)
    self.assertEqual(rule.config["net_options"]["fused"], False)
    self.assertFalse(nets.factory(rule.config).fused)
    self.assertTrue(nets.PerParameterMLP().fused)

  def test_reference_ops_when_the_op_is_unavailable_or_not_float32(self):
    rule = _trained_looking_rule(True)
    params = _tensors([[3, 4]], 0)
    state = rule.initial_state(params)
    with mock.patch.object(mlp_rule_fused, "fused_rule_step", side_effect=AssertionError):
      with mock.patch.dict(mlp_rule_fused._kernels, {"lib": None}):
        updates, _ = rule(_tensors([[3, 4]], 1), state, params=params)
      self.assertEqual(updates[0].shape, [3, 4])
      params64 = [tf.cast(p, tf.float64) for p in params]
      updates, _ = rule([tf.cast(g, tf.float64) for g in _tensors([[3, 4]], 1)],
                        rule.initial_state(params64), params=params64)
      self.assertEqual(updates[0].dtype, tf.float64)
    with mock.patch.object(mlp_rule_fused, "fused_rule_step",
                           wraps=mlp_rule_fused.fused_rule_step) as fused_step:
      rule(_tensors([[3, 4]], 1), state, params=params)
      fused_step.assert_called_once()

  def test_learned_optimizer_apply_runs_the_fused_step(self):
    model = tf.Variable(tf.ones([5, 3]))
    opt = l2l.LearnedOptimizer(_trained_looking_rule(True), num_steps=10)
    ref_model = tf.Variable(tf.ones([5, 3]))
    ref = l2l.LearnedOptimizer(_trained_looking_rule(False), num_steps=10)

    def make_step(opt, model):
      @tf.function
      def step():
        with tf.GradientTape() as tape:
          loss = tf.reduce_sum(tf.square(model - tf.reshape(tf.range(15.), [5, 3])))
        opt.apply(tape.gradient(loss, [model]), [model])
      return step

    steps = make_step(opt, model), make_step(ref, ref_model)
    for _ in range(3):
      for step in steps:
        step()
    _assert_close(self, ref_model, model)


if __name__ == "__main__":
  tf.test.main()
