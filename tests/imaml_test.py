"""Implicit MAML against the closed-form implicit gradient of a quadratic inner problem."""

from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
from l2l.meta_learning import imaml
import problems

# float64 throughout: the inner gradient descent converges to phi* to ~1e-13 (contraction
# factor <= 0.85 per step, 300 steps) and CG on a 6x6 system is exact after 6 iterations up to
# rounding, so the gap to the NumPy closed form is rounding in the 6x6 solves: ~1e-12.
# Observed <= 1e-15 relative to the largest entry; asked: 1e-8.
RTOL = 1e-8
DIM = 6


class Linear(snt.Module):
  """y = x . w: one parameter vector w, so that the Hessian of a squared loss is X^T X / m."""

  def __init__(self, w0):
    super().__init__(name="linear")
    self.w = tf.Variable(w0, dtype=tf.float64, name="w")

  def __call__(self, x):
    return tf.linalg.matvec(x, self.w)


def _problem(seed):
  rng = np.random.RandomState(seed)
  xs, xq = rng.randn(12, DIM), rng.randn(9, DIM)
  ys, yq = rng.randn(12), rng.randn(9)
  theta = rng.randn(DIM)
  return xs, ys, xq, yq, theta


def mse(predictions, targets):
  return 0.5 * tf.reduce_mean(tf.square(predictions - targets))


def closed_form(xs, ys, xq, yq, theta, lam, damping=0.0):
  """phi* and (I (1 + damping) + H / lam)^-1 grad L_query(phi*), in float64 NumPy."""
  h = xs.T @ xs / len(xs)
  phi = np.linalg.solve(h + lam * np.eye(DIM), xs.T @ ys / len(xs) + lam * theta)
  query_grad = xq.T @ (xq @ phi - yq) / len(xq)
  meta_grad = np.linalg.solve((1 + damping) * np.eye(DIM) + h / lam, query_grad)
  return phi, meta_grad


class IMAMLTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((0.5, 0.0, False), (2.0, 0.0, True), (1.0, 0.3, False))
  def test_meta_gradient_matches_the_closed_form(self, lam, damping, compiled):
    xs, ys, xq, yq, theta = _problem(0)
    model = Linear(theta)
    algorithm = l2l.IMAML(model, inner_lr=0.2, inner_steps=300, lam=lam, cg_steps=DIM,
                          damping=damping)

    def meta_gradient():
      with tf.GradientTape() as tape:
        learner = algorithm.clone().adapt_on(mse, xs, ys)
        loss = mse(learner(xq), yq)
      return learner.params["linear/w"], tape.gradient(loss, model.w)

    if compiled:
      meta_gradient = tf.function(meta_gradient, autograph=False)
    phi, grad = meta_gradient()
    expected_phi, expected_grad = closed_form(xs, ys, xq, yq, theta, lam, damping)
    self.assertAllClose(phi, expected_phi, rtol=RTOL, atol=RTOL * np.max(np.abs(expected_phi)))
    self.assertAllClose(grad, expected_grad, rtol=RTOL,
                        atol=RTOL * np.max(np.abs(expected_grad)))
    # Not the MAML gradient through the trajectory, nor the first-order one (grad at phi*).
    query_grad = xq.T @ (xq @ expected_phi - yq) / len(xq)
    self.assertGreater(np.linalg.norm(expected_grad - query_grad), 0.05 * np.linalg.norm(
        query_grad))

  @parameterized.parameters(True, False)
  def test_meta_trainer_step_applies_the_closed_form(self, batched):
    # MetaTrainer's batched step runs tasks under tf.vectorized_map, which drops
    # tf.custom_gradient (the meta-gradient through adapt there is zero); it uses
    # IMAML.task_gradients instead. Either way: the task mean of the closed form.
    problems_ = [_problem(seed) for seed in (4, 5)]
    tasks = problems.Task(*(np.stack([p[i] for p in problems_]) for i in range(4)))
    theta = problems_[0][4]
    lam = 0.5
    model = Linear(theta)
    algorithm = l2l.IMAML(model, inner_lr=0.2, inner_steps=300, lam=lam, cg_steps=DIM)
    trainer = l2l.MetaTrainer(algorithm, snt.optimizers.SGD(1.0), mse, None, batched=batched)
    trainer.meta_step(tasks)
    expected = np.mean([closed_form(*p[:4], theta, lam)[1] for p in problems_], axis=0)
    self.assertAllClose(theta - model.w.numpy(), expected, rtol=RTOL,
                        atol=RTOL * np.max(np.abs(expected)))

  @parameterized.parameters(True, False)
  def test_newton_solver_meta_gradient_matches_the_closed_form(self, batched):
    # On a quadratic inner problem one Newton-CG step (DIM CG iterations) is exact: the meta-
    # gradient (CG, unchanged) is the closed form, from 2 inner steps instead of 300.
    problems_ = [_problem(seed) for seed in (4, 5)]
    tasks = problems.Task(*(np.stack([p[i] for p in problems_]) for i in range(4)))
    theta = problems_[0][4]
    model = Linear(theta)
    algorithm = l2l.IMAML(model, inner_lr=1.0, inner_steps=2, lam=0.5, cg_steps=DIM,
                          solver="newton", newton_cg_steps=DIM)
    trainer = l2l.MetaTrainer(algorithm, snt.optimizers.SGD(1.0), mse, None, batched=batched)
    trainer.meta_step(tasks)
    expected = np.mean([closed_form(*p[:4], theta, 0.5)[1] for p in problems_], axis=0)
    self.assertAllClose(theta - model.w.numpy(), expected, rtol=RTOL,
                        atol=RTOL * np.max(np.abs(expected)))

  def test_newton_solver_reaches_its_tolerance_on_a_non_quadratic_problem(self):
    # Logistic regression plus the proximal term (strictly convex): the minimiser from NumPy
    # Newton iterations in float64 (to 1e-14), against the solver's few steps.
    rng = np.random.RandomState(2)
    x, labels, theta, lam = rng.randn(30, DIM), (rng.rand(30) < 0.5) * 1., rng.randn(DIM), 0.3
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    phi = theta.copy()
    for _ in range(50):
      p = sigmoid(x @ phi)
      grad = x.T @ (p - labels) / 30 + lam * (phi - theta)
      hess = x.T @ (x * (p * (1 - p))[:, None]) / 30 + lam * np.eye(DIM)
      phi = phi - np.linalg.solve(hess, grad)
    loss = lambda v: tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        tf.constant(labels), tf.linalg.matvec(tf.constant(x), v[0])))
    solved, residual = imaml.proximal_solve_newton(loss, [tf.constant(theta)], lam, 1.0, 8,
                                                   cg_steps=DIM, tol=1e-10,
                                                   return_residual=True)
    self.assertLessEqual(float(residual), 1e-10)
    self.assertAllClose(solved[0], phi, rtol=1e-8, atol=1e-8)
    # Fixed-step gradient descent with the same number of steps is far from it.
    gd = imaml.proximal_solve(loss, [tf.constant(theta)], lam, 0.5, 8)
    self.assertGreater(np.abs(gd[0].numpy() - phi).max(), 1e-3)

  def test_newton_solver_never_increases_the_objective(self):
    # A step far too large for gradient descent (lr x curvature ~ 1e4) overflows there; the
    # line search keeps Newton's objective non-increasing and finite, and it still converges.
    xs, ys, _, _, theta = _problem(3)
    xs = xs * 100.
    loss = lambda v: mse(tf.linalg.matvec(tf.constant(xs), v[0]), tf.constant(ys))
    objective = lambda v: float(loss([tf.constant(v)])) + 0.5 * np.sum((v - theta) ** 2)
    gd = imaml.proximal_solve(loss, [tf.constant(theta)], 1.0, 1.0, 100)
    self.assertFalse(np.isfinite(gd[0].numpy()).all())
    values = [objective(theta)]
    for steps in range(1, 5):
      phi = imaml.proximal_solve_newton(loss, [tf.constant(theta)], 1.0, 100.0, steps,
                                        cg_steps=2)
      values.append(objective(phi[0].numpy()))
    self.assertTrue(np.all(np.isfinite(values)))
    self.assertTrue(np.all(np.diff(values) <= 1e-9 * abs(values[0])), msg=values)
    self.assertLess(values[-1], 0.5 * values[0])

  def test_solver_settings_are_checked(self):
    model = Linear(np.zeros(DIM))
    with self.assertRaisesRegex(ValueError, "solver must be one of"):
      l2l.IMAML(model, solver="lbfgs")
    with self.assertRaisesRegex(ValueError, "newton_cg_steps must be a positive integer"):
      l2l.IMAML(model, newton_cg_steps=0)
    with self.assertRaisesRegex(ValueError, "tol must be a non-negative number"):
      l2l.IMAML(model, tol=-1.)

  def test_conjugate_gradient_solves_a_spd_system(self):
    rng = np.random.RandomState(1)
    a = rng.randn(5, 5)
    a = a @ a.T + np.eye(5)
    b = rng.randn(5)
    x = imaml.conjugate_gradient(lambda v: [tf.linalg.matvec(tf.constant(a), v[0])],
                                 [tf.constant(b)], 5)
    self.assertAllClose(x[0], np.linalg.solve(a, b), rtol=1e-9, atol=1e-9)

  def test_conjugate_gradient_stops_at_non_positive_curvature(self):
    """Indefinite A (a non-convex support loss with H below -lam): plain CG's iterates grow
    without bound; the truncated CG keeps the last iterate before p^T A p <= 0."""
    a = tf.constant(np.diag([2., -1.]))
    matvec = lambda v: [tf.linalg.matvec(a, v[0])]
    # By hand: p0 = b = (1, 1), p0^T A p0 = 1 > 0, x1 = 2 b = (2, 2); r1 = (-3, 3), p1 = (6, 12),
    # p1^T A p1 = -72 <= 0: stop at x1.
    for steps in (2, 5, 20):
      x = imaml.conjugate_gradient(matvec, [tf.constant([1., 1.], tf.float64)], steps)
      self.assertAllClose(x[0], [2., 2.])
    # Non-positive curvature at the first iteration: x = b.
    x = imaml.conjugate_gradient(lambda v: [-v[0]], [tf.constant([1., 2.], tf.float64)], 5)
    self.assertAllClose(x[0], [1., 2.])

  def test_hessian_vector_product(self):
    rng = np.random.RandomState(2)
    a = rng.randn(4, 4)
    v = rng.randn(4)
    x0 = rng.randn(4)
    # f(x) = sum(sin(A x)): H = A^T diag(-sin(A x)) A.
    hv = imaml.hessian_vector_product(
        lambda p: tf.reduce_sum(tf.sin(tf.linalg.matvec(tf.constant(a), p[0]))),
        [tf.constant(x0)], [tf.constant(v)])
    expected = a.T @ (-np.sin(a @ x0) * (a @ v))
    self.assertAllClose(hv[0], expected, rtol=1e-12, atol=1e-12)

  def test_trains_like_maml_on_an_mlp(self):
    """Gradients reach every variable of an MLP, and a few meta-steps lower the query loss."""
    rng = np.random.RandomState(3)
    model = snt.nets.MLP([16, 1], activation=tf.tanh,
                         w_init=snt.initializers.VarianceScaling(1., "fan_avg", "uniform", seed=0))
    model(tf.zeros([1, 1]))
    algorithm = l2l.IMAML(model, inner_lr=0.05, inner_steps=10, lam=1.0, cg_steps=3,
                          damping=0.1)
    optimizer = snt.optimizers.Adam(0.01)
    x = rng.uniform(-3, 3, [20, 1]).astype(np.float32)
    y = np.sin(x) + 1.0

    @tf.function(autograph=False)
    def step():
      with tf.GradientTape() as tape:
        learner = algorithm.clone().adapt_on(mse, x[:10], y[:10])
        loss = mse(learner(x[10:]), y[10:])
      grads = tape.gradient(loss, algorithm.trainable_variables)
      optimizer.apply(grads, algorithm.trainable_variables)
      return loss, grads

    first, grads = step()
    for grad in grads:
      self.assertGreater(float(tf.reduce_sum(tf.abs(grad))), 0.)
    for _ in range(30):
      last, _ = step()
    self.assertLess(float(last), 0.5 * float(first))

  @parameterized.parameters(("lam", 0.0), ("lam", -1.0), ("damping", -0.1), ("cg_steps", 0),
                            ("cg_steps", 1.5))
  def test_bad_arguments(self, name, value):
    with self.assertRaisesRegex(ValueError, name):
      l2l.IMAML(Linear(np.zeros(DIM)), **{name: value})


if __name__ == "__main__":
  tf.test.main()
