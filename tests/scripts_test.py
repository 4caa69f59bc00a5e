"""train.py / evaluate.py: the library functions behind them and the scripts' error handling."""

import json
import logging
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

import l2l
from l2l import evaluation
from l2l import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(problem="quadratic", num_epochs=4, num_steps=10, unroll_length=5, log_period=2,
            evaluation_period=2, evaluation_epochs=2, seed=3)


def run_script(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        env=env, timeout=300)


class MetaTrainTest(parameterized.TestCase):

  def test_trains_saves_and_refuses_to_overwrite(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    summary = training.meta_train(training.TrainConfig(save_path=path, **TINY))
    self.assertTrue(np.isfinite(summary["best_validation_log10_loss"]))
    self.assertIn(summary["best_epoch"], (2, 4))
    self.assertTrue(os.path.isfile(os.path.join(path, "config.json")))
    restored = l2l.MetaOptimizer.load(path)
    self.assertEqual(restored.net_configs["cw"]["net_options"]["seed"], 3)
    with self.assertRaisesRegex(ValueError, "save_path .* already holds files.*--overwrite"):
      training.meta_train(training.TrainConfig(save_path=path, **TINY))
    training.meta_train(training.TrainConfig(save_path=path, overwrite=True, **TINY))

  def test_same_seed_same_result(self):
    first = training.meta_train(training.TrainConfig(**TINY))
    second = training.meta_train(training.TrainConfig(**TINY))
    self.assertAlmostEqual(first["best_validation_log10_loss"],
                           second["best_validation_log10_loss"], places=5)

  @parameterized.parameters(
      (dict(num_steps=-5), "num_steps must be a positive integer"),
      (dict(num_steps=12), r"num_steps \(12\) must be a multiple of unroll_length \(5\)"),
      (dict(unroll_length=0), "unroll_length must be a positive integer"),
      (dict(num_epochs=0), "num_epochs must be a positive integer"),
      (dict(learning_rate=-1.0), "learning_rate must be positive"),
      (dict(problem="nope"), "unknown problem 'nope'"),
      (dict(objective="max"), "objective must be one of"),
      (dict(data_dir="/tmp"), r"configuration 'quadratic' has no options \['data_dir'\]"),
      (dict(checkpoint_period=0), "checkpoint_period must be a positive integer"),
  )
  def test_bad_config(self, change, message):
    with self.assertRaisesRegex(ValueError, message):
      training.TrainConfig(**{**TINY, **change}).validate()


class EvaluateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.path = os.path.join(tempfile.mkdtemp(), "opt")
    training.meta_train(training.TrainConfig(save_path=cls.path, **TINY))

  def test_all_optimizers_share_instances_and_report_curves(self):
    grid = (0.01, 0.1, 1.0)
    out = evaluation.evaluate("quadratic", list(evaluation.OPTIMIZERS), self.path, num_epochs=3,
                              num_steps=10, seed=1, tuning_epochs=2, grid=grid)
    self.assertEqual(set(out["results"]), set(evaluation.OPTIMIZERS))
    initial = {name: row["loss_curve"][0] for name, row in out["results"].items()}
    # Every optimizer starts from the same held-out instances.
    self.assertLen(set(np.round(list(initial.values()), 5)), 1)
    for name, row in out["results"].items():
      self.assertLen(row["loss_curve"], 11)
      self.assertAlmostEqual(row["log10_final_loss_mean"], np.log10(row["final_loss_mean"]))
      self.assertAlmostEqual(row["final_loss_mean"], row["loss_curve"][-1], places=4)
      if name != "L2L":
        self.assertIn(row["learning_rate"], grid)

  def test_tuning_uses_instances_disjoint_from_test(self):
    seed = 5
    tune = l2l.Problem(evaluation_problem(evaluation.instance_seed(seed, evaluation.TUNE)))
    test = l2l.Problem(evaluation_problem(evaluation.instance_seed(seed, evaluation.TEST)))
    (_, tune_constants), (_, test_constants) = tune.initial_values(), test.initial_values()
    self.assertFalse(np.allclose(tune_constants[0].numpy(), test_constants[0].numpy()))

  def test_tuned_rate_is_the_grid_minimum(self):
    grid = (0.001, 0.1, 1.0, 100.0)
    tuned = evaluation.tune_learning_rate("SGD", evaluation_problem, 2, 10, 0, grid)
    scores = tuned["grid"]
    self.assertEqual(tuned["learning_rate"], min(scores, key=scores.get))
    self.assertEqual(scores[100.0], float("inf"))  # Diverges; never chosen.

  def test_plot_draws_a_png(self):
    output = {"problem": "quadratic", "num_epochs": 2, "results": {
        "L2L": {"learning_rate": None, "loss_curve": [10.0, 1.0, 0.1]},
        "Adam": {"learning_rate": 0.1, "loss_curve": [10.0, 3.0, 1.0]}}}
    path = os.path.join(tempfile.mkdtemp(), "curves.png")
    evaluation.plot_loss_curves(output, path)
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    from matplotlib import image  # pylint: disable=g-import-not-at-top
    height, width, _ = image.imread(path).shape
    self.assertEqual((width, height), (600, 400))  # figsize 6x4 at 100 dpi.
    with self.assertRaisesRegex(ValueError, "plot must name a .png file"):
      evaluation.plot_loss_curves(output, path[:-4] + ".pdf")

  def test_l2l_without_path(self):
    with self.assertRaisesRegex(ValueError, "L2L needs --path"):
      evaluation.evaluate("quadratic", ["L2L"], None)

  def test_unknown_optimizer(self):
    with self.assertRaisesRegex(ValueError, "unknown optimizer 'Adagrad'"):
      evaluation.evaluate("quadratic", ["Adagrad"], None)


def evaluation_problem(seed):
  import problems
  return problems.quadratic(batch_size=4, num_dims=3, seed=seed)


class ScriptsTest(absltest.TestCase):
  """The scripts end to end in subprocesses: one-line errors, never a stack trace."""

  def assertOneLineError(self, result, message):
    self.assertNotEqual(result.returncode, 0)
    self.assertNotIn("Traceback", result.stderr)
    self.assertRegex(result.stderr, message)

  def test_train_then_evaluate(self):
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "opt")
    result = run_script("train.py", f"--save_path={path}", "--num_epochs=2", "--num_steps=10",
                        "--unroll_length=5", "--evaluation_period=2", "--evaluation_epochs=2",
                        "--log_period=1")
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertRegex(result.stderr, r"epoch 2/2 .*ETA")
    # Quiet: no TensorFlow start-up chatter, no per-checkpoint INFO lines.
    self.assertNotRegex(result.stderr, "oneDNN|InitializeLog|Sharding callback")
    out_json = os.path.join(tmp, "results.json")
    result = run_script("evaluate.py", "--optimizer=L2L", f"--path={path}", "--num_epochs=2",
                        "--num_steps=10", f"--output_json={out_json}")
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn("L2L", result.stdout)
    with open(out_json) as f:
      out = json.load(f)
    plot = os.path.join(tmp, "curves.png")
    result = run_script("evaluate.py", "--optimizer=all", f"--path={path}", "--num_epochs=2",
                        "--num_steps=10", "--learning_rate=0.1", f"--plot={plot}")
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    with open(plot, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    self.assertGreater(os.path.getsize(plot), 5000)
    self.assertEqual(out["problem"], "quadratic")
    self.assertEqual(out["num_steps"], 10)
    row = out["results"]["L2L"]
    self.assertEqual(set(row) >= {"learning_rate", "final_loss_mean", "log10_final_loss_mean",
                                  "loss_curve"}, True)
    self.assertLen(row["loss_curve"], 11)
    # The same path again is refused, with the way out named.
    result = run_script("train.py", f"--save_path={path}", "--num_epochs=1", "--num_steps=10",
                        "--unroll_length=5")
    self.assertOneLineError(result, "already holds files.*--overwrite")
    # A corrupt checkpoint is a one-line error.
    with open(os.path.join(path, "nets.index"), "wb") as f:
      f.write(b"garbage")
    result = run_script("evaluate.py", "--optimizer=L2L", f"--path={path}", "--num_epochs=1",
                        "--num_steps=5")
    self.assertOneLineError(result, "does not match|corrupt")

  def test_data_dir(self):
    import dataset_files  # pylint: disable=g-import-not-at-top
    data_dir = tempfile.mkdtemp()
    dataset_files.write_mnist(data_dir, num_train=130)
    path = os.path.join(tempfile.mkdtemp(), "opt")
    result = run_script("train.py", "--problem=mnist", f"--data_dir={data_dir}",
                        f"--save_path={path}", "--num_epochs=1", "--num_steps=2",
                        "--unroll_length=2", "--evaluation_epochs=1", "--log_period=1")
    # One meta-step may or may not beat the untrained optimizer; if not, nothing is saved and
    # train.py says so (status 1). Either way evaluate.py gets the configuration's nets.
    self.assertIn(result.returncode, (0, 1), result.stderr[-2000:])
    self.assertRegex(result.stderr, r"done in \d+s: 1 meta-steps")
    if result.returncode:
      self.assertRegex(result.stderr, "did not beat the untrained optimizer; nothing saved")
      from l2l import configs  # pylint: disable=g-import-not-at-top
      import l2l  # pylint: disable=g-import-not-at-top
      l2l.MetaOptimizer(**configs.get_config("mnist", data_dir=data_dir).net_configs).save(path)
    result = run_script("evaluate.py", "--problem=mnist", f"--data_dir={data_dir}",
                        "--optimizer=L2L", f"--path={path}", "--num_epochs=1", "--num_steps=3")
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertRegex(result.stdout, r"problem=mnist num_steps=3 instances=1\nopt.*\nL2L ")
    # The generalization runs: the same optimizer on a wider, deeper ReLU MLP.
    result = run_script("evaluate.py", "--problem=mnist", f"--data_dir={data_dir}",
                        "--optimizer=L2L", f"--path={path}", "--num_epochs=1", "--num_steps=3",
                        "--hidden_sizes=40,40", "--activation=relu")
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertRegex(result.stdout, r"problem=mnist activation=relu hidden_sizes=40,40 "
                     r"num_steps=3 instances=1\n")
    for script in ("train.py", "evaluate.py"):
      with self.subTest(script=script):
        self.assertOneLineError(
            run_script(script, "--problem=quadratic", f"--data_dir={data_dir}",
                       "--optimizer=SGD" if script == "evaluate.py" else "--num_epochs=1"),
            r"configuration 'quadratic' has no options \['data_dir'\]")

  def test_script_errors(self):
    cases = [
        (("evaluate.py", "--optimizer=L2L"), "L2L needs --path"),
        (("evaluate.py", "--optimizer=all"), "needs --path"),
        (("evaluate.py", "--optimizer=L2L", "--path=/nonexistent/opt"), "no saved optimizer"),
        (("train.py", "--problem=nope"), "problem"),
        (("train.py", "--num_steps=-3"), "num_steps must be a positive integer"),
        (("train.py", "--num_steps=30", "--unroll_length=20"), "multiple of unroll_length"),
        (("train.py", "stray"), "unexpected arguments: stray"),
        (("train.py", "--curriculum=10,x"), "--curriculum must be a comma-separated list"),
        (("train.py", "--curriculum=10,15"), r"curriculum\[1\] \(15\) must be a multiple"),
        (("train.py", "--rescale=-1"), "rescale must be a number >= 0"),
        (("train.py", "--intra_op_threads=-1"), "--intra_op_threads must be >= 0"),
        (("evaluate.py", "--optimizer=SGD", "--intra_op_threads=-2"),
         "--intra_op_threads must be >= 0"),
        (("train.py", "--suite=smoke", "--adaptation_per_tensor"),
         "--adaptation_per_tensor needs --step_adaptation > 0"),
        (("train.py", "--suite=smoke", "--init_from=/nonexistent/opt"),
         "init_from: no saved optimizer at '/nonexistent/opt'"),
        (("train.py", "--suite=smoke", "--init_from=pretrained:nope"),
         "unknown pretrained optimizer 'nope'; available: "),
        (("evaluate.py", "--optimizer=SGD", "--hidden_sizes=4x"),
         "--hidden_sizes must be a comma-separated list of integers"),
        (("evaluate.py", "--optimizer=SGD", "--hidden_sizes=40"),
         r"configuration 'quadratic' has no options \['hidden_sizes'\]"),
        (("evaluate.py", "--optimizer=SGD", "--plot=curves.jpg"), "plot must name a .png file"),
        (("evaluate.py", "--optimizer=SGD", "--plot=/nonexistent/dir/c.png"),
         "plot: directory '/nonexistent/dir' .* does not exist"),
    ]
    for args, message in cases:
      with self.subTest(args=args):
        self.assertOneLineError(run_script(*args), message)

  def test_bad_flag_values_are_one_line_without_tensorflow(self):
    cases = [
        (("train.py", "--num_epochs=abc"), r"--num_epochs=abc: invalid literal"),
        (("train.py", "--objective=logg"), r"--objective=logg: value should be one of"),
        (("train.py", "--nope"), r"Unknown command line flag 'nope'"),
        (("evaluate.py", "--activation=tanh"), r"--activation=tanh: value should be one of"),
        (("evaluate.py", "--num_steps=1.5"), r"--num_steps=1.5: invalid literal"),
    ]
    for (script, *args), message in cases:
      with self.subTest(args=args):
        result = run_script(script, *args)
        self.assertOneLineError(result, f"^{script}: error: .*{message}")
        self.assertLen(result.stderr.strip().splitlines(), 1, result.stderr)

  def test_help_into_a_closed_pipe_is_quiet(self):
    for script in ("train.py", "evaluate.py"):
      with self.subTest(script=script):
        process = subprocess.Popen([sys.executable, script, "--help"], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process.stdout.close()  # What `| head -1` does, before the help is written.
        stderr = process.stderr.read()
        process.wait(timeout=120)
        process.stderr.close()
        self.assertNotIn("Traceback", stderr)
        self.assertNotIn("BrokenPipeError", stderr)


class QuietLogsTest(absltest.TestCase):

  def test_tensorflow_info_and_retracing_warnings_are_dropped(self):
    from l2l import cli  # pylint: disable=g-import-not-at-top
    tf_file = os.path.join(os.sep, "x", "tensorflow", "python", "eager", "polymorphic_function.py")

    def record(level, path, message):
      return logging.LogRecord("absl", level, path, 1, message, None, None)

    keep = cli._drop_tensorflow_info  # pylint: disable=protected-access
    self.assertFalse(keep(record(logging.WARNING, tf_file, "5 out of the last 13 calls to "
                                 "<function f> triggered tf.function retracing. Tracing is ...")))
    self.assertFalse(keep(record(logging.INFO, tf_file, "Sharding callback duration: 3")))
    self.assertTrue(keep(record(logging.WARNING, tf_file, "Gradients do not exist for ...")))
    self.assertTrue(keep(record(logging.INFO, os.path.join(REPO, "l2l", "training.py"),
                                "epoch 1/2 ... triggered tf.function retracing")))


if __name__ == "__main__":
  absltest.main()
