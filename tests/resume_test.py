"""Resumable meta-training: checkpoints under <save_path>/train_state, resumed after a crash."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow as tf
from tensorflow.core.util import event_pb2

from l2l import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(problem="quadratic", num_epochs=6, num_steps=10, unroll_length=5, log_period=1,
            evaluation_period=3, evaluation_epochs=2, checkpoint_period=2, seed=4)


def checkpoint_tensors(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if "save_counter" not in name and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def summary_tags(directory):
  tags = {}
  for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  return tags


class Crash(Exception):
  """A crash of the training process, raised where the test chooses."""


def crash_before_checkpoint(number):
  """Patches `CheckpointManager.save` to raise `Crash` when asked to write checkpoint `number`:
  a run that dies after training epochs it never checkpointed (no timing involved)."""
  save = tf.train.CheckpointManager.save

  def save_or_crash(self, checkpoint_number=None, **kwargs):
    if checkpoint_number == number:
      raise Crash(f"killed before ckpt-{number}")
    return save(self, checkpoint_number=checkpoint_number, **kwargs)

  return mock.patch.object(tf.train.CheckpointManager, "save", save_or_crash)


def summary_values(directory):
  """{tag: {step: value}} of the TensorBoard events, the last value written for a step winning
  (as TensorBoard shows a step that a resumed run wrote again)."""
  values = {}
  for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        values.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def saved_optimizer(path):
  """The weights of the best optimizer saved in `path` (MetaOptimizer.save's checkpoint)."""
  return checkpoint_tensors(os.path.join(path, "nets"))


# A run whose validation score improves at every validation (2, 4, 6, 8), so that the best
# optimizer is written after the crash below and a resume that never re-saved it would leave
# the killed run's epoch-6 optimizer in place.
IMPROVING = dict(TINY, num_epochs=8, evaluation_period=2, learning_rate=1e-2)
CRASH_AT = 6  # Epochs 5 and 6 are trained (and validated) but never checkpointed.


class ResumeTestCase(absltest.TestCase):

  def assert_same_run(self, path, reference_path, num_epochs):
    """The resumed run in `path` ends as the uninterrupted one in `reference_path`."""
    # Nets, Adam's moments, counters and the instance generator all end the same.
    last = f"ckpt-{num_epochs}"
    expected = checkpoint_tensors(os.path.join(reference_path, training.TRAIN_STATE, last))
    actual = checkpoint_tensors(os.path.join(path, training.TRAIN_STATE, last))
    self.assertEqual(set(actual), set(expected))
    self.assertTrue(any("optimizer/m" in name for name in expected), sorted(expected))
    self.assertTrue(any("generators" in name for name in expected), sorted(expected))
    for name, value in expected.items():
      np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    # The best optimizer, saved after the crash.
    expected, actual = saved_optimizer(reference_path), saved_optimizer(path)
    self.assertEqual(set(actual), set(expected))
    for name, value in expected.items():
      np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    # TensorBoard: every tag at every epoch, the same values (the learning rate's schedule
    # included, which is also checked against its formula).
    expected = summary_values(os.path.join(reference_path, "tensorboard"))
    actual = summary_values(os.path.join(path, "tensorboard"))
    self.assertEqual(sorted(actual), sorted(expected))
    for tag in expected:
      self.assertEqual(sorted(actual[tag]), sorted(expected[tag]), tag)
      for step, value in expected[tag].items():
        self.assertAlmostEqual(actual[tag][step], value, delta=1e-5 * max(1., abs(value)),
                               msg=f"{tag} at epoch {step}")
    self.assertEqual(sorted(actual["learning_rate"]), list(range(1, num_epochs + 1)))
    for epoch, value in actual["learning_rate"].items():
      self.assertAlmostEqual(value, training.scheduled_learning_rate(
          IMPROVING["learning_rate"], "cosine", (epoch - 1) / num_epochs), delta=1e-9)


class ResumeInProcessTest(ResumeTestCase):

  def test_run_crashed_mid_way_resumes_to_the_uninterrupted_run(self):
    tmp = tempfile.mkdtemp()
    full = os.path.join(tmp, "full")
    summary = training.meta_train(training.TrainConfig(save_path=full, **IMPROVING))
    self.assertEqual(summary["meta_steps"], 8 * 2)
    self.assertEqual(summary["resumed_from_epoch"], 0)
    # The premise: the best optimizer of the uninterrupted run comes after the crash.
    self.assertGreater(summary["best_epoch"], CRASH_AT)
    crashed = os.path.join(tmp, "crashed")
    with crash_before_checkpoint(CRASH_AT), self.assertRaises(Crash):
      training.meta_train(training.TrainConfig(save_path=crashed, **IMPROVING))
    state = os.path.join(crashed, training.TRAIN_STATE)
    self.assertEqual(os.path.basename(tf.train.latest_checkpoint(state)), "ckpt-4")
    resumed = training.meta_train(training.TrainConfig(save_path=crashed, **IMPROVING))
    self.assertEqual(resumed["resumed_from_epoch"], 4)
    self.assertEqual(resumed["meta_steps"], summary["meta_steps"])
    self.assertEqual(resumed["best_epoch"], summary["best_epoch"])
    self.assertAlmostEqual(resumed["best_validation_log10_loss"],
                           summary["best_validation_log10_loss"], places=6)
    self.assert_same_run(crashed, full, 8)

  def test_tensorboard_summaries(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    training.meta_train(training.TrainConfig(save_path=path, **TINY))
    tags = summary_tags(os.path.join(path, "tensorboard"))
    for tag in ("meta_loss", "final_loss", "learning_rate", "skipped_steps"):
      self.assertEqual(tags[tag], [1, 2, 3, 4, 5, 6], tag)
    self.assertEqual(tags["validation_log10_final_loss"], [3, 6])

  def test_refusals(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    training.meta_train(training.TrainConfig(save_path=path, **TINY))
    with self.assertRaisesRegex(ValueError, "already holds files of a finished run.*--overwrite"):
      training.meta_train(training.TrainConfig(save_path=path, **TINY))
    with self.assertRaisesRegex(ValueError, r"different config \(differs in learning_rate, "
                                r"num_epochs\).*--overwrite"):
      training.meta_train(training.TrainConfig(
          save_path=path, **{**TINY, "num_epochs": 8, "learning_rate": 1e-2}))
    fresh = training.meta_train(training.TrainConfig(
        save_path=path, overwrite=True, **{**TINY, "num_epochs": 2}))
    self.assertEqual((fresh["resumed_from_epoch"], fresh["meta_steps"]), (0, 4))
    self.assertEqual(sorted(os.path.basename(p) for p in glob.glob(
        os.path.join(path, training.TRAIN_STATE, "ckpt-*.index"))), ["ckpt-2.index"])

  def test_run_written_before_an_option_existed_resumes_with_its_default(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    crashed = {**TINY, "num_epochs": 4}
    training.meta_train(training.TrainConfig(save_path=path, **{**TINY, "num_epochs": 2}))
    config_file = os.path.join(path, training.TRAIN_STATE, "train_config.json")
    with open(config_file) as f:
      saved = json.load(f)
    saved["num_epochs"] = 4  # As if it had been killed at epoch 2 of 4 ...
    del saved["rescale"], saved["curriculum"]  # ... by a version without these options.
    with open(config_file, "w") as f:
      json.dump(saved, f)
    resumed = training.meta_train(training.TrainConfig(save_path=path, **crashed))
    self.assertEqual((resumed["resumed_from_epoch"], resumed["meta_steps"]), (2, 8))
    with self.assertRaisesRegex(ValueError, r"different config \(differs in rescale\)"):
      training.check_save_path(path, False, training.TrainConfig(
          **{**crashed, "rescale": 1.0}))

  def test_bad_checkpoint_period(self):
    with self.assertRaisesRegex(ValueError, "checkpoint_period must be a positive integer"):
      training.TrainConfig(**{**TINY, "checkpoint_period": 0}).validate()


# train.py, killed with SIGKILL by its own process when it is about to write a checkpoint.
KILL_DRIVER = """
import os, runpy, signal, sys
import tensorflow as tf
kill_at = int(sys.argv[1])
save = tf.train.CheckpointManager.save
def save_or_die(self, checkpoint_number=None, **kwargs):
  if checkpoint_number == kill_at:
    os.kill(os.getpid(), signal.SIGKILL)
  return save(self, checkpoint_number=checkpoint_number, **kwargs)
tf.train.CheckpointManager.save = save_or_die
sys.argv = ["train.py"] + sys.argv[2:]
runpy.run_path("train.py", run_name="__main__")
"""


class KillAndResumeTest(ResumeTestCase):
  """train.py killed with SIGKILL mid-run (after epoch 6, whose checkpoint it never wrote); the
  same command resumes from epoch 4 and ends as an uninterrupted train.py run."""

  def test_sigkill_then_same_command_resumes(self):
    tmp = tempfile.mkdtemp()
    flags = ["--problem=quadratic"] + [f"--{k}={v}" for k, v in IMPROVING.items()
                                       if k != "problem"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def train(path, *prefix):
      return subprocess.run([sys.executable, *prefix, *flags, f"--save_path={path}"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)

    full = os.path.join(tmp, "full")
    done = train(full, "train.py")
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    path = os.path.join(tmp, "killed")
    killed = train(path, "-c", KILL_DRIVER, str(CRASH_AT))
    self.assertEqual(killed.returncode, -signal.SIGKILL, killed.stderr[-2000:])
    self.assertRegex(killed.stderr, rf"epoch {CRASH_AT}/8  meta-loss")  # It got that far.
    state = os.path.join(path, training.TRAIN_STATE)
    self.assertEqual(os.path.basename(tf.train.latest_checkpoint(state)), "ckpt-4")
    second = train(path, "train.py")
    self.assertEqual(second.returncode, 0, second.stderr[-2000:])
    match = re.search(r"resuming from checkpoint \S+ at epoch (\d+)/8 \((\d+) meta-steps done\)",
                      second.stderr)
    self.assertIsNotNone(match, second.stderr[-2000:])
    self.assertEqual((int(match.group(1)), int(match.group(2))), (4, 8))
    self.assertNotRegex(second.stderr, r"epoch 4/8  meta-loss")  # Not repeated.
    self.assertRegex(second.stderr, r"epoch 5/8  meta-loss")
    self.assertRegex(second.stderr, r"done in \d+s: 16 meta-steps")
    self.assert_same_run(path, full, 8)


if __name__ == "__main__":
  absltest.main()
