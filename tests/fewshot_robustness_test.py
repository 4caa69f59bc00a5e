"""fewshot.run / maml.py: interrupts, divergence, damaged workdirs, the joint method."""

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import nets
from l2l.meta_learning import fewshot
from l2l.meta_learning import maml as maml_lib
from l2l.meta_learning import meta_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(workdir="", **kwargs):
  options = dict(problem="sinusoid", methods=("MAML",), shots=(3,), num_iterations=6,
                 meta_batch_size=2, eval_steps=(1, 3), num_eval_tasks=8, k_query=3,
                 hidden=(8,), workdir=workdir, checkpoint_every=100, log_every=100)
  options.update(kwargs)
  return fewshot.FewShotConfig(**options)


def run_script(*flags, log_level="3"):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=log_level)
  return subprocess.run([sys.executable, "maml.py", *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


class InterruptTest(parameterized.TestCase):

  @parameterized.parameters("SIGINT", "SIGTERM")
  def test_signal_checkpoints_and_the_rerun_matches_an_uninterrupted_run(self, name):
    config = tiny(tempfile.mkdtemp(), methods=("MAML", "MetaSGD"))
    reference = fewshot.run(tiny(tempfile.mkdtemp(), methods=("MAML", "MetaSGD")))
    step = meta_trainer.MetaTrainer.meta_step
    handler = signal.getsignal(getattr(signal, name))
    calls = []

    def signalling_step(trainer, tasks):
      calls.append(1)
      if len(calls) == 4:  # MAML's 4th meta-step: the signal arrives during it.
        os.kill(os.getpid(), getattr(signal, name))
      return step(trainer, tasks)

    with mock.patch.object(meta_trainer.MetaTrainer, "meta_step", signalling_step):
      with self.assertRaisesRegex(fewshot.Interrupted,
                                  f"{name}: stopped MAML 3-shot at iteration 4/6; saved in "
                                  ".*run the same command to resume"):
        fewshot.run(config)
    self.assertLen(calls, 4)  # The step it arrived in was finished, no later one started.
    self.assertTrue(os.path.exists(os.path.join(config.workdir, "MAML_3shot", "ckpt-4.index")))
    # The handlers are restored afterwards.
    self.assertIs(signal.getsignal(getattr(signal, name)), handler)
    resumed = fewshot.run(config)
    for a, b in zip(reference["rows"], resumed["rows"]):
      for key in ("loss@1", "loss@3"):
        self.assertAlmostEqual(a[key], b[key], places=6, msg=(a["method"], key))

  def test_script_exits_non_zero_with_one_line(self):
    workdir = tempfile.mkdtemp()
    # SIGTERM from outside once the first checkpoint (iteration 5) exists.
    proc = subprocess.Popen(
        [sys.executable, "maml.py", "--methods=MAML", "--shots=3", "--num_iterations=100000",
         "--meta_batch_size=2", "--hidden=8", "--num_eval_tasks=4", "--log_every=5",
         f"--workdir={workdir}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
      for _ in range(600):
        if glob.glob(os.path.join(workdir, "MAML_3shot", "ckpt-*.index")):
          break
        try:
          proc.wait(timeout=0.5)
          break
        except subprocess.TimeoutExpired:
          pass
      proc.send_signal(signal.SIGTERM)
      _, stderr = proc.communicate(timeout=300)
    finally:
      proc.kill()
    self.assertEqual(proc.returncode, 128 + signal.SIGTERM, msg=stderr[-2000:])
    self.assertRegex(stderr, r"maml.py: SIGTERM: stopped MAML 3-shot at iteration \d+/100000; "
                     r"saved in .*; run the same command to resume")
    self.assertNotIn("Traceback", stderr)


class DivergenceTest(absltest.TestCase):

  def test_huge_inner_lr_is_reported_as_diverged(self):
    with self.assertLogs("absl", "WARNING") as logs:
      results = fewshot.run(tiny(inner_lr=1e3))
    row = results["rows"][0]
    self.assertTrue(row["diverged"])
    self.assertIn("MAML (diverged: 3-shot)", results["table"])
    self.assertTrue(any("MAML 3-shot diverged" in m for m in logs.output), msg=logs.output)
    self.assertFalse(fewshot.run(tiny(inner_lr=0.01))["rows"][0]["diverged"])

  def test_diverged_tasks_are_counted_in_the_table(self):
    rows = [{"method": "MAML", "shots": 3, "train_seconds": 1., "loss@1": 0.5,
             "loss@3": 0.25, "diverged_tasks@1": 0, "diverged_tasks@3": 2}]
    table = fewshot.table(rows, tiny())
    self.assertIn("| MAML | 0.500 | 0.250 (2/8 div.) | 1 |", table)
    self.assertIn("n of the N held-out tasks", table)
    seeds = fewshot.seeds_table([rows, rows], tiny())
    self.assertIn("0.250 ± 0.000 (4/16 div.)", seeds)

  def test_script_exits_non_zero_when_a_method_diverged(self):
    # TF_CPP_MIN_LOG_LEVEL=2, as the README recommends; a workdir, so checkpoints are saved.
    out = run_script("--methods=MAML", "--shots=3", "--num_iterations=5", "--inner_lr=1e3",
                     "--meta_batch_size=2", "--hidden=8", "--num_eval_tasks=4", "--log_every=2",
                     f"--workdir={tempfile.mkdtemp()}", log_level="2")
    self.assertEqual(out.returncode, 3, msg=out.stderr[-2000:])
    self.assertIn("maml.py: diverged (worse than the untrained model", out.stderr)
    self.assertNotIn("Traceback", out.stderr)
    # Quiet: no TensorFlow start-up chatter, no INFO line per checkpoint; progress still shows.
    self.assertNotRegex(out.stderr, "oneDNN|InitializeLog|Sharding callback")
    self.assertIn("MAML 3-shot: iteration 4/5", out.stderr)


class QuietScriptTest(absltest.TestCase):
  """maml.py starts quietly and fast (l2l.cli), like train.py and evaluate.py."""

  def test_verbosity_shows_tensorflow_info_lines(self):
    out = run_script("--methods=MAML", "--shots=3", "--num_iterations=2", "--log_every=1",
                     "--meta_batch_size=2", "--hidden=8", "--num_eval_tasks=4",
                     f"--workdir={tempfile.mkdtemp()}", "--verbosity=1", log_level="2")
    self.assertEqual(out.returncode, 0, msg=out.stderr[-2000:])
    self.assertIn("Sharding callback", out.stderr)

  def test_settings_module_agrees_with_the_library(self):
    # maml.py checks settings with fewshot_config before TensorFlow (and imaml) loads.
    from l2l.meta_learning import fewshot_config  # pylint: disable=g-import-not-at-top
    from l2l.meta_learning import imaml  # pylint: disable=g-import-not-at-top
    self.assertEqual(fewshot_config.IMAML_SOLVERS, imaml.SOLVERS)
    self.assertIs(fewshot.METHODS, fewshot_config.METHODS)

  def test_help_and_usage_errors_do_not_import_tensorflow(self):
    code = ("import runpy, sys\n"
            "sys.argv = ['maml.py'] + sys.argv[1:]\n"
            "try:\n  runpy.run_path('maml.py', run_name='__main__')\n"
            "finally:\n  print('tensorflow' in sys.modules, file=sys.stderr)\n")
    # absl exits with status 1 after --help.
    cases = [("--help", 1, "Meta-train and evaluate the MAML family"),
             ("--shots=0", 1, "maml.py: error: shots must be positive integers, got \\[0\\]"),
             ("--eval_steps=abc", 1, "maml.py: error: --eval_steps must be a comma-separated "
              "list of integers, got abc"),
             ("--problem=cifar", 1, "maml.py: error: .*--problem=cifar: value should be one of")]
    for flag, returncode, message in cases:
      with self.subTest(flag=flag):
        out = subprocess.run([sys.executable, "-c", code, flag], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        self.assertEqual(out.returncode, returncode, msg=out.stderr[-2000:])
        self.assertRegex(out.stdout + out.stderr, message)
        self.assertEqual(out.stderr.strip().splitlines()[-1], "False", msg=out.stderr)
        if flag != "--help":
          self.assertLen(out.stderr.strip().splitlines(), 2, msg=out.stderr)


class WorkdirTest(absltest.TestCase):

  def test_workdir_that_is_a_file(self):
    path = tempfile.mkstemp()[1]
    with self.assertRaisesRegex(ValueError, f"workdir {path} exists and is not a directory"):
      fewshot.run(tiny(path))
    out = run_script("--methods=MAML", f"--workdir={path}")
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("is not a directory", out.stderr)
    self.assertNotIn("Traceback", out.stderr)

  def test_damaged_checkpoint_and_results_file(self):
    workdir = tempfile.mkdtemp()
    fewshot.run(tiny(workdir, num_iterations=2))
    data = glob.glob(os.path.join(workdir, "MAML_3shot", "ckpt-2.data-*"))[0]
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
    with self.assertRaisesRegex(ValueError, "cannot restore the checkpoint .*ckpt-2.*delete"):
      fewshot.run(tiny(workdir, num_iterations=4))
    with open(os.path.join(workdir, "results.json"), "w") as f:
      f.write("{not json")
    with self.assertRaisesRegex(ValueError, "results.json is not a results file of maml.py"):
      fewshot.run(tiny(workdir, methods=("Reptile",)))


class JointMethodTest(tf.test.TestCase):

  def test_residual_rule_is_gradient_descent_plus_the_rule(self):
    inner = nets.Sgd(learning_rate=0.25)  # Its update is -0.25 g.
    rule = maml_lib.ResidualRule(inner, 0.5)
    g = [tf.constant([1., -2.]), tf.constant([[4.]])]
    updates, _ = rule(g, rule.initial_state([tf.zeros([2]), tf.zeros([1, 1])]))
    for u, gi in zip(updates, g):
      self.assertAllClose(u, -0.75 * gi)
    with self.assertRaisesRegex(TypeError, "rule must be a nets.UpdateRule"):
      maml_lib.ResidualRule(object())

  def test_joint_methods_meta_train_initialization_and_lstm(self):
    config = tiny()
    for method, first_order in (("MAML+LSTM", False), ("FOMAML+LSTM", True)):
      _, algorithm = fewshot.build(config, method)
      self.assertEqual(algorithm.first_order, first_order)
      lstm = algorithm.inner_optimizer.rule
      self.assertIsInstance(lstm, nets.CoordinateWiseDeepLSTM)
      tasks = fewshot._samplers(config, 3, False)[0].sample(2)
      trainer = meta_trainer.MetaTrainer(algorithm, snt.optimizers.Adam(1e-3),
                                         meta_trainer.mse, None)
      with tf.GradientTape() as tape:
        learner = algorithm.clone().adapt_on(meta_trainer.mse, tasks.support_x[0],
                                             tasks.support_y[0])
        loss = meta_trainer.mse(learner(tasks.query_x[0]), tasks.query_y[0])
      grads = tape.gradient(loss, lstm.trainable_variables + algorithm.module.trainable_variables)
      self.assertTrue(all(g is not None and np.isfinite(g.numpy()).all() for g in grads))
      self.assertGreater(sum(float(tf.reduce_sum(tf.abs(g))) for g in grads[:len(
          lstm.trainable_variables)]), 0.)
      before = [v.numpy() for v in lstm.trainable_variables]
      self.assertTrue(np.isfinite(trainer.meta_step(tasks)))
      self.assertTrue(any(not np.array_equal(b, v.numpy())
                          for b, v in zip(before, lstm.trainable_variables)))


if __name__ == "__main__":
  absltest.main()
