"""Asynchronous PES: workers estimate, a coordinator applies (`ParameterServerStrategy`).

The TensorFlow form of learned_optimization's learner / workers. The nets' weights theta and
Adam's moments live on the parameter servers; a `ClusterCoordinator` keeps `num_chains`
truncation chains (each its own problem-instance stream, with the PES state of its particles)
and schedules their truncations on whichever worker is free:

    strategy = l2l.distribute.create_strategy("parameter_server")   # TF_CONFIG: chief, ps, workers
    trainer = AsyncPES(strategy, net_configs, make_problem, len_unroll=10, num_steps=100)
    trainer.train(meta_steps=500)       # applies 500 estimates with Adam as they arrive

A truncation (`truncation`) is a pure function of its inputs: it reads theta (and its
version) from the parameter servers, perturbs it with eps drawn from a stateless seed, unrolls
every antithetic particle K steps from the chain's state, and returns the PES estimate
xi (L+ - L-) / (2 std^2), the particles' new states and xi + eps. Nothing is written on the
worker, so when the coordinator re-runs a closure (its worker died or was preempted) the re-run
starts from the same chain state and seed; the coordinator commits a chain's new state only
when a result arrives, once per truncation. Per-particle state is therefore never corrupted
by a re-run, at the cost of sending it to the worker and back each truncation (small next to the
unroll: 2 N copies of the optimizee's parameters and rule states).

An estimate computed from theta of version v is applied at version V >= v (the number of Adam
steps taken so far). When V - v exceeds `max_staleness` it is dropped (counted in `dropped`);
the chain's state still advances (its particles did run with that theta). A non-finite
estimate skips its Adam step (`skipped_steps`).
"""

import contextlib
import queue
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np
import sonnet as snt
import tensorflow as tf

from l2l import capture
from l2l import checks
from l2l import es
from l2l import meta_optimizer as meta_optimizer_lib
from l2l import unroll as unroll_lib


@contextlib.contextmanager
def substituted(modules: Sequence[tf.Module], replacements: Dict[int, tf.Tensor]):
  """Swaps variables (by id) for tensors wherever the modules or their submodules hold them,
  directly or in a list or tuple attribute (`nets.DeepLSTMCore.weights`), while the context
  is open; `functional.call` for modules whose variables sit in lists.

  Raises:
    ValueError: a variable of `replacements` is held nowhere the swap can reach.
  """
  saved, found = [], set()
  try:
    for module in modules:
      for owner in (module,) + tuple(module.submodules):
        for attr, value in list(vars(owner).items()):
          if isinstance(value, tf.Variable) and id(value) in replacements:
            new = replacements[id(value)]
            found.add(id(value))
          elif (isinstance(value, (list, tuple)) and
                any(isinstance(x, tf.Variable) and id(x) in replacements for x in value)):
            found.update(id(x) for x in value if isinstance(x, tf.Variable))
            new = [replacements.get(id(x), x) if isinstance(x, tf.Variable) else x
                   for x in value]
            new = tuple(new) if isinstance(value, tuple) else new
          else:
            continue
          saved.append((owner, attr, value))
          object.__setattr__(owner, attr, new)
    if set(replacements) - found:
      raise ValueError(f"{len(set(replacements) - found)} variables of the nets are not "
                       "attributes (or in list attributes) of their modules: cannot substitute")
    yield
  finally:
    for owner, attr, original in reversed(saved):
      object.__setattr__(owner, attr, original)


# Errors of a fetch whose worker went away (retried, at most _MAX_RETRIES times in a row per
# chain; anything else, e.g. a failing parameter server after TensorFlow's own retries, ends
# the run).
_LOST_RESULT_ERRORS = (tf.errors.UnavailableError, tf.errors.CancelledError,
                       tf.errors.AbortedError)
_MAX_RETRIES = 5
_check_positive = meta_optimizer_lib._check_positive  # pylint: disable=protected-access


class Chain(NamedTuple):
  """One truncation chain on the coordinator: a problem instance and its particles' state."""
  states: Any                 # UnrollState of the 2 N particles (leading axis)
  xi: tf.Tensor               # [N, D] accumulated perturbations
  constants: List[tf.Tensor]  # the instance's problem constants
  truncation: int             # truncations done on this instance
  instance: int               # instances started on this chain


class Result(NamedTuple):
  """What a truncation returns to the coordinator."""
  gradient: tf.Tensor     # [D] PES estimate (mean over pairs)
  meta_losses: tf.Tensor  # [2 N]
  losses: tf.Tensor       # [K + 1] mean over particles
  states: Any             # the particles' states after the truncation
  xi: tf.Tensor           # [N, D]
  version: tf.Tensor      # theta's version the estimate was computed at


class AsyncPES(tf.Module):
  """PES meta-training of a `MetaOptimizer` by asynchronous workers (see the module docstring).

  Args:
    strategy: a `tf.distribute.experimental.ParameterServerStrategy`, or None: the truncations
      run in this process (the same code without a cluster; for tests and references).
    meta_optimizer: the nets, created under `strategy.scope()` (their variables on the
      parameter servers).
    make_problem: `seed -> make_loss`: a problem family; chain c draws its instances from
      `make_problem(seeds[c])` (one instance after another from its generator).
    seeds: one seed per chain (their number is the number of chains).
    len_unroll: steps K per truncation; num_steps: the horizon of an instance (a multiple of K).
    num_particles, std, objective, net_assignments, max_grad_norm: as `l2l.PESMinimize`.
    learning_rate: Adam's on theta.
    max_staleness: the largest version gap at which an estimate is still applied.
    seed: seed of the perturbations (truncation t of chain c uses the stateless seed
      (seed, c, instance, t)).

  Raises:
    ValueError: bad sizes, or `num_steps` not a multiple of `len_unroll`.
  """

  def __init__(self, strategy: Optional[tf.distribute.Strategy],
               meta_optimizer: meta_optimizer_lib.MetaOptimizer,
               make_problem: Callable[[int], capture.MakeLoss], seeds: Sequence[int],
               len_unroll: int, num_steps: int, num_particles: int = 8, std: float = 0.01,
               learning_rate: float = 1e-3,
               net_assignments: Optional[meta_optimizer_lib.NetAssignments] = None,
               objective: str = "sum", max_grad_norm: Optional[float] = None,
               max_staleness: int = 4, seed: int = 0):
    super().__init__(name="async_pes")
    checks.positive_int("len_unroll", len_unroll)
    checks.positive_int("num_steps", num_steps)
    checks.positive_int("num_particles", num_particles)
    if num_steps % len_unroll:
      raise ValueError(f"num_steps ({num_steps}) must be a multiple of len_unroll "
                       f"({len_unroll})")
    if not seeds:
      raise ValueError("seeds must give at least one chain")
    if isinstance(max_staleness, bool) or not isinstance(max_staleness, int) or max_staleness < 0:
      raise ValueError(f"max_staleness must be an int >= 0, got {max_staleness!r}")
    if objective not in unroll_lib.OBJECTIVES:
      raise ValueError(f"objective must be one of {unroll_lib.OBJECTIVES}, got {objective!r}")
    self.strategy = strategy
    self.coordinator = (None if strategy is None else
                        tf.distribute.experimental.coordinator.ClusterCoordinator(strategy))
    self.meta_optimizer = meta_optimizer
    self.len_unroll, self.num_steps = len_unroll, num_steps
    self.num_particles = num_particles
    self.std = es._check_std(std)  # pylint: disable=protected-access
    self.objective = objective
    self.max_staleness = max_staleness
    self.max_grad_norm = (None if max_grad_norm is None else
                          _check_positive("max_grad_norm", max_grad_norm))
    self.seed = int(seed)
    # One problem per chain (its instance stream); the first also traces the loss.
    self._problems = [capture.Problem(make_problem(s)) for s in seeds]
    self.problem = self._problems[0]
    self._groups, self._theta, self._sizes = es.net_groups(meta_optimizer, self.problem,
                                                           net_assignments, "AsyncPES")
    self.num_weights = sum(self._sizes)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:  # Adam's moments and the counters beside theta, on the parameter servers.
      self.learning_rate = tf.Variable(_check_positive("learning_rate", learning_rate),
                                       trainable=False, name="learning_rate")
      self.optimizer = snt.optimizers.Adam(self.learning_rate)
      self.optimizer._initialize(self._theta)  # pylint: disable=protected-access
      self.version = tf.Variable(0, dtype=tf.int64, trainable=False, name="version")
      self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
      self.dropped = tf.Variable(0, dtype=tf.int64, trainable=False, name="dropped")
    self.chains = [self._new_chain(c, 0) for c in range(len(seeds))]
    self.lost = 0  # Results lost with their worker (and recomputed).
    self._remote = tf.function(self._remote_truncation, autograph=False)
    self._apply = tf.function(self._apply_impl, autograph=False)

  # The worker side: a pure function of its arguments (and theta).

  def _split(self, flat: tf.Tensor) -> List[tf.Tensor]:
    return [tf.reshape(part, v.shape)
            for part, v in zip(tf.split(flat, self._sizes), self._theta)]

  @contextlib.contextmanager
  def _nets_at(self, flat: tf.Tensor):
    """The nets compute with `flat` instead of their variables (nothing is assigned)."""
    with substituted(list(self.meta_optimizer.nets.values()),
                     dict(zip((id(v) for v in self._theta), self._split(flat)))):
      yield

  def truncation(self, theta: Sequence[tf.Tensor], eps: tf.Tensor, states: Any, xi: tf.Tensor,
                 constants: Sequence[tf.Tensor]):
    """One PES truncation of every particle: `(gradient, meta_losses, losses, states, xi)`.

    Pure: theta (the nets' weights, in `meta_optimizer.trainable_variables` order), the
    perturbations eps [N, D], the particles' states [2 N, ...], xi [N, D] and the instance's
    constants in; the estimate and the new states out. `l2l.PESMinimize.estimate` with the
    same eps gives the same estimate (tests/async_pes_test.py).
    """
    n = self.num_particles
    flat = tf.concat([tf.reshape(t, [-1]) for t in theta], axis=0)
    thetas = tf.concat([flat[None] + eps, flat[None] - eps], axis=0)
    constants = [tf.convert_to_tensor(c) for c in constants]

    def particle(args):
      particle_theta, state = args
      with self._nets_at(particle_theta):
        result = unroll_lib.unroll(lambda p: self.problem.loss(p, constants), self._groups,
                                   state, self.len_unroll, False, None, None, self.objective)
      return result.meta_loss, result.losses, result.state

    signature = (tf.TensorSpec([], tf.float32), tf.TensorSpec([self.len_unroll + 1], tf.float32),
                 tf.nest.map_structure(lambda s: tf.TensorSpec(s.shape[1:], s.dtype), states))
    meta_losses, losses, new_states = tf.map_fn(particle, (thetas, states),
                                                fn_output_signature=signature,
                                                parallel_iterations=1)
    weights = xi + eps
    per_pair = es.antithetic_gradient(weights, meta_losses[:n], meta_losses[n:], self.std)
    return (tf.reduce_mean(per_pair, axis=0), meta_losses, tf.reduce_mean(losses, axis=0),
            new_states, weights)

  def _remote_truncation(self, seed: tf.Tensor, states: Any, xi: tf.Tensor,
                         constants: Sequence[tf.Tensor]) -> Result:
    version = self.version.read_value()
    with tf.control_dependencies([version]):  # theta is at least as new as its version.
      theta = [v.read_value() for v in self._theta]
    eps = self.std * tf.random.stateless_normal([self.num_particles, self.num_weights], seed)
    gradient, meta_losses, losses, new_states, xi = self.truncation(theta, eps, states, xi,
                                                                    constants)
    return Result(gradient, meta_losses, losses, new_states, xi, version)

  # The coordinator side.

  def _new_chain(self, index: int, instance: int) -> Chain:
    params, constants = self._problems[index].initial_values()
    state = unroll_lib.initial_state(self._groups, params, self.num_steps)
    states = tf.nest.map_structure(lambda t: tf.stack([t] * (2 * self.num_particles)), state)
    return Chain(states, tf.zeros([self.num_particles, self.num_weights]), list(constants), 0,
                 instance)

  def _seed(self, index: int, chain: Chain) -> tf.Tensor:
    mixed = np.random.SeedSequence([self.seed, index, chain.instance, chain.truncation])
    return tf.constant(mixed.generate_state(2, np.uint32).astype(np.int64) >> 1, tf.int64)

  def _schedule(self, index: int):
    chain = self.chains[index]
    args = (self._seed(index, chain), chain.states, chain.xi, chain.constants)
    if self.coordinator is None:
      return self._remote(*args)
    return self.coordinator.schedule(self._remote, args=args)

  def _apply_impl(self, gradient: tf.Tensor, meta_losses: tf.Tensor) -> tf.Tensor:
    grads = self._split(gradient)
    if self.max_grad_norm is not None:
      grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm)
    applied = meta_optimizer_lib.apply_if_finite(
        [meta_losses, gradient], lambda: self.optimizer.apply(grads, self._theta),
        self.skipped_steps)
    with tf.control_dependencies([applied]):
      return self.version.assign_add(1)

  def _commit(self, index: int, result: Result) -> None:
    chain = self.chains[index]
    truncation = chain.truncation + 1
    if truncation * self.len_unroll >= self.num_steps:
      self.chains[index] = self._new_chain(index, chain.instance + 1)
    else:
      self.chains[index] = Chain(result.states, result.xi, chain.constants, truncation,
                                 chain.instance)

  def train(self, meta_steps: int, callback: Optional[Callable[[int, Dict[str, Any]], Any]] = None
            ) -> Dict[str, Any]:
    """Applies `meta_steps` estimates (Adam steps, including skipped non-finite ones).

    Every chain always has one truncation scheduled; results are taken as they arrive (one
    waiting thread per scheduled truncation), applied unless staler than `max_staleness`, and
    their chain's next truncation scheduled. `callback(step, info)` runs after each applied
    step (info: meta-loss, staleness, chain); when it returns True no more truncations are
    scheduled (a stop request). Truncations still running at the end are waited for and their
    chains advanced, but not applied.

    Returns:
      `{"meta_steps", "estimates", "dropped", "lost" (results lost with their worker and
      recomputed), "seconds", "staleness": mean applied staleness}`.

    Raises:
      A fetch's error other than a lost worker (or one chain losing its result more than
      `_MAX_RETRIES` times in a row), e.g. a parameter server that failed.
    """
    checks.positive_int("meta_steps", meta_steps)
    arrived: "queue.Queue" = queue.Queue()

    def launch(index: int) -> None:
      remote = self._schedule(index)
      if self.coordinator is None:
        arrived.put((index, tf.nest.map_structure(lambda t: t.numpy(), remote), None))
        return

      def wait():
        try:
          arrived.put((index, remote.fetch(), None))
        except Exception as e:  # pylint: disable=broad-except
          arrived.put((index, None, e))
      threading.Thread(target=wait, daemon=True).start()

    start = time.perf_counter()
    for index in range(len(self.chains)):
      launch(index)
    in_flight = len(self.chains)
    applied = estimates = 0
    staleness_sum = 0
    stopped = False
    failures = [0] * len(self.chains)
    while in_flight:
      index, fetched, error = arrived.get()
      in_flight -= 1
      if error is not None:
        # The coordinator re-runs a closure whose worker fails while running it, but a result
        # still held by a worker that dies before it is fetched is lost: run that truncation
        # again from the chain's (uncommitted) state. A worker, not the parameter servers.
        lost = isinstance(error, _LOST_RESULT_ERRORS)
        if lost and (applied >= meta_steps or stopped):
          continue  # Draining: nothing more to apply.
        failures[index] += 1
        if not lost or failures[index] > _MAX_RETRIES:
          raise error
        logging.warning("chain %d: the result of a truncation was lost (%s: %s); running it "
                        "again", index, type(error).__name__,
                        str(error).strip().splitlines()[0][:200] if str(error).strip() else "")
        self.lost += 1
        launch(index)
        in_flight += 1
        continue
      failures[index] = 0
      result = Result(*fetched)
      estimates += 1
      self._commit(index, tf.nest.map_structure(tf.convert_to_tensor, result))
      if applied >= meta_steps or stopped:
        continue  # Draining: the run has its steps.
      staleness = int(self.version.numpy()) - int(result.version)
      if staleness > self.max_staleness:
        self.dropped.assign_add(1)
      else:
        self._apply(tf.constant(result.gradient), tf.constant(result.meta_losses))
        applied += 1
        staleness_sum += staleness
        if callback is not None:
          stopped = bool(callback(applied, {
              "meta_loss": float(np.mean(result.meta_losses)),
              "final_loss": float(result.losses[-1]), "staleness": staleness,
              "chain": index}))
      if applied < meta_steps and not stopped:
        launch(index)
        in_flight += 1
    seconds = time.perf_counter() - start
    logging.info("async PES: %d estimates in %.1fs (%.2f/s), %d applied, %d dropped as staler "
                 "than %d", estimates, seconds, estimates / seconds, applied,
                 int(self.dropped.numpy()), self.max_staleness)
    return {"meta_steps": applied, "estimates": estimates, "seconds": seconds,
            "dropped": int(self.dropped.numpy()), "lost": self.lost,
            "staleness": staleness_sum / applied if applied else 0.0}
