"""nets.PerParameterMLP against a NumPy re-implementation, Adam, and finite differences."""

import math

from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
import nets
from nets import mlp_rule
from tests import finite_differences

DECAYS = np.array([0.5, 0.9, 0.99])
B2 = 0.999
EPS = 1e-8


def np_features(g, p, m, v, row, col, t):
  """NumPy float64 re-implementation of the module docstring's f1..f9 (independent code)."""
  m = DECAYS * m + (1 - DECAYS) * g[..., None]
  v = B2 * v + (1 - B2) * g ** 2
  m_hat = m / (1 - DECAYS ** t)
  v_hat = v / (1 - B2 ** t)
  denom = np.sqrt(v_hat) + EPS
  if g.ndim >= 2:
    row = B2 * row + (1 - B2) * (g ** 2).mean(axis=-1)
    col = B2 * col + (1 - B2) * (g ** 2).mean(axis=-2)
    v_fac = np.einsum("...i,...j->...ij", row, col) / row.mean(axis=-1)[..., None, None]
    v_fac = v_fac / (1 - B2 ** t)
    denom_fac = np.sqrt(v_fac) + EPS
  else:
    denom_fac = denom
  rms_p = np.sqrt((p ** 2).mean() + 1e-12)
  rms_g = np.sqrt((g ** 2).mean() + 1e-30)
  columns = [g / denom, m_hat[..., 0] / denom, m_hat[..., 1] / denom, m_hat[..., 2] / denom,
             g / denom_fac, m_hat[..., 1] / denom_fac, p / rms_p, g / rms_g,
             np.full(g.shape, math.log(rms_p + 1e-3) / 3)]
  features = np.clip(np.stack([c.ravel() for c in columns], axis=1), -10, 10)
  return features, (m_hat[..., 1] / denom).ravel(), (m, v, row, col)


def np_schedule_features(g, m, v, t, sample=4096):
  """NumPy float64: the schedule's per-tensor features from the statistics before step t."""
  n = g.size
  stride = -(-n // sample)
  g, m, v = g.ravel()[::stride], m.reshape(-1, 3)[::stride], v.ravel()[::stride]
  if t == 1:
    m_hat, v_hat = m, v  # Zeros.
  else:
    m_hat, v_hat = m / (1 - DECAYS ** (t - 1)), v / (1 - B2 ** (t - 1))
  denom = np.sqrt(v_hat) + EPS
  snr = [np.mean(np.abs(m_hat[:, i]) / denom) for i in (1, 2)]
  cos = g @ m[:, 1] / (np.linalg.norm(g) * np.linalg.norm(m[:, 1]) + 1e-30)
  return np.clip(np.array(snr + [cos]), -2, 2)


def np_update(features, direction, s, weights, log_lr, c_d=1.0, c_m=2.0, c_q=2.0,
              schedule_inputs=None, sizes=None):
  """The updates; `schedule_inputs` [k, 3] per tensor of `sizes` coordinates, or None."""
  progress = np.array([s, s * s, np.tanh(10 * s), np.tanh(10 * (1 - s))])
  h = np.concatenate([features, np.tile(progress, (len(features), 1))], axis=1)
  layers, schedule = weights
  for i, (w, b) in enumerate(layers):
    h = h @ w + b
    h = np.maximum(h, 0) if i + 1 < len(layers) else h
  q = progress[None]
  if schedule_inputs is not None:
    q = np.concatenate([np.tile(progress, (len(schedule_inputs), 1)), schedule_inputs], axis=1)
  for i, (w, b) in enumerate(schedule):
    q = q @ w + b
    q = np.maximum(q, 0) if i + 1 < len(schedule) else q
  step_size = np.exp(log_lr + c_q * np.tanh(q[:, 0]))
  step_size = step_size[0] if schedule_inputs is None else np.repeat(step_size, sizes)
  return (-step_size * (direction + c_d * np.tanh(h[:, 0]))
          * np.exp(c_m * np.tanh(h[:, 1])))


def randomize(rule, seed, scale=0.5):
  """Trained-looking weights: the zero-initialised last layers made non-zero."""
  rng = np.random.default_rng(seed)
  for v in rule.trainable_variables:
    if "log_lr" not in v.name:
      v.assign(v + scale * rng.normal(size=v.shape).astype(np.float32))


def numpy_weights(rule):
  get = lambda pairs: [(w.numpy().astype(np.float64), b.numpy().astype(np.float64))
                       for w, b in pairs]
  return get(rule.layers), get(rule.schedule_layers)


def check_meta_gradient(test, rule, num_steps):
  """Asserts that the gradient of a `num_steps`-step unroll of `rule` on a float64 quadratic (the
  sum of its losses) to every weight of `rule` equals central finite differences; returns it."""
  a = tf.constant(np.random.default_rng(5).normal(size=(4, 4)), tf.float64)
  x0 = [tf.constant(np.linspace(-1., 1., 4)), tf.constant([[0.5, -0.2], [0.1, 0.3]], tf.float64)]
  loss_fn = lambda p: (tf.reduce_sum(tf.square(tf.linalg.matvec(a, p[0]))) +
                       tf.reduce_sum(tf.square(p[1] - 1.)))

  def meta_loss():
    # In float64 throughout (the unroll engine records its losses in float32).
    params, total = list(x0), tf.constant(0., tf.float64)
    state = rule.initial_state(params, num_steps=num_steps)
    for _ in range(num_steps):
      with tf.GradientTape() as tape:
        tape.watch(params)
        loss = loss_fn(params)
      updates, state = rule(tape.gradient(loss, params), state, params=params)
      params = [p + u for p, u in zip(params, updates)]
      total += loss_fn(params)
    return total

  variables = rule.trainable_variables
  with tf.GradientTape() as tape:
    loss = meta_loss()
  analytic = tape.gradient(loss, variables)
  numeric = finite_differences.central_differences(meta_loss, variables, eps=2. ** -12)
  for v, x, y in zip(variables, analytic, numeric):
    test.assertAllClose(x, y, rtol=2e-3, atol=2e-4, msg=v.name)
  return analytic


class PerParameterMLPTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(((5,),), ((3, 4),), ((2, 3, 4),), ((),))
  def test_features_against_numpy(self, shape):
    rng = np.random.default_rng(0)
    p = rng.normal(size=shape)
    m, v = np.zeros(shape + (3,)), np.zeros(shape)
    row = np.zeros(shape[:-1]) if len(shape) >= 2 else np.zeros([1])
    col = np.zeros(shape[:-2] + shape[-1:]) if len(shape) >= 2 else np.zeros([1])
    tf_stats = [tf.constant(x, tf.float64) for x in (m, v, row, col)]
    for t in range(1, 5):
      g = rng.normal(size=shape) * 10 ** rng.uniform(-3, 1)
      expected, direction, (m, v, row, col) = np_features(g, p, m, v, row, col, t)
      got, got_direction, tf_stats = mlp_rule.tensor_features(
          tf.constant(g), tf.constant(p), *tf_stats, tf.constant(float(t), tf.float64))
      self.assertAllClose(got, expected, rtol=1e-9, atol=1e-12)
      self.assertAllClose(got_direction, direction, rtol=1e-9, atol=1e-12)
      for a, b in zip(tf_stats, (m, v, row, col)):
        self.assertAllClose(a, b, rtol=1e-12)
      p = p + 0.1 * rng.normal(size=shape)

  @parameterized.parameters(False, True)
  def test_update_against_numpy_over_steps(self, tensor_features):
    rule = nets.PerParameterMLP(learning_rate=3e-3, seed=1, tensor_features=tensor_features)
    randomize(rule, 0)
    # (70, 80): more coordinates than the schedule's sample of 4096 (strided).
    shapes = [(4, 6), (6,), (2, 2, 3)] + [(70, 80)] * tensor_features
    rng = np.random.default_rng(1)
    params = [rng.normal(size=s) for s in shapes]
    state = rule.initial_state([tf.constant(p) for p in params], num_steps=7)
    stats = [(np.zeros(s + (3,)), np.zeros(s), np.zeros(s[:-1]), np.zeros(s[:-2] + s[-1:]))
             if len(s) >= 2 else (np.zeros(s + (3,)), np.zeros(s), np.zeros(1), np.zeros(1))
             for s in shapes]
    weights, log_lr = numpy_weights(rule), float(rule.log_lr.numpy())
    for t in range(1, 10):  # Past the horizon of 7 too: the progress stays at 1.
      grads = [rng.normal(size=s) for s in shapes]
      updates, state = rule([tf.constant(g) for g in grads], state,
                            params=[tf.constant(p) for p in params])
      schedule_inputs = (np.stack([np_schedule_features(g, st[0], st[1], t)
                                   for g, st in zip(grads, stats)])
                         if tensor_features else None)
      feats, dirs, new_stats = zip(*[np_features(g, p, *st, t)
                                     for g, p, st, in zip(grads, params, stats)])
      expected = np_update(np.concatenate(feats), np.concatenate(dirs), min(t / 7, 1.),
                           weights, log_lr, schedule_inputs=schedule_inputs,
                           sizes=[int(np.prod(s)) for s in shapes])
      sizes = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
      for i, (u, s) in enumerate(zip(updates, shapes)):
        self.assertEqual(u.shape, s)
        self.assertAllClose(u, expected[sizes[i]:sizes[i + 1]].reshape(s), rtol=1e-9,
                            atol=1e-15)
      stats = list(new_stats)
      params = [p + u.numpy() for p, u in zip(params, updates)]
    self.assertEqual(float(state.step), 9.)

  @parameterized.parameters(False, True)
  def test_untrained_is_adam(self, tensor_features):
    rule = nets.PerParameterMLP(learning_rate=0.01, tensor_features=tensor_features)
    adam = snt.optimizers.Adam(0.01)
    rng = np.random.default_rng(2)
    variables = [tf.Variable(rng.normal(size=s).astype(np.float32)) for s in ((3, 4), (4,))]
    params = [tf.constant(v.numpy()) for v in variables]
    state = rule.initial_state(params, num_steps=5)
    for _ in range(5):
      grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in variables]
      updates, state = rule(grads, state, params=params)
      params = [p + u for p, u in zip(params, updates)]
      adam.apply(grads, variables)
    for p, v in zip(params, variables):
      self.assertAllClose(p, v, rtol=1e-5, atol=1e-6)

  def test_schedule_sees_the_horizon(self):
    # With a schedule that depends on the progress, the same gradients give different steps
    # for different horizons, and the same steps once both are past their horizons.
    rule = nets.PerParameterMLP(seed=0)
    randomize(rule, 3)
    params = [tf.ones([3])]
    grads = [tf.constant([1., -2., 0.5])]
    short, long = (rule.initial_state(params, num_steps=n) for n in (2, 100))
    u_short, _ = rule(grads, short, params=params)
    u_long, _ = rule(grads, long, params=params)
    self.assertNotAllClose(u_short[0], u_long[0])
    default = rule.initial_state(params)
    self.assertEqual(float(default.num_steps), 1000.)

  def test_meta_gradient_against_finite_differences(self):
    # A 3-step unroll of a float64 quadratic; the meta-loss is differentiable in every weight.
    rule = nets.PerParameterMLP(hidden_sizes=(3,), schedule_hidden_size=2, learning_rate=0.05,
                                seed=0)
    randomize(rule, 4, scale=0.3)
    analytic = check_meta_gradient(self, rule, num_steps=3)
    self.assertGreater(max(float(tf.reduce_max(tf.abs(x))) for x in analytic), 1e-3)

  def test_every_entry_point_passes_the_context(self):
    rule = nets.PerParameterMLP(learning_rate=0.05, seed=0)
    randomize(rule, 6)
    rng = np.random.default_rng(7)
    init = rng.normal(size=(3, 2)).astype(np.float32)
    grads_seq = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(4)]
    # Reference: the rule called directly.
    params = [tf.constant(init)]
    state = rule.initial_state(params, num_steps=4)
    for g in grads_seq:
      updates, state = rule([tf.constant(g)], state, params=params)
      params = [params[0] + updates[0]]
    # LearnedOptimizer.apply over several calls keeps the state and sees the variables.
    variable = tf.Variable(init)
    optimizer = l2l.LearnedOptimizer(rule, num_steps=4)
    for g in grads_seq:
      optimizer.apply([tf.constant(g)], [variable])
    self.assertAllClose(variable, params[0], rtol=1e-6, atol=1e-7)
    # innerloop_ctx's differentiable optimizer.
    module = snt.Linear(2)
    module(tf.zeros([1, 3]))
    module.w.assign(init)
    module.b.assign(tf.zeros([2]))
    with l2l.innerloop_ctx(module, rule, adapt_names=None, num_steps=4) as (fmodel, diffopt):
      names = list(fmodel.params)
      w_name = [n for n in names if n.endswith("w")][0]
      for g in grads_seq:
        # A loss whose gradient to w is g (and to b zero): sum(w * g).
        diffopt.step(lambda forward, g=g: tf.reduce_sum(fmodel.params[w_name] * g)
                     + 0. * tf.reduce_sum(forward(tf.zeros([1, 3]))))
      self.assertAllClose(fmodel.params[w_name], params[0], rtol=1e-5, atol=1e-6)

  def test_bad_options(self):
    with self.assertRaisesRegex(ValueError, "learning_rate"):
      nets.PerParameterMLP(learning_rate=0.)
    with self.assertRaisesRegex(ValueError, "hidden sizes"):
      nets.PerParameterMLP(hidden_sizes=())
    with self.assertRaisesRegex(ValueError, "params="):
      nets.call_rule(nets.PerParameterMLP(), [tf.ones([2])],
                     nets.PerParameterMLP().initial_state([tf.ones([2])]))


if __name__ == "__main__":
  tf.test.main()
