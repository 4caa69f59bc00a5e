"""The online step-size adaptation of `nets.PerParameterMLP` (`step_adaptation`).

Against a NumPy re-implementation of the signal and of whole steps, the fused op against the
reference ops, the meta-gradient of its rate against finite differences, and the warm start
that adds it to a trained rule (`suite_training.warm_start`).
"""

import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import nets
from l2l import meta_optimizer as meta_optimizer_lib
from l2l.versatile import suite_training
from nets import mlp_rule_fused
from tests.mlp_rule_test import check_meta_gradient, np_features, np_update
from tests.mlp_rule_test import numpy_weights, randomize

DECAYS = np.array([0.5, 0.9, 0.99])
B2 = 0.999
EPS = 1e-8


def np_signal(grads, stats, t, per_tensor, sample=4096, tiny=1e-30):
  """NumPy float64: cos(g_t, m_hat_{t-1} / (sqrt(v_hat_{t-1}) + eps)), per tensor or over all
  tensors, on a strided sample with the sums scaled by the stride (`tiny` added to the
  denominators: 0 for gradients whose norms are ~1e-30 themselves)."""
  dots, g2s, d2s = [], [], []
  for g, (m, v, _, _) in zip(grads, stats):
    stride = max(1, -(-g.size // sample))
    g, m, v = g.ravel()[::stride], m.reshape(-1, 3)[::stride, 1], v.ravel()[::stride]
    if t == 1:
      d = np.zeros_like(g)
    else:
      d = (m / (1 - 0.9 ** (t - 1))) / (np.sqrt(v / (1 - B2 ** (t - 1))) + EPS)
    dots.append(stride * g @ d)
    g2s.append(stride * g @ g)
    d2s.append(stride * d @ d)
  dots, g2s, d2s = map(np.array, (dots, g2s, d2s))
  if per_tensor:
    return dots / (np.sqrt(g2s * d2s) + tiny)
  return np.full(len(grads), dots.sum() / (np.sqrt(g2s.sum() * d2s.sum()) + tiny))


def zero_stats(shapes):
  return [(np.zeros(s + (3,)), np.zeros(s), np.zeros(s[:-1]), np.zeros(s[:-2] + s[-1:]))
          if len(s) >= 2 else (np.zeros(s + (3,)), np.zeros(s), np.zeros(1), np.zeros(1))
          for s in shapes]


def adaptive_rule(per_tensor, fused=False, rate=0.2, low=-3., high=3., asymmetry=2.):
  rule = nets.PerParameterMLP(learning_rate=3e-3, seed=1, fused=fused, step_adaptation=rate,
                              adaptation_per_tensor=per_tensor, adaptation_min=low,
                              adaptation_max=high, adaptation_asymmetry=asymmetry)
  randomize(rule, 0)
  rule.log_adaptation_rate.assign(np.log(rate))
  return rule


class StepAdaptationTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_rule_against_numpy_over_steps(self, per_tensor):
    # (70, 80): more coordinates than the signal's sample of 4096 (strided).
    shapes = [(4, 6), (6,), (2, 2, 3), (70, 80)]
    rule = adaptive_rule(per_tensor)
    rng = np.random.default_rng(1)
    params = [rng.normal(size=s) for s in shapes]
    state = rule.initial_state([tf.constant(p) for p in params], num_steps=7)
    stats = zero_stats(shapes)
    weights, log_lr = numpy_weights(rule), float(rule.log_lr.numpy())
    log_scale = np.zeros(len(shapes))
    # A gradient that keeps its direction (cos > 0), then reverses it (cos < 0 while the
    # momentum still points the old way).
    base = [rng.normal(size=s) for s in shapes]
    signals = []
    for t in range(1, 10):
      sign = 1. if t < 6 else -1.
      grads = [sign * b + 0.3 * rng.normal(size=b.shape) for b in base]
      updates, state = rule([tf.constant(g) for g in grads], state,
                            params=[tf.constant(p) for p in params])
      signal = np_signal(grads, stats, t, per_tensor)
      signals.append(signal)
      log_scale = np.clip(log_scale + 0.2 * np.where(signal < 0, 2. * signal, signal), -3., 3.)
      feats, dirs, new_stats = zip(*[np_features(g, p, *st, t)
                                     for g, p, st in zip(grads, params, stats)])
      expected = np_update(np.concatenate(feats), np.concatenate(dirs), min(t / 7, 1.), weights,
                           log_lr)
      sizes = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
      for i, (u, s) in enumerate(zip(updates, shapes)):
        want = np.exp(log_scale[i]) * expected[sizes[i]:sizes[i + 1]].reshape(s)
        self.assertAllClose(u, want, rtol=1e-7, atol=1e-15)
      self.assertAllClose(state.log_scale, log_scale, rtol=1e-5, atol=1e-7)
      stats = list(new_stats)
      params = [p + u.numpy() for p, u in zip(params, updates)]
    signals = np.array(signals)
    self.assertAllEqual(signals[0], np.zeros(len(shapes)))  # No previous step at t = 1.
    self.assertGreater(signals[1:5].min(), 0.5)       # The gradient keeps its direction.
    self.assertLess(signals[5:7].max(), 0.)           # It reversed.
    if not per_tensor:
      self.assertAllClose(signals, np.tile(signals[:, :1], [1, len(shapes)]))

  @parameterized.parameters(False, True)
  def test_signal_of_vanishing_gradients_is_the_cosine(self, per_tensor):
    # A classifier whose float32 loss is 0 has gradients of 1e-20 and below, whose squares are
    # 0 in float32 while their products with the O(1) Adam direction are not: the plain formula
    # gave cosines of 1e13 there (and the step size its maximum in one step). Mixed scales: the
    # model-wide cosine must weigh each tensor by its true size.
    shapes = [(4, 6), (6,), (70, 80)]
    rng = np.random.default_rng(3)
    stats = [(rng.normal(size=s + (3,)), rng.uniform(0.5, 2., size=s), None, None)
             for s in shapes]
    for scales in ([1e-25, 1e-25, 1e-25], [1e-25, 1e-3, 1e-22], [1., 1e-30, 1e-12]):
      grads = [c * (0.5 * st[0][..., 1] + rng.normal(size=s))
               for c, st, s in zip(scales, stats, shapes)]
      got = nets.mlp_rule.adaptation_signal(
          [tf.constant(g, tf.float32) for g in grads],
          [tf.constant(m, tf.float32) for m, _, _, _ in stats],
          [tf.constant(v, tf.float32) for _, v, _, _ in stats], tf.constant(5.), per_tensor)
      want = np_signal(grads, stats, 5, per_tensor, tiny=0.)
      self.assertAllInRange(want, -1., 1.)
      self.assertAllClose(got, want, rtol=1e-4, atol=1e-5, msg=str(scales))

  def test_log_scale_stays_within_its_bounds(self):
    rule = adaptive_rule(True, rate=5., low=-1.5, high=0.5)
    params = [tf.ones([3, 2]), tf.ones([2])]
    state = rule.initial_state(params, num_steps=5)
    for t in range(6):
      sign = 1. if t < 3 else -1.
      _, state = rule([sign * tf.ones([3, 2]), sign * tf.ones([2])], state, params=params)
      self.assertAllInRange(state.log_scale, -1.5, 0.5)
      if t == 2:
        self.assertAllClose(state.log_scale, [0.5, 0.5])
    self.assertAllClose(state.log_scale, [-1.5, -1.5])

  @parameterized.parameters(False, True)
  def test_fused_matches_the_reference(self, per_tensor):
    if mlp_rule_fused.mlp_rule_kernels() is None:
      self.skipTest("fused op unavailable")
    shapes = [[], [7], [13, 11], [3, 5, 9], [70, 1000]]
    rng = np.random.default_rng(3)
    params = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in shapes]
    base = [rng.normal(size=s).astype(np.float32) for s in shapes]
    results = []
    for fused in (True, False):
      rule = adaptive_rule(per_tensor, fused=fused)
      state = rule.initial_state(params, num_steps=5)
      out = []
      for t in range(6):
        grads = [tf.constant((1. if t < 3 else -1.) * b) for b in base]
        updates, state = rule(grads, state, params=params)
        out.append((updates, state.log_scale))
      results.append(out)
    for (fu, fs), (ru, rs) in zip(*results):
      self.assertAllClose(fs, rs, rtol=1e-5, atol=1e-6)
      for a, b in zip(fu, ru):
        self.assertAllClose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))))
    self.assertGreater(float(np.max(np.abs(results[0][-1][1]))), 0.1)

  @parameterized.parameters(False, True)
  def test_fused_gradients_to_the_rate_match_the_reference(self, per_tensor):
    if mlp_rule_fused.mlp_rule_kernels() is None:
      self.skipTest("fused op unavailable")
    rng = np.random.default_rng(4)
    shapes = [[7], [13, 11]]
    params0 = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in shapes]
    targets = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in shapes]
    grads = []
    for fused in (True, False):
      rule = adaptive_rule(per_tensor, fused=fused)
      with tf.GradientTape() as tape:
        params, state, loss = list(params0), rule.initial_state(params0, num_steps=4), 0.
        for _ in range(4):
          with tf.GradientTape() as inner:
            inner.watch(params)
            f = tf.add_n([tf.reduce_sum(tf.sin(p) * t) for p, t in zip(params, targets)])
          updates, state = rule(inner.gradient(f, params), state, params=params)
          params = [p + u for p, u in zip(params, updates)]
          loss += tf.add_n([tf.reduce_sum(tf.square(p - t)) for p, t in zip(params, targets)])
      grads.append(tape.gradient(loss, rule.trainable_variables))
    for a, b in zip(*grads):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))
    names = [v.name for v in adaptive_rule(per_tensor).trainable_variables]
    rate_grad = grads[1][[i for i, n in enumerate(names) if "adaptation" in n][0]]
    self.assertGreater(abs(float(rate_grad)), 1e-6)

  def test_meta_gradient_of_the_rate_against_finite_differences(self):
    rule = nets.PerParameterMLP(hidden_sizes=(3,), schedule_hidden_size=2, learning_rate=0.05,
                                seed=0, step_adaptation=0.3, adaptation_per_tensor=True,
                                adaptation_min=-10., adaptation_max=10.)
    randomize(rule, 4, scale=0.3)
    analytic = check_meta_gradient(self, rule, num_steps=4)
    variables = rule.trainable_variables
    rate = [i for i, v in enumerate(variables) if "adaptation" in v.name][0]
    self.assertGreater(abs(float(analytic[rate])), 1e-4)

  def test_off_by_default_and_in_the_config_when_on(self):
    rule = nets.PerParameterMLP()
    self.assertFalse(hasattr(rule, "log_adaptation_rate"))
    self.assertNotIn("step_adaptation", rule.config["net_options"])
    on = nets.PerParameterMLP(step_adaptation=0.03, adaptation_per_tensor=True)
    rebuilt = nets.factory(on.config)
    self.assertEqual((rebuilt.step_adaptation, rebuilt.adaptation_per_tensor,
                      rebuilt.adaptation_min, rebuilt.adaptation_max,
                      rebuilt.adaptation_asymmetry), (0.03, True, -3., 0., 1.))
    self.assertAllClose(rebuilt.log_adaptation_rate, np.log(0.03))
    with self.assertRaisesRegex(ValueError, "step_adaptation"):
      nets.PerParameterMLP(step_adaptation=-1.)
    with self.assertRaisesRegex(ValueError, "adaptation_min"):
      nets.PerParameterMLP(step_adaptation=0.1, adaptation_max=float("nan"))
    with self.assertRaisesRegex(ValueError, "adaptation_min"):
      nets.PerParameterMLP(step_adaptation=0.1, adaptation_min=1.)
    with self.assertRaisesRegex(ValueError, "adaptation_asymmetry"):
      nets.PerParameterMLP(step_adaptation=0.1, adaptation_asymmetry=0.5)

  def test_warm_start_adds_the_adaptation_to_a_trained_rule(self):
    options = {"hidden_sizes": [4], "schedule_hidden_size": 3, "learning_rate": 3e-3}
    trained = meta_optimizer_lib.MetaOptimizer(rule={"net": "PerParameterMLP",
                                                     "net_options": options})
    randomize(trained.nets["rule"], 0)
    path = os.path.join(self.get_temp_dir(), "trained")
    trained.save(path)
    adaptive = meta_optimizer_lib.MetaOptimizer(rule={
        "net": "PerParameterMLP", "net_options": {**options, "step_adaptation": 0.05}})
    suite_training.warm_start(adaptive, path)
    rule, source = adaptive.nets["rule"], trained.nets["rule"]
    for a, b in zip(tf.nest.flatten([source.layers, source.schedule_layers, source.log_lr]),
                    tf.nest.flatten([rule.layers, rule.schedule_layers, rule.log_lr])):
      self.assertAllEqual(a, b)
    self.assertAllClose(rule.log_adaptation_rate, np.log(0.05))
    other = meta_optimizer_lib.MetaOptimizer(rule={
        "net": "PerParameterMLP", "net_options": {**options, "hidden_sizes": [5]}})
    with self.assertRaisesRegex(ValueError, "does not fit"):
      suite_training.warm_start(other, path)
    with self.assertRaisesRegex(ValueError, "no saved optimizer"):
      suite_training.warm_start(adaptive, os.path.join(self.get_temp_dir(), "nothing"))
    with self.assertRaisesRegex(ValueError, "init_from"):
      suite_training.SuiteTrainConfig(init_from=os.path.join(self.get_temp_dir(), "no")).validate()
    with self.assertRaisesRegex(ValueError, "unknown pretrained"):
      suite_training.SuiteTrainConfig(init_from="pretrained:nope").validate()
    suite_training.SuiteTrainConfig(init_from="pretrained:versatile-mlp-v1").validate()


if __name__ == "__main__":
  tf.test.main()
