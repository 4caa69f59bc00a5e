"""Few-shot experiments behind `maml.py`: sinusoid regression and N-way K-shot digits.

`run(config)` meta-trains every (method, shots) pair on fresh tasks, checkpoints with
`tf.train.CheckpointManager` (a rerun resumes from the last checkpoint), evaluates on held-out
tasks after `eval_steps` inner steps, writes `results.json` and returns the results with a
Markdown table; `run_seeds(config, seeds)` repeats it per seed and tabulates mean +- std.

Methods are the meta-learners in `METHODS`, a dict from a name to a builder
`(model, config) -> l2l.MAML` (any `MAML` subclass that `MetaTrainer` can train), plus the
baselines in `BASELINES`:

* "Pretrained", not meta-learned. Sinusoid: the same model trained on the same tasks' query
  sets without adaptation, fine-tuned on each held-out support set with the same inner steps
  (Finn et al. 2017's baseline). Digits: Chen et al. 2019's "Baseline": an ordinary classifier
  over all meta-training classes, whose head is replaced by a new zero-initialized n-way linear
  head fitted to each held-out support set on the frozen features (`finetune_steps` full-batch
  gradient steps at `finetune_lr`), the same number of steps in every column.
* "Prototypes" (digits): no learning; each query image gets the class of the nearest support
  class mean in (standardized) pixel space, a sanity reference.

"iMAML" (`l2l.IMAML`, Rajeswaran et al. 2019) takes its own settings from the config:
`imaml_inner_steps` steps of size `imaml_inner_lr` (default `inner_lr`) on the proximally
regularised support loss (`imaml_lam`), `imaml_cg_steps` conjugate-gradient steps
(`imaml_damping`) for the meta-gradient. At evaluation it takes `eval_steps` steps of its own
inner update (step size `imaml_inner_lr`, on its proximal objective).

"MAML+LSTM" / "FOMAML+LSTM": MAML (second / first order) whose inner step is gradient descent
plus a small coordinatewise LSTM's correction (`maml.ResidualRule`), the LSTM meta-trained
with the initialization; with `maml_lstm_rule_meta_lr` / `fomaml_lstm_rule_meta_lr` the LSTM's
weights get an Adam of their own (`MetaTrainer(rule_optimizer=...)`, checkpointed as
"rule_optimizer"). "MetaSGD-ANIL": ANIL's head-only inner loop with Meta-SGD's learned
per-coordinate step sizes.

Nothing passes silently: held-out tasks whose loss is not finite are counted per cell (the
cell is the mean over the others), a method worse than the untrained model after every
evaluated number of inner steps is marked diverged, and SIGINT / SIGTERM checkpoint the
current step and raise `Interrupted` (a rerun resumes).

To add a method: `METHODS["name"] = lambda model, config: <an l2l.MAML subclass>`.

`run` merges into an existing `workdir/results.json`: rows of methods not in this run are kept
(when they were computed with the same settings), so a method can join a table later.
"""

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import sonnet as snt
import tensorflow as tf

from l2l import distribute
from l2l import interrupts
from l2l.meta_learning import fewshot_config
from l2l.meta_learning import maml as maml_lib
from l2l.meta_learning import meta_trainer
from problems import tasks as tasks_lib

# The settings, the method registry and the checks run before training (no TensorFlow there).
# pylint: disable=g-bad-import-order,unused-import
from l2l.meta_learning.fewshot_config import BASELINES, Builder, check_workdir, FewShotConfig
from l2l.meta_learning.fewshot_config import JOINT_LSTM_LAYERS, JOINT_LSTM_SCALE, METHODS
from l2l.meta_learning.fewshot_config import PROBLEMS, SPLITS
# pylint: enable=g-bad-import-order,unused-import


def _digits(config: FewShotConfig):
  return tasks_lib.digits_split(config.split, config.augment)


def _samplers(config: FewShotConfig, shots: int, pretrained: bool
              ) -> Tuple[tasks_lib.TaskSampler, tasks_lib.Task]:
  """The meta-training sampler and the held-out tasks for one shot count.

  For the digits "Pretrained" baseline the training "tasks" hold every meta-training class in a
  fixed label order (ordinary supervised batches).
  """
  if config.problem == "sinusoid":
    train = tasks_lib.SinusoidTaskSampler(k_support=shots, k_query=config.k_query,
                                          seed=config.seed)
    # Held-out tasks: their own seed; the validation split (to choose settings) another one.
    offset = 20_000 if config.split == "validation" else 10_000
    test = tasks_lib.SinusoidTaskSampler(k_support=shots, k_query=100, seed=config.seed + offset)
    return train, test.sample(config.num_eval_tasks)
  inputs, labels, train_classes, eval_classes = _digits(config)
  n_way = len(train_classes) if pretrained else config.n_way
  train = tasks_lib.NWayKShotSampler(inputs, labels, n_way, shots, config.k_query,
                                     train_classes, config.seed, shuffle_labels=not pretrained)
  test = tasks_lib.NWayKShotSampler(inputs, labels, config.n_way, shots, config.k_query,
                                    eval_classes, config.seed + 10_000)
  return train, test.sample(config.num_eval_tasks)


class LinearFeatureMLP(snt.Module):
  """The MLP of `_mlp` without the ReLU after its last hidden layer: `head(body(x))`.

  `body` is an `snt.nets.MLP` over the hidden sizes with ReLU between its layers but not after
  the last, so the features `body(x)` the linear `head` reads are signed (ANIL with
  `anil_head_input="linear"`: one head step's kernel f(x).f(x') + 1 can change sign).
  """

  def __init__(self, hidden: Sequence[int], outputs: int, w_init, name: Optional[str] = None):
    super().__init__(name=name)
    self.body = snt.nets.MLP(list(hidden), w_init=w_init, activate_final=False, name="body")
    self.head = snt.Linear(outputs, w_init=w_init, name="head")

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    return self.head(self.body(x))


def _mlp(config: FewShotConfig, outputs: int, linear_features: bool = False) -> snt.Module:
  inputs = 1 if config.problem == "sinusoid" else 64
  w_init = snt.initializers.VarianceScaling(1., "fan_avg", "uniform", seed=config.seed)
  if linear_features:
    model = LinearFeatureMLP(config.hidden, outputs, w_init, name="mlp")
  else:
    model = snt.nets.MLP(list(config.hidden) + [outputs], name="mlp", w_init=w_init)
  model(tf.zeros([1, inputs]))
  return model


def build(config: FewShotConfig, method: str) -> Tuple[snt.Module, maml_lib.MAML]:
  """The model (MLP, ReLU) and the algorithm for `method` (a `METHODS` key or "Pretrained").

  "Pretrained" is trained without adaptation (zero inner steps); on digits its model has one
  output per meta-training class. ANIL with `anil_head_input="linear"` gets a
  `LinearFeatureMLP` (no ReLU before its head).
  """
  if config.problem == "sinusoid":
    outputs = 1
  elif method == "Pretrained":
    outputs = len(_digits(config)[2])
  else:
    outputs = config.n_way
  model = _mlp(config, outputs, method == "ANIL" and config.anil_head_input == "linear")
  if method == "Pretrained":
    return model, maml_lib.MAML(model, config.inner_lr, 0)
  return model, METHODS[method](model, config)


def prototype_accuracy(tasks: tasks_lib.Task) -> np.ndarray:
  """Per-task query accuracy of the nearest support class mean (Euclidean, raw inputs)."""
  accuracies = []
  for t in range(tasks.num_tasks):
    task = tasks.task(t)
    classes = np.unique(task.support_y)
    means = np.stack([task.support_x[task.support_y == c].mean(0) for c in classes])
    distances = ((task.query_x[:, None, :] - means[None]) ** 2).sum(-1)
    accuracies.append(np.mean(classes[distances.argmin(1)] == task.query_y))
  return np.array(accuracies)


def new_head_accuracy(model: snt.Module, tasks: tasks_lib.Task, n_way: int, steps: int,
                      lr: float) -> Tuple[np.ndarray, np.ndarray]:
  """Chen et al. 2019's evaluation: a new linear head on `model`'s frozen body, per task.

  The body is the MLP without its last layer (ReLU after every hidden layer). Per task, a
  zero-initialized `n_way` linear head takes `steps` full-batch gradient steps of size `lr` on
  the support set's mean cross-entropy; all tasks are fitted at once, independently.

  Returns:
    `(losses, accuracies)` on each task's query set, arrays of `[num_tasks]`.
  """
  def features(x):
    flat = tf.reshape(tf.convert_to_tensor(x), [-1, x.shape[-1]])
    for layer in model.submodules[:-1]:
      flat = tf.nn.relu(layer(flat))
    return tf.reshape(flat, list(x.shape[:2]) + [-1])

  f_support, f_query = features(tasks.support_x), features(tasks.query_x)
  y_support = tf.one_hot(tasks.support_y, n_way)
  w = tf.zeros([tasks.num_tasks, f_support.shape[-1], n_way])
  b = tf.zeros([tasks.num_tasks, 1, n_way])
  logits_of = lambda f, w, b: tf.einsum("tsd,tdn->tsn", f, w) + b
  for _ in range(steps):
    with tf.GradientTape() as tape:
      tape.watch([w, b])
      # The sum over tasks of each task's mean loss: each head gets its own task's gradient.
      loss = tf.reduce_sum(tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
          y_support, logits_of(f_support, w, b)), axis=1))
    grad_w, grad_b = tape.gradient(loss, [w, b])
    w, b = w - lr * grad_w, b - lr * grad_b
  logits = logits_of(f_query, w, b)
  losses = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      tf.cast(tasks.query_y, tf.int32), logits), axis=1)
  correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(tasks.query_y, tf.int32))
  return losses.numpy(), tf.reduce_mean(tf.cast(correct, tf.float32), axis=1).numpy()


def _evaluate_row(config: FewShotConfig, method: str, trainer, test_tasks, row) -> None:
  is_digits = config.problem == "digits"
  if is_digits and method == "Pretrained":
    # Every column: a new head fitted with finetune_steps steps on the frozen features.
    losses, accuracies = new_head_accuracy(trainer.maml.module, test_tasks, config.n_way,
                                           config.finetune_steps, config.finetune_lr)
    result = {"loss": float(losses.mean()),
              "loss_stderr": float(losses.std(ddof=1) / np.sqrt(len(losses))),
              "metric": float(accuracies.mean())}
    results = {steps: result for steps in config.eval_steps}
  else:
    results = {steps: trainer.evaluate(test_tasks, steps) for steps in config.eval_steps}
  for steps, result in results.items():
    row[f"loss@{steps}"] = result["loss"]
    row[f"loss_stderr@{steps}"] = result["loss_stderr"]
    row[f"diverged_tasks@{steps}"] = result.get("diverged", 0)
    if is_digits:
      row[f"accuracy@{steps}"] = result["metric"]


# Raised by `run` when SIGINT or SIGTERM stopped it after checkpointing (`l2l.interrupts`).
Interrupted = interrupts.Interrupted


def _train_one(config: FewShotConfig, method: str, shots: int,
               interrupt: Optional[interrupts.StopOnSignal] = None,
               strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, Any]:
  """Meta-trains (or trains) one method for one shot count; returns its results row.

  Under `strategy` each meta-batch is split across its replicas (`MetaTrainer`); the chief
  writes the checkpoints, other workers a temporary copy deleted after each save
  (`l2l.distribute.write_dir`), and every worker resumes from the chief's.

  The row's "diverged" is True when the query loss after every evaluated number of inner
  steps is non-finite or above the untrained model's without adaptation ("untrained_loss");
  "exploded_at" is the first iteration whose meta-loss exceeded 10 times that (or None).

  Raises:
    Interrupted: `interrupt` caught a signal; the state after the current step was saved.
    ValueError: a checkpoint in the workdir that cannot be restored.
  """
  if method == "Prototypes":
    _, test_tasks = _samplers(config, shots, False)
    accuracies = prototype_accuracy(test_tasks)
    row = {"method": method, "shots": shots, "train_seconds": 0., "final_meta_loss": None}
    for steps in config.eval_steps:
      row[f"accuracy@{steps}"] = float(accuracies.mean())
      row[f"accuracy_stderr@{steps}"] = float(accuracies.std(ddof=1) / np.sqrt(len(accuracies)))
    logging.info("%s %d-shot: %s", method, shots, row)
    return row
  tf.random.set_seed(config.seed)
  _, algorithm = build(config, method)
  sampler, test_tasks = _samplers(config, shots, method == "Pretrained")
  is_digits = config.problem == "digits"
  loss_fn = meta_trainer.cross_entropy if is_digits else meta_trainer.mse
  optimizer = snt.optimizers.Adam(config.meta_learning_rate(method))
  rule_lr = config.rule_meta_learning_rate(method)
  # The learned inner rule's weights get their own Adam when the method has its own rate.
  rule_optimizer = None if rule_lr is None else snt.optimizers.Adam(rule_lr)
  trainer = meta_trainer.MetaTrainer(algorithm, optimizer, loss_fn, sampler,
                                     metric_fn=meta_trainer.accuracy if is_digits else None,
                                     strategy=strategy, rule_optimizer=rule_optimizer)
  # The untrained model's query loss without adaptation: the bar for "diverged".
  untrained = trainer.evaluate(test_tasks, 0)["loss"]
  done = tf.Variable(0, dtype=tf.int64, name="iterations_done")
  # Training time so far, so that a resumed run still reports the whole meta-training time.
  seconds = tf.Variable(0., dtype=tf.float64, name="train_seconds")
  skipped = tf.Variable(0, dtype=tf.int64, name="skipped_steps")
  exploded_at = tf.Variable(0, dtype=tf.int64, name="exploded_at")
  start = 0
  manager = None
  name = f"{method} {shots}-shot"
  if config.workdir:
    extra = {} if rule_optimizer is None else {"rule_optimizer": rule_optimizer}
    checkpoint = tf.train.Checkpoint(algorithm=algorithm, optimizer=optimizer, done=done,
                                     seconds=seconds, skipped_steps=skipped,
                                     exploded_at=exploded_at, **extra)
    directory = os.path.join(config.workdir, f"{method}_{shots}shot")
    manager = tf.train.CheckpointManager(checkpoint, distribute.write_dir(directory, strategy),
                                         max_to_keep=1)
    latest = tf.train.latest_checkpoint(directory)  # The chief's, on every worker.
    if latest:
      try:
        checkpoint.restore(latest)
        # Every model variable must come from the checkpoint: one of another architecture (ANIL
        # with the other anil_head_input) would leave them at their initial values, silently.
        tf.train.Checkpoint(algorithm=tf.train.Checkpoint(module=algorithm.module)).read(
            latest).assert_existing_objects_matched().expect_partial()
      except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        raise ValueError(f"cannot restore the checkpoint {latest} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); it is "
                         f"damaged or from other settings: delete {directory} to start "
                         f"{name} over") from None
      start = int(done.numpy())
      trainer.skipped_steps = int(skipped.numpy())
      # The sampler's generator does not checkpoint: skip the tasks already used.
      for _ in range(start):
        sampler.sample(config.meta_batch_size)
      logging.info("%s: resumed from %s at iteration %d", name, latest, start)
  previous_seconds = float(seconds.numpy())
  iterations = config.iterations(method)

  def save(iteration, total_seconds=None):
    done.assign(iteration)
    skipped.assign(trainer.skipped_steps)
    seconds.assign(previous_seconds + time.perf_counter() - fit_start
                   if total_seconds is None else total_seconds)
    manager.save(checkpoint_number=iteration)
    distribute.remove_write_dir(manager.directory, directory)

  def callback(iteration, loss):
    iteration += start
    done.assign(iteration)
    if np.isfinite(loss) and loss > 10 * untrained and not int(exploded_at.numpy()):
      exploded_at.assign(iteration)
      logging.warning("%s: meta-loss %.4g at iteration %d, over 10 times the untrained "
                      "model's query loss (%.4g): meta-training is diverging", name, loss,
                      iteration, untrained)
    if iteration % config.log_every == 0:
      logging.info("%s: iteration %d/%d, meta-loss %.4f, skipped %d (non-finite)", name,
                   iteration, iterations, loss, trainer.skipped_steps)
    if manager and iteration % config.checkpoint_every == 0:
      save(iteration)
    if interrupt is not None and interrupt.signal is not None:
      if manager:
        save(iteration)
        interrupt.raise_if_signalled(
            f"stopped {name} at iteration {iteration}/{iterations}; saved in "
            f"{directory}; run the same command to resume")
      interrupt.raise_if_signalled(f"stopped {name} at iteration {iteration}/"
                                   f"{iterations}; nothing saved (no workdir)")

  fit_start = time.perf_counter()
  history = trainer.fit(iterations - start, config.meta_batch_size,
                        callback=callback, log_every_seconds=None
                        ) if start < iterations else None
  if history is not None:
    seconds.assign(previous_seconds + history.seconds)
  if manager and history is not None:
    save(iterations, previous_seconds + history.seconds)
  row: Dict[str, Any] = {"method": method, "shots": shots,
                         "train_seconds": float(seconds.numpy()),
                         "final_meta_loss": history.meta_losses[-1] if history else None,
                         "skipped_steps": trainer.skipped_steps, "iterations": iterations,
                         "untrained_loss": untrained,
                         "exploded_at": int(exploded_at.numpy()) or None}
  _evaluate_row(config, method, trainer, test_tasks, row)
  losses = [row[f"loss@{s}"] for s in config.eval_steps]
  row["diverged"] = not any(np.isfinite(l) and l <= untrained for l in losses)
  if row["diverged"]:
    logging.warning("%s diverged: its query loss after %s inner steps is %s, the untrained "
                    "model's without adaptation %.4g (meta-loss over 10x that from iteration "
                    "%s)", name, "/".join(map(str, config.eval_steps)),
                    "/".join(f"{l:.4g}" for l in losses), untrained, row["exploded_at"])
  logging.info("%s: %s", name, row)
  return row


def _columns(config: FewShotConfig) -> List[Tuple[int, int]]:
  return [(k, s) for k in config.shots for s in config.eval_steps]


def _header(config: FewShotConfig) -> List[str]:
  label = "accuracy" if config.problem == "digits" else "MSE"
  return ["| method | " + " | ".join(f"{k}-shot {label}, {s} step{'s' * (s != 1)}"
                                     for k, s in _columns(config)) + " | train s |",
          "|---" * (len(_columns(config)) + 2) + "|"]


def _footnotes(config: FewShotConfig, per_seed: List[List[Dict[str, Any]]]) -> List[str]:
  notes = []
  if config.problem == "digits" and "Pretrained" in config.method_names():
    notes.append(f"Pretrained: a new linear head fitted with {config.finetune_steps} steps "
                 f"(lr {config.finetune_lr}) on frozen features, in every column.")
  if "Prototypes" in config.method_names():
    notes.append("Prototypes: nearest support class mean in pixel space, no training.")
  if "iMAML" in config.method_names() and config.iterations("iMAML") != config.num_iterations:
    notes.append(f"iMAML: {config.iterations('iMAML')} meta-iterations (the others "
                 f"{config.num_iterations}).")
  for method in ("FOMAML", "FOMAML+LSTM", "ANIL"):
    if method in config.method_names() and config.meta_learning_rate(method) != config.meta_lr:
      notes.append(f"{method}: meta learning rate {config.meta_learning_rate(method):g} (the "
                   f"others {config.meta_lr:g}).")
  for method in ("MAML+LSTM", "FOMAML+LSTM"):
    if method in config.method_names() and config.rule_meta_learning_rate(method) is not None:
      notes.append(f"{method}: meta learning rate {config.rule_meta_learning_rate(method):g} for "
                   f"the LSTM's weights, {config.meta_learning_rate(method):g} for the "
                   f"initialization.")
  for method in ("ANIL", "MetaSGD-ANIL"):
    if method in config.method_names() and config.anil_inner_lr not in (None, config.inner_lr):
      notes.append(f"{method}: {'initial ' * (method != 'ANIL')}inner learning rate "
                   f"{config.anil_inner_lr:g} (the others {config.inner_lr:g}).")
  if "ANIL" in config.method_names() and config.anil_head_input == "linear":
    notes.append("ANIL: its head reads the last hidden layer's pre-activations (no ReLU "
                 "before the head).")
  notes += _divergence_footnotes(config, per_seed)
  return [""] + notes if notes else []


def _cell(row: Dict[str, Any], config: FewShotConfig, steps: int) -> float:
  key = "accuracy" if config.problem == "digits" else "loss"
  return row[f"{key}@{steps}"]


def _diverged_note(count: int, total: int) -> str:
  return f" ({count}/{total} div.)" if count else ""


def _label(method: str, rows: List[Dict[str, Any]]) -> str:
  diverged = sorted({r["shots"] for r in rows if r["method"] == method and r.get("diverged")})
  return method + (f" (diverged: {', '.join(map(str, diverged))}-shot)" if diverged else "")


def _divergence_footnotes(config: FewShotConfig, per_seed: List[List[Dict[str, Any]]]
                          ) -> List[str]:
  rows = [r for run_rows in per_seed for r in run_rows]
  notes = []
  if any(r.get(f"diverged_tasks@{s}") for r in rows for s in config.eval_steps):
    notes.append(f"(n/N div.): n of the N held-out tasks ({config.num_eval_tasks} per seed) "
                 "diverged (query loss non-finite or over 10x the task's loss before "
                 "adaptation); the cell is over the others.")
  if any(r.get("diverged") for r in rows):
    notes.append("diverged: the query loss after every evaluated number of inner steps is "
                 "non-finite or above the untrained model's without adaptation.")
  return notes


def table(rows: List[Dict[str, Any]], config: FewShotConfig) -> str:
  """A Markdown table: one row per method, one column per (shots, eval steps).

  A cell where some held-out tasks diverged says how many ("(3/600 div.)") and is the mean
  over the others; a method that diverged (see `_train_one`) is labelled so.
  """
  lines = _header(config)
  for method in config.method_names():
    cells, seconds = [], 0.
    for k, s in _columns(config):
      row = next(r for r in rows if r["method"] == method and r["shots"] == k)
      cells.append(f"{_cell(row, config, s):.3f}"
                   + _diverged_note(row.get(f"diverged_tasks@{s}", 0), config.num_eval_tasks))
      seconds += row["train_seconds"] / len(config.eval_steps)
    lines.append(f"| {_label(method, rows)} | " + " | ".join(cells) + f" | {seconds:.0f} |")
  return "\n".join(lines + _footnotes(config, [rows]))


def seeds_table(per_seed: List[List[Dict[str, Any]]], config: FewShotConfig) -> str:
  """Like `table`, each cell the mean +- standard deviation (ddof 1) over seeds.

  "train s" is the meta-training time summed over the shot counts, mean +- std over seeds.
  Diverged tasks are summed over seeds ("(5/1800 div.)"); each seed's figure is over its
  other tasks.
  """
  def stats(values):
    values = np.asarray(values, np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.
    return values.mean(), std

  lines = _header(config)
  rows = [r for run_rows in per_seed for r in run_rows]
  for method in config.method_names():
    cells = []
    for k, s in _columns(config):
      found = [next(r for r in run_rows if r["method"] == method and r["shots"] == k)
               for run_rows in per_seed]
      mean, std = stats([_cell(r, config, s) for r in found])
      diverged = sum(r.get(f"diverged_tasks@{s}", 0) for r in found)
      cells.append(f"{mean:.3f} ± {std:.3f}"
                   + _diverged_note(diverged, config.num_eval_tasks * len(per_seed)))
    times = [sum(r["train_seconds"] for r in run_rows if r["method"] == method)
             for run_rows in per_seed]
    mean, std = stats(times)
    lines.append(f"| {_label(method, rows)} | " + " | ".join(cells)
                 + f" | {mean:.0f} ± {std:.0f} |")
  return "\n".join(lines + _footnotes(config, per_seed))


def _write(path: str, results: Dict[str, Any]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(results, f, indent=2, default=list)


def run(config: FewShotConfig, strategy: Optional[tf.distribute.Strategy] = None
        ) -> Dict[str, Any]:
  """Trains and evaluates every (method, shots) pair; returns `{"config", "rows", "table"}`.

  `strategy` (`l2l.distribute.create_strategy`: MirroredStrategy, MultiWorkerMirroredStrategy)
  splits every meta-batch across its replicas, so the results are those of one replica with
  the same `meta_batch_size` (up to float32 rounding); with several workers only the chief
  writes to `workdir` (checkpoints, results.json) and every worker returns the same results.

  With a `workdir` whose `results.json` holds other methods (computed with the same settings),
  their rows are kept: `rows`, `table` and the written file cover both, and the returned
  `config["methods"]` lists them all. A method run again replaces its rows.

  SIGINT and SIGTERM stop it after the current meta-step, which is checkpointed (a rerun
  resumes there and gives the same results as an uninterrupted run).

  Raises:
    ValueError: an invalid config, or kept rows computed with other settings (checked before
      training), a workdir that is a file or holds a damaged checkpoint / results.json, or a
      `meta_batch_size` that does not split evenly across the strategy's replicas.
    Interrupted: SIGINT or SIGTERM arrived.
  """
  check_workdir(config)
  distribute.shard(config.meta_batch_size, strategy)  # Raises unless it splits evenly.
  kept, kept_methods = fewshot_config.kept_rows(config)
  rows = []
  with interrupts.StopOnSignal("the current meta-step") as interrupt:
    for shots in config.shots:
      for method in config.method_names():
        rows.append(_train_one(config, method, shots, interrupt, strategy))
  if kept:
    order = tuple(METHODS) + BASELINES
    methods = sorted(kept_methods + config.method_names(), key=order.index)
    config = dataclasses.replace(config, methods=tuple(methods))
    rows = sorted(kept + rows, key=lambda r: (config.shots.index(r["shots"]),
                                              order.index(r["method"])))
  results = {"config": dataclasses.asdict(config), "rows": rows, "table": table(rows, config)}
  if config.workdir and distribute.is_chief(strategy):
    _write(os.path.join(config.workdir, "results.json"), results)
  return results


def run_seeds(config: FewShotConfig, seeds: Sequence[int],
              strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, Any]:
  """`run` once per seed (in `workdir/seed_<s>`, one after the other, under `strategy`); mean
  +- std table.

  Each seed's `results.json` merges as in `run`; the table has the methods every seed has.

  Returns:
    `{"seeds", "runs": [run results per seed], "table"}`, also written to
    `workdir/results_seeds.json`.
  """
  if not seeds:
    raise ValueError("seeds must name at least one seed, got []")
  check_workdir(config, seeds)  # Before any training.
  runs = [run(seed_config, strategy) for seed_config in fewshot_config.seed_configs(config, seeds)]
  # The methods every seed has (each run's own plus the rows it kept), in table order.
  names = [tuple(r["config"]["methods"]) or config.method_names() for r in runs]
  methods = [m for m in names[0] if all(m in n for n in names)]
  table_config = dataclasses.replace(config, methods=tuple(methods))
  results = {"seeds": list(seeds), "runs": runs,
             "table": seeds_table([r["rows"] for r in runs], table_config)}
  if config.workdir and distribute.is_chief(strategy):
    _write(os.path.join(config.workdir, "results_seeds.json"), results)
  return results
