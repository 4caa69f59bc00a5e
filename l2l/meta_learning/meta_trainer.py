"""`MetaTrainer`: the outer loop of the MAML family over a task sampler.

    trainer = l2l.MetaTrainer(l2l.MAML(model, inner_lr=0.01), snt.optimizers.Adam(1e-3), mse,
                              problems.SinusoidTaskSampler(k_support=10, seed=0))
    history = trainer.fit(num_iterations=1000, meta_batch_size=25)
    trainer.evaluate(held_out_tasks)           # {"loss": mean post-adaptation query loss}

One meta-step adapts a clone of the model to every task of the meta-batch on its support set and
applies the meta-optimizer to the gradient of the mean query loss in the algorithm's trainable
variables (Reptile: to its (theta - theta~) / (lr steps) direction; iMAML: to the task mean of
`IMAML.task_gradients`, its implicit meta-gradient computed forward). Tasks run as one vectorized
computation (`tf.vectorized_map`); the step is a `tf.function`, traced once per task shape.

With a `tf.distribute` strategy (`MetaTrainer(..., strategy=...)`) the meta-batch is split
evenly across the replicas: each computes the mean meta-gradient of its share of the tasks and
the shares are all-reduced (`l2l.distribute`), so the step is the same whatever the number of
replicas. Every worker samples the whole meta-batch from its (identically seeded) sampler and
keeps its own copy of the model, updated with the same all-reduced meta-gradient.

`MetaTrainer(..., rule_optimizer=...)` gives the inner rule's variables (a learned inner
optimizer's weights, Meta-SGD's step sizes) a second optimizer, so that they and the
initialization learn at their own rates.
"""

import dataclasses
import inspect
import time
from typing import Any, Callable, Dict, List, Optional

from absl import logging
import numpy as np
import sonnet as snt
import tensorflow as tf

from l2l import distribute
from l2l.meta_learning import imaml as imaml_lib
from l2l.meta_learning import maml as maml_lib
from l2l import meta_optimizer as meta_optimizer_lib
from problems import tasks as tasks_lib

# `MetaTrainer.evaluate`: a held-out task diverged when its query loss after the inner steps is
# not finite or over this many times its loss before them.
DIVERGED_FACTOR = 10.0

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass
class History:
  """What `fit` records: the meta-loss of every iteration, the periodic evaluations, and the
  iterations (1-based) whose meta-step was skipped for a non-finite meta-loss or meta-gradient
  (`skipped_steps` is their count, a Python int)."""
  meta_losses: List[float] = dataclasses.field(default_factory=list)
  eval_iterations: List[int] = dataclasses.field(default_factory=list)
  eval_results: List[Dict[str, float]] = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  skipped_iterations: List[int] = dataclasses.field(default_factory=list)

  @property
  def skipped_steps(self) -> int:
    return len(self.skipped_iterations)


def _callback_arity(callback: Callable[..., Any]) -> int:
  """2 or 3: how many positional arguments `callback` takes (3 if it accepts a third)."""
  try:
    parameters = inspect.signature(callback).parameters.values()
  except (TypeError, ValueError):  # No signature (some builtins): the documented two.
    return 2
  positional = [p for p in parameters
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  if any(p.kind == p.VAR_POSITIONAL for p in parameters) or len(positional) >= 3:
    return 3
  if len(positional) < 2:
    raise TypeError(f"callback must accept (iteration, loss) or (iteration, loss, history), "
                    f"got a callable with signature {inspect.signature(callback)}")
  return 2


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Fraction of argmax predictions equal to integer labels."""
  predicted = tf.argmax(logits, axis=-1, output_type=labels.dtype)
  return tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))


def mse(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
  return tf.reduce_mean(tf.square(predictions - targets))


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def _optimizer_groups(maml: maml_lib.MAML, meta_optimizer: snt.Optimizer,
                      rule_optimizer: Optional[snt.Optimizer]):
  """[(optimizer, indices into `maml.trainable_variables`)]: the module's variables to
  `meta_optimizer`, the others (the inner rule's) to `rule_optimizer` when there is one."""
  variables = maml.trainable_variables
  everything = list(range(len(variables)))
  if rule_optimizer is None:
    return [(meta_optimizer, everything)]
  module = {v.ref() for v in maml.module.trainable_variables}
  rule = [i for i in everything if variables[i].ref() not in module]
  if not rule:
    raise ValueError(f"rule_optimizer is given but {type(maml).__name__} has no inner-rule "
                     f"variables (a learned inner_optimizer, Meta-SGD's step sizes) for it to "
                     f"step; leave it out")
  return [(meta_optimizer, [i for i in everything if i not in rule]), (rule_optimizer, rule)]


class MetaTrainer:
  """Meta-trains a `MAML` / `MetaSGD` / `ANIL` / `Reptile` on tasks from a sampler.

  Args:
    maml: the algorithm (holds the model and the inner-loop settings).
    meta_optimizer: a Sonnet optimizer (`apply(grads, variables)`), e.g. `snt.optimizers.Adam`.
    loss_fn: `(predictions, targets) -> scalar`, used on support and query sets.
    task_sampler: `sample(num_tasks) -> Task` with a leading task dimension.
    metric_fn: an extra `(predictions, targets) -> scalar` reported by `evaluate` as "metric"
      (e.g. `accuracy`).
    batched: vectorize across the tasks of a meta-batch (else a Python loop in the graph).
    strategy: a `MirroredStrategy` / `MultiWorkerMirroredStrategy` that splits each meta-batch
      across its replicas (`l2l.distribute.create_strategy`; the model and `meta_optimizer`
      created outside its scope); None: one replica.
    rule_optimizer: a second Sonnet optimizer for the inner rule's variables: the algorithm's
      trainable variables that are not its module's (the weights of a learned
      `inner_optimizer`, Meta-SGD's step sizes, learnable hyperparameters), so that they and
      the initialization get their own learning rates (or kinds of optimizer); then
      `meta_optimizer` steps the module's variables only. None: `meta_optimizer` steps all.

  Raises:
    TypeError: `maml` is not an `l2l.MAML`, `meta_optimizer` (or `rule_optimizer`) has no
      `apply`, `task_sampler` (None: only `meta_step` / `evaluate` on given tasks) no
      `sample`, or `loss_fn` / `metric_fn` is not callable.
    ValueError: `rule_optimizer` is given but `maml` has no inner-rule variables.
  """

  def __init__(self, maml: maml_lib.MAML, meta_optimizer: snt.Optimizer, loss_fn: LossFn,
               task_sampler: tasks_lib.TaskSampler, metric_fn: Optional[LossFn] = None,
               batched: bool = True, strategy: Optional[tf.distribute.Strategy] = None,
               rule_optimizer: Optional[snt.Optimizer] = None):
    if not isinstance(maml, maml_lib.MAML):
      raise TypeError(f"maml must be an l2l.MAML (or MetaSGD, ANIL, Reptile), got "
                      f"{type(maml).__name__}")
    for argument, optimizer in (("meta_optimizer", meta_optimizer),
                                ("rule_optimizer", rule_optimizer)):
      if not callable(getattr(optimizer, "apply", None)) and not (
          argument == "rule_optimizer" and optimizer is None):
        raise TypeError(f"{argument} must be a Sonnet optimizer (with apply(grads, "
                        f"variables)), e.g. snt.optimizers.Adam(1e-3), got "
                        f"{type(optimizer).__name__}")
    if task_sampler is not None and not callable(getattr(task_sampler, "sample", None)):
      raise TypeError(f"task_sampler must have a sample(num_tasks) method (e.g. "
                      f"problems.tasks.SinusoidTaskSampler), got {type(task_sampler).__name__}")
    for argument, fn in (("loss_fn", loss_fn), ("metric_fn", metric_fn)):
      if not callable(fn) and not (argument == "metric_fn" and fn is None):
        raise TypeError(f"{argument} must be a function (predictions, targets) -> scalar, got "
                        f"{type(fn).__name__}")
    self.maml = maml
    self.meta_optimizer = meta_optimizer
    self.rule_optimizer = rule_optimizer
    # (optimizer, indices into maml.trainable_variables) per group of variables.
    self._groups = _optimizer_groups(maml, meta_optimizer, rule_optimizer)
    self.loss_fn = loss_fn
    self.task_sampler = task_sampler
    self.metric_fn = metric_fn
    self.batched = batched
    self.strategy = strategy
    # Sonnet's Adam / Momentum / RMSProp create their slots on the first `apply`; inside the
    # step's tf.function that costs a second trace. Create them now when the variables exist.
    variables = maml.trainable_variables
    for optimizer, indices in self._groups:
      initialize = getattr(optimizer, "_initialize", None)
      if callable(initialize) and indices:
        with tf.init_scope():
          initialize([variables[i] for i in indices])
    # Meta-steps skipped for a non-finite meta-loss or meta-gradient, a Python int (the
    # variable is the graph's side of the count).
    self.skipped_steps = 0
    self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
    self._step = tf.function(self._meta_step)
    self._evaluate = tf.function(self._evaluate_batch)

  def _map_tasks(self, fn, tasks: tasks_lib.Task):
    if self.batched:
      return tf.vectorized_map(lambda t: tf.nest.map_structure(tf.identity, fn(t)), tasks)
    results = [fn(tasks_lib.Task(*(a[i] for a in tasks))) for i in range(tasks.support_x.shape[0])]
    return tf.nest.map_structure(lambda *r: tf.stack(r), *results)

  def _adapt(self, task: tasks_lib.Task, steps: Optional[int] = None) -> maml_lib.Learner:
    return self.maml.clone().adapt_on(self.loss_fn, task.support_x, task.support_y, steps)

  def _averaged_task_gradients(self, task_fn, tasks: tasks_lib.Task):
    """Runs `task_fn(task) -> (loss, {name: meta-gradient}, buffers)` on every task; returns the
    mean loss, the mean meta-gradient per trainable variable (zero where absent) and buffers."""
    losses, grads, buffers = self._map_tasks(task_fn, tasks)
    by_name = {k: tf.reduce_mean(g, axis=0) for k, g in grads.items()}
    variables = self.maml.trainable_variables
    names = [maml_lib.functional.variable_name(v) for v in variables]
    grads = [by_name.get(n, tf.zeros_like(v)) for n, v in zip(names, variables)]
    return tf.reduce_mean(losses), grads, buffers

  def _meta_step(self, tasks: tasks_lib.Task) -> tf.Tensor:
    if self.strategy is None:
      loss, grads, buffers = self._meta_gradients(tasks)
    else:
      share = distribute.shard(int(tasks.support_x.shape[0]), self.strategy)
      loss, grads, buffers = distribute.all_reduce_mean(
          self.strategy, lambda replica, t: self._meta_gradients(tf.nest.map_structure(
              lambda a: a[replica * share:(replica + 1) * share], t)), tasks)
    return self._apply(loss, grads, buffers)

  def _meta_gradients(self, tasks: tasks_lib.Task):
    """The mean query loss, meta-gradient and buffers (BatchNorm statistics) over `tasks`."""
    variables = self.maml.trainable_variables
    if isinstance(self.maml, imaml_lib.IMAML):
      def imaml_task(task):
        # Computed forward per task: tf.vectorized_map would drop IMAML.adapt's custom gradient.
        loss, grads = self.maml.task_gradients(
            lambda f: self.loss_fn(f(task.support_x), task.support_y),
            lambda f: self.loss_fn(f(task.query_x), task.query_y))
        return loss, grads, {}  # IMAML has no buffers.
      loss, grads, buffers = self._averaged_task_gradients(imaml_task, tasks)
    elif isinstance(self.maml, maml_lib.Reptile):
      def reptile_task(task):
        learner = self._adapt(task)
        grads = self.maml.reptile_gradients(learner)
        return self.loss_fn(learner(task.query_x), task.query_y), grads, learner.buffers or {}
      loss, grads, buffers = self._averaged_task_gradients(reptile_task, tasks)
    else:
      def task_fn(task):
        learner = self._adapt(task)
        return self.loss_fn(learner(task.query_x), task.query_y), learner.buffers or {}
      with tf.GradientTape() as tape:
        losses, buffers = self._map_tasks(task_fn, tasks)
        loss = tf.reduce_mean(losses)
      grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    buffers = {name: tf.reduce_mean(b, axis=0) for name, b in buffers.items()}
    return loss, grads, buffers

  def _apply(self, loss: tf.Tensor, grads, buffers):
    """Applies the meta-optimizer (and sets the buffers) unless something is not finite."""
    variables = self.maml.trainable_variables

    def apply() -> None:
      for optimizer, indices in self._groups:
        if indices:  # Sonnet's optimizers reject empty lists.
          optimizer.apply([grads[i] for i in indices], [variables[i] for i in indices])
      # Each task's learner updated its own copy of the buffers (BatchNorm statistics) over its
      # inner steps and query forward; the module keeps their mean over tasks. For Sonnet's
      # moving averages (linear in the batch statistics) that is the moving average of the
      # task-averaged statistics.
      for name, variable in maml_lib.functional.named_buffers(self.maml.module).items():
        variable.assign(tf.cast(buffers[name], variable.dtype))

    # A non-finite meta-gradient or loss (e.g. one task's inner loop diverged) skips the whole
    # update: the model, its buffers and the meta-optimizer's state stay as they were.
    applied = meta_optimizer_lib.apply_if_finite([loss, *grads], apply, self._skipped)
    return loss, applied

  def meta_step(self, tasks: tasks_lib.Task) -> float:
    """One meta-update on a batch of tasks; returns the mean post-adaptation query loss.

    A non-finite meta-loss or meta-gradient (NaN in the task data or the loss, a diverging
    inner loop) leaves the model and the meta-optimizer unchanged, adds one to
    `skipped_steps` and logs a warning (the first five times, then every 100th).
    """
    loss, applied = self._step(tf.nest.map_structure(tf.convert_to_tensor, tasks))
    loss = float(loss)
    if not bool(applied):
      self.skipped_steps += 1
      if self.skipped_steps <= 5 or self.skipped_steps % 100 == 0:
        logging.warning("meta-step skipped: non-finite meta-%s (meta-loss %s); %d skipped so "
                        "far (NaN or Inf in the tasks or the loss, or a diverging inner loop?)",
                        "gradient" if np.isfinite(loss) else "loss", loss, self.skipped_steps)
    return loss

  def _evaluate_batch(self, tasks: tasks_lib.Task, steps: int):
    def task_fn(task):
      learner = self._adapt(task, steps)  # Its buffers are dropped: the module is unchanged.
      predictions = learner(task.query_x)
      metric = (self.metric_fn(predictions, task.query_y) if self.metric_fn is not None
                else tf.zeros([]))
      return self.loss_fn(predictions, task.query_y), metric
    return self._map_tasks(task_fn, tasks)

  def evaluate(self, tasks: tasks_lib.Task, steps: Optional[int] = None,
               chunk_size: int = 200) -> Dict[str, float]:
    """Mean (over tasks) query loss, and metric, after `steps` inner steps on each support set.

    No meta-gradient is built: the inner steps run without an outer tape.

    Args:
      tasks: a batch of tasks (leading task dimension).
      steps: inner steps (default: the algorithm's `inner_steps`).
      chunk_size: tasks per compiled call.

    Returns:
      `{"loss": mean, "loss_stderr": standard error over tasks, "diverged": number of tasks
      that diverged[, "metric": mean]}`. A task diverged when its query loss after the inner
      steps is not finite or over DIVERGED_FACTOR (10) times its query loss before them (the
      inner steps blew up: a finite 1e30 would swamp the mean as a nan would). When some tasks
      diverged "loss", "loss_stderr" and "metric" are over the other tasks, and a warning says
      how many; if every task diverged they are nan.
    """
    steps = self.maml.inner_steps if steps is None else maml_lib.check_steps(steps, "steps")
    losses, metrics, before = [], [], []
    for start in range(0, tasks.num_tasks, chunk_size):
      chunk = tf.nest.map_structure(lambda a: tf.convert_to_tensor(a[start:start + chunk_size]),
                                    tasks)
      loss, metric = self._evaluate(chunk, steps)
      losses.append(loss.numpy())
      metrics.append(metric.numpy())
      before.append(self._evaluate(chunk, 0)[0].numpy() if steps else losses[-1])
    losses, metrics, before = (np.concatenate(a) for a in (losses, metrics, before))
    with np.errstate(invalid="ignore"):
      kept = np.isfinite(losses) & ~(losses > DIVERGED_FACTOR * before)
    diverged = int((~kept).sum())
    if diverged:
      logging.warning("%d of %d tasks diverged after %d inner steps (query loss non-finite or "
                      "over %g times the task's loss before them); the mean is over the other "
                      "%d", diverged, len(losses), steps, DIVERGED_FACTOR, int(kept.sum()))
      losses, metrics = losses[kept], metrics[kept]
    mean = lambda a: float(a.mean()) if len(a) else float("nan")
    result = {"loss": mean(losses),
              "loss_stderr": float(losses.std(ddof=1) / np.sqrt(len(losses)))
              if len(losses) > 1 else 0.0,
              "diverged": diverged}
    if self.metric_fn is not None:
      result["metric"] = mean(metrics)
    return result

  def fit(self, num_iterations: int, meta_batch_size: int, eval_every: Optional[int] = None,
          eval_tasks: Optional[tasks_lib.Task] = None,
          callback: Optional[Callable[..., Any]] = None,
          log_every_seconds: float = 30.0) -> History:
    """Runs `num_iterations` meta-steps on fresh tasks from the sampler.

    Progress (iteration, meta-loss, steps per second, elapsed time and ETA, skipped steps) is
    logged at most every `log_every_seconds` and after the last step; skipped (non-finite)
    meta-steps are logged as warnings (see `meta_step`).

    Args:
      num_iterations: meta-steps to run.
      meta_batch_size: tasks per meta-step.
      eval_every: evaluate `eval_tasks` every this many iterations (and after the last).
      eval_tasks: held-out tasks for the periodic evaluation.
      callback: called as `callback(iteration, meta_loss)` after every step (progress,
        checkpoints), or `callback(iteration, meta_loss, history)` if it accepts a third
        positional argument.
      log_every_seconds: seconds between progress lines (0: every step; None: no progress log).

    Returns:
      The `History` (`history.skipped_steps`: the meta-steps of this call that were skipped).

    Raises:
      ValueError / TypeError: bad arguments (a callback that cannot take two arguments).
    """
    maml_lib.check_steps(num_iterations, "num_iterations")
    if self.task_sampler is None:
      raise ValueError("fit samples tasks: give MetaTrainer a task_sampler (it has None)")
    if not isinstance(meta_batch_size, int) or meta_batch_size < 1:
      raise ValueError(f"meta_batch_size must be a positive integer, got {meta_batch_size!r}")
    if self.strategy is not None:
      distribute.shard(meta_batch_size, self.strategy)  # Raises unless it splits evenly.
    if (eval_every is None) != (eval_tasks is None):
      raise ValueError("eval_every and eval_tasks go together: give both or neither")
    arity = _callback_arity(callback) if callback is not None else 0
    history = History()
    start = time.perf_counter()
    last_log = start
    for iteration in range(1, num_iterations + 1):
      skipped_before = self.skipped_steps
      loss = self.meta_step(self.task_sampler.sample(meta_batch_size))
      history.meta_losses.append(loss)
      if self.skipped_steps != skipped_before:
        history.skipped_iterations.append(iteration)
      if eval_every and (iteration % eval_every == 0 or iteration == num_iterations):
        history.eval_iterations.append(iteration)
        history.eval_results.append(self.evaluate(eval_tasks))
      now = time.perf_counter()
      if log_every_seconds is not None and (now - last_log >= log_every_seconds
                                            or iteration == num_iterations):
        last_log = now
        elapsed = now - start
        rate = iteration / elapsed if elapsed > 0 else float("inf")
        logging.info("meta-step %d/%d  meta-loss %.4g  %.1f steps/s  elapsed %s  ETA %s  "
                     "skipped %d", iteration, num_iterations, loss, rate, _duration(elapsed),
                     _duration((num_iterations - iteration) / rate if rate > 0 else 0.),
                     history.skipped_steps)
      if callback is not None:
        callback(*(iteration, loss, history)[:arity])
    history.seconds = time.perf_counter() - start
    return history
