"""l2l.versatile.suite_training and train.py --suite: PES over a task suite, resumable and
interruptible."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow as tf

import l2l
from l2l import evaluation
from l2l import training
from l2l.versatile import suite_training
import problems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(suite="smoke", num_steps=20, unroll_length=10, tasks_per_step=2, pes_particles=1,
            evaluation_period=2, log_period=1, learning_rate=0.05, pes_std=0.05, seed=1)


def weights(path):
  return [v.numpy() for v in l2l.MetaOptimizer.load(path).trainable_variables]


class SuiteTrainingTest(absltest.TestCase):

  def test_trains_saves_and_resumes_exactly(self):
    root = tempfile.mkdtemp()
    straight = suite_training.meta_train_suite(suite_training.SuiteTrainConfig(
        save_path=os.path.join(root, "straight"), meta_steps=6, **TINY))
    self.assertEqual(straight["meta_steps"], 6)
    self.assertTrue(np.isfinite(straight["best_validation_log10_loss"]))
    # The same run interrupted by SIGINT after meta-step 3, then resumed.
    parts = os.path.join(root, "parts")

    def interrupt(step, loss):
      self.assertTrue(np.isfinite(loss))
      if step == 3:
        os.kill(os.getpid(), signal.SIGINT)

    with self.assertRaisesRegex(suite_training.Interrupted, "SIGINT: stopped at meta-step 3/6"):
      suite_training.meta_train_suite(suite_training.SuiteTrainConfig(
          save_path=parts, meta_steps=6, **TINY), callback=interrupt)
    second = suite_training.meta_train_suite(suite_training.SuiteTrainConfig(
        save_path=parts, meta_steps=6, **TINY))
    self.assertEqual(second["resumed_from"], 3)
    self.assertEqual(second["best_meta_step"], straight["best_meta_step"])
    self.assertAlmostEqual(second["best_validation_log10_loss"],
                           straight["best_validation_log10_loss"], places=6)
    for a, b in zip(weights(parts), weights(os.path.join(root, "straight"))):
      np.testing.assert_array_equal(a, b)

  def test_best_is_never_worse_than_the_untrained_rule(self):
    # A meta learning rate far too large: whatever the updates do, what is saved scores at
    # least as well as the untrained rule, which is validated (and saved) first.
    path = os.path.join(tempfile.mkdtemp(), "opt")
    options = dict(TINY, learning_rate=5.)
    summary = suite_training.meta_train_suite(suite_training.SuiteTrainConfig(
        save_path=path, meta_steps=4, **options))
    untrained = summary["untrained_validation_log10_loss"]
    self.assertTrue(np.isfinite(untrained))
    self.assertLessEqual(summary["best_validation_log10_loss"], untrained + 1e-9)
    # What is saved scores what the summary says: the untrained rule, or one validated better.
    saved = l2l.MetaOptimizer.load(path)
    fresh = l2l.MetaOptimizer(rule=training.seeded_net_configs(
        {"rule": suite_training.VERSATILE_NET}, TINY["seed"])["rule"])
    if summary["best_meta_step"] == 0:
      for a, b in zip(saved.trainable_variables, fresh.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    else:
      self.assertLess(summary["best_validation_log10_loss"], untrained)

  def test_other_options_in_the_same_save_path(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    suite_training.meta_train_suite(suite_training.SuiteTrainConfig(
        save_path=path, meta_steps=1, **TINY))
    with self.assertRaisesRegex(ValueError, "holds a run of other options"):
      suite_training.meta_train_suite(suite_training.SuiteTrainConfig(
          save_path=path, meta_steps=2, **dict(TINY, pes_std=0.1)))

  def test_floored_loss_keeps_the_gradient(self):
    x = tf.Variable([0.5, -2.0])
    make_loss = lambda: tf.reduce_sum(tf.square(x))  # 4.25 at x; gradient 2x.
    for floor, value in ((1.0, 4.25), (10.0, 10.0)):
      with tf.GradientTape() as tape:
        loss = suite_training.floored(make_loss, floor)()
      self.assertAlmostEqual(float(loss), value, places=5)
      np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [1.0, -4.0])

  def test_adam_references_are_tuned_adam_and_cached(self):
    tasks = problems.suite("smoke")
    cache = os.path.join(tempfile.mkdtemp(), "adam_reference.json")
    refs = suite_training.adam_references(tasks, 20, 0, cache)
    self.assertLen(refs, len(tasks))
    # Each is the best of the grid: no rate of the grid ends lower on that instance.
    task = tasks[0]
    seed = evaluation.instance_seed(0, evaluation.TUNE)
    for lr in suite_training.FLOOR_ADAM_RATES:
      run = evaluation.hand_designed("Adam", lr).meta_loss(
          task.make_problem(seed), 20, use_while_loop=True, num_steps=20)
      value = suite_training.final_loss(evaluation.run_instances(run, 1).losses)[0]
      self.assertGreaterEqual(value, refs[0] * (1 - 1e-5))
    # A second call reads the file instead of running Adam.
    with mock.patch.object(evaluation, "hand_designed", side_effect=AssertionError):
      self.assertEqual(suite_training.adam_references(tasks, 20, 0, cache), refs)
    with self.assertRaisesRegex(ValueError, "adam_floor must be a number >= 0"):
      suite_training.SuiteTrainConfig(adam_floor=-1.).validate()

  def test_bad_config(self):
    for change, message in ((dict(num_steps=25), r"multiple of unroll_length"),
                            (dict(pes_std=0.), "pes_std must be a positive number"),
                            (dict(meta_steps=0), "meta_steps must be a positive integer")):
      with self.assertRaisesRegex(ValueError, message):
        suite_training.SuiteTrainConfig(**dict(dict(TINY, meta_steps=2), **change)).validate()


def train_command(path, meta_steps):
  return [sys.executable, "train.py", "--suite=smoke", f"--save_path={path}",
          f"--meta_steps={meta_steps}", "--num_steps=20", "--unroll_length=10",
          "--tasks_per_step=2", "--pes_particles=1", "--evaluation_period=5", "--log_period=1",
          "--learning_rate=0.05", "--pes_std=0.05", "--seed=1"]


class TrainScriptTest(absltest.TestCase):

  def test_sigterm_and_sigint_lose_nothing(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    root = tempfile.mkdtemp()
    straight = os.path.join(root, "straight")  # The same options as train_command's, in process.
    suite_training.meta_train_suite(suite_training.SuiteTrainConfig(
        save_path=straight, meta_steps=12, **dict(TINY, evaluation_period=5)))
    for sig in (signal.SIGTERM, signal.SIGINT):
      path = os.path.join(root, sig.name)
      process = subprocess.Popen(train_command(path, 12), cwd=REPO, env=env,
                                 stderr=subprocess.PIPE, text=True)
      lines = []
      for line in process.stderr:  # Signal once training is under way (no timing window).
        lines.append(line)
        if "meta-step 2/12" in line:
          process.send_signal(sig)
          break
      rest = process.communicate(timeout=600)[1]
      self.assertEqual(process.returncode, 128 + int(sig), "".join(lines) + rest)
      self.assertIn("run the same command to resume", rest)
      self.assertNotIn("Traceback", rest)
      resumed = subprocess.run(train_command(path, 12), cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=600)
      self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
      self.assertIn("resuming from", resumed.stderr)
      for a, b in zip(weights(path), weights(straight)):
        np.testing.assert_array_equal(a, b)

  def test_unknown_suite_is_one_line(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "train.py", "--suite=nope"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("unknown suite 'nope'", result.stderr)
    self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
  absltest.main()
