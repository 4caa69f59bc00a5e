"""Meta-training a learned optimizer on a named configuration (the library behind train.py).

Each epoch draws a new problem instance and runs `num_steps / unroll_length` truncated unrolls,
one Adam step on the nets after each. Every `evaluation_period` epochs the optimizer runs
`num_steps` steps on `evaluation_epochs` fresh validation instances (disjoint from the training
stream); the best one so far, by log10 of the mean final loss, is saved to `save_path`.
"""

import dataclasses
import inspect
import json
import math
import os
import time
from typing import Any, Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf

import nets
from l2l import configs
from l2l import evaluation
from l2l import meta_optimizer as meta_optimizer_lib
from l2l import unroll as unroll_lib


SCHEDULES = ("constant", "cosine")
FINAL_LEARNING_RATE_FRACTION = 0.02


def scheduled_learning_rate(learning_rate: float, schedule: str, fraction_done: float) -> float:
  """The learning rate after `fraction_done` of training: constant, or a cosine decay to 2%."""
  if schedule == "constant":
    return learning_rate
  cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(fraction_done, 0.0), 1.0)))
  return learning_rate * (FINAL_LEARNING_RATE_FRACTION
                          + (1.0 - FINAL_LEARNING_RATE_FRACTION) * cosine)


@dataclasses.dataclass
class TrainConfig:
  """Options of `meta_train`; train.py's flags have the same names and defaults."""
  problem: str = "quadratic"
  save_path: Optional[str] = None
  overwrite: bool = False
  num_epochs: int = 2400
  num_steps: int = 100
  unroll_length: int = 10
  learning_rate: float = 3e-3
  learning_rate_schedule: str = "cosine"
  max_grad_norm: Optional[float] = None
  second_derivatives: bool = False
  objective: str = "log"
  log_period: int = 100
  evaluation_period: int = 200
  evaluation_epochs: int = 20
  seed: int = 0

  def validate(self) -> None:
    """Raises ValueError naming the first bad option."""
    for name in ("num_epochs", "num_steps", "unroll_length", "log_period", "evaluation_period",
                 "evaluation_epochs"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if self.num_steps % self.unroll_length:
      raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of unroll_length "
                       f"({self.unroll_length})")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
    if self.learning_rate_schedule not in SCHEDULES:
      raise ValueError(f"learning_rate_schedule must be one of {SCHEDULES}, got "
                       f"{self.learning_rate_schedule!r}")
    if self.max_grad_norm is not None and not self.max_grad_norm > 0:
      raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm!r}")
    if self.objective not in unroll_lib.OBJECTIVES:
      raise ValueError(f"objective must be one of {unroll_lib.OBJECTIVES}, got "
                       f"{self.objective!r}")
    configs.get_config(self.problem)  # Raises on an unknown problem.


def seeded_net_configs(net_configs: Dict[str, Dict[str, Any]], seed: int) -> Dict[str, Any]:
  """Adds `seed` to the options of nets that take one and were given none."""
  seeded = json.loads(json.dumps(net_configs))
  for config in seeded.values():
    constructor = nets.NETS.get(config.get("net"))
    options = config.setdefault("net_options", {})
    if constructor is not None and "seed" in inspect.signature(constructor.__init__).parameters:
      options.setdefault("seed", seed)
  return seeded


def check_save_path(save_path: Optional[str], overwrite: bool) -> None:
  """Refuses to write into an existing non-empty directory unless `overwrite`."""
  if save_path is None:
    return
  if os.path.exists(save_path) and not os.path.isdir(save_path):
    raise ValueError(f"save_path {save_path!r} exists and is not a directory")
  if os.path.isdir(save_path) and os.listdir(save_path) and not overwrite:
    raise ValueError(f"save_path {save_path!r} already holds files; choose another path or "
                     "pass --overwrite to replace the saved optimizer")


def _format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def meta_train(config: TrainConfig) -> Dict[str, Any]:
  """Meta-trains the nets of `config.problem`'s configuration; returns a summary.

  Returns:
    `{"best_validation_log10_loss", "best_epoch", "epochs", "seconds", "save_path"}`.
  """
  config.validate()
  check_save_path(config.save_path, config.overwrite)
  tf.random.set_seed(config.seed)
  named = configs.get_config(config.problem)
  net_configs = seeded_net_configs(named.net_configs, config.seed)
  optimizer = meta_optimizer_lib.MetaOptimizer(**net_configs)
  trainer = optimizer.meta_minimize(
      named.make_problem(evaluation.instance_seed(config.seed, evaluation.TRAIN)),
      config.unroll_length, config.learning_rate, named.net_assignments,
      config.second_derivatives, max_grad_norm=config.max_grad_norm, objective=config.objective)
  unrolls_per_epoch = config.num_steps // config.unroll_length
  logging.info("meta-training on %r: %d epochs x %d unrolls of %d steps; nets %s",
               config.problem, config.num_epochs, unrolls_per_epoch, config.unroll_length,
               json.dumps(net_configs))

  def validate() -> float:
    # The same validation instances every time: the stream is rebuilt from its seed.
    curves = evaluation.run_optimizer(
        optimizer, named.make_problem(evaluation.instance_seed(config.seed,
                                                               evaluation.VALIDATION)),
        config.evaluation_epochs, config.num_steps, named.net_assignments)
    return curves.log10_final_loss_mean

  best, best_epoch = float("inf"), 0
  start = time.time()
  period_meta, period_final = [], []
  for epoch in range(1, config.num_epochs + 1):
    trainer.learning_rate.assign(scheduled_learning_rate(
        config.learning_rate, config.learning_rate_schedule, (epoch - 1) / config.num_epochs))
    trainer.reset()
    for _ in range(unrolls_per_epoch):
      period_meta.append(float(trainer.step().numpy()))
    period_final.append(float(trainer.final_loss.numpy()))
    if epoch % config.log_period == 0 or epoch == config.num_epochs:
      elapsed = time.time() - start
      eta = elapsed / epoch * (config.num_epochs - epoch)
      logging.info("epoch %d/%d  meta-loss %.4g  final loss %.4g  lr %.2g  %.1f epochs/s  "
                   "elapsed %s  ETA %s", epoch, config.num_epochs, np.mean(period_meta),
                   np.mean(period_final), float(trainer.learning_rate.numpy()),
                   epoch / elapsed, _format_seconds(elapsed), _format_seconds(eta))
      period_meta, period_final = [], []
    if epoch % config.evaluation_period == 0 or epoch == config.num_epochs:
      score = validate()
      improved = score < best
      if improved:
        best, best_epoch = score, epoch
        if config.save_path:
          optimizer.save(config.save_path)
      logging.info("validation at epoch %d: log10 mean final loss %.4f over %d instances%s",
                   epoch, score, config.evaluation_epochs,
                   " (best so far; saved)" if improved and config.save_path else
                   " (best so far)" if improved else f" (best {best:.4f} at epoch {best_epoch})")
  return {"best_validation_log10_loss": best, "best_epoch": best_epoch,
          "epochs": config.num_epochs, "seconds": time.time() - start,
          "save_path": config.save_path}
