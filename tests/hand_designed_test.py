"""Hand-designed nets against `snt.optimizers` and against NumPy re-implementations."""

from absl.testing import parameterized
import numpy as np
import sonnet as snt
# Sonnet's pure update functions are not exported; the tests compare against them.
from sonnet.src.optimizers import adam as snt_adam
from sonnet.src.optimizers import momentum as snt_momentum
import tensorflow as tf

import nets
from nets import hand_designed

SHAPES = [(3,), (2, 4)]
STEPS = 6
# Same maths as Sonnet in float32: only the sign of the update differs, so they agree almost
# bitwise. The NumPy references run in float64: float32 rounding over a few steps.
SNT_TOL = dict(rtol=1e-6, atol=1e-7)
NUMPY_TOL = dict(rtol=1e-5, atol=1e-6)


class Quadratic:
  """Per-parameter f_i(x) = 0.5 ||A_i vec(x) - b_i||^2, gradient A_i^T (A_i vec(x) - b_i)."""

  def __init__(self, shapes, seed=0):
    rng = np.random.RandomState(seed)
    self.shapes = shapes
    self.a = [np.eye(n) + 0.3 * rng.randn(n, n) / np.sqrt(n)
              for n in (int(np.prod(s)) for s in shapes)]
    self.b = [rng.randn(a.shape[0]) for a in self.a]
    self.x0 = [rng.randn(*s) for s in shapes]

  def grads_np(self, params):
    return [(a.T @ (a @ x.reshape(-1) - b)).reshape(x.shape)
            for a, b, x in zip(self.a, self.b, params)]

  def grads_tf(self, params):
    grads = []
    for a, b, x in zip(self.a, self.b, params):
      a = tf.constant(a, x.dtype)
      r = tf.linalg.matvec(a, tf.reshape(x, [-1])) - tf.constant(b, x.dtype)
      grads.append(tf.reshape(tf.linalg.matvec(a, r, transpose_a=True), x.shape))
    return grads

  def loss_tf(self, params):
    total = 0.
    for a, b, x in zip(self.a, self.b, params):
      r = tf.linalg.matvec(tf.constant(a, x.dtype), tf.reshape(x, [-1])) - tf.constant(b, x.dtype)
      total += 0.5 * tf.reduce_sum(tf.square(r))
    return total


# NumPy references: `step(grads) -> additive updates`, written from the papers' formulas.

class NumpySgd:

  def __init__(self, learning_rate):
    self.lr = learning_rate

  def step(self, grads):
    return [-self.lr * g for g in grads]


class NumpyMomentum:

  def __init__(self, learning_rate, momentum, nesterov):
    self.lr, self.mu, self.nesterov = learning_rate, momentum, nesterov
    self.acc = None

  def step(self, grads):
    if self.acc is None:
      self.acc = [np.zeros_like(g) for g in grads]
    self.acc = [self.mu * a + g for a, g in zip(self.acc, grads)]
    if self.nesterov:
      return [-self.lr * (g + self.mu * a) for a, g in zip(self.acc, grads)]
    return [-self.lr * a for a in self.acc]


class NumpyRMSProp:

  def __init__(self, learning_rate, decay, momentum, epsilon, centered):
    self.lr, self.rho, self.mu, self.eps = learning_rate, decay, momentum, epsilon
    self.centered = centered
    self.mom = self.ms = self.mg = None

  def step(self, grads):
    if self.ms is None:
      self.mom, self.ms, self.mg = ([np.zeros_like(g) for g in grads] for _ in range(3))
    updates = []
    for i, g in enumerate(grads):
      self.ms[i] = self.rho * self.ms[i] + (1 - self.rho) * g ** 2
      variance = self.ms[i]
      if self.centered:
        self.mg[i] = self.rho * self.mg[i] + (1 - self.rho) * g
        variance = variance - self.mg[i] ** 2
      self.mom[i] = self.mu * self.mom[i] + self.lr * g / np.sqrt(variance + self.eps)
      updates.append(-self.mom[i])
    return updates


class NumpyAdam:

  def __init__(self, learning_rate, beta1, beta2, epsilon):
    self.lr, self.b1, self.b2, self.eps = learning_rate, beta1, beta2, epsilon
    self.t = 0
    self.m = self.v = None

  def step(self, grads):
    if self.m is None:
      self.m, self.v = ([np.zeros_like(g) for g in grads] for _ in range(2))
    self.t += 1
    updates = []
    for i, g in enumerate(grads):
      self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
      self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
      m_hat = self.m[i] / (1 - self.b1 ** self.t)
      v_hat = self.v[i] / (1 - self.b2 ** self.t)
      updates.append(-self.lr * m_hat / (np.sqrt(v_hat) + self.eps))
    return updates


def _case(name, net, snt_optimizer, numpy_rule):
  return dict(testcase_name=name, make_net=net, make_snt=snt_optimizer, make_numpy=numpy_rule)


CASES = [
    _case("sgd", lambda: nets.Sgd(0.1), lambda: snt.optimizers.SGD(0.1),
          lambda: NumpySgd(0.1)),
    _case("momentum", lambda: nets.Momentum(0.05, 0.9),
          lambda: snt.optimizers.Momentum(0.05, 0.9), lambda: NumpyMomentum(0.05, 0.9, False)),
    _case("momentum_nesterov", lambda: nets.Momentum(0.05, 0.8, nesterov=True),
          lambda: snt.optimizers.Momentum(0.05, 0.8, use_nesterov=True),
          lambda: NumpyMomentum(0.05, 0.8, True)),
    _case("nag", lambda: nets.NAG(0.05, 0.9),
          lambda: snt.optimizers.Momentum(0.05, 0.9, use_nesterov=True),
          lambda: NumpyMomentum(0.05, 0.9, True)),
    _case("rmsprop", lambda: nets.RMSProp(0.01), lambda: snt.optimizers.RMSProp(0.01),
          lambda: NumpyRMSProp(0.01, 0.9, 0.0, 1e-10, False)),
    _case("rmsprop_momentum", lambda: nets.RMSProp(0.01, decay=0.8, momentum=0.9),
          lambda: snt.optimizers.RMSProp(0.01, decay=0.8, momentum=0.9),
          lambda: NumpyRMSProp(0.01, 0.8, 0.9, 1e-10, False)),
    _case("rmsprop_centered_momentum",
          lambda: nets.RMSProp(0.01, decay=0.9, momentum=0.5, epsilon=1e-6, centered=True),
          lambda: snt.optimizers.RMSProp(0.01, decay=0.9, momentum=0.5, epsilon=1e-6,
                                         centered=True),
          lambda: NumpyRMSProp(0.01, 0.9, 0.5, 1e-6, True)),
    _case("adam", lambda: nets.Adam(0.01), lambda: snt.optimizers.Adam(0.01),
          lambda: NumpyAdam(0.01, 0.9, 0.999, 1e-8)),
    _case("adam_options", lambda: nets.Adam(0.05, beta1=0.5, beta2=0.9, epsilon=1e-4),
          lambda: snt.optimizers.Adam(0.05, beta1=0.5, beta2=0.9, epsilon=1e-4),
          lambda: NumpyAdam(0.05, 0.5, 0.9, 1e-4)),
]


class MatchesReferencesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_matches_snt_optimizers_and_numpy(self, make_net, make_snt, make_numpy):
    problem = Quadratic(SHAPES)
    net, snt_opt, np_rule = make_net(), make_snt(), make_numpy()

    params = [tf.constant(x, tf.float32) for x in problem.x0]
    state = net.initial_state(params)
    snt_params = [tf.Variable(x, dtype=tf.float32) for x in problem.x0]
    np_params = [x.copy() for x in problem.x0]
    for step in range(STEPS):
      updates, state = net(problem.grads_tf(params), state)
      params = [p + u for p, u in zip(params, updates)]
      snt_opt.apply(problem.grads_tf(snt_params), snt_params)
      np_params = [p + u for p, u in zip(np_params, np_rule.step(problem.grads_np(np_params)))]
      for p, snt_p, np_p in zip(params, snt_params, np_params):
        self.assertAllClose(p, snt_p, msg=f"step {step} vs snt", **SNT_TOL)
        self.assertAllClose(p, np_p, msg=f"step {step} vs numpy", **NUMPY_TOL)
    # The parameters moved: the comparison is not between constants.
    self.assertGreater(np.abs(np_params[0] - problem.x0[0]).max(), 1e-3)

  @parameterized.named_parameters(*CASES)
  def test_float64(self, make_net, make_snt, make_numpy):
    del make_snt
    problem = Quadratic(SHAPES, seed=1)
    net, np_rule = make_net(), make_numpy()
    params = [tf.constant(x, tf.float64) for x in problem.x0]
    state = net.initial_state(params)
    for _ in range(3):
      grads = problem.grads_tf(params)
      updates, state = net(grads, state)
      expected = np_rule.step([g.numpy() for g in grads])
      for u, e in zip(updates, expected):
        self.assertEqual(u.dtype, tf.float64)
        # Hyperparameters are float32 variables: float32 rounding of e.g. 0.1.
        self.assertAllClose(u, e, rtol=1e-6, atol=1e-12)
      params = [p + u for p, u in zip(params, updates)]

  def test_pure_functions_match_snt_sign_flipped(self):
    rng = np.random.RandomState(0)
    g, m, v = (tf.constant(rng.rand(5), tf.float32) for _ in range(3))
    ours, m1, v1 = nets.adam_update(g, m, v, 3., 0.1, 0.9, 0.99, 1e-8)
    theirs, m2, v2 = snt_adam.adam_update(g, 0.1, 0.9, 0.99, 1e-8, 3., m, v)
    self.assertAllClose(-ours, theirs, rtol=1e-6)
    self.assertAllClose(m1, m2)
    self.assertAllClose(v1, v2)
    ours, acc1 = nets.momentum_update(g, m, 0.1, 0.9, True)
    theirs, acc2 = snt_momentum.momentum_update(g, 0.1, 0.9, m, True)
    self.assertAllClose(-ours, theirs, rtol=1e-6)
    self.assertAllClose(acc1, acc2)

  def test_adam_state_counts_steps(self):
    net = nets.Adam()
    params = [tf.zeros([2])]
    state = net.initial_state(params)
    self.assertEqual(state.step.dtype, tf.float32)
    for _ in range(3):
      _, state = net([tf.ones([2])], state)
    self.assertEqual(float(state.step), 3.)

  def test_wrong_number_of_grads(self):
    net = nets.Momentum()
    state = net.initial_state([tf.zeros([2]), tf.zeros([3])])
    with self.assertRaisesRegex(ValueError, "1 gradients for a state built for 2"):
      net([tf.zeros([2])], state)


def _adam_meta_derivatives(net, x, curvature):
  """Derivatives of f(x + adam(grad f(x))) with f(x) = 0.5 sum(c x^2), at step 1.

  Returns the meta-loss's gradient and Hessian diagonal in x, its gradient in the
  hyperparameters, and the first and second derivatives of the update in the gradient.
  """
  with tf.GradientTape(persistent=True) as hessian_tape:
    hessian_tape.watch(x)
    with tf.GradientTape(persistent=True) as outer:
      outer.watch(x)
      with tf.GradientTape() as inner:
        inner.watch(x)
        loss = 0.5 * tf.reduce_sum(curvature * tf.square(x))
      grad = inner.gradient(loss, x)
      outer.watch(grad)
      (update,), _ = net([grad], net.initial_state([x]))
      meta_loss = 0.5 * tf.reduce_sum(curvature * tf.square(x + update))
    d_meta_d_x = outer.gradient(meta_loss, x)
    d_update_d_grad = outer.gradient(update, grad)
  return dict(d_meta_d_x=d_meta_d_x,
              d2_meta_d_x2=hessian_tape.gradient(d_meta_d_x, x),
              d_meta_d_hyper=outer.gradient(meta_loss, net.trainable_variables),
              d_update_d_grad=d_update_d_grad,
              d2_update_d_grad2=hessian_tape.gradient(d_update_d_grad, grad),
              grad=grad)


def _naive_adam_second_derivative(g):
  """d^2 update / d g^2 of Sonnet's `adam_update`, whose plain sqrt has an infinite slope at 0."""
  with tf.GradientTape() as second:
    second.watch(g)
    with tf.GradientTape() as first:
      first.watch(g)
      update, _, _ = snt_adam.adam_update(g, 0.001, 0.9, 0.999, 1e-8, 1., 0. * g, 0. * g)
    d_update = first.gradient(update, g)
  return second.gradient(d_update, g)


class SecondDerivativesTest(tf.test.TestCase):

  def test_adam_at_zero_gradient_is_finite(self):
    net = nets.Adam(learning_rate=0.001, epsilon=1e-8, learnable=True)
    x = tf.constant([0., 1., -2.])  # The first coordinate's gradient is exactly 0.
    curvature = tf.constant([1., 2., 3.])
    d = _adam_meta_derivatives(net, x, curvature)
    self.assertEqual(float(d["grad"][0]), 0.)
    for key in ("d_meta_d_x", "d2_meta_d_x2", "d_update_d_grad", "d2_update_d_grad2"):
      self.assertTrue(np.all(np.isfinite(d[key])), f"{key}: {d[key]}")
    for value in d["d_meta_d_hyper"]:
      self.assertTrue(np.all(np.isfinite(value)), d["d_meta_d_hyper"])
    # At step 1 the update is u(g) = -lr g / (|g| + eps): u'(0) = -lr / eps, and u'' is odd
    # in g, 0 at g = 0 by symmetry.
    self.assertAllClose(d["d_update_d_grad"][0], -0.001 / 1e-8, rtol=1e-5)
    self.assertEqual(float(d["d2_update_d_grad2"][0]), 0.)

  def test_naive_sqrt_would_be_nan(self):
    """The test above exercises the problem: with Sonnet's plain sqrt it is NaN."""
    self.assertTrue(np.isnan(_naive_adam_second_derivative(tf.constant([0., 1.]))[0]))

  def test_safe_sqrt(self):
    x = tf.constant([0., 1e-30, 0.25, 4.])
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      y = nets.safe_sqrt(x)
    self.assertAllEqual(y, tf.sqrt(x))
    dy = tape.gradient(y, x)
    self.assertAllClose(dy[1:], 0.5 / np.sqrt(x.numpy()[1:]), rtol=1e-6)
    self.assertEqual(float(dy[0]), 0.)


LEARNABLE = [
    ("sgd", lambda: nets.Sgd(0.05, learnable=True), {"learning_rate"}),
    ("momentum", lambda: nets.Momentum(0.05, 0.5, learnable=True),
     {"learning_rate", "momentum"}),
    ("nag", lambda: nets.NAG(0.05, 0.5, learnable=True), {"learning_rate", "momentum"}),
    ("rmsprop", lambda: nets.RMSProp(0.01, 0.9, 0.5, centered=True, learnable=True),
     {"learning_rate", "decay", "momentum"}),
    ("adam", lambda: nets.Adam(0.05, learnable=True), {"learning_rate", "beta1", "beta2"}),
]


class LearnableTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*LEARNABLE)
  def test_hyperparameters_get_meta_gradients(self, make_net, names):
    """d meta-loss / d hyperparameter against central differences, the optimizee in float64.

    Each hyperparameter h is shifted by +-1e-3 min(h, 1 - h) (inside its valid range); the
    float32 variable's actual shifted values are the denominator. Truncation error ~1e-6 and
    float32 rounding of h ~1e-4 of the derivative: the tolerance is 1e-3 of it."""
    net = make_net()
    self.assertEqual({v.name.split("/")[-1].split(":")[0] for v in net.trainable_variables},
                     names)
    problem = Quadratic(SHAPES)

    def meta_loss():
      params = [tf.constant(x, tf.float64) for x in problem.x0]
      state = net.initial_state(params)
      total = tf.constant(0., tf.float64)
      for _ in range(3):
        updates, state = net(problem.grads_tf(params), state)
        params = [p + tf.cast(u, tf.float64) for p, u in zip(params, updates)]
        total += problem.loss_tf(params)
      return total

    with tf.GradientTape() as tape:
      value = meta_loss()
    grads = tape.gradient(value, net.trainable_variables)
    for variable, grad in zip(net.trainable_variables, grads):
      h = float(variable.numpy())
      eps = 1e-3 * min(abs(h), abs(1. - h))
      values, shifted = [], []
      for sign in (1., -1.):
        variable.assign(h + sign * eps)
        shifted.append(float(variable.numpy()))
        values.append(float(meta_loss()))
      variable.assign(h)
      numeric = (values[0] - values[1]) / (shifted[0] - shifted[1])
      self.assertGreater(abs(numeric), 1e-3, variable.name)  # Not a trivial zero.
      self.assertAllClose(float(grad), numeric, rtol=1e-3, msg=variable.name)

  @parameterized.named_parameters(*LEARNABLE)
  def test_not_learnable_by_default(self, make_net, names):
    net = type(make_net())()
    self.assertEmpty(net.trainable_variables)
    self.assertEqual({v.name.split("/")[-1].split(":")[0] for v in net.variables}, names)
    self.assertFalse(net.config["net_options"]["learnable"])


class ValidationTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("sgd_lr_zero", hand_designed.Sgd, dict(learning_rate=0.), "`learning_rate`"),
      ("sgd_lr_negative", hand_designed.Sgd, dict(learning_rate=-1.), "`learning_rate`"),
      ("momentum_one", hand_designed.Momentum, dict(momentum=1.), r"Momentum: `momentum`.*\[0"),
      ("momentum_negative", hand_designed.Momentum, dict(momentum=-0.1), "`momentum`"),
      ("nag_lr", hand_designed.NAG, dict(learning_rate=0.), "NAG: `learning_rate`"),
      ("nag_momentum", hand_designed.NAG, dict(momentum=1.5), "NAG: `momentum`"),
      ("rmsprop_decay", hand_designed.RMSProp, dict(decay=1.), "`decay`"),
      ("rmsprop_momentum", hand_designed.RMSProp, dict(momentum=-1.), "`momentum`"),
      ("rmsprop_epsilon", hand_designed.RMSProp, dict(epsilon=0.), "`epsilon`"),
      ("adam_beta1", hand_designed.Adam, dict(beta1=1.), "`beta1`"),
      ("adam_beta2", hand_designed.Adam, dict(beta2=-0.5), "`beta2`"),
      ("adam_epsilon", hand_designed.Adam, dict(epsilon=-1e-8), "`epsilon`"),
      ("adam_nan", hand_designed.Adam, dict(learning_rate=float("nan")), "`learning_rate`"),
  )
  def test_bad_value(self, cls, kwargs, regex):
    with self.assertRaisesRegex(ValueError, regex):
      cls(**kwargs)

  @parameterized.named_parameters(
      ("lr_string", hand_designed.Sgd, dict(learning_rate="0.1"), "`learning_rate`"),
      ("lr_bool", hand_designed.Adam, dict(learning_rate=True), "`learning_rate`"),
      ("learnable", hand_designed.Sgd, dict(learnable=1), "`learnable`"),
      ("nesterov", hand_designed.Momentum, dict(nesterov="yes"), "`nesterov`"),
      ("centered", hand_designed.RMSProp, dict(centered=None), "`centered`"),
  )
  def test_bad_type(self, cls, kwargs, regex):
    with self.assertRaisesRegex(TypeError, regex):
      cls(**kwargs)

  def test_nag_config_has_no_nesterov(self):
    net = nets.NAG(0.02, 0.8)
    self.assertEqual(net.config, {"net": "NAG", "net_options": {
        "learning_rate": 0.02, "momentum": 0.8, "learnable": False}})
    self.assertTrue(nets.factory(net.config).nesterov)


if __name__ == "__main__":
  tf.test.main()
