"""Few-shot experiments behind `maml.py`: sinusoid regression and N-way K-shot digits.

`run(config)` meta-trains every (method, shots) pair on fresh tasks, checkpoints with
`tf.train.CheckpointManager` (a rerun resumes from the last checkpoint), evaluates on held-out
tasks after `eval_steps` inner steps, writes `results.json` and returns the results with a
Markdown table. Methods: MAML, FOMAML, Reptile, MetaSGD, ANIL and "Pretrained", the
non-meta-learned baseline (trained on the same tasks without adaptation, fine-tuned on each
held-out support set with the same inner steps).
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Sequence, Tuple

from absl import logging
import sonnet as snt
import tensorflow as tf

from l2l import maml as maml_lib
from l2l import meta_trainer
from problems import tasks as tasks_lib

METHODS = ("MAML", "FOMAML", "Reptile", "MetaSGD", "ANIL", "Pretrained")
PROBLEMS = ("sinusoid", "digits")


@dataclasses.dataclass
class FewShotConfig:
  """Settings of one experiment; defaults are Finn et al. 2017's sinusoid setup."""
  problem: str = "sinusoid"
  methods: Sequence[str] = METHODS
  shots: Sequence[int] = (5, 10, 20)
  num_iterations: int = 10000
  meta_batch_size: int = 25
  meta_lr: float = 1e-3
  inner_lr: float = 0.01
  inner_steps: int = 1
  reptile_inner_steps: int = 5
  eval_steps: Sequence[int] = (1, 10)
  num_eval_tasks: int = 600
  n_way: int = 5
  k_query: int = 10
  hidden: Sequence[int] = (40, 40)
  seed: int = 0
  workdir: str = ""
  log_every: int = 1000
  checkpoint_every: int = 1000

  def validate(self) -> None:
    if self.problem not in PROBLEMS:
      raise ValueError(f"unknown problem {self.problem!r}; expected one of {PROBLEMS}")
    unknown = [m for m in self.methods if m not in METHODS]
    if unknown or not self.methods:
      raise ValueError(f"unknown methods {unknown or self.methods!r}; expected some of {METHODS}")
    for name in ("num_iterations", "meta_batch_size", "num_eval_tasks", "n_way", "k_query",
                 "reptile_inner_steps"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    maml_lib.check_steps(self.inner_steps)
    for k in list(self.shots) + list(self.eval_steps):
      maml_lib.check_steps(k, "shots and eval_steps entries")
    if not self.shots or min(self.shots) < 1:
      raise ValueError(f"shots must be positive integers, got {list(self.shots)}")
    for name in ("meta_lr", "inner_lr"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


def _samplers(config: FewShotConfig, shots: int, pretrained: bool
              ) -> Tuple[tasks_lib.TaskSampler, tasks_lib.Task]:
  """The meta-training sampler and the held-out tasks for one shot count."""
  if config.problem == "sinusoid":
    train = tasks_lib.SinusoidTaskSampler(k_support=shots, k_query=config.k_query,
                                          seed=config.seed)
    test = tasks_lib.SinusoidTaskSampler(k_support=shots, k_query=100, seed=config.seed + 10_000)
    return train, test.sample(config.num_eval_tasks)
  inputs, labels = tasks_lib.load_digits()
  train = tasks_lib.NWayKShotSampler(inputs, labels, config.n_way, shots, config.k_query,
                                     tasks_lib.DIGITS_TRAIN_CLASSES, config.seed,
                                     shuffle_labels=not pretrained)
  test = tasks_lib.NWayKShotSampler(inputs, labels, config.n_way, shots, config.k_query,
                                    tasks_lib.DIGITS_TEST_CLASSES, config.seed + 10_000)
  return train, test.sample(config.num_eval_tasks)


def build(config: FewShotConfig, method: str) -> Tuple[snt.Module, maml_lib.MAML]:
  """The model (MLP, ReLU) and the algorithm for `method`."""
  outputs = 1 if config.problem == "sinusoid" else config.n_way
  inputs = 1 if config.problem == "sinusoid" else 64
  model = snt.nets.MLP(list(config.hidden) + [outputs], name="mlp",
                       w_init=snt.initializers.VarianceScaling(1., "fan_avg", "uniform",
                                                               seed=config.seed))
  model(tf.zeros([1, inputs]))
  lr, steps = config.inner_lr, config.inner_steps
  if method == "MAML":
    algorithm = maml_lib.MAML(model, lr, steps)
  elif method == "FOMAML":
    algorithm = maml_lib.MAML(model, lr, steps, first_order=True)
  elif method == "Reptile":
    algorithm = maml_lib.Reptile(model, lr, config.reptile_inner_steps)
  elif method == "MetaSGD":
    algorithm = maml_lib.MetaSGD(model, lr, steps)
  elif method == "ANIL":
    algorithm = maml_lib.ANIL(model, model.submodules[-1], lr, steps)
  else:  # Pretrained: fit the tasks' query sets without adaptation.
    algorithm = maml_lib.MAML(model, lr, 0)
  return model, algorithm


def _train_one(config: FewShotConfig, method: str, shots: int) -> Dict[str, Any]:
  tf.random.set_seed(config.seed)
  model, algorithm = build(config, method)
  sampler, test_tasks = _samplers(config, shots, method == "Pretrained")
  is_digits = config.problem == "digits"
  loss_fn = meta_trainer.cross_entropy if is_digits else meta_trainer.mse
  optimizer = snt.optimizers.Adam(config.meta_lr)
  trainer = meta_trainer.MetaTrainer(algorithm, optimizer, loss_fn, sampler,
                                     metric_fn=meta_trainer.accuracy if is_digits else None)
  done = tf.Variable(0, dtype=tf.int64, name="iterations_done")
  start = 0
  manager = None
  if config.workdir:
    checkpoint = tf.train.Checkpoint(algorithm=algorithm, optimizer=optimizer, done=done)
    directory = os.path.join(config.workdir, f"{method}_{shots}shot")
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)
    if manager.latest_checkpoint:
      checkpoint.restore(manager.latest_checkpoint)
      start = int(done.numpy())
      # The sampler's generator does not checkpoint: skip the tasks already used.
      for _ in range(start):
        sampler.sample(config.meta_batch_size)
      logging.info("%s %d-shot: resumed from %s at iteration %d", method, shots,
                   manager.latest_checkpoint, start)

  def callback(iteration, loss, history):
    del history
    done.assign(start + iteration)
    if (start + iteration) % config.log_every == 0:
      logging.info("%s %d-shot: iteration %d/%d, meta-loss %.4f", method, shots,
                   start + iteration, config.num_iterations, loss)
    if manager and (start + iteration) % config.checkpoint_every == 0:
      manager.save(checkpoint_number=start + iteration)

  history = trainer.fit(config.num_iterations - start, config.meta_batch_size,
                        callback=callback)
  if manager:
    manager.save(checkpoint_number=config.num_iterations)
  row: Dict[str, Any] = {"method": method, "shots": shots, "train_seconds": history.seconds,
                         "final_meta_loss": history.meta_losses[-1] if history.meta_losses
                         else None}
  for steps in config.eval_steps:
    result = trainer.evaluate(test_tasks, steps)
    row[f"loss@{steps}"] = result["loss"]
    row[f"loss_stderr@{steps}"] = result["loss_stderr"]
    if is_digits:
      row[f"accuracy@{steps}"] = result["metric"]
  logging.info("%s %d-shot: %s", method, shots, row)
  return row


def table(rows: List[Dict[str, Any]], config: FewShotConfig) -> str:
  """A Markdown table: one row per method, one column per (shots, eval steps)."""
  key = "accuracy" if config.problem == "digits" else "loss"
  label = "accuracy" if config.problem == "digits" else "MSE"
  columns = [(k, s) for k in config.shots for s in config.eval_steps]
  lines = ["| method | " + " | ".join(f"{k}-shot {label}, {s} step{'s' * (s != 1)}"
                                       for k, s in columns) + " | train s |",
           "|---" * (len(columns) + 2) + "|"]
  for method in config.methods:
    cells, seconds = [], 0.
    for k, s in columns:
      row = next(r for r in rows if r["method"] == method and r["shots"] == k)
      cells.append(f"{row[f'{key}@{s}']:.3f}")
      seconds += row["train_seconds"] / len(config.eval_steps)
    lines.append(f"| {method} | " + " | ".join(cells) + f" | {seconds:.0f} |")
  return "\n".join(lines)


def run(config: FewShotConfig) -> Dict[str, Any]:
  """Trains and evaluates every (method, shots) pair; returns `{"rows", "table"}`."""
  config.validate()
  rows = [_train_one(config, method, shots)
          for shots in config.shots for method in config.methods]
  results = {"config": dataclasses.asdict(config), "rows": rows, "table": table(rows, config)}
  if config.workdir:
    os.makedirs(config.workdir, exist_ok=True)
    with open(os.path.join(config.workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2, default=list)
  return results
