"""Evolution-strategies meta-gradients for learned optimizers: ES and persistent ES (PES).

Backprop through a T-step unroll costs memory linear in T, and truncating it (TBPTT) biases
the meta-gradient towards short-horizon behaviour. ES estimates the gradient of the Gaussian-
smoothed meta-loss E_eps[L(theta + eps)], eps ~ N(0, std^2 I), from losses alone:

    g = 1 / (2 N std^2) sum_i eps_i (L(theta + eps_i) - L(theta - eps_i))     (antithetic pairs)

Run on truncations of K steps that share the unperturbed trajectory's state ("truncated ES"),
it inherits the truncation bias. Persistent ES (Vicol et al. 2021, "Unbiased gradient estimation
in unrolled computation graphs with persistent evolution strategies") keeps, for every particle,
its own optimizee state and the sum xi_i of every perturbation it has been unrolled with since
the last reset, and weights each truncation's loss by xi_i instead of eps_i:

    xi_i += eps_i;   g = 1 / (2 N std^2) sum_i xi_i (L_k(theta + eps_i) - L_k(theta - eps_i))

Summed over the truncations of a horizon, this is an unbiased estimate of the gradient of the
smoothed full-horizon loss (each truncation drawing its own perturbation), at the memory of one
K-step forward unroll per particle and without any backward pass.

    trainer = l2l.PESMinimize(opt, make_loss, len_unroll=10, num_particles=8, std=0.01,
                              learning_rate=1e-3)
    for epoch in range(num_epochs):
      trainer.reset()                      # new problem instance, particles at step 0, xi = 0
      for _ in range(num_steps // 10):
        trainer.step()                     # one truncation for every particle + one Adam step

Particles run one after the other (`tf.map_fn`); each writes its perturbed weights into the
nets' variables, which are restored afterwards.
"""

from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import sonnet as snt
import tensorflow as tf

from l2l import capture
from l2l import checks
from l2l import loss_gradient
from l2l import meta_optimizer as meta_optimizer_lib
from l2l import unroll as unroll_lib


class Estimate(NamedTuple):
  """One truncation's meta-gradient estimate."""
  gradient: tf.Tensor      # [D]: the mean over particle pairs (flat, in the nets' variable order)
  per_pair: tf.Tensor      # [N, D]: each antithetic pair's estimate
  meta_losses: tf.Tensor   # [2 N]: the truncation's meta-loss of every particle (+ then -)


def antithetic_gradient(weights: tf.Tensor, losses_plus: tf.Tensor, losses_minus: tf.Tensor,
                        std: float) -> tf.Tensor:
  """Per-pair estimates `weights_i (L+_i - L-_i) / (2 std^2)`: [N, D] from [N, D], [N], [N].

  `weights` is eps (ES) or the accumulated xi (PES).
  """
  return weights * ((losses_plus - losses_minus) / (2. * std ** 2))[:, None]


def _check_std(std: Any) -> float:
  if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 < std < float("inf"):
    raise ValueError(f"std must be a positive number, got {std!r}")
  return float(std)


def net_groups(meta_optimizer: meta_optimizer_lib.MetaOptimizer, problem: capture.Problem,
               net_assignments: Optional[meta_optimizer_lib.NetAssignments], owner: str
               ) -> Tuple[List[unroll_lib.Group], List[tf.Variable], List[int]]:
  """What an ES estimator perturbs: `(groups of the problem's parameters per net, theta (the nets'
  weights), the weights' sizes)`.

  Raises:
    ValueError: bad `net_assignments`, or nets without trainable weights (`owner` names the
      estimator in the message).
  """
  resolved = meta_optimizer_lib.resolve_assignments(list(meta_optimizer.nets),
                                                    list(problem.param_names), net_assignments)
  groups = [unroll_lib.Group(meta_optimizer.nets[netid], tuple(idx)) for netid, idx in resolved]
  theta = list(meta_optimizer.trainable_variables)
  if not theta:
    raise ValueError(f"{owner} needs nets with trainable variables")
  return groups, theta, [int(v.shape.num_elements()) for v in theta]


class PESMinimize(tf.Module):
  """Meta-trains a `MetaOptimizer`'s nets with PES (or truncated ES) gradients and Adam.

  The drop-in alternative to `MetaMinimize` (`step`, `reset`, `learning_rate`,
  `skipped_steps`, `final_loss`, `losses`; checkpoints with `tf.train.Checkpoint`).

  Args:
    meta_optimizer: the nets to train (their trainable variables are theta).
    make_loss: the optimizee problem.
    len_unroll: steps K per truncation.
    num_particles: antithetic pairs N (2 N unrolls per truncation).
    std: perturbation standard deviation.
    learning_rate: Adam's learning rate on the nets.
    net_assignments: as `MetaOptimizer.meta_loss`.
    objective: "sum", "log" or "log_mean", as `unroll.unroll`.
    max_grad_norm: clip the estimate's global norm.
    persistent: PES (True) or truncated ES (False): every particle restarts each truncation
      from the unperturbed trajectory's state, which is advanced with theta.
    seed: seed of the perturbations.
    use_while_loop: as `unroll.unroll` (default: a while loop when K > 50).
    num_steps: the horizon (steps per problem instance), for rules that read the training
      progress.
    common_random_numbers: the `tf.random.Generator`s the problem draws its minibatches from
      (`training.find_generators(make_loss)`). Every particle starts each truncation from their
      same state, so the antithetic particles see the same batches and their loss difference
      measures the perturbation, not the batch noise (common random numbers); afterwards the
      generators are where one particle left them. Empty: every particle draws its own batches.
    compile_loss: "auto", "graph", "xla" or None, as `MetaLoss` (`l2l.loss_gradient`).
  """

  def __init__(self, meta_optimizer: meta_optimizer_lib.MetaOptimizer,
               make_loss: capture.MakeLoss, len_unroll: int, num_particles: int = 8,
               std: float = 0.01, learning_rate: float = 1e-3,
               net_assignments: Optional[meta_optimizer_lib.NetAssignments] = None,
               objective: str = "sum", max_grad_norm: Optional[float] = None,
               persistent: bool = True, seed: int = 0,
               use_while_loop: Optional[bool] = None, num_steps: Optional[int] = None,
               common_random_numbers: Sequence[tf.random.Generator] = (),
               compile_loss: Optional[str] = None):
    super().__init__(name="pes_minimize")
    loss_gradient.check_mode(compile_loss)
    checks.positive_int("len_unroll", len_unroll)
    checks.positive_int("num_particles", num_particles)
    self.std = _check_std(std)
    if objective not in unroll_lib.OBJECTIVES:
      raise ValueError(f"objective must be one of {unroll_lib.OBJECTIVES}, got {objective!r}")
    self.meta_optimizer = meta_optimizer
    self.len_unroll = len_unroll
    self.num_particles = num_particles
    self.objective = objective
    self.persistent = bool(persistent)
    self.use_while_loop = use_while_loop
    self._common = list(common_random_numbers)
    if not all(isinstance(g, tf.random.Generator) for g in self._common):
      raise TypeError("common_random_numbers must be a sequence of tf.random.Generator")
    self.max_grad_norm = (None if max_grad_norm is None else
                          meta_optimizer_lib._check_positive("max_grad_norm", max_grad_norm))  # pylint: disable=protected-access
    self.problem = make_loss if isinstance(make_loss, capture.Problem) else capture.Problem(
        make_loss)
    self._groups, self._theta, self._sizes = net_groups(meta_optimizer, self.problem,
                                                        net_assignments, "PESMinimize")
    self.num_weights = sum(self._sizes)

    if num_steps is not None:
      checks.positive_int("num_steps", num_steps)
    self.num_steps = num_steps
    params, constants = self.problem.initial_values()
    self.loss_gradient = loss_gradient.LossGradient(self.problem, compile_loss)
    self.loss_gradient.choose(params, constants)
    state = unroll_lib.initial_state(self._groups, params, num_steps)
    self._constants = [tf.Variable(c, trainable=False) for c in constants]
    particles = 1 if not self.persistent else 2 * num_particles
    # Particle states stacked on a leading axis; truncated ES keeps one (the unperturbed one).
    self._states = tf.nest.map_structure(
        lambda t: tf.Variable(tf.stack([t] * particles), trainable=False), state)
    self._xi = tf.Variable(tf.zeros([num_particles, self.num_weights]), trainable=False)
    self._generator = tf.random.Generator.from_seed(seed)
    self._losses = tf.Variable(tf.zeros([len_unroll + 1]), trainable=False)
    self._meta_loss = tf.Variable(0.0, trainable=False)
    self.learning_rate = tf.Variable(float(meta_optimizer_lib._check_positive(  # pylint: disable=protected-access
        "learning_rate", learning_rate)), trainable=False, name="learning_rate")
    self.optimizer = snt.optimizers.Adam(self.learning_rate)
    with tf.init_scope():
      self.optimizer._initialize(self._theta)  # pylint: disable=protected-access
    self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
    self._estimate = tf.function(self._estimate_impl, autograph=False)
    self._step = tf.function(self._step_impl, autograph=False)
    self._reset = tf.function(self._reset_impl, autograph=False)

  # Flat theta.

  def _flat_theta(self) -> tf.Tensor:
    return tf.concat([tf.reshape(v, [-1]) for v in self._theta], axis=0)

  def _split(self, flat: tf.Tensor) -> List[tf.Tensor]:
    return [tf.reshape(part, v.shape)
            for part, v in zip(tf.split(flat, self._sizes), self._theta)]

  def _assign(self, flat: tf.Tensor) -> List[Any]:
    return [v.assign(part) for v, part in zip(self._theta, self._split(flat))]

  # Unrolls.

  def _unroll(self, theta: tf.Tensor, state: unroll_lib.UnrollState,
              constants: Sequence[tf.Tensor], generator_states: Sequence[tf.Tensor] = ()):
    resets = [g.state.assign(s) for g, s in zip(self._common, generator_states)]
    with tf.control_dependencies(self._assign(theta) + resets):
      state = tf.nest.map_structure(tf.identity, state)
    result = unroll_lib.unroll(lambda p: self.problem.loss(p, constants), self._groups, state,
                               self.len_unroll, False, None, self.use_while_loop, self.objective,
                               value_and_grads_fn=self.loss_gradient.value_and_grads_fn(constants))
    return result.meta_loss, result.losses, result.state

  def _run_particles(self, thetas: tf.Tensor, states, constants):
    """Unrolls particle i at thetas[i] from states[i], one after the other."""
    signature = (tf.TensorSpec([], tf.float32), tf.TensorSpec([self.len_unroll + 1], tf.float32),
                 tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape[1:], v.dtype),
                                       self._states))
    generator_states = [tf.identity(g.state) for g in self._common]
    return tf.map_fn(lambda args: self._unroll(args[0], args[1], constants, generator_states),
                     (thetas, states), fn_output_signature=signature, parallel_iterations=1)

  def _estimate_impl(self) -> Estimate:
    n = self.num_particles
    theta = self._flat_theta()
    constants = [tf.convert_to_tensor(c) for c in self._constants]
    eps = self.std * self._generator.normal([n, self.num_weights])
    thetas = tf.concat([theta[None] + eps, theta[None] - eps], axis=0)
    states = tf.nest.map_structure(tf.convert_to_tensor, self._states)
    if not self.persistent:
      states = tf.nest.map_structure(lambda s: tf.repeat(s, 2 * n, axis=0), states)
    meta_losses, losses, new_states = self._run_particles(thetas, states, constants)
    if self.persistent:
      weights = self._xi + eps
      self._xi.assign(weights)
      tf.nest.map_structure(lambda var, value: var.assign(value), self._states, new_states)
    else:
      weights = eps
      # The unperturbed trajectory carries the shared state to the next truncation.
      _, _, mean_state = self._unroll(theta, tf.nest.map_structure(lambda s: s[0], states),
                                      constants)
      tf.nest.map_structure(lambda var, value: var.assign(value[None]), self._states,
                            mean_state)
    with tf.control_dependencies([meta_losses]):
      restore = self._assign(theta)
    with tf.control_dependencies(restore):
      per_pair = antithetic_gradient(weights, meta_losses[:n], meta_losses[n:], self.std)
    self._losses.assign(tf.reduce_mean(losses, axis=0))
    self._meta_loss.assign(tf.reduce_mean(meta_losses))
    return Estimate(tf.reduce_mean(per_pair, axis=0), per_pair, meta_losses)

  def estimate(self) -> Estimate:
    """Runs one truncation of every particle and returns the estimate (nets unchanged)."""
    return self._estimate()

  def _step_impl(self) -> tf.Tensor:
    estimate = self._estimate_impl()
    grads = self._split(estimate.gradient)
    if self.max_grad_norm is not None:
      grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm)
    meta_optimizer_lib.apply_if_finite(
        [estimate.meta_losses, estimate.gradient],
        lambda: self.optimizer.apply(grads, self._theta), self.skipped_steps)
    return tf.reduce_mean(estimate.meta_losses)

  def step(self) -> tf.Tensor:
    """One truncation for every particle and one Adam step; returns the mean meta-loss."""
    return self._step()

  def _reset_impl(self) -> None:
    params, constants = self.problem.initial_values()
    for var, value in zip(self._constants, constants):
      var.assign(value)
    state = unroll_lib.initial_state(self._groups, params, self.num_steps)
    tf.nest.map_structure(
        lambda var, value: var.assign(tf.broadcast_to(value[None], var.shape)), self._states,
        state)
    self._xi.assign(tf.zeros_like(self._xi))

  def reset(self) -> None:
    """Draws a new problem instance; every particle restarts at step 0 with xi = 0."""
    self._reset()

  @property
  def losses(self) -> tf.Tensor:
    """f(x_0..x_K) of the last truncation, averaged over particles."""
    return tf.convert_to_tensor(self._losses)

  @property
  def final_loss(self) -> tf.Tensor:
    return self._losses[-1]

  @property
  def last_meta_loss(self) -> tf.Tensor:
    return tf.convert_to_tensor(self._meta_loss)
