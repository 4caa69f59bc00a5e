"""The quiet gate of `nets.PerParameterMLP` (`quiet_gate`): no learned correction on quiet
gradients.

The factors against a NumPy float64 re-implementation (down to gradients whose squares float32
flushes to zero), whole steps against the NumPy rule with c_d scaled by the factors (with and
without the step-size adaptation), the fused op against the reference ops, and what the gate is
for: a learned rule keeps moving parameters whose gradient vanished; the gated one stops, as Adam
does.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import nets
from nets import mlp_rule
from nets import mlp_rule_fused
from tests.mlp_rule_test import np_features, np_update, numpy_weights, randomize

B2 = 0.999
EPS = 1e-8


def np_quiet_factors(grads, vs, t, threshold, sample=4096):
  """NumPy float64: min(1, rms(g) / (threshold (sqrt(mean v_hat_t) + eps))) per tensor, on the
  strided sample, v_hat_t the bias-corrected second moment after g."""
  out = []
  for g, v in zip(grads, vs):
    stride = max(1, -(-g.size // sample))
    g, v = g.ravel()[::stride].astype(np.float64), v.ravel()[::stride].astype(np.float64)
    v_hat = (B2 * v + (1 - B2) * g * g) / (1 - B2 ** t)
    out.append(min(1., np.sqrt(np.mean(g * g)) / (threshold * (np.sqrt(np.mean(v_hat)) + EPS))))
  return np.array(out)


def gated_rule(gate, fused=False, adaptation=0.):
  rule = nets.PerParameterMLP(learning_rate=3e-3, seed=1, fused=fused, quiet_gate=gate,
                              step_adaptation=adaptation)
  randomize(rule, 0)
  return rule


class QuietGateTest(tf.test.TestCase, parameterized.TestCase):

  def test_factors_against_numpy(self):
    shapes = [(4, 6), (6,), (70, 80)]  # 5,600 coordinates: strided.
    rng = np.random.default_rng(0)
    vs = [rng.uniform(0.5, 2., size=s) for s in shapes]
    for scales, t in (([1., 1., 1.], 50), ([1e-2, 3e-3, 1e-3], 400), ([1e-25, 1e-4, 0.], 3),
                      ([1e-30, 1e-30, 1e-30], 1000)):
      grads = [c * rng.normal(size=s) for c, s in zip(scales, shapes)]
      for threshold in (0.1, 0.5):
        got = mlp_rule.quiet_factors([tf.constant(g, tf.float32) for g in grads],
                                     [tf.constant(v, tf.float32) for v in vs],
                                     tf.constant(float(t)), threshold)
        want = np_quiet_factors(grads, vs, t, threshold)
        self.assertAllClose(got, want, rtol=1e-4, atol=1e-6, msg=f"{scales} {threshold}")
    # A gradient at its usual level passes; one 1,000 times below it is scaled down 100 times.
    usual = np_quiet_factors([rng.normal(size=(50,))], [np.ones(50)], 500, 0.1)
    quiet = np_quiet_factors([1e-3 * rng.normal(size=(50,))], [np.ones(50)], 500, 0.1)
    self.assertEqual(float(usual[0]), 1.)
    self.assertLess(float(quiet[0]), 0.03)

  def test_steps_against_numpy(self):
    shapes = [(4, 6), (6,), (2, 2, 3)]
    rng = np.random.default_rng(1)
    params = [rng.normal(size=s) for s in shapes]
    rule = gated_rule(0.2)
    weights, log_lr = numpy_weights(rule), float(rule.log_lr.numpy())
    state = rule.initial_state([tf.constant(p) for p in params], num_steps=12)
    stats = [(np.zeros(s + (3,)), np.zeros(s), np.zeros(s[:-1]), np.zeros(s[:-2] + s[-1:]))
             if len(s) >= 2 else (np.zeros(s + (3,)), np.zeros(s), np.zeros(1), np.zeros(1))
             for s in shapes]
    sizes = [int(np.prod(s)) for s in shapes]
    levels = [1., 1., 0.5, 1., 1e-2, 1e-3, 1e-4, 1e-6, 1., 3e-2]  # Gradients that go quiet.
    factors = []
    for t, level in enumerate(levels, start=1):
      grads = [level * rng.normal(size=s) for s in shapes]
      f = np_quiet_factors(grads, [st[1] for st in stats], t, 0.2)
      factors.append(f)
      updates, state = rule([tf.constant(g) for g in grads], state,
                            params=[tf.constant(p) for p in params])
      feats, dirs, new_stats = zip(*[np_features(g, p, *st, t)
                                     for g, p, st in zip(grads, params, stats)])
      want = np_update(np.concatenate(feats), np.concatenate(dirs), min(t / 12, 1.), weights,
                       log_lr, c_d=np.repeat(f, sizes))
      for u, w in zip(updates, np.split(want, np.cumsum(sizes)[:-1])):
        self.assertAllClose(u, w.reshape(u.shape), rtol=1e-7, atol=1e-15)
      stats = list(new_stats)
      params = [p + u.numpy() for p, u in zip(params, updates)]
    factors = np.array(factors)
    self.assertAllEqual(factors[:4], np.ones_like(factors[:4]))
    self.assertLess(factors[6:8].max(), 1e-2)

  def test_the_gate_leaves_the_statistics_and_the_adaptation_alone(self):
    shapes = [(4, 6), (6,)]
    rng = np.random.default_rng(5)
    params = [tf.constant(rng.normal(size=s)) for s in shapes]
    gated, plain = gated_rule(0.2, adaptation=0.5), gated_rule(0., adaptation=0.5)
    states = [r.initial_state(params, num_steps=8) for r in (gated, plain)]
    for level in (1., 1., 1e-3, 1e-5, 1.):
      grads = [tf.constant(level * rng.normal(size=s)) for s in shapes]
      (u_g, s_g), (u_p, s_p) = [r(grads, st, params=params)
                                for r, st in zip((gated, plain), states)]
      states = [s_g, s_p]
      for a, b in zip(tf.nest.flatten(s_g), tf.nest.flatten(s_p)):
        self.assertAllClose(a, b, rtol=1e-12, atol=0.)
    self.assertGreater(float(tf.reduce_max(tf.abs(s_g.log_scale))), 1e-3)

  def test_a_vanished_gradient_stops_the_gated_rule_only(self):
    # A parameter whose gradient vanishes after training: Adam's part of the step goes with it,
    # the learned correction does not (it reads the parameter), unless gated.
    rng = np.random.default_rng(2)
    params = [tf.constant(rng.normal(size=(8, 5)).astype(np.float32))]
    moved = {}
    for gate in (0., 0.1):
      rule = gated_rule(gate)
      state = rule.initial_state(params, num_steps=300)
      for t in range(300):
        level = 1. if t < 100 else 1e-12
        updates, state = rule([tf.constant(level * rng.normal(size=(8, 5)).astype(np.float32))],
                              state, params=params)
      moved[gate] = float(tf.norm(updates[0]))
    self.assertGreater(moved[0.], 1e-5)
    self.assertLess(moved[0.1], 1e-9 * moved[0.])

  def test_fused_matches_the_reference(self):
    if mlp_rule_fused.mlp_rule_kernels() is None:
      self.skipTest("fused op unavailable")
    shapes = [[], [7], [13, 11], [70, 1000]]
    rng = np.random.default_rng(3)
    params = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in shapes]
    results = []
    for fused in (True, False):
      rule = gated_rule(0.3, fused=fused, adaptation=0.05)
      state = rule.initial_state(params, num_steps=6)
      rng_t = np.random.default_rng(4)
      out = []
      for level in (1., 1., 1e-2, 1e-4, 1.):
        grads = [tf.constant((level * rng_t.normal(size=s)).astype(np.float32)) for s in shapes]
        updates, state = rule(grads, state, params=params)
        out.append(updates)
      results.append(out)
    for fu, ru in zip(*results):
      for a, b in zip(fu, ru):
        self.assertAllClose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))) + 1e-30)

  def test_off_by_default_in_the_config_when_on_and_bad_values(self):
    self.assertNotIn("quiet_gate", nets.PerParameterMLP().config["net_options"])
    rebuilt = nets.factory(nets.PerParameterMLP(quiet_gate=0.1).config)
    self.assertEqual(rebuilt.quiet_gate, 0.1)
    for bad in (-0.1, float("inf"), "0.1"):
      with self.assertRaisesRegex(ValueError, "quiet_gate"):
        nets.PerParameterMLP(quiet_gate=bad)


if __name__ == "__main__":
  tf.test.main()
