"""Runs learned and hand-designed optimizers on held-out problem instances and compares them.

    python evaluate.py --problem=quadratic --optimizer=all --path=/tmp/l2l_quadratic

Hand-designed optimizers without --learning_rate get the best learning rate of a log grid,
tuned on problem instances disjoint from the evaluation ones. --optimizer=pretrained (or
pretrained:NAME) evaluates a shipped pretrained optimizer (l2l.versatile.zoo) instead of --path.

    python evaluate.py --suite=held_out --optimizer=pretrained

runs a learned optimizer on every task of a held-out task suite against per-task lr-tuned Adam
at the horizon --num_steps (default 1000) and twice that (l2l.versatile.suite_evaluation):
final-loss ratios, speedups, their median and IQM, as a table, --output_json and a --plot.
"""

import json

from absl import app
from absl import flags

# Only modules that load without TensorFlow here: --help and flag errors stay fast. The rest is
# imported in main(), after l2l.cli.start_tensorflow().
from l2l import cli
from l2l import configs
from l2l import options

flags.DEFINE_string("optimizer", "L2L", "Optimizer to evaluate: L2L (the one saved at --path), "
                    "pretrained or pretrained:NAME (shipped, see python -m l2l.versatile), "
                    f"{', '.join(options.OPTIMIZERS[1:])}, or all (the learned one and every "
                    "baseline).")
flags.DEFINE_string("suite", None, "Evaluate on every task of this task suite (e.g. held_out) "
                    "against per-task lr-tuned Adam instead of on --problem.")
flags.DEFINE_list("baselines", ["Adam"], "--suite: tuned baselines (Adam and any of SGD, NAG, "
                  "RMSProp).")
flags.DEFINE_string("path", None, "Directory of a learned optimizer saved by train.py.")
flags.DEFINE_string("problem", "quadratic", "A named configuration "
                    f"({', '.join(sorted(configs.CONFIGS))}) or your own problem as "
                    "module:function (function(seed) returns a make_loss; the module is "
                    "imported from the current directory or PYTHONPATH).")
flags.DEFINE_integer("num_epochs", 100, "Held-out problem instances.")
flags.DEFINE_integer("num_steps", 100, "Optimizer steps per instance.")
flags.DEFINE_integer("inter_op_threads", 1, "TensorFlow inter-op threads (0: TensorFlow's "
                     "default).")
flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads (0: TensorFlow's "
                     "default; train.py's default is 1, see l2l.threads).")
flags.DEFINE_enum("compile_loss", "auto", ["auto", "graph", "xla"], "How first-order "
                  "unrolls compute the optimizee's loss and gradient: auto measures once per "
                  "problem whether one XLA call is faster than TensorFlow's ops and uses it if "
                  "so (small problems); graph and xla pin it (l2l.loss_gradient).")
flags.DEFINE_integer("seed", 0, "Seed of the instance streams.")
flags.DEFINE_float("learning_rate", None, "Baselines' learning rate (default: tuned).")
flags.DEFINE_integer("tuning_epochs", 20, "Instances for tuning each baseline's learning rate.")
flags.DEFINE_string("data_dir", None, "Dataset directory of the mnist, cifar and cifar-multi "
                    "configs (default: $L2L_DATA_DIR, else the Keras download and cache).")
flags.DEFINE_list("hidden_sizes", None, "Hidden layer widths of the mnist and digits MLPs "
                  "(default 20), e.g. 40 or 20,20: the paper's generalization runs.")
flags.DEFINE_enum("activation", None, ["sigmoid", "relu"], "Activation of the mnist and digits "
                  "MLPs (default sigmoid).")
flags.DEFINE_string("plot", None, "Draw every optimizer's mean loss curve (log y axis) into "
                    "this .png file.")
flags.DEFINE_string("output_json", None, "Write the results (with loss curves) to this file.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.output_json:
    cli.check_output_file("output_json", FLAGS.output_json)  # Before the work, not after.
  cli.start_tensorflow(FLAGS.inter_op_threads, FLAGS.intra_op_threads)
  # pylint: disable=g-import-not-at-top
  from l2l import evaluation
  from l2l import loss_gradient
  from l2l.versatile import zoo
  # pylint: enable=g-import-not-at-top
  loss_gradient.set_default_mode(FLAGS.compile_loss)
  path = FLAGS.path
  name = FLAGS.optimizer
  if name == "pretrained" or name.startswith("pretrained:"):
    if path:
      raise app.UsageError("give either --path or --optimizer=pretrained[:NAME], not both")
    try:
      path = zoo.path(name.partition(":")[2] or zoo.recommended())
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    name = "L2L"
  if name != "all" and name not in evaluation.OPTIMIZERS:
    raise app.UsageError(f"--optimizer must be one of {', '.join(evaluation.OPTIMIZERS)}, "
                         f"pretrained, pretrained:NAME or all; got {FLAGS.optimizer!r}")
  if FLAGS.suite is not None:
    evaluate_suite(name, path)
    return
  if name == "all":
    optimizers = list(evaluation.OPTIMIZERS)
    if not path:
      raise app.UsageError("--optimizer=all includes L2L and needs --path, the directory of a "
                           "saved learned optimizer")
  else:
    optimizers = [name]
  problem_options = {"activation": FLAGS.activation}
  if FLAGS.hidden_sizes is not None:
    problem_options["hidden_sizes"] = cli.int_list("hidden_sizes", FLAGS.hidden_sizes)
  try:
    if FLAGS.plot:
      evaluation.check_plot_path(FLAGS.plot)  # Before the work, not after.
    output = evaluation.evaluate(FLAGS.problem, optimizers, path, FLAGS.num_epochs,
                                 FLAGS.num_steps, FLAGS.seed, FLAGS.learning_rate,
                                 FLAGS.tuning_epochs, data_dir=FLAGS.data_dir,
                                 problem_options=problem_options)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  options = "".join(f" {k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in output["problem_options"].items() if v is not None)
  print(f"problem={FLAGS.problem}{options} num_steps={FLAGS.num_steps} "
        f"instances={FLAGS.num_epochs}")
  print(evaluation.format_table(output["results"]))
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w") as f:
      json.dump(output, f, indent=1)
  if FLAGS.plot:
    evaluation.plot_loss_curves(output, FLAGS.plot)


def evaluate_suite(name: str, path: str) -> None:
  """evaluate.py --suite: the learned optimizer at `path` on a task suite
  (l2l.versatile.suite_evaluation).

  --num_steps (default 1000 here), --num_epochs (runs per task, default 10) and
  --tuning_epochs (tuning runs per learning rate, default 3) keep their meaning.
  """
  if name not in ("L2L", "all") or not path:
    raise app.UsageError("--suite evaluates a learned optimizer: give --path or "
                         "--optimizer=pretrained[:NAME]")
  # pylint: disable=g-import-not-at-top
  from l2l import evaluation
  from l2l import meta_optimizer as l2l_meta_optimizer
  from l2l.versatile import suite_evaluation
  # pylint: enable=g-import-not-at-top
  num_steps = FLAGS.num_steps if FLAGS["num_steps"].present else 1000
  num_runs = FLAGS.num_epochs if FLAGS["num_epochs"].present else 10
  tuning_runs = FLAGS.tuning_epochs if FLAGS["tuning_epochs"].present else 3
  try:
    if FLAGS.plot:
      evaluation.check_plot_path(FLAGS.plot)
    learned = l2l_meta_optimizer.MetaOptimizer.load(path)
    output = suite_evaluation.evaluate_suite(
        learned, FLAGS.suite, num_steps, num_runs, tuning_runs, FLAGS.seed,
        tuple(FLAGS.baselines))
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(f"suite={FLAGS.suite} optimizer={path} num_steps={num_steps} runs={num_runs}")
  print(suite_evaluation.format_table(output))
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w") as f:
      f.write(suite_evaluation.to_json(output))
  if FLAGS.plot:
    suite_evaluation.plot(output, FLAGS.plot)


if __name__ == "__main__":
  cli.run(main)
