"""Implicit MAML (Rajeswaran et al. 2019): meta-gradients without backprop through the inner loop.

The inner problem is proximally regularised towards the meta-parameters theta,

    phi*(theta) = argmin_phi  L_support(phi) + lam / 2 ||phi - theta||^2,

solved approximately from theta (not differentiated) by `inner_steps` of gradient descent
(solver "gd") or of damped Newton-CG with a line search (solver "newton", which never
increases the objective and stops at a relative tolerance). At
the optimum, grad L_support(phi*) + lam (phi* - theta) = 0, so by the implicit function theorem

    d phi* / d theta = (I + H / lam)^-1,      H = Hessian of L_support at phi*,

and the meta-gradient of a query loss is (I + H / lam)^-1 grad L_query(phi*). iMAML solves
(I (1 + damping) + H / lam) x = grad L_query(phi*) by `cg_steps` of conjugate gradient, each one
Hessian-vector product (double backprop through one support-loss evaluation). Memory is that of
one support-loss Hessian-vector product, whatever the number of inner steps; `damping` > 0
keeps CG stable when H has negative eigenvalues (non-convex losses).

    imaml = l2l.IMAML(model, inner_lr=0.01, inner_steps=50, lam=1.0, cg_steps=5)
    with tf.GradientTape() as tape:
      learner = imaml.clone().adapt_on(mse, x_support, y_support)
      meta_loss = mse(learner(x_query), y_query)
    grads = tape.gradient(meta_loss, imaml.trainable_variables)   # implicit meta-gradient

The interface is `l2l.MAML`'s (`clone()`, `adapt`, `adapt_on`, gradients landing on the module's
variables). `tf.vectorized_map` drops `tf.custom_gradient`, so inside it (`MetaTrainer`'s
batched meta-step) the meta-gradient through `adapt` would be zero: `MetaTrainer` asks
`IMAML.task_gradients` for each task's query loss and meta-gradient instead, computed forward.
"""

import numbers
from typing import Any, Callable, List, Optional, Sequence

import tensorflow as tf

from l2l.meta_learning import functional
from l2l.meta_learning import maml as maml_lib

Forward = maml_lib.Forward
TensorList = List[tf.Tensor]


def _dot(a: TensorList, b: TensorList) -> tf.Tensor:
  return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def conjugate_gradient(matvec: Callable[[TensorList], TensorList], b: TensorList,
                       num_steps: int) -> TensorList:
  """Approximately solves A x = b for a symmetric positive-definite A, from x = 0.

  Truncated like Steihaug's CG: an iteration whose direction p has p^T A p <= 0 (A is not
  positive definite along p, as I + H / lam can be when the support loss is non-convex and H
  has eigenvalues below -lam) stops the iterations with the x reached so far, instead of a
  step that would grow x without bound. If that happens at the first iteration, x = b (the
  solution for A = I: the first-order meta-gradient).

  Args:
    matvec: v -> A v on lists of tensors.
    b: the right-hand side.
    num_steps: CG iterations (exact after dim(b) steps in exact arithmetic).

  Returns:
    x, a list shaped like `b`. Iterations stop changing x once the residual is exactly zero.
  """
  x = [tf.zeros_like(t) for t in b]
  r = list(b)
  p = list(b)
  rs = _dot(r, r)
  active = tf.constant(True)
  for step in range(num_steps):
    ap = matvec(p)
    curvature = _dot(p, ap)
    if step == 0:
      fallback = curvature <= 0.
    active = active & (curvature > 0.)
    # Zero residual: alpha = beta = 0 (instead of 0 / 0). Non-positive curvature: stop.
    alpha = tf.where(active, tf.math.divide_no_nan(rs, curvature), tf.zeros_like(rs))
    x = [xi + alpha * pi for xi, pi in zip(x, p)]
    r = [ri - alpha * api for ri, api in zip(r, ap)]
    rs_new = _dot(r, r)
    beta = tf.math.divide_no_nan(rs_new, rs)
    p = [ri + beta * pi for ri, pi in zip(r, p)]
    rs = rs_new
  if num_steps:
    x = [tf.where(fallback, bi, xi) for xi, bi in zip(x, b)]
  return x


def hessian_vector_product(loss: Callable[[TensorList], tf.Tensor], params: TensorList,
                           vector: TensorList) -> TensorList:
  """H v for the Hessian H of `loss` at `params`, by double backprop."""
  params = [tf.convert_to_tensor(p) for p in params]
  with tf.GradientTape() as outer:
    outer.watch(params)
    with tf.GradientTape() as inner:
      inner.watch(params)
      value = loss(params)
    grads = inner.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return outer.gradient(grads, params, output_gradients=vector,
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not (value >= 0 if allow_zero else value > 0) or value == float("inf")):
    raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, "
                     f"got {value!r}")
  return float(value)


def proximal_solve(support_loss: Callable[[TensorList], tf.Tensor], theta: TensorList,
                   lam: float, lr: float, steps: int) -> TensorList:
  """`steps` of gradient descent on L(phi) + lam / 2 ||phi - theta||^2 from phi = theta.

  Runs in a `tf.while_loop` with the gradient of theta stopped: nothing of the trajectory is
  kept for the backward pass.
  """
  theta = [tf.stop_gradient(tf.convert_to_tensor(t)) for t in theta]
  if steps == 0:
    return theta

  def body(k, phi):
    with tf.GradientTape() as tape:
      tape.watch(phi)
      value = support_loss(phi)
    grads = tape.gradient(value, phi, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    lam_t = [maml_lib.to_dtype(lam, p.dtype) for p in phi]
    lr_t = [maml_lib.to_dtype(lr, p.dtype) for p in phi]
    return k + 1, [p - a * (g + l * (p - t))
                   for p, g, t, a, l in zip(phi, grads, theta, lr_t, lam_t)]

  _, phi = tf.while_loop(lambda k, _: k < steps, body, (tf.constant(0), theta),
                         maximum_iterations=steps)
  return [tf.stop_gradient(p) for p in phi]


def _global_norm(tensors: TensorList) -> tf.Tensor:
  return tf.sqrt(_dot(tensors, tensors))


def proximal_solve_newton(support_loss: Callable[[TensorList], tf.Tensor], theta: TensorList,
                          lam: float, lr: float, steps: int, cg_steps: int = 10,
                          tol: float = 1e-4, backtracks: int = 10,
                          return_residual: bool = False):
  """`steps` damped Newton-CG steps on F(phi) = L(phi) + lam / 2 ||phi - theta||^2 from theta.

  Each step solves (H + lam I) d = -grad F(phi) by `cg_steps` of truncated conjugate gradient
  (Hessian-vector products; at a direction of non-positive curvature CG stops, and if that is
  its first direction d is the steepest-descent direction -grad F), then takes the largest of
  `lr`, `lr / 2`, ..., `lr / 2^(backtracks - 1)` times d that decreases F by the Armijo amount
  (1e-4 x step x |grad F . d|); if none does, phi stays. So F never increases: no divergence,
  whatever the curvature. Once ||grad F(phi)|| <= `tol` x ||grad F(theta)|| (the tolerance,
  relative to the start) phi stops changing. With `lr` = 1 this is Newton's method with a
  backtracking line search: on a quadratic L one step reaches the solution (given enough CG
  steps), and near a minimum with positive-definite H + lam I convergence is quadratic.

  Runs in a `tf.while_loop` with the gradient of theta stopped (nothing kept for backprop).

  Args:
    support_loss: L as a function of the parameter list.
    theta: the point of the proximal term and the start.
    lam: proximal strength (> 0).
    lr: the first (largest) step along the Newton direction, usually 1.
    steps: Newton steps (>= 0).
    cg_steps: CG iterations per Newton step (>= 1).
    tol: relative gradient-norm tolerance (>= 0).
    backtracks: step sizes tried per Newton step (>= 1).
    return_residual: also return ||grad F(phi)|| / ||grad F(theta)|| at the end.

  Returns:
    phi (a list like `theta`), and with `return_residual` the relative residual (a scalar).
  """
  theta = [tf.stop_gradient(tf.convert_to_tensor(t)) for t in theta]
  dtype = theta[0].dtype
  lam_t = maml_lib.to_dtype(lam, dtype)

  def objective(phi):
    return support_loss(phi) + 0.5 * lam_t * _dot([p - t for p, t in zip(phi, theta)],
                                                   [p - t for p, t in zip(phi, theta)])

  def gradient(phi):
    with tf.GradientTape() as tape:
      tape.watch(phi)
      value = objective(phi)
    return value, tape.gradient(value, phi, unconnected_gradients=tf.UnconnectedGradients.ZERO)

  def matvec(phi):
    def apply(v):
      hv = hessian_vector_product(support_loss, phi, v)
      return [h + lam_t * x for h, x in zip(hv, v)]
    return apply

  _, grad0 = gradient(theta)
  norm0 = _global_norm(grad0)
  threshold = maml_lib.to_dtype(tol, dtype) * norm0
  scales = [maml_lib.to_dtype(lr * 0.5 ** j, dtype) for j in range(backtracks)]

  def body(k, phi):
    value, grads = gradient(phi)
    converged = _global_norm(grads) <= threshold
    direction = conjugate_gradient(matvec(phi), [-g for g in grads], cg_steps)
    slope = _dot(grads, direction)
    # A direction that is not a descent direction (rounding): use steepest descent.
    descent = slope < 0.
    direction = [tf.where(descent, d, -g) for d, g in zip(direction, grads)]
    slope = tf.where(descent, slope, -_dot(grads, grads))
    chosen = tf.zeros([], dtype)
    # From the smallest step to the largest: the last one accepted is the largest.
    for scale in reversed(scales):
      candidate = [p + scale * d for p, d in zip(phi, direction)]
      trial = objective(candidate)
      ok = tf.math.is_finite(trial) & (trial <= value + 1e-4 * scale * slope)
      chosen = tf.where(ok, scale, chosen)
    chosen = tf.where(converged, tf.zeros_like(chosen), chosen)
    return k + 1, [p + chosen * d for p, d in zip(phi, direction)]

  phi = theta
  if steps:
    _, phi = tf.while_loop(lambda k, _: k < steps, body, (tf.constant(0), theta),
                           maximum_iterations=steps)
  phi = [tf.stop_gradient(p) for p in phi]
  if not return_residual:
    return phi
  _, grads = gradient(phi)
  return phi, tf.math.divide_no_nan(_global_norm(grads), norm0)


SOLVERS = ("gd", "newton")


def solve_proximal(support_loss: Callable[[TensorList], tf.Tensor], theta: TensorList,
                   lam: float, lr: float, steps: int, solver: str = "gd",
                   newton_cg_steps: int = 10, tol: float = 1e-4) -> TensorList:
  """The inner solve of `solver`: "gd" (`proximal_solve`) or "newton" (`proximal_solve_newton`,
  `newton_cg_steps` CG iterations per step, relative tolerance `tol`)."""
  if solver == "newton":
    return proximal_solve_newton(support_loss, theta, lam, lr, steps, newton_cg_steps, tol)
  return proximal_solve(support_loss, theta, lam, lr, steps)


def _implicit_matvec(support_loss: Callable[[TensorList], tf.Tensor], phi: TensorList,
                     lam: float, damping: float) -> Callable[[TensorList], TensorList]:
  """x -> (I (1 + damping) + H / lam) x, H the Hessian of `support_loss` at `phi`."""
  def matvec(x):
    hx = hessian_vector_product(support_loss, phi, x)
    return [(1. + maml_lib.to_dtype(damping, xi.dtype)) * xi
            + hxi / maml_lib.to_dtype(lam, xi.dtype) for xi, hxi in zip(x, hx)]
  return matvec


def implicit_meta_gradient(support_loss: Callable[[TensorList], tf.Tensor],
                           query_loss: Callable[[TensorList], tf.Tensor], theta: TensorList,
                           lam: float, lr: float, steps: int, cg_steps: int,
                           damping: float = 0.0, solver: str = "gd",
                           newton_cg_steps: int = 10, tol: float = 1e-4):
  """The query loss at phi*(theta) and its implicit meta-gradient, without `tf.custom_gradient`.

  Same numbers as differentiating `query_loss(implicit_adapt(...))`, but computed forward
  (query gradient at phi*, then CG), so it works inside `tf.vectorized_map`, whose vectorized
  ops drop a `tf.custom_gradient` (the meta-gradient through `implicit_adapt` there is zero).

  `solver`, `newton_cg_steps`, `tol`: the inner solve (`solve_proximal`).

  Returns:
    `(query_loss(phi*), [meta-gradient per entry of theta])`, no gradient flowing back.
  """
  phi = solve_proximal(support_loss, theta, lam, lr, steps, solver, newton_cg_steps, tol)
  with tf.GradientTape() as tape:
    tape.watch(phi)
    value = query_loss(phi)
  v = tape.gradient(value, phi, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  grads = conjugate_gradient(_implicit_matvec(support_loss, phi, lam, damping), v, cg_steps)
  return tf.stop_gradient(value), [tf.stop_gradient(g) for g in grads]


def implicit_adapt(support_loss: Callable[[TensorList], tf.Tensor], theta: TensorList,
                   lam: float, lr: float, steps: int, cg_steps: int,
                   damping: float = 0.0, solver: str = "gd", newton_cg_steps: int = 10,
                   tol: float = 1e-4) -> TensorList:
  """phi*(theta) whose gradient is the implicit one, (I (1 + damping) + H / lam)^-1 v.

  Args:
    support_loss: the inner loss as a function of the parameter list (closes over its data).
    theta: the meta-parameters (tensors; gradients flow back to whatever they come from).
    lam: proximal regularisation strength (> 0).
    lr: inner gradient-descent step size.
    steps: inner steps (>= 0).
    cg_steps: conjugate-gradient iterations of the backward pass (>= 1).
    damping: added to the identity's coefficient in the backward system (>= 0).
    solver, newton_cg_steps, tol: the inner solve (`solve_proximal`).

  Returns:
    The approximate minimiser phi*, differentiable in `theta` by the implicit gradient.
  """
  theta = [tf.convert_to_tensor(t) for t in theta]

  @tf.custom_gradient
  def solve(*theta_args):
    phi = solve_proximal(support_loss, list(theta_args), lam, lr, steps, solver,
                         newton_cg_steps, tol)

    def grad(*upstream):
      v = [tf.zeros_like(p) if u is None else u for p, u in zip(phi, upstream)]
      return conjugate_gradient(_implicit_matvec(support_loss, phi, lam, damping), v, cg_steps)

    return [tf.identity(p) for p in phi], grad

  return list(solve(*theta))


class IMAML(maml_lib.MAML):
  """Implicit MAML (Rajeswaran et al. 2019) with `l2l.MAML`'s interface.

  Args:
    module: a built Sonnet module; its trainable variables are theta.
    inner_lr: step size of the inner gradient descent on the proximal objective ("gd"), or the
      largest step along the Newton direction ("newton", usually 1).
    inner_steps: default number of inner steps per `adapt` (gradient or Newton steps).
    lam: proximal regularisation strength lambda (> 0): larger keeps phi* closer to theta.
    cg_steps: conjugate-gradient iterations for the meta-gradient.
    damping: extra weight on the identity in the CG system (>= 0).
    solver: the inner solver: "gd" (fixed-step gradient descent, `proximal_solve`) or "newton"
      (damped Newton-CG with a backtracking line search, `proximal_solve_newton`: F never
      increases, and it stops at the relative tolerance `tol`).
    newton_cg_steps: CG iterations per Newton step (>= 1).
    tol: the Newton solver's relative gradient-norm tolerance (>= 0).
    allow_unused: parameters the support loss does not use get zero gradients (else error).
    name: module name.

  Every trainable parameter adapts (no `adapt_names`); no inner optimizer other than gradient
  descent; modules with buffers (BatchNorm statistics) are not supported.
  """

  def __init__(self, module: tf.Module, inner_lr: float = 0.01, inner_steps: int = 10,
               lam: float = 1.0, cg_steps: int = 5, damping: float = 0.0,
               solver: str = "gd", newton_cg_steps: int = 10, tol: float = 1e-4,
               allow_unused: bool = False, name: Optional[str] = None):
    super().__init__(module, inner_lr, inner_steps, first_order=False, adapt_names=None,
                     allow_unused=allow_unused, name=name)
    self.lam = _check_positive("lam", lam)
    self.damping = _check_positive("damping", damping, allow_zero=True)
    if not isinstance(cg_steps, int) or isinstance(cg_steps, bool) or cg_steps < 1:
      raise ValueError(f"cg_steps must be a positive integer, got {cg_steps!r}")
    self.cg_steps = cg_steps
    if solver not in SOLVERS:
      raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    self.solver = solver
    if (not isinstance(newton_cg_steps, int) or isinstance(newton_cg_steps, bool)
        or newton_cg_steps < 1):
      raise ValueError(f"newton_cg_steps must be a positive integer, got {newton_cg_steps!r}")
    self.newton_cg_steps = newton_cg_steps
    self.tol = _check_positive("tol", tol, allow_zero=True)
    if functional.named_buffers(module):
      raise ValueError(f"IMAML does not support modules with buffers (BatchNorm statistics); "
                       f"module {module.name!r} has {list(functional.named_buffers(module))}")

  def clone(self) -> "ImplicitLearner":
    return ImplicitLearner(self)

  def task_gradients(self, support_loss: Callable[[Forward], tf.Tensor],
                     query_loss: Callable[[Forward], tf.Tensor],
                     steps: Optional[int] = None):
    """One task's query loss after adaptation and its implicit meta-gradient, computed forward.

    The same meta-gradient as differentiating `query_loss(clone().adapt(support_loss))`, but
    usable inside `tf.vectorized_map` (see `implicit_meta_gradient`); `MetaTrainer` uses it.

    Returns:
      `(query loss, {parameter name: meta-gradient})`.
    """
    steps = self.inner_steps if steps is None else maml_lib.check_steps(steps, "steps")
    params = functional.named_parameters(self.module)
    names = list(params)

    def at(loss: Callable[[Forward], tf.Tensor]) -> Callable[[Sequence[tf.Tensor]], tf.Tensor]:
      return lambda values: loss(lambda *a, **k: functional.call(
          self.module, dict(zip(names, values)), *a, **k))

    theta = [tf.convert_to_tensor(params[n]) for n in names]
    if not self.allow_unused:
      maml_lib.gradients(dict(zip(names, theta)), lambda p: at(support_loss)(
          [p[n] for n in names]), names)
    value, grads = implicit_meta_gradient(at(support_loss), at(query_loss), theta, self.lam,
                                          self.inner_lr, steps, self.cg_steps, self.damping,
                                          self.solver, self.newton_cg_steps, self.tol)
    return value, dict(zip(names, grads))


class ImplicitLearner(maml_lib.Learner):
  """A task's copy of an `IMAML` module's parameters, adapted by the proximal inner problem."""

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return functional.call(self.maml.module, self.params, *args, **kwargs)

  def adapt(self, support_loss: Callable[[Forward], tf.Tensor],
            steps: Optional[int] = None) -> "ImplicitLearner":
    """Replaces `params` by the proximal solution around them, `steps` (default
    `inner_steps`) steps of gradient descent; its gradient is the implicit one."""
    maml = self.maml
    steps = maml.inner_steps if steps is None else maml_lib.check_steps(steps, "steps")
    names = list(self.params)
    module = maml.module

    def loss(values: Sequence[tf.Tensor]) -> tf.Tensor:
      return support_loss(lambda *a, **k: functional.call(module, dict(zip(names, values)),
                                                          *a, **k))

    theta = [tf.convert_to_tensor(self.params[n]) for n in names]
    if not maml.allow_unused:
      maml_lib.gradients(dict(zip(names, theta)), lambda p: loss([p[n] for n in names]), names)
    phi = implicit_adapt(loss, theta, maml.lam, maml.inner_lr, steps, maml.cg_steps,
                         maml.damping, maml.solver, maml.newton_cg_steps, maml.tol)
    self.params = dict(zip(names, phi))
    return self


__all__ = ["IMAML", "ImplicitLearner", "conjugate_gradient", "hessian_vector_product",
           "implicit_adapt", "implicit_meta_gradient", "proximal_solve",
           "proximal_solve_newton", "solve_proximal"]
