"""Meta-training one learned rule over a task suite with PES (the versatile optimizer's trainer).

    config = SuiteTrainConfig(suite="train", save_path="/tmp/versatile", meta_steps=3000)
    summary = meta_train_suite(config)

Every task of the suite keeps its own persistent-ES particles (`es.PESMinimize`: 2 N optimizee
trajectories at theta +- eps and their accumulated perturbations) on a horizon of `num_steps`
optimizee steps. A meta-step draws `tasks_per_step` tasks, advances each one's particles by one
truncation of `unroll_length` steps, averages their PES estimates (each divided by the
truncation length, so that every task weighs the same with the `log` objective) and takes one
Adam step on the shared rule. A task whose particles reach the horizon starts a new instance.
So tasks are sampled per truncation, and the tasks' trajectories sit at different points of
their horizons, which is what keeps the estimate from seeing only one phase of training
(learned_optimization's truncation-staggered workers do the same).

The meta-objective is the sum over a horizon of the truncations' mean log losses, truncation k
(of K) weighted by `1 + progress_weighting * (2 (k + 1/2) / K - 1)`: late steps count more,
since what the evaluation compares is the final loss. Weighting truncation k's PES term by w_k
is exactly the PES estimate of the weighted sum's gradient. Adam's learning rate on the rule
decays by a cosine over the run (`learning_rate_schedule`), which settles the noisy ES steps
at the end instead of leaving the rule wherever the last steps' noise took it.

**Loss floor relative to tuned Adam** (`adam_floor`, off by default). Before meta-training, Adam is
run on one TUNE instance of every task for the horizon at each rate of `FLOOR_ADAM_RATES`; the
best final loss is the task's reference. In the meta-objective and in validation, a loss
counts as at least `adam_floor` times its task's reference (the value only: the optimizee still
gets its true gradients). Without it, the tasks a rule can drive towards zero loss (a linear
classifier on separable data: 1e-9) dominate a mean of log losses, and the rule learns to
memorise them at the cost of the tasks it loses to Adam on; with it, beating Adam more than
1 / adam_floor times on a task earns nothing more, and the tasks where the rule is behind count.
The references are cached in `<save_path>/adam_reference.json`.

The run is resumable: the rule, Adam's moments, every task's particles and data streams, and the
counters are checkpointed into `<save_path>/train_state/` every `checkpoint_seconds` and when
SIGINT or SIGTERM arrives (the run then stops after the current meta-step and says how to
resume). Validation runs the rule on fixed VALIDATION instances of every task for the whole
horizon; the best rule by mean log10 final loss is saved to `save_path` (never a non-finite one,
never one worse than the untrained rule, which is saved first).
"""

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
import sonnet as snt
import tensorflow as tf

from l2l import checks
from l2l import es
from l2l import evaluation
from l2l import interrupts
from l2l import meta_optimizer as meta_optimizer_lib
from l2l import training

# The versatile rule's default configuration (nets.PerParameterMLP): per-coordinate factors
# bounded to e^+-0.5 (the rule's own default, e^+-2, validated about as well on the training
# tasks but did worse on their deep nets).
VERSATILE_NET = {"net": "PerParameterMLP",
                 "net_options": {"hidden_sizes": [8, 8], "schedule_hidden_size": 8,
                                 "learning_rate": 3e-3, "magnitude_scale": 0.5,
                                 "direction_scale": 0.5}}


# Adam's learning rates for the floor's references (`adam_floor`): half a decade apart.
FLOOR_ADAM_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def adam_references(tasks: Sequence[Any], num_steps: int, seed: int,
                    cache: Optional[str] = None) -> List[float]:
  """Per task, tuned Adam's final loss: the best over `FLOOR_ADAM_RATES` of one TUNE instance
  run for `num_steps` steps. Read from / written to the JSON file `cache` (keyed by the tasks,
  the horizon and the seed) when given."""
  key = {"tasks": [task.name for task in tasks], "num_steps": num_steps, "seed": seed,
         "rates": list(FLOOR_ADAM_RATES)}
  if cache and os.path.exists(cache):
    with open(cache) as f:
      saved = json.load(f)
    if saved.get("key") == key:
      return [float(x) for x in saved["references"]]
  tune_seed = evaluation.instance_seed(seed, evaluation.TUNE)
  references = []
  for i, task in enumerate(tasks):
    best = math.inf
    for lr in FLOOR_ADAM_RATES:
      run = evaluation.hand_designed("Adam", lr).meta_loss(
          task.make_problem(tune_seed + 10 * i), num_steps, use_while_loop=True,
          num_steps=num_steps)
      value = float(final_loss(evaluation.run_instances(run, 1).losses)[0])
      if math.isfinite(value):
        best = min(best, value)
    if not math.isfinite(best):
      raise ValueError(f"adam_floor: Adam diverged on task {task.name} at every rate of "
                       f"{FLOOR_ADAM_RATES}")
    references.append(best)
    logging.info("tuned Adam's final loss on %s: %.4g", task.name, best)
  if cache:
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, "w") as f:
      json.dump({"key": key, "references": references}, f, indent=1)
  return references


def floored(make_loss: Callable[[], tf.Tensor], floor: float) -> Callable[[], tf.Tensor]:
  """`make_loss` whose value is at least `floor` and whose gradient is the original one."""
  def make_floored_loss():
    loss = make_loss()
    return loss + tf.stop_gradient(tf.maximum(loss, tf.cast(floor, loss.dtype)) - loss)
  return make_floored_loss


def final_loss(losses: np.ndarray, fraction: float = 0.05) -> np.ndarray:
  """The mean of the last `fraction` of the steps' losses (at least one): the final loss of a
  minibatch-trained run, smoothed over the batches' noise. `losses[..., step]`."""
  count = max(1, int(round(losses.shape[-1] * fraction)))
  return np.mean(losses[..., -count:], axis=-1)


def init_path(init_from: str) -> str:
  """The directory of `init_from`: a save_path, or `pretrained:NAME` for a shipped optimizer."""
  if init_from.startswith("pretrained:"):
    from l2l.versatile import zoo  # pylint: disable=g-import-not-at-top
    return zoo.path(init_from[len("pretrained:"):])
  return init_from


def warm_start(optimizer: meta_optimizer_lib.MetaOptimizer, init_from: str) -> None:
  """Sets the weights `optimizer` shares with the optimizer saved at `init_from` to its values.

  The rule may have weights the saved one lacks (e.g. `step_adaptation`'s rate): those keep
  their initial values. Weights of the same name must have the same shape.

  Raises:
    ValueError: nothing saved there, or weights of other shapes, or no weight in common.
  """
  path = init_path(init_from)
  prefix = os.path.join(path, "nets")
  if not os.path.exists(prefix + ".index"):
    raise ValueError(f"init_from: no saved optimizer at {path!r} (expected {prefix}.index)")
  status = None
  try:
    status = tf.train.Checkpoint(**optimizer.nets).read(prefix)
    status.assert_nontrivial_match()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(f"init_from: the optimizer at {path!r} does not fit this rule: "
                     f"{str(e).splitlines()[0]}") from None
  finally:
    if status is not None:
      status.expect_partial()


@dataclasses.dataclass
class SuiteTrainConfig:
  """What `meta_train_suite` runs (train.py's --suite flags)."""
  suite: str = "train"
  save_path: Optional[str] = None
  net_config: Optional[Dict[str, Any]] = None  # None: VERSATILE_NET.
  meta_steps: int = 3000
  num_steps: int = 1000          # The horizon of every task instance.
  unroll_length: int = 50        # Steps per truncation.
  tasks_per_step: int = 4        # Capped at the suite's size.
  pes_particles: int = 2         # Antithetic pairs per task.
  pes_std: float = 0.01
  learning_rate: float = 2e-3    # Adam on the rule's weights.
  learning_rate_schedule: str = "cosine"  # Or "constant".
  progress_weighting: float = 0.5  # Truncation weights from 1 - a (start) to 1 + a (end).
  max_grad_norm: Optional[float] = 1.0
  objective: str = "log"
  adam_floor: float = 0.0        # Losses count as >= this x tuned Adam's (0: no floor).
  evaluation_period: int = 250   # Meta-steps between validations.
  validation_runs: int = 3       # VALIDATION instances per task.
  log_period: int = 20
  checkpoint_seconds: float = 120.
  seed: int = 0
  init_from: Optional[str] = None  # Start from a saved optimizer's weights (path or pretrained:NAME).

  def validate(self) -> None:
    for name in ("meta_steps", "num_steps", "unroll_length", "tasks_per_step",
                 "pes_particles", "evaluation_period", "log_period", "validation_runs"):
      checks.positive_int(name, getattr(self, name))
    if self.num_steps % self.unroll_length:
      raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of unroll_length "
                       f"({self.unroll_length})")
    if self.learning_rate_schedule not in ("constant", "cosine"):
      raise ValueError(f"learning_rate_schedule must be 'constant' or 'cosine', got "
                       f"{self.learning_rate_schedule!r}")
    if not (isinstance(self.progress_weighting, (int, float))
            and 0 <= self.progress_weighting <= 1):
      raise ValueError(f"progress_weighting must be in [0, 1], got {self.progress_weighting!r}")
    if not (isinstance(self.adam_floor, (int, float)) and 0 <= self.adam_floor < math.inf):
      raise ValueError(f"adam_floor must be a number >= 0, got {self.adam_floor!r}")
    if self.init_from is not None:
      if not isinstance(self.init_from, str) or not self.init_from:
        raise ValueError(f"init_from must be a path or pretrained:NAME, got {self.init_from!r}")
      prefix = os.path.join(init_path(self.init_from), "nets")
      if not os.path.exists(prefix + ".index"):
        raise ValueError(f"init_from: no saved optimizer at {self.init_from!r} (expected "
                         f"{prefix}.index)")
    for name in ("pes_std", "learning_rate", "checkpoint_seconds"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise ValueError(f"{name} must be a positive number, got {value!r}")

  def resume_key(self) -> Dict[str, Any]:
    """The options a checkpoint must share with the run that resumes it."""
    key = dataclasses.asdict(self)
    for name in ("save_path", "evaluation_period", "log_period", "checkpoint_seconds",
                 "validation_runs"):
      key.pop(name)
    return key


# Raised by `meta_train_suite` when SIGINT or SIGTERM stopped it after saving its state.
Interrupted = interrupts.Interrupted


def meta_train_suite(config: SuiteTrainConfig,
                     callback: Optional[Callable[[int, float], None]] = None) -> Dict[str, Any]:
  """Meta-trains one rule on every task of `config.suite` with PES; returns a summary.

  `callback(meta_step, mean_log_loss)`, if given, runs after every meta-step.

  Raises:
    Interrupted: SIGINT or SIGTERM arrived; the state was saved and a re-run resumes.
    ValueError: bad options, or a save_path holding another run's state.
  """
  with interrupts.StopOnSignal("the current meta-step") as interrupt:
    return _meta_train_suite(config, interrupt, callback)


def _meta_train_suite(config: SuiteTrainConfig, interrupt: interrupts.StopOnSignal,
                      callback: Optional[Callable[[int, float], None]]) -> Dict[str, Any]:
  from problems.suite import suite  # pylint: disable=g-import-not-at-top
  config.validate()
  tasks = suite(config.suite)
  tf.random.set_seed(config.seed)
  net_config = training.seeded_net_configs({"rule": config.net_config or VERSATILE_NET},
                                           config.seed)["rule"]
  optimizer = meta_optimizer_lib.MetaOptimizer(rule=net_config)
  if config.init_from:
    warm_start(optimizer, config.init_from)
  theta = list(optimizer.trainable_variables)
  floors = [0.] * len(tasks)
  if config.adam_floor:
    cache = os.path.join(config.save_path, "adam_reference.json") if config.save_path else None
    floors = [config.adam_floor * r
              for r in adam_references(tasks, config.num_steps, config.seed, cache)]
  train_seed = evaluation.instance_seed(config.seed, evaluation.TRAIN)
  trainers, generators = [], []
  for i, task in enumerate(tasks):
    make_loss = task.make_problem(train_seed + 10 * i)
    generators.append(training._find_generators(make_loss))  # pylint: disable=protected-access
    trainers.append(es.PESMinimize(
        optimizer, floored(make_loss, floors[i]) if floors[i] else make_loss,
        config.unroll_length, config.pes_particles, config.pes_std,
        objective=config.objective, seed=train_seed + 10 * i + 1, use_while_loop=True,
        num_steps=config.num_steps, common_random_numbers=generators[-1]))
  learning_rate = tf.Variable(config.learning_rate, dtype=tf.float32, trainable=False)
  adam = snt.optimizers.Adam(learning_rate)
  with tf.init_scope():
    adam._initialize(theta)  # pylint: disable=protected-access
  truncations = tf.Variable(tf.zeros([len(tasks)], tf.int64), trainable=False)
  meta_step = tf.Variable(0, dtype=tf.int64, trainable=False)
  skipped = tf.Variable(0, dtype=tf.int64, trainable=False)
  best = tf.Variable(float("inf"), dtype=tf.float64, trainable=False)
  best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
  untrained = tf.Variable(float("inf"), dtype=tf.float64, trainable=False)
  per_horizon = config.num_steps // config.unroll_length

  @tf.function(autograph=False)
  def apply(estimates, weights):
    grad = tf.add_n([w * e for w, e in zip(weights, estimates)]) / (
        len(estimates) * config.unroll_length)
    grads = trainers[0]._split(grad)  # pylint: disable=protected-access
    if config.max_grad_norm is not None:
      grads, _ = tf.clip_by_global_norm(grads, config.max_grad_norm)
    return meta_optimizer_lib.apply_if_finite([grad], lambda: adam.apply(grads, theta), skipped)

  manager = None
  resumed_from = 0
  if config.save_path:
    state_dir = os.path.join(config.save_path, training.TRAIN_STATE)
    checkpoint = tf.train.Checkpoint(
        optimizer=optimizer, adam=adam, trainers=trainers, truncations=truncations,
        meta_step=meta_step, skipped=skipped, best=best, best_step=best_step,
        untrained=untrained,
        generators=[g for gs in generators for g in gs])
    manager = tf.train.CheckpointManager(checkpoint, state_dir, max_to_keep=2)
    key_file = os.path.join(state_dir, "suite_config.json")
    if manager.latest_checkpoint:
      with open(key_file) as f:
        saved_key = json.load(f)
      if saved_key != json.loads(json.dumps(config.resume_key())):
        raise ValueError(f"save_path {config.save_path!r} holds a run of other options "
                         f"({saved_key}); use another save_path")
      checkpoint.restore(manager.latest_checkpoint).assert_consumed()
      resumed_from = int(meta_step.numpy())
      logging.info("resuming from %s at meta-step %d/%d", manager.latest_checkpoint,
                   resumed_from, config.meta_steps)
    os.makedirs(state_dir, exist_ok=True)
    with open(key_file, "w") as f:
      json.dump(config.resume_key(), f, indent=1, sort_keys=True)

  validation_seed = evaluation.instance_seed(config.seed, evaluation.VALIDATION)

  validators, validation_generators = [], []
  for i, task in enumerate(tasks):
    make_loss = task.make_problem(validation_seed + i)
    validators.append(optimizer.meta_loss(make_loss, config.num_steps, use_while_loop=True,
                                          num_steps=config.num_steps))
    generators_i = training._find_generators(make_loss)  # pylint: disable=protected-access
    validation_generators.append((generators_i, [g.state.numpy() for g in generators_i]))

  def validate() -> float:
    # The same instances every time: each task's streams are rewound to where they began.
    scores = []
    for run, (generators_i, states), floor in zip(validators, validation_generators, floors):
      for generator, state in zip(generators_i, states):
        generator.reset(state)
      curves = evaluation.run_instances(run, config.validation_runs)
      value = float(np.mean(np.maximum(final_loss(curves.losses), floor)))
      scores.append(math.log10(value) if value > 0 and math.isfinite(value) else math.inf)
    return float(np.mean(scores))

  def save_state():
    if manager is not None:
      manager.save(checkpoint_number=int(meta_step.numpy()))

  if int(best_step.numpy()) < 0:
    score = validate()
    best.assign(score)
    untrained.assign(score)
    best_step.assign(0)
    if config.save_path:
      optimizer.save(config.save_path)
    logging.info("validation of the initial rule (untrained: Adam at its initial rate): mean log10 "
                 "final loss %.4f over %d tasks", score, len(tasks))

  rng_seed = evaluation.instance_seed(config.seed, evaluation.TRAIN) + 7
  start = last_save = time.time()
  period_losses: List[float] = []
  while int(meta_step.numpy()) < config.meta_steps:
    step = int(meta_step.numpy())
    chosen = np.random.default_rng([rng_seed, step]).choice(
        len(tasks), size=min(config.tasks_per_step, len(tasks)), replace=False)
    learning_rate.assign(training.scheduled_learning_rate(
        config.learning_rate, config.learning_rate_schedule, step / config.meta_steps))
    estimates, weights = [], []
    for i in chosen:
      k = int(truncations[i].numpy()) % per_horizon
      if k == 0:
        trainers[i].reset()
      estimate = trainers[i].estimate()
      estimates.append(estimate.gradient)
      weights.append(tf.constant(
          1. + config.progress_weighting * (2. * (k + 0.5) / per_horizon - 1.), tf.float32))
      period_losses.append(float(tf.reduce_mean(estimate.meta_losses)) / config.unroll_length)
      truncations.assign(tf.tensor_scatter_nd_add(truncations, [[i]], [1]))
    apply(estimates, weights)
    meta_step.assign_add(1)
    step += 1
    if callback is not None:
      callback(step, float(np.mean(period_losses[-len(chosen):])))
    if step % config.log_period == 0:
      elapsed = time.time() - start
      eta = elapsed / (step - resumed_from) * (config.meta_steps - step)
      logging.info("meta-step %d/%d  mean log loss %.4f  log_lr %.3f  skipped %d  elapsed "
                   "%s  ETA %s", step, config.meta_steps, np.mean(period_losses),
                   float(optimizer.nets["rule"].log_lr.numpy())
                   if hasattr(optimizer.nets["rule"], "log_lr") else float("nan"),
                   int(skipped.numpy()), training._format_seconds(elapsed),  # pylint: disable=protected-access
                   training._format_seconds(eta))  # pylint: disable=protected-access
      period_losses = []
    if step % config.evaluation_period == 0 or step == config.meta_steps:
      score = validate()
      improved = math.isfinite(score) and score < float(best.numpy())
      if improved:
        best.assign(score)
        best_step.assign(step)
        if config.save_path:
          optimizer.save(config.save_path)
      logging.info("validation at meta-step %d: mean log10 final loss %.4f%s", step, score,
                   " (best so far; saved)" if improved else
                   f" (best {float(best.numpy()):.4f} at meta-step {int(best_step.numpy())})")
    if interrupt.signal is not None:
      save_state()
      interrupt.raise_if_signalled(
          f"stopped at meta-step {step}/{config.meta_steps}; state saved in "
          f"{config.save_path}; run the same command to resume" if manager is not None else
          f"stopped at meta-step {step} (no save_path)")
    if time.time() - last_save > config.checkpoint_seconds:
      save_state()
      last_save = time.time()
  save_state()
  return {"best_validation_log10_loss": float(best.numpy()),
          "untrained_validation_log10_loss": float(untrained.numpy()),
          "best_meta_step": int(best_step.numpy()), "meta_steps": int(meta_step.numpy()),
          "skipped_steps": int(skipped.numpy()), "resumed_from": resumed_from,
          "seconds": time.time() - start, "save_path": config.save_path}
