"""Running optimizers on held-out problem instances, and tuning baselines' learning rates.

Every optimizer, learned or hand-designed, runs through the same unroll engine: a `MetaLoss` of
`num_steps` steps compiled once with `tf.function`, reset to a new problem instance per epoch.
Instance streams are seeded by purpose (training, validation, tuning, test) so that a
baseline's learning rate is tuned on instances disjoint from the ones it is evaluated on, and all
optimizers are evaluated on the same instances.
"""

import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from l2l import checks
from l2l import meta_optimizer as meta_optimizer_lib
from l2l.capture import MakeLoss

TRAIN, VALIDATION, TUNE, TEST = 0, 1, 2, 3
HAND_DESIGNED = {"SGD": "Sgd", "NAG": "NAG", "RMSProp": "RMSProp", "Adam": "Adam"}
DEFAULT_LR_GRID = tuple(float(f"{10 ** (e / 4):.4g}") for e in range(-20, 5))  # 1e-5 .. 10


def instance_seed(seed: int, purpose: int) -> int:
  """A seed for the problem-instance stream of `purpose` (TRAIN, VALIDATION, TUNE, TEST)."""
  return int(np.random.SeedSequence([int(seed), int(purpose)]).generate_state(1)[0] >> 1)


class Curves(NamedTuple):
  """Loss curves of one optimizer: `losses[epoch, step]` for steps 0..num_steps."""
  losses: np.ndarray

  @property
  def final(self) -> np.ndarray:
    return self.losses[:, -1]

  @property
  def final_loss_mean(self) -> float:
    return float(np.mean(self.final))

  @property
  def log10_final_loss_mean(self) -> float:
    mean = self.final_loss_mean
    return math.log10(mean) if mean > 0 and math.isfinite(mean) else float("inf")

  @property
  def log10_standard_error(self) -> float:
    """Standard error of log10(mean final loss), by the delta method."""
    final = self.final
    if len(final) < 2 or not np.all(np.isfinite(final)):
      return float("inf")
    sem = np.std(final, ddof=1) / math.sqrt(len(final))
    return float(sem / (np.mean(final) * math.log(10)))


def run_optimizer(optimizer: meta_optimizer_lib.MetaOptimizer, make_loss: MakeLoss,
                  num_epochs: int, num_steps: int,
                  net_assignments: Optional[Sequence] = None,
                  log_every: Optional[float] = None, label: str = "") -> Curves:
  """Runs `optimizer` for `num_steps` steps on `num_epochs` instances of `make_loss`."""
  checks.positive_int("num_epochs", num_epochs)
  checks.positive_int("num_steps", num_steps)
  run = optimizer.meta_loss(make_loss, num_steps, net_assignments, use_while_loop=True,
                            num_steps=num_steps)
  return run_instances(run, num_epochs, log_every, label)


def run_instances(run: meta_optimizer_lib.MetaLoss, num_epochs: int,
                  log_every: Optional[float] = None, label: str = "") -> Curves:
  """Runs the unroll of `run` (traced once) on its next `num_epochs` problem instances."""
  curves = []
  start = last_log = time.time()
  for epoch in range(num_epochs):
    run.reset()
    run.run()
    curves.append(run.losses.numpy())
    if log_every is not None and time.time() - last_log > log_every:
      last_log = time.time()
      logging.info("%s: %d/%d instances, %.1fs", label, epoch + 1, num_epochs,
                   last_log - start)
  return Curves(np.stack(curves))


def hand_designed(name: str, learning_rate: float) -> meta_optimizer_lib.MetaOptimizer:
  """A MetaOptimizer holding one hand-designed net: SGD, NAG, RMSProp or Adam."""
  if name not in HAND_DESIGNED:
    raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(HAND_DESIGNED)}")
  return meta_optimizer_lib.MetaOptimizer(
      **{name.lower(): {"net": HAND_DESIGNED[name],
                        "net_options": {"learning_rate": float(learning_rate)}}})


def tune_learning_rate(name: str, make_problem: Callable[[int], MakeLoss], num_epochs: int,
                       num_steps: int, seed: int,
                       grid: Sequence[float] = DEFAULT_LR_GRID) -> Dict[str, Any]:
  """Picks the learning rate of the grid with the lowest mean final loss on TUNE instances.

  Returns:
    `{"learning_rate": best, "grid": {lr: log10 mean final loss}}`.
  """
  scores = {}
  for lr in grid:
    curves = run_optimizer(hand_designed(name, lr), make_problem(instance_seed(seed, TUNE)),
                           num_epochs, num_steps)
    scores[lr] = curves.log10_final_loss_mean
    logging.info("tuning %s: lr=%g log10 mean final loss %.3f", name, lr, scores[lr])
  best = min(grid, key=lambda lr: (scores[lr], lr))
  if not math.isfinite(scores[best]):
    raise ValueError(f"tuning {name}: every learning rate of {list(grid)} diverged")
  return {"learning_rate": best, "grid": scores}


def result_row(curves: Curves, learning_rate: Optional[float]) -> Dict[str, Any]:
  """The JSON record of one optimizer's evaluation."""
  return {
      "learning_rate": learning_rate,
      "final_loss_mean": curves.final_loss_mean,
      "log10_final_loss_mean": curves.log10_final_loss_mean,
      "log10_standard_error": curves.log10_standard_error,
      "loss_curve": [float(v) for v in np.mean(curves.losses, axis=0)],
  }


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
  """The results as a fixed-width table."""
  lines = [f"{'optimizer':<10} {'learning_rate':>13} {'mean_final_loss':>16} "
           f"{'log10_mean_final':>16} {'+-se':>7}"]
  for name, row in results.items():
    lr = "-" if row["learning_rate"] is None else f"{row['learning_rate']:g}"
    lines.append(f"{name:<10} {lr:>13} {row['final_loss_mean']:>16.6g} "
                 f"{row['log10_final_loss_mean']:>16.4f} {row['log10_standard_error']:>7.4f}")
  return "\n".join(lines)


def check_plot_path(path: str) -> None:
  """Raises ValueError unless `path` names a .png file in an existing directory."""
  if not path.lower().endswith(".png"):
    raise ValueError(f"plot must name a .png file, got {path!r}")
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise ValueError(f"plot: directory {directory!r} of {path!r} does not exist")


def plot_loss_curves(output: Mapping[str, Any], path: str) -> None:
  """Draws the mean loss curve of every optimizer of `evaluate`'s output into a PNG file.

  Log y axis, one legend entry per optimizer (with its learning rate when it has one).
  """
  check_plot_path(path)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # Files only: no display needed.
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(figsize=(6, 4))
  try:
    for name, row in output["results"].items():
      label = name if row["learning_rate"] is None else f"{name} (lr {row['learning_rate']:g})"
      axes.plot(np.arange(len(row["loss_curve"])), row["loss_curve"], label=label)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel(f"mean loss over {output['num_epochs']} instances")
    axes.set_title(f"{output['problem']}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
  finally:
    pyplot.close(figure)


OPTIMIZERS = ("L2L",) + tuple(HAND_DESIGNED)


def evaluate(problem: str, optimizers: Sequence[str], path: Optional[str] = None,
             num_epochs: int = 100, num_steps: int = 100, seed: int = 0,
             learning_rate: Optional[float] = None, tuning_epochs: int = 20,
             grid: Sequence[float] = DEFAULT_LR_GRID,
             data_dir: Optional[str] = None,
             problem_options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """Evaluates optimizers on `num_epochs` held-out instances of the named configuration.

  Args:
    problem: a name of `configs.CONFIGS`.
    optimizers: names from `OPTIMIZERS`; "L2L" is the learned optimizer saved at `path`.
    path: directory of a saved learned optimizer (train.py's save_path).
    num_epochs: held-out problem instances (TEST stream of `seed`).
    num_steps: optimizer steps per instance.
    seed: seed of the instance streams; tuning uses the TUNE stream, disjoint from TEST.
    learning_rate: the hand-designed optimizers' learning rate; None tunes it per optimizer on
      `tuning_epochs` TUNE instances over `grid`.
    data_dir: dataset directory of the configs that take one (mnist, cifar, cifar-multi).
    problem_options: more options of the configuration, e.g. `{"hidden_sizes": (40,),
      "activation": "relu"}` for mnist and digits (the paper's generalization runs).

  Returns:
    `{"problem", "num_steps", "num_epochs", "results": {name: result_row(...)}}`.
  """
  from l2l import configs  # configs imports problems, which is not needed for plain runs.
  named = configs.get_config(problem, data_dir=data_dir, **dict(problem_options or {}))
  for name in optimizers:
    if name not in OPTIMIZERS:
      raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS} or 'all'")
  if "L2L" in optimizers and not path:
    raise ValueError("optimizer L2L needs --path, the directory of a saved learned optimizer")
  for arg, value in (("num_epochs", num_epochs), ("num_steps", num_steps),
                     ("tuning_epochs", tuning_epochs)):
    checks.positive_int(arg, value)
  if learning_rate is not None and not learning_rate > 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
  learned = meta_optimizer_lib.MetaOptimizer.load(path) if "L2L" in optimizers else None
  test_seed = instance_seed(seed, TEST)
  results = {}
  for name in optimizers:
    start = time.time()
    if name == "L2L":
      # A single-net optimizer (e.g. a pretrained one) updates every variable.
      assignments = None if len(learned.nets) == 1 else named.net_assignments
      curves = run_optimizer(learned, named.make_problem(test_seed), num_epochs, num_steps,
                             assignments, log_every=30, label=name)
      lr = None
    else:
      lr = learning_rate
      if lr is None:
        lr = tune_learning_rate(name, named.make_problem, tuning_epochs, num_steps, seed,
                                grid)["learning_rate"]
      curves = run_optimizer(hand_designed(name, lr), named.make_problem(test_seed), num_epochs,
                             num_steps, log_every=30, label=name)
    results[name] = result_row(curves, lr)
    logging.info("%s: log10 mean final loss %.4f (%.0fs)", name,
                 results[name]["log10_final_loss_mean"], time.time() - start)
  return {"problem": problem, "problem_options": dict(problem_options or {}),
          "num_steps": num_steps, "num_epochs": num_epochs, "seed": seed, "results": results}
