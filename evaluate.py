"""Runs learned and hand-designed optimizers on held-out problem instances and compares them.

    python evaluate.py --problem=quadratic --optimizer=all --path=/tmp/l2l_quadratic

Hand-designed optimizers without --learning_rate get the best learning rate of a log grid,
tuned on problem instances disjoint from the evaluation ones.
"""

import json

from absl import app
from absl import flags

from l2l import cli
from l2l import configs
from l2l import evaluation

flags.DEFINE_enum("optimizer", "L2L", list(evaluation.OPTIMIZERS) + ["all"],
                  "Optimizer to evaluate; 'all' runs L2L (if --path) and every baseline.")
flags.DEFINE_string("path", None, "Directory of a learned optimizer saved by train.py.")
flags.DEFINE_enum("problem", "quadratic", sorted(configs.CONFIGS), "Named configuration.")
flags.DEFINE_integer("num_epochs", 100, "Held-out problem instances.")
flags.DEFINE_integer("num_steps", 100, "Optimizer steps per instance.")
flags.DEFINE_integer("inter_op_threads", 1, "TensorFlow inter-op threads (0: TensorFlow's "
                     "default). One is faster for meta-training, a chain of dependent ops.")
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
  cli.use_inter_op_threads(FLAGS.inter_op_threads)
  if FLAGS.optimizer == "all":
    optimizers = list(evaluation.OPTIMIZERS)
    if not FLAGS.path:
      raise app.UsageError("--optimizer=all includes L2L and needs --path, the directory of a "
                           "saved learned optimizer")
  else:
    optimizers = [FLAGS.optimizer]
  problem_options = {"activation": FLAGS.activation}
  if FLAGS.hidden_sizes is not None:
    problem_options["hidden_sizes"] = cli.int_list("hidden_sizes", FLAGS.hidden_sizes)
  try:
    if FLAGS.plot:
      evaluation.check_plot_path(FLAGS.plot)  # Before the work, not after.
    output = evaluation.evaluate(FLAGS.problem, optimizers, FLAGS.path, FLAGS.num_epochs,
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


if __name__ == "__main__":
  app.run(main)
