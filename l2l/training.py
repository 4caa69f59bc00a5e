"""Meta-training a learned optimizer on a named configuration (the library behind train.py).

Each epoch draws a new problem instance and runs `num_steps / unroll_length` truncated unrolls,
one Adam step on the nets after each. Every `evaluation_period` epochs the optimizer runs
`num_steps` steps on `evaluation_epochs` fresh validation instances (disjoint from the training
stream); the best one so far, by log10 of the mean final loss, is saved to `save_path`.

With a `save_path`, training is resumable: every `checkpoint_period` epochs (and at the end) a
`tf.train.CheckpointManager` writes `<save_path>/train_state/` with the nets, the meta-optimizer's
Adam state, the learning rate, the epoch and meta-step counters, the best validation score and
its epoch, and the state of every `tf.random.Generator` of the training problem, so a resumed
run draws the same problem instances as an uninterrupted one. The same config in the same
`save_path` resumes from the latest checkpoint; TensorBoard summaries go to
`<save_path>/tensorboard`.

With `meta_batch_size` B > 1, a meta-step unrolls B problem instances (index 0 is the instance
stream of B = 1, index i its own seeded stream) and averages their meta-gradients
(`l2l.distribute.MetaBatchMinimize`). Under a `tf.distribute` strategy (`meta_train(config,
strategy)`) the B instances are split across the replicas and the meta-gradients all-reduced:
the same training whatever the number of replicas. Under `MultiWorkerMirroredStrategy` the chief
writes checkpoints, the best optimizer and summaries to `save_path`; the other workers write
their checkpoints to a temporary directory they delete (TensorFlow's convention), and resume
from the chief's.
"""

import inspect
import json
import math
import os
import shutil
import time
import types
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

import nets
import problems
from l2l import configs
from l2l import distribute
from l2l import es
from l2l import evaluation
from l2l import interrupts
from l2l import meta_optimizer as meta_optimizer_lib
from l2l.options import GRADIENTS, SCHEDULES, TrainConfig  # pylint: disable=unused-import


FINAL_LEARNING_RATE_FRACTION = 0.02
# An epoch diverged when its final optimizee loss is not finite or exceeds this multiple of the
# instance's initial loss: the learned optimizer made the problem worse, not slower.
DIVERGENCE_FACTOR = 100.0


def scheduled_learning_rate(learning_rate: float, schedule: str, fraction_done: float) -> float:
  """The learning rate after `fraction_done` of training: constant, or a cosine decay to 2%."""
  if schedule == "constant":
    return learning_rate
  cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(fraction_done, 0.0), 1.0)))
  return learning_rate * (FINAL_LEARNING_RATE_FRACTION
                          + (1.0 - FINAL_LEARNING_RATE_FRACTION) * cosine)


def seeded_net_configs(net_configs: Dict[str, Dict[str, Any]], seed: int,
                       layers: Sequence[int] = ()) -> Dict[str, Any]:
  """Adds `seed` to the options of nets that take one and were given none; non-empty `layers`
  replaces the LSTM layer sizes of every net that has them."""
  seeded = json.loads(json.dumps(net_configs))
  for config in seeded.values():
    constructor = nets.NETS.get(config.get("net"))
    options = config.setdefault("net_options", {})
    if layers and "layers" in options:
      options["layers"] = [int(n) for n in layers]
    if constructor is not None and "seed" in inspect.signature(constructor.__init__).parameters:
      options.setdefault("seed", seed)
  return seeded


_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR).SerializeToString()
TRAIN_STATE = "train_state"
_TRAIN_CONFIG = "train_config.json"


def _saved_epoch(directory: str) -> int:
  """The epoch of the latest checkpoint in `directory`, 0 if there is none."""
  latest = tf.train.latest_checkpoint(directory)
  if latest is None:
    return 0
  try:
    return int(tf.train.load_checkpoint(latest).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))
  except (tf.errors.OpError, IndexError, ValueError) as e:
    raise _corrupt_state(latest, e) from None


def check_save_path(save_path: Optional[str], overwrite: bool,
                    config: Optional["TrainConfig"] = None) -> None:
  """Refuses to write into an existing non-empty directory unless `overwrite`, or unless it
  holds an unfinished resumable run (`train_state/`) of the same `config`."""
  if save_path is None:
    return
  if os.path.exists(save_path) and not os.path.isdir(save_path):
    raise ValueError(f"save_path {save_path!r} exists and is not a directory")
  if not os.path.isdir(save_path) or not os.listdir(save_path) or overwrite:
    return
  config_file = os.path.join(save_path, TRAIN_STATE, _TRAIN_CONFIG)
  if config is None or not os.path.isfile(config_file):
    raise ValueError(f"save_path {save_path!r} already holds files; choose another path or "
                     "pass --overwrite to replace the saved optimizer")
  try:
    with open(config_file) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    saved = None
  key = json.loads(json.dumps(config.resume_key()))
  if isinstance(saved, dict):
    # Options added after the run was written: it ran with their defaults.
    defaults = json.loads(json.dumps(TrainConfig().resume_key()))
    saved = {**{k: v for k, v in defaults.items() if k in key}, **saved}
  if saved != key:
    differ = (sorted(k for k in set(key) | set(saved) if key.get(k) != saved.get(k))
              if isinstance(saved, dict) else ["unreadable " + _TRAIN_CONFIG])
    raise ValueError(f"save_path {save_path!r} already holds files of a run with a different "
                     f"config (differs in {', '.join(differ)}); choose another path or pass "
                     "--overwrite to start afresh")
  if _saved_epoch(os.path.join(save_path, TRAIN_STATE)) >= config.num_epochs:
    raise ValueError(f"save_path {save_path!r} already holds files of a finished run; choose "
                     "another path or pass --overwrite to start afresh")


def _find_generators(root: Any, max_depth: int = 4) -> List[tf.random.Generator]:
  """The `tf.random.Generator`s reachable from `root` through closures and object attributes:
  the problem instance streams, which are created inside the problem's closure."""
  found, seen = [], set()

  def visit(obj: Any, depth: int) -> None:
    if id(obj) in seen or depth > max_depth:
      return
    seen.add(id(obj))
    if isinstance(obj, tf.random.Generator):
      found.append(obj)
    elif isinstance(obj, types.FunctionType):
      for cell in obj.__closure__ or ():
        try:
          visit(cell.cell_contents, depth + 1)
        except ValueError:  # An empty cell.
          pass
    elif isinstance(obj, (list, tuple)):
      for item in obj:
        visit(item, depth + 1)
    elif isinstance(obj, dict):
      for item in obj.values():
        visit(item, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(
        obj, (tf.Tensor, tf.Variable, np.ndarray, type, types.ModuleType)):
      for item in vars(obj).values():
        visit(item, depth + 1)

  visit(root, 0)
  return found


def _format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_problem(named: configs.Config, config: TrainConfig, index: int = 0) -> Any:
  """The training problem (instance stream) of meta-batch index `index`: index 0 is the stream
  of a meta-batch of one; index i > 0 has its own seed, whichever replica unrolls it."""
  seed = evaluation.instance_seed(config.seed, evaluation.TRAIN)
  if index:
    seed = int(np.random.SeedSequence([int(config.seed), evaluation.TRAIN, int(index)])
               .generate_state(1)[0] >> 1)
  make_loss = named.make_problem(seed)
  if config.rescale:
    make_loss = problems.rescaled(make_loss, config.rescale, seed=seed + 1)
  return make_loss


def meta_train(config: TrainConfig, strategy: Optional[tf.distribute.Strategy] = None
               ) -> Dict[str, Any]:
  """Meta-trains the nets of `config.problem`'s configuration; returns a summary.

  With `config.save_path`, resumes from `<save_path>/train_state/` when it holds a checkpoint
  of the same config (see the module docstring). `strategy` (`l2l.distribute.create_strategy`)
  splits the meta-batch across its replicas; None runs one replica.

  Divergence never passes silently: the untrained optimizer is validated first, and a
  validation score that is not finite or not better than its score is never kept as the best
  (nor saved); meta-steps skipped for a non-finite meta-loss or meta-gradient, and epochs whose
  final optimizee loss is not finite or over `DIVERGENCE_FACTOR` times the instance's initial
  loss, are logged as warnings with their epoch and meta-step.

  SIGINT and SIGTERM finish the current epoch (with its validation, if one is due), write a
  checkpoint and raise `interrupts.Interrupted`; the same call resumes where it stopped.

  Returns:
    `{"best_validation_log10_loss", "best_epoch", "untrained_validation_log10_loss", "saved",
    "diverged_epochs", "epochs", "meta_steps", "skipped_steps", "resumed_from_epoch",
    "seconds", "save_path"}`; `best_epoch` is 0 and `saved` False when no validation beat the
    untrained optimizer.

  Raises:
    interrupts.Interrupted: SIGINT or SIGTERM arrived; the state was saved (with a save_path).
    ValueError: bad options, or a save_path holding another run's files.
  """
  with interrupts.StopOnSignal("the current epoch") as stop:
    return _meta_train(config, stop, strategy)


def _meta_train(config: TrainConfig, stop: interrupts.StopOnSignal,
                strategy: Optional[tf.distribute.Strategy]) -> Dict[str, Any]:
  config.validate()
  if strategy is not None and config.gradient == "pes":
    raise ValueError("gradient='pes' runs on one replica, or on asynchronous workers with "
                     "strategy 'parameter_server' (l2l.distribute.meta_train_async)")
  distribute.shard(config.meta_batch_size, strategy)  # Raises unless it splits evenly.
  chief = distribute.is_chief(strategy)
  check_save_path(config.save_path, config.overwrite, config)
  tf.random.set_seed(config.seed)
  named = configs.get_config(config.problem, data_dir=config.data_dir)
  net_configs = seeded_net_configs(named.net_configs, config.seed, config.net_layers)
  optimizer = meta_optimizer_lib.MetaOptimizer(**net_configs)
  make_loss = train_problem(named, config)
  generators = lambda: _find_generators(make_loss)
  if config.meta_batch_size > 1 or strategy is not None:
    make_losses = [make_loss] + [train_problem(named, config, i)
                                 for i in range(1, config.meta_batch_size)]
    generators = lambda: [g for m in make_losses for g in _find_generators(m)]
    trainer = distribute.MetaBatchMinimize(
        optimizer, make_losses, config.unroll_length, config.learning_rate,
        named.net_assignments, config.second_derivatives, max_grad_norm=config.max_grad_norm,
        strategy=strategy, objective=config.objective, segment_length=config.segment_length)
  elif config.gradient == "pes":
    trainer = es.PESMinimize(
        optimizer, make_loss, config.unroll_length, config.pes_particles, config.pes_std,
        config.learning_rate, named.net_assignments, config.objective, config.max_grad_norm,
        seed=evaluation.instance_seed(config.seed, evaluation.TRAIN) + 2)
  else:
    trainer = optimizer.meta_minimize(
        make_loss, config.unroll_length, config.learning_rate, named.net_assignments,
        config.second_derivatives, max_grad_norm=config.max_grad_norm, objective=config.objective,
        segment_length=config.segment_length)
  unrolls_per_epoch = config.num_steps // config.unroll_length

  epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
  meta_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="meta_steps")
  best_var = tf.Variable(float("inf"), dtype=tf.float64, trainable=False, name="best")
  best_epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
  # The untrained optimizer's validation score: NaN until measured (before epoch 1).
  untrained_var = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="untrained")
  manager, writer, resumed_from = None, None, 0
  if config.save_path:
    state_dir = os.path.join(config.save_path, TRAIN_STATE)
    distribute.barrier(strategy)  # Every worker has checked save_path before the chief writes.
    if config.overwrite and chief:
      for sub in (TRAIN_STATE, "tensorboard"):
        shutil.rmtree(os.path.join(config.save_path, sub), ignore_errors=True)
    distribute.barrier(strategy)
    checkpoint = tf.train.Checkpoint(
        trainer=trainer, epoch=epoch_var, meta_steps=meta_steps, best=best_var,
        best_epoch=best_epoch_var, untrained=untrained_var, generators=generators())
    manager = tf.train.CheckpointManager(checkpoint, distribute.write_dir(state_dir, strategy),
                                         max_to_keep=2)
    latest = tf.train.latest_checkpoint(state_dir)  # The chief's, on every worker.
    if latest:
      _restore(checkpoint, latest)
      resumed_from = int(epoch_var.numpy())
      logging.info("resuming from checkpoint %s at epoch %d/%d (%d meta-steps done)",
                   latest, resumed_from, config.num_epochs, int(meta_steps.numpy()))
    if chief:
      os.makedirs(state_dir, exist_ok=True)
      with open(os.path.join(state_dir, _TRAIN_CONFIG), "w") as f:
        json.dump(config.resume_key(), f, indent=1, sort_keys=True)
      writer = tf.summary.create_file_writer(os.path.join(config.save_path, "tensorboard"))
  logging.info("meta-training on %r: %d epochs x %s unrolls of %d steps%s; nets %s",
               config.problem, config.num_epochs,
               "/".join(str(n // config.unroll_length) for n in config.curriculum)
               or unrolls_per_epoch, config.unroll_length,
               f"; parameters rescaled by exp(U[-{config.rescale}, {config.rescale}])"
               if config.rescale else "", json.dumps(net_configs))
  if config.meta_batch_size > 1 or strategy is not None:
    logging.info("meta-batch of %d problem instances per meta-step on %s",
                 config.meta_batch_size, distribute.describe(strategy))

  validation_problem = named.make_problem(
      evaluation.instance_seed(config.seed, evaluation.VALIDATION))
  validation = optimizer.meta_loss(validation_problem, config.num_steps, named.net_assignments,
                                   use_while_loop=True)
  validation_generators = _find_generators(validation_problem)
  validation_start = [g.state.numpy() for g in validation_generators]

  def validate() -> float:
    # The same validation instances every time: one traced unroll whose instance stream is
    # rewound to where it began.
    for generator, state in zip(validation_generators, validation_start):
      generator.reset(state)
    return evaluation.run_instances(validation, config.evaluation_epochs).log10_final_loss_mean

  def summarize(epoch: int, scalars: Dict[str, float]) -> None:
    if writer is not None:
      with writer.as_default():
        for name, value in scalars.items():
          # tf.summary.scalar needs the tensorboard package; the same record by hand does not.
          tf.summary.write(name, tf.constant(float(value), tf.float32), step=epoch,
                           metadata=_SCALAR_METADATA)
      writer.flush()

  if math.isnan(float(untrained_var.numpy())) and resumed_from:
    logging.warning("the checkpoint predates the untrained optimizer's validation score: "
                    "validations are compared with each other only")
    untrained_var.assign(float("inf"))
  elif math.isnan(float(untrained_var.numpy())):
    untrained_score = validate()
    # An untrained optimizer that already diverges sets no bar (any finite score beats it).
    untrained_var.assign(untrained_score if math.isfinite(untrained_score) else float("inf"))
    logging.info("validation of the untrained optimizer: log10 mean final loss %.4f over %d "
                 "instances (a trained one is kept only if it does better)",
                 float(untrained_var.numpy()), config.evaluation_epochs)
  untrained = float(untrained_var.numpy())

  start = time.time()
  period_meta, period_final, diverged = [], [], []
  skipped_before = int(trainer.skipped_steps.numpy())
  for epoch in range(resumed_from + 1, config.num_epochs + 1):
    trainer.learning_rate.assign(scheduled_learning_rate(
        config.learning_rate, config.learning_rate_schedule, (epoch - 1) / config.num_epochs))
    trainer.reset()
    epoch_unrolls = config.steps_at(epoch) // config.unroll_length
    if config.curriculum and (epoch == resumed_from + 1
                              or config.steps_at(epoch - 1) != config.steps_at(epoch)):
      logging.info("curriculum: %d optimizee steps per epoch from epoch %d",
                   config.steps_at(epoch), epoch)
    for unroll in range(epoch_unrolls):
      meta_loss = float(trainer.step().numpy())
      period_meta.append(meta_loss)
      if unroll == 0:
        initial_loss = float(trainer.losses[0].numpy())
      skipped = int(trainer.skipped_steps.numpy())
      if skipped > skipped_before:
        logging.warning("epoch %d, meta-step %d: meta-loss %.4g or its gradient is not "
                        "finite; step skipped (%d skipped so far)", epoch,
                        int(meta_steps.numpy()) + unroll + 1, meta_loss, skipped)
        skipped_before = skipped
    meta_steps.assign_add(epoch_unrolls)
    epoch_var.assign(epoch)
    final_loss = float(trainer.final_loss.numpy())
    period_final.append(final_loss)
    if not final_loss <= DIVERGENCE_FACTOR * abs(initial_loss):
      if not diverged:
        logging.warning("epoch %d (meta-step %d): the optimizee diverged: final loss %.4g from "
                        "an initial %.4g (more than %g times, or not finite); the meta-learning "
                        "rate (%.2g) may be too large", epoch, int(meta_steps.numpy()),
                        final_loss, initial_loss, DIVERGENCE_FACTOR,
                        float(trainer.learning_rate.numpy()))
      diverged.append(epoch)
    if epoch % config.log_period == 0 or epoch == config.num_epochs:
      elapsed = time.time() - start
      done = epoch - resumed_from
      eta = elapsed / done * (config.num_epochs - epoch)
      skipped = int(trainer.skipped_steps.numpy())
      period_diverged = [e for e in diverged if e > epoch - len(period_final)]
      logging.info("epoch %d/%d  meta-loss %.4g  final loss %.4g  lr %.2g  skipped %d  "
                   "%.1f epochs/s  elapsed %s  ETA %s%s", epoch, config.num_epochs,
                   np.mean(period_meta), np.mean(period_final),
                   float(trainer.learning_rate.numpy()), skipped, done / elapsed,
                   _format_seconds(elapsed), _format_seconds(eta),
                   f"  diverged in {len(period_diverged)} of {len(period_final)} epochs"
                   if period_diverged else "")
      summarize(epoch, {"meta_loss": np.mean(period_meta), "final_loss": np.mean(period_final),
                        "learning_rate": float(trainer.learning_rate.numpy()),
                        "skipped_steps": skipped})
      period_meta, period_final = [], []
    if epoch % config.evaluation_period == 0 or epoch == config.num_epochs:
      score = validate()
      best, best_epoch = float(best_var.numpy()), int(best_epoch_var.numpy())
      improved = math.isfinite(score) and score < best and score < untrained
      if improved:
        best, best_epoch = score, epoch
        best_var.assign(best)
        best_epoch_var.assign(best_epoch)
        if config.save_path:
          directory = distribute.write_dir(config.save_path, strategy)
          optimizer.save(directory)
          distribute.remove_write_dir(directory, config.save_path)
      if improved:
        note = " (best so far; saved)" if config.save_path else " (best so far)"
      elif not math.isfinite(score):
        note = " (not finite: diverged; not kept)"
      elif score >= untrained and not best_epoch:
        note = f" (not better than the untrained optimizer's {untrained:.4f}; not kept)"
      else:
        note = f" (best {best:.4f} at epoch {best_epoch})"
      (logging.info if improved or best_epoch else logging.warning)(
          "validation at epoch %d: log10 mean final loss %.4f over %d instances%s", epoch,
          score, config.evaluation_epochs, note)
      summarize(epoch, {"validation_log10_final_loss": score})
    if manager is not None and (epoch % config.checkpoint_period == 0
                                or epoch == config.num_epochs or stop.signal is not None):
      manager.save(checkpoint_number=epoch)
      distribute.remove_write_dir(manager.directory, state_dir)
    stop.raise_if_signalled(
        f"stopped after epoch {epoch}/{config.num_epochs}; training state saved in "
        f"{os.path.join(config.save_path, TRAIN_STATE)}; run the same command to resume"
        if manager is not None else
        f"stopped after epoch {epoch}/{config.num_epochs} (no save_path: nothing saved)")
  best_epoch = int(best_epoch_var.numpy())
  if not best_epoch:
    logging.warning("no validation beat the untrained optimizer (log10 mean final loss %.4f)%s",
                    untrained, f": nothing saved to {config.save_path}" if config.save_path
                    else "")
  if diverged:
    logging.warning("the optimizee diverged in %d of %d epochs (first: epoch %d)",
                    len(diverged), config.num_epochs - resumed_from, diverged[0])
  return {"best_validation_log10_loss": float(best_var.numpy()), "best_epoch": best_epoch,
          "untrained_validation_log10_loss": untrained, "saved": bool(best_epoch
                                                                       and config.save_path),
          "diverged_epochs": len(diverged), "epochs": config.num_epochs,
          "meta_steps": int(meta_steps.numpy()),
          "skipped_steps": int(trainer.skipped_steps.numpy()),
          "resumed_from_epoch": resumed_from, "seconds": time.time() - start,
          "save_path": config.save_path}


def _restore(checkpoint: tf.train.Checkpoint, prefix: str) -> None:
  """Restores the training state from `prefix`; ValueError naming it if it is damaged or of
  another configuration. (A checkpoint written before the untrained score was kept restores
  without it.)"""
  try:
    status = checkpoint.restore(prefix)
    status.assert_existing_objects_matched()
  except (tf.errors.OpError, AssertionError, ValueError, IndexError) as e:
    raise _corrupt_state(prefix, e) from None


def _corrupt_state(prefix: str, error: Exception) -> ValueError:
  first = (str(error).strip().splitlines() or [""])[0][:200]
  return ValueError(f"training state {prefix!r} is corrupt or of another configuration "
                    f"({type(error).__name__}: {first}); delete {os.path.dirname(prefix)!r} "
                    "or pass --overwrite to start afresh")
