"""`meta_train_async`: train.py --gradient=pes --strategy=parameter_server.

The learned optimizer of `config.problem` meta-trained with PES by asynchronous workers
(`AsyncPES` on a `ParameterServerStrategy`): as many Adam steps as single-process PES takes
(`num_epochs x num_steps / unroll_length`), each on one truncation's estimate from whichever
worker delivered it. The coordinator (this process) is the only one that writes: the training
state (theta and Adam's moments, read from the parameter servers; `<save_path>/train_state`,
every `checkpoint_period` epochs' worth of steps and at the end, never while theta is not
finite) and the best optimizer by validation (`<save_path>`, as train.py). A rerun resumes from
the latest checkpoint; the chains' instances start afresh (the work lost is the steps since the
checkpoint and the chains' partial horizons).
"""

import contextlib
import json
import math
import os
import shutil
import time
from typing import Any, Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from l2l import configs
from l2l import evaluation
from l2l import interrupts
from l2l import meta_optimizer as meta_optimizer_lib
from l2l import options
from l2l import training
from l2l.distribute import async_pes
from l2l.distribute import strategies
import problems

TRAIN_STATE = training.TRAIN_STATE


def _drop_saver_retracing(record) -> bool:
  # Every save of parameter-server variables traces TensorFlow's saver function anew (its
  # "retracing" warning is about TensorFlow's code, not ours, and costs ~30 ms a save).
  return "MultiDeviceSaver.save" not in record.getMessage()


def _num_workers(strategy: Optional[tf.distribute.Strategy]) -> int:
  if strategy is None:
    return 1
  # The strategy's own resolver is private; the cluster is TF_CONFIG's.
  return tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec().num_tasks(
      "worker")


def meta_train_async(config: options.TrainConfig, strategy: Optional[tf.distribute.Strategy],
                     max_staleness: int = 4, num_chains: Optional[int] = None
                     ) -> Dict[str, Any]:
  """Meta-trains `config` with asynchronous PES; returns a summary (as `training.meta_train`,
  plus "estimates", "dropped", "estimates_per_second", "mean_staleness").

  Args:
    config: train.py's options; `gradient` must be "pes" (curriculum and meta_batch_size > 1
      do not apply: each worker's truncation is one estimate).
    strategy: a `ParameterServerStrategy` (None: the same loop in this process).
    max_staleness: see `AsyncPES`.
    num_chains: truncation chains (default: 2 per worker, so that a worker always has the
      next truncation queued).

  Raises:
    ValueError: a bad config or a damaged checkpoint.
    interrupts.Interrupted: SIGINT / SIGTERM (the state was saved first).
  """
  config.validate()
  if _drop_saver_retracing not in tf.get_logger().filters:
    tf.get_logger().addFilter(_drop_saver_retracing)
  if config.gradient != "pes":
    raise ValueError(f"strategy 'parameter_server' trains with gradient='pes' (asynchronous "
                     f"estimates need no backprop), got gradient={config.gradient!r}")
  if config.curriculum:
    raise ValueError("curriculum does not apply to asynchronous PES")
  chains = 2 * _num_workers(strategy) if num_chains is None else num_chains
  if isinstance(chains, bool) or not isinstance(chains, int) or chains < 1:
    raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
  training.check_save_path(config.save_path, config.overwrite, config)
  tf.random.set_seed(config.seed)
  named = configs.get_config(config.problem, data_dir=config.data_dir)
  net_configs = training.seeded_net_configs(named.net_configs, config.seed, config.net_layers)
  scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
  with scope:  # theta on the parameter servers.
    optimizer = meta_optimizer_lib.MetaOptimizer(**net_configs)
  # A local copy for validation and saving (not read remotely step by step).
  local = meta_optimizer_lib.MetaOptimizer(**net_configs)

  def make_problem(seed: int):
    make_loss = named.make_problem(seed)
    if config.rescale:
      make_loss = problems.rescaled(make_loss, config.rescale, seed=seed + 1)
    return make_loss

  seeds = [int(np.random.SeedSequence([config.seed, evaluation.TRAIN, c]).generate_state(1)[0]
               >> 1) for c in range(chains)]
  trainer = async_pes.AsyncPES(
      strategy, optimizer, make_problem, seeds, config.unroll_length, config.num_steps,
      config.pes_particles, config.pes_std, config.learning_rate, named.net_assignments,
      config.objective, config.max_grad_norm, max_staleness,
      seed=evaluation.instance_seed(config.seed, evaluation.TRAIN) + 2)
  unrolls_per_epoch = config.num_steps // config.unroll_length
  total = config.num_epochs * unrolls_per_epoch
  best = tf.Variable(float("inf"), dtype=tf.float64, trainable=False, name="best")
  untrained = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="untrained")
  # Epochs' worth of meta-steps done (train.py's resume checks read "epoch").
  epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
  manager, writer, resumed = None, None, 0
  if config.save_path:
    state_dir = os.path.join(config.save_path, TRAIN_STATE)
    if config.overwrite:
      for sub in (TRAIN_STATE, "tensorboard"):
        shutil.rmtree(os.path.join(config.save_path, sub), ignore_errors=True)
    checkpoint = tf.train.Checkpoint(nets=optimizer.nets, adam=trainer.optimizer,
                                     version=trainer.version, skipped=trainer.skipped_steps,
                                     dropped=trainer.dropped, best=best, untrained=untrained,
                                     epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, state_dir, max_to_keep=2)
    if manager.latest_checkpoint:
      training._restore(checkpoint, manager.latest_checkpoint)  # pylint: disable=protected-access
      resumed = int(trainer.version.numpy())
      logging.info("resuming from checkpoint %s at meta-step %d/%d", manager.latest_checkpoint,
                   resumed, total)
    os.makedirs(state_dir, exist_ok=True)
    config_file = os.path.join(state_dir,
                               training._TRAIN_CONFIG)  # pylint: disable=protected-access
    with open(config_file, "w") as f:
      json.dump(config.resume_key(), f, indent=1, sort_keys=True)
    writer = tf.summary.create_file_writer(os.path.join(config.save_path, "tensorboard"))
  logging.info("asynchronous PES on %r: %d meta-steps of %d-step truncations (%d particle "
               "pairs), %d chains, staleness bound %d; %s", config.problem, total,
               config.unroll_length, config.pes_particles, chains, max_staleness,
               "one process" if strategy is None else strategies.describe(strategy))

  validation_problem = named.make_problem(
      evaluation.instance_seed(config.seed, evaluation.VALIDATION))
  validation = local.meta_loss(validation_problem, config.num_steps, named.net_assignments,
                               use_while_loop=True)
  generators = training._find_generators(validation_problem)  # pylint: disable=protected-access
  generator_start = [g.state.numpy() for g in generators]

  def validate() -> float:
    for variable, value in zip(local.trainable_variables, optimizer.trainable_variables):
      variable.assign(value)
    for generator, state in zip(generators, generator_start):
      generator.reset(state)
    return evaluation.run_instances(validation, config.evaluation_epochs).log10_final_loss_mean

  def finite() -> bool:
    return all(bool(np.all(np.isfinite(v.numpy()))) for v in optimizer.trainable_variables)

  def save_state() -> None:
    if manager is None:
      return
    if finite():  # Numbered by epochs' worth of steps, as train.py's.
      epoch.assign(int(trainer.version.numpy()) // unrolls_per_epoch)
      manager.save(checkpoint_number=int(epoch.numpy()))
    else:
      logging.warning("the nets' weights are not finite: checkpoint not saved")

  def summarize(step: int, scalars: Dict[str, float]) -> None:
    if writer is not None:
      with writer.as_default():
        for name, value in scalars.items():
          tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                           metadata=training._SCALAR_METADATA)  # pylint: disable=protected-access
      writer.flush()

  def evaluate(step: int) -> None:
    score = validate()
    improved = math.isfinite(score) and score < float(best.numpy()) and score < float(
        untrained.numpy())
    if improved:
      best.assign(score)
      if config.save_path:
        local.save(config.save_path)
    logging.info("validation at meta-step %d: log10 mean final loss %.4f%s", step, score,
                 " (best so far; saved)" if improved and config.save_path else
                 " (best so far)" if improved else f" (best {float(best.numpy()):.4f})")
    summarize(step, {"validation_log10_final_loss": score})

  if math.isnan(float(untrained.numpy())):
    score = validate()
    untrained.assign(score if math.isfinite(score) else float("inf"))
    logging.info("validation of the untrained optimizer: log10 mean final loss %.4f", score)
  period = {"meta": [], "final": [], "staleness": []}
  start = time.time()
  with interrupts.StopOnSignal("the current meta-step") as stop:

    def callback(step: int, info: Dict[str, Any]) -> bool:
      step += resumed
      trainer.learning_rate.assign(training.scheduled_learning_rate(
          config.learning_rate, config.learning_rate_schedule, (step - 1) / total))
      period["meta"].append(info["meta_loss"])
      period["final"].append(info["final_loss"])
      period["staleness"].append(info["staleness"])
      if step % (config.log_period * unrolls_per_epoch) == 0 or step == total:
        logging.info("meta-step %d/%d: meta-loss %.4g, final loss %.4g, staleness %.2f, "
                     "dropped %d, skipped %d, %.1f steps/s", step, total,
                     np.mean(period["meta"]), np.mean(period["final"]),
                     np.mean(period["staleness"]), int(trainer.dropped.numpy()),
                     int(trainer.skipped_steps.numpy()),
                     (step - resumed) / max(time.time() - start, 1e-9))
        summarize(step, {"meta_loss": np.mean(period["meta"]),
                         "final_loss": np.mean(period["final"]),
                         "staleness": np.mean(period["staleness"])})
        period.update(meta=[], final=[], staleness=[])
      if step % (config.evaluation_period * unrolls_per_epoch) == 0 and step < total:
        evaluate(step)
      if step % (config.checkpoint_period * unrolls_per_epoch) == 0 or stop.signal is not None:
        save_state()
      return stop.signal is not None

    summary = (trainer.train(total - resumed, callback) if resumed < total else
               {"meta_steps": 0, "estimates": 0, "seconds": 0.0, "dropped": 0, "lost": 0,
                "staleness": 0.0})
    step = int(trainer.version.numpy())
    if stop.signal is not None:
      stop.raise_if_signalled(
          f"stopped at meta-step {step}/{total}; training state saved in "
          f"{os.path.join(config.save_path, TRAIN_STATE)}; run the same command to resume"
          if manager is not None else f"stopped at meta-step {step}/{total} (nothing saved)")
  evaluate(step)
  save_state()
  return {"meta_steps": step, "estimates": summary["estimates"], "dropped": summary["dropped"],
          "lost": summary.get("lost", 0),
          "estimates_per_second": summary["estimates"] / max(summary["seconds"], 1e-9),
          "mean_staleness": summary["staleness"], "seconds": time.time() - start,
          "skipped_steps": int(trainer.skipped_steps.numpy()),
          "best_validation_log10_loss": float(best.numpy()),
          "untrained_validation_log10_loss": float(untrained.numpy()),
          "finite": finite(), "save_path": config.save_path}
