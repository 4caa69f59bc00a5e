"""Meta-trains a learned optimizer and saves the best one (by validation) to --save_path.

    python train.py --problem=quadratic --save_path=/tmp/l2l_quadratic

Checkpoints of the training state go to <save_path>/train_state every --checkpoint_period epochs;
after a crash the same command resumes from the latest one. TensorBoard summaries go to
<save_path>/tensorboard.

    python train.py --suite=train --save_path=/tmp/versatile

meta-trains the versatile per-parameter rule (nets.PerParameterMLP) with PES over a task suite
of problems.suite instead (l2l.versatile.suite_training): --num_steps is then the horizon of
every task instance (default 1000), --meta_steps the number of PES steps; SIGINT / SIGTERM save the state
and a re-run of the same command resumes.
"""

import copy
import os
import sys

from absl import app
from absl import flags
from absl import logging

# Only modules that load without TensorFlow here: --help and flag errors stay fast. The rest is
# imported in main(), after l2l.cli.start_tensorflow().
from l2l import cli
from l2l import configs
from l2l import distribute
from l2l import interrupts
from l2l import options

_DEFAULTS = options.TrainConfig()
# l2l.versatile.suite_training.SuiteTrainConfig's defaults (scripts_test checks they agree).
_SUITE_DEFAULTS = {"meta_steps": 3000, "tasks_per_step": 4, "progress_weighting": 0.5,
                   "adam_floor": 0.0}

flags.DEFINE_string("save_path", None, "Directory for the best optimizer (config.json + weights).")
flags.DEFINE_bool("overwrite", False, "Replace an optimizer already saved in --save_path (and "
                  "start afresh instead of resuming).")
flags.DEFINE_string("problem", _DEFAULTS.problem, "A named configuration "
                    f"({', '.join(sorted(configs.CONFIGS))}) or your own problem as "
                    "module:function (function(seed) returns a make_loss; the module is "
                    "imported from the current directory or PYTHONPATH).")
flags.DEFINE_integer("num_epochs", _DEFAULTS.num_epochs, "Training epochs (problem instances).")
flags.DEFINE_integer("num_steps", _DEFAULTS.num_steps, "Optimizee steps per epoch.")
flags.DEFINE_integer("unroll_length", _DEFAULTS.unroll_length, "Steps per truncated unroll.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam learning rate of the nets.")
flags.DEFINE_enum("learning_rate_schedule", _DEFAULTS.learning_rate_schedule,
                  list(options.SCHEDULES), "Meta learning rate: constant, or cosine decay to 2%.")
flags.DEFINE_float("max_grad_norm", _DEFAULTS.max_grad_norm,
                   "Clip the meta-gradient to this global norm (default: no clipping).")
flags.DEFINE_bool("second_derivatives", _DEFAULTS.second_derivatives,
                  "Backpropagate through the optimizee's gradients (Hessian terms).")
flags.DEFINE_enum("objective", _DEFAULTS.objective, list(options.OBJECTIVES),
                  "Meta-loss over each unroll: sum of the losses; log_mean: unroll length x "
                  "log of the mean loss; log: sum of the log losses (the 2016 results' recipe; "
                  "on minibatches whose loss can reach 0 it rewards blowing the weights up). "
                  "Logs are floored at 1e-6 times the problem instance's initial loss "
                  "(l2l.unroll.LOG_FLOOR).")
flags.DEFINE_integer("log_period", _DEFAULTS.log_period, "Epochs between progress lines.")
flags.DEFINE_integer("evaluation_period", _DEFAULTS.evaluation_period,
                     "Epochs between validations (the best optimizer is kept).")
flags.DEFINE_integer("evaluation_epochs", _DEFAULTS.evaluation_epochs,
                     "Validation problem instances.")
flags.DEFINE_integer("checkpoint_period", _DEFAULTS.checkpoint_period,
                     "Epochs between checkpoints of the training state in "
                     "<save_path>/train_state (the same command resumes from the latest).")
flags.DEFINE_string("data_dir", None, "Dataset directory of the mnist, cifar and cifar-multi "
                    "configs (default: $L2L_DATA_DIR, else the Keras download and cache).")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: TensorFlow's "
                     "default; the fused optimizer ops take helper threads from this pool).")
flags.DEFINE_integer("intra_op_threads", 1, "TensorFlow intra-op threads (0: TensorFlow's "
                     "default). One keeps a small problem's own ops unsplit, faster for "
                     "meta-training; the fused optimizer ops still use every core.")
flags.DEFINE_enum("compile_loss", "auto", ["auto", "graph", "xla"], "How first-order "
                  "unrolls compute the optimizee's loss and gradient: auto measures once per "
                  "problem whether one XLA call is faster than TensorFlow's ops and uses it if "
                  "so (small problems); graph and xla pin it (l2l.loss_gradient).")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of nets, problem instances and TF ops.")
flags.DEFINE_float("rescale", _DEFAULTS.rescale, "Random rescaling (Lv et al. 2017): train on "
                   "parameters scaled per coordinate by exp(U[-r, r]); 0 turns it off.")
flags.DEFINE_list("curriculum", [], "Curriculum on the horizon: optimizee steps per epoch for "
                  "equal shares of the epochs, e.g. 20,50,100 (multiples of --unroll_length); "
                  "validation always uses --num_steps.")
flags.DEFINE_enum("gradient", _DEFAULTS.gradient, list(options.GRADIENTS),
                  "Meta-gradient: backprop through each unroll, checkpointed backprop (segments "
                  "of --segment_length steps recomputed: bounded memory), or persistent "
                  "evolution strategies (pes: no backprop, unbiased over the whole horizon).")
flags.DEFINE_integer("segment_length", None, "Steps per recomputed segment; required by, and "
                     "only used with, --gradient=checkpointed.")
flags.DEFINE_integer("pes_particles", _DEFAULTS.pes_particles,
                     "--gradient=pes: antithetic pairs of perturbed unrolls per step.")
flags.DEFINE_float("pes_std", _DEFAULTS.pes_std,
                   "--gradient=pes: standard deviation of the perturbations of the nets' weights.")
flags.DEFINE_list("net_layers", [], "LSTM layer sizes of the problem's nets instead of the "
                  "configuration's, e.g. 8 (a small net: fewer weights for --gradient=pes to "
                  "perturb) or 40,40.")
flags.DEFINE_string("suite", None, "Meta-train the versatile per-parameter rule with PES over "
                    "this task suite (e.g. train; see problems.suite) instead of --problem.")
flags.DEFINE_integer("meta_steps", _SUITE_DEFAULTS["meta_steps"], "--suite: PES meta-steps.")
flags.DEFINE_integer("tasks_per_step", _SUITE_DEFAULTS["tasks_per_step"],
                     "--suite: tasks drawn per meta-step (one truncation each).")
flags.DEFINE_float("progress_weighting", _SUITE_DEFAULTS["progress_weighting"],
                   "--suite: a in [0, 1]; truncations weigh from 1 - a (start of a horizon) to "
                   "1 + a (end), so the final loss counts more.")
flags.DEFINE_float("adam_floor", _SUITE_DEFAULTS["adam_floor"],
                   "--suite: losses count as at least this times tuned Adam's final loss on "
                   "their task (measured first; 0: no floor), in the meta-objective and in "
                   "validation.")
flags.DEFINE_bool("tensor_features", False, "--suite: the rule's schedule also reads per-tensor "
                  "features and sets a step size per tensor (nets.PerParameterMLP).")
flags.DEFINE_float("step_adaptation", 0., "--suite: initial rate of the rule's online "
                   "step-size adaptation (hypergradient descent on its log step size; "
                   "nets.PerParameterMLP step_adaptation; 0: off).")
flags.DEFINE_bool("adaptation_per_tensor", False, "--suite, with --step_adaptation: one "
                  "adaptation factor per tensor instead of one for the model.")
flags.DEFINE_string("init_from", None, "--suite: start from the weights of this saved "
                    "optimizer (a save_path, or pretrained:NAME); the rule's other weights keep "
                    "their initial values.")
flags.DEFINE_integer("meta_batch_size", _DEFAULTS.meta_batch_size, "Problem instances per "
                     "meta-step (their meta-gradients averaged), split across --strategy's "
                     "replicas.")
flags.DEFINE_enum("strategy", "default",
                  list(distribute.STRATEGIES + distribute.ASYNC_STRATEGIES),
                  "tf.distribute strategy: one replica, MirroredStrategy over local devices, "
                  "MultiWorkerMirroredStrategy across the processes of TF_CONFIG (see "
                  "python -m l2l.distribute.launch), or, with --gradient=pes, asynchronous "
                  "workers of a ParameterServerStrategy (this process the coordinator; "
                  "launch --parameter_servers=1).")
flags.DEFINE_integer("max_staleness", 4, "--strategy=parameter_server: drop an estimate "
                     "computed more than this many meta-steps ago.")
flags.DEFINE_integer("async_chains", 0, "--strategy=parameter_server: truncation chains "
                     "(problem-instance streams) kept in flight (0: 2 per worker).")
flags.DEFINE_integer("cpu_devices", 0, "--strategy=mirrored: replicate over this many logical "
                     "CPU devices (0: the GPUs, or the one CPU).")
FLAGS = flags.FLAGS

# Flags shared with --problem runs whose defaults differ for --suite runs.
_SUITE_FLAGS = {"num_steps": "num_steps", "unroll_length": "unroll_length",
                "pes_particles": "pes_particles", "pes_std": "pes_std",
                "learning_rate": "learning_rate", "max_grad_norm": "max_grad_norm",
                "objective": "objective", "evaluation_period": "evaluation_period",
                "learning_rate_schedule": "learning_rate_schedule",
                "log_period": "log_period", "seed": "seed"}


def train_suite() -> None:
  """train.py --suite: meta-trains over a task suite (l2l.versatile.suite_training)."""
  from l2l.versatile import suite_training  # pylint: disable=g-import-not-at-top
  overrides = {field: FLAGS[flag].value for flag, field in _SUITE_FLAGS.items()
             if FLAGS[flag].present}
  rule_options = {}
  if FLAGS.tensor_features:
    rule_options["tensor_features"] = True
  if FLAGS.step_adaptation:
    rule_options.update(step_adaptation=FLAGS.step_adaptation,
                        adaptation_per_tensor=FLAGS.adaptation_per_tensor)
  elif FLAGS.adaptation_per_tensor:
    raise app.UsageError("--adaptation_per_tensor needs --step_adaptation > 0")
  if rule_options:
    net = copy.deepcopy(suite_training.VERSATILE_NET)
    net["net_options"].update(rule_options)
    overrides["net_config"] = net
  config = suite_training.SuiteTrainConfig(
      suite=FLAGS.suite, save_path=FLAGS.save_path, meta_steps=FLAGS.meta_steps,
      init_from=FLAGS.init_from,
      tasks_per_step=FLAGS.tasks_per_step, progress_weighting=FLAGS.progress_weighting,
      adam_floor=FLAGS.adam_floor, **overrides)
  try:
    config.validate()
    from problems.suite import suite  # pylint: disable=g-import-not-at-top
    suite(config.suite)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    summary = suite_training.meta_train_suite(config)
  except interrupts.Interrupted as e:
    logging.warning("%s", e)
    sys.exit(e.exit_code)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  logging.info("done in %.0fs: %d meta-steps (%d skipped as non-finite); best validation mean "
               "log10 final loss %.4f at meta-step %d%s", summary["seconds"],
               summary["meta_steps"], summary["skipped_steps"],
               summary["best_validation_log10_loss"], summary["best_meta_step"],
               f"; saved to {summary['save_path']}" if summary["save_path"] else
               " (no --save_path: nothing saved)")


def train_async(strategy) -> None:
  """train.py --strategy=parameter_server: the coordinator of asynchronous PES workers."""
  from l2l.distribute import async_training  # pylint: disable=g-import-not-at-top
  config = options.TrainConfig(
      problem=FLAGS.problem, save_path=FLAGS.save_path, overwrite=FLAGS.overwrite,
      num_epochs=FLAGS.num_epochs, num_steps=FLAGS.num_steps, unroll_length=FLAGS.unroll_length,
      learning_rate=FLAGS.learning_rate, learning_rate_schedule=FLAGS.learning_rate_schedule,
      max_grad_norm=FLAGS.max_grad_norm, objective=FLAGS.objective, log_period=FLAGS.log_period,
      evaluation_period=FLAGS.evaluation_period, evaluation_epochs=FLAGS.evaluation_epochs,
      checkpoint_period=FLAGS.checkpoint_period, data_dir=FLAGS.data_dir, seed=FLAGS.seed,
      rescale=FLAGS.rescale, gradient=FLAGS.gradient, pes_particles=FLAGS.pes_particles,
      pes_std=FLAGS.pes_std, net_layers=cli.int_list("net_layers", FLAGS.net_layers))
  # However it ends, the process leaves with os._exit once its state is saved:
  # ClusterCoordinator's destructor waits, without a timeout, for every worker that died to come
  # back (TensorFlow's preemption handler holds a lock in update_server_def until the whole
  # cluster answers), so an ordinary exit would hang after a worker loss.
  code = 1
  try:
    code = _train_async(async_training, config, strategy)
  except interrupts.Interrupted as e:
    logging.warning("%s", e)
    code = e.exit_code
  except ValueError as e:
    sys.stderr.write(f"train.py: error: {e}\n")
  except Exception:  # pylint: disable=broad-except
    logging.exception("asynchronous training failed")
  finally:
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def _train_async(async_training, config, strategy) -> int:
  summary = async_training.meta_train_async(config, strategy, FLAGS.max_staleness,
                                            FLAGS.async_chains or None)
  logging.info("done in %.0fs: %d meta-steps from %d estimates (%.2f estimates/s, mean "
               "staleness %.2f, %d dropped as stale, %d skipped as non-finite); best validation "
               "log10 mean final loss %.4f (untrained %.4f)%s", summary["seconds"],
               summary["meta_steps"], summary["estimates"], summary["estimates_per_second"],
               summary["mean_staleness"], summary["dropped"], summary["skipped_steps"],
               summary["best_validation_log10_loss"],
               summary["untrained_validation_log10_loss"],
               f"; saved to {summary['save_path']}" if summary["save_path"] else "")
  if summary["lost"]:
    logging.info("%d estimates were lost with a worker and computed again", summary["lost"])
  return 0 if summary["finite"] else 1


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.strategy in distribute.ASYNC_STRATEGIES:
    if FLAGS.gradient != "pes":
      raise app.UsageError(f"--strategy={FLAGS.strategy} needs --gradient=pes (asynchronous "
                           f"workers send PES estimates), got --gradient={FLAGS.gradient}")
    if FLAGS.suite is not None or FLAGS.meta_batch_size != 1 or FLAGS.curriculum:
      raise app.UsageError(f"--strategy={FLAGS.strategy} trains --problem with one estimate "
                           "per truncation: drop --suite, --meta_batch_size and --curriculum")
    if FLAGS.max_staleness < 0 or FLAGS.async_chains < 0:
      raise app.UsageError("--max_staleness and --async_chains must be >= 0")
    from l2l.distribute import server  # pylint: disable=g-import-not-at-top
    if server.task_type() in server.SERVER_TASKS:  # A ps / worker task of the cluster.
      server.serve()
  strategy = distribute.start_tensorflow(FLAGS.strategy, FLAGS.inter_op_threads,
                                        FLAGS.cpu_devices, FLAGS.intra_op_threads)
  from l2l import loss_gradient  # pylint: disable=g-import-not-at-top
  loss_gradient.set_default_mode(FLAGS.compile_loss)
  if FLAGS.strategy in distribute.ASYNC_STRATEGIES:
    train_async(strategy)
    return
  if FLAGS.suite is not None:
    if strategy is not None:
      raise app.UsageError("--suite runs on one replica: use --strategy=default")
    train_suite()
    return
  from l2l import training  # pylint: disable=g-import-not-at-top
  curriculum = cli.int_list("curriculum", FLAGS.curriculum)
  net_layers = cli.int_list("net_layers", FLAGS.net_layers)
  config = options.TrainConfig(
      problem=FLAGS.problem, save_path=FLAGS.save_path, overwrite=FLAGS.overwrite,
      num_epochs=FLAGS.num_epochs, num_steps=FLAGS.num_steps, unroll_length=FLAGS.unroll_length,
      learning_rate=FLAGS.learning_rate, learning_rate_schedule=FLAGS.learning_rate_schedule,
      max_grad_norm=FLAGS.max_grad_norm, second_derivatives=FLAGS.second_derivatives,
      objective=FLAGS.objective, log_period=FLAGS.log_period,
      evaluation_period=FLAGS.evaluation_period, evaluation_epochs=FLAGS.evaluation_epochs,
      checkpoint_period=FLAGS.checkpoint_period, data_dir=FLAGS.data_dir, seed=FLAGS.seed,
      rescale=FLAGS.rescale, curriculum=curriculum, gradient=FLAGS.gradient,
      segment_length=FLAGS.segment_length, pes_particles=FLAGS.pes_particles,
      pes_std=FLAGS.pes_std, net_layers=net_layers, meta_batch_size=FLAGS.meta_batch_size)
  try:
    config.validate()
    training.check_save_path(config.save_path, config.overwrite, config)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    summary = training.meta_train(config, strategy)
  except interrupts.Interrupted as e:
    logging.warning("%s", e)
    sys.exit(e.exit_code)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  logging.info("done in %.0fs: %d meta-steps (%d skipped as non-finite); best validation "
               "log10 mean final loss %.4f at epoch %d (untrained %.4f)%s", summary["seconds"],
               summary["meta_steps"], summary["skipped_steps"],
               summary["best_validation_log10_loss"], summary["best_epoch"],
               summary["untrained_validation_log10_loss"],
               f"; saved to {summary['save_path']}" if summary["saved"] else
               " (no --save_path: nothing saved)" if not summary["save_path"] else "")
  if not summary["best_epoch"]:
    logging.error("training did not beat the untrained optimizer%s: try a smaller "
                  "--learning_rate or more --num_epochs",
                  f"; nothing saved to {summary['save_path']}" if summary["save_path"] else "")
    sys.exit(1)

if __name__ == "__main__":
  cli.run(main)
