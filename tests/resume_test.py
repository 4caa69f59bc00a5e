"""Resumable meta-training: checkpoints under <save_path>/train_state, resumed after a crash."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

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


class ResumeInProcessTest(absltest.TestCase):

  def test_resumed_run_matches_uninterrupted_run_exactly(self):
    tmp = tempfile.mkdtemp()
    full = os.path.join(tmp, "full")
    summary = training.meta_train(training.TrainConfig(save_path=full, **TINY))
    self.assertEqual(summary["meta_steps"], 6 * 2)
    self.assertEqual(summary["resumed_from_epoch"], 0)
    # A crash after epoch 4: the state directory as it was then (ckpt-4 is the latest).
    crashed = os.path.join(tmp, "crashed")
    shutil.copytree(full, crashed)
    state = os.path.join(crashed, training.TRAIN_STATE)
    for path in glob.glob(os.path.join(state, "ckpt-6.*")):
      os.remove(path)
    with open(os.path.join(state, "checkpoint"), "w") as f:
      f.write('model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-4"\n')
    resumed = training.meta_train(training.TrainConfig(save_path=crashed, **TINY))
    self.assertEqual(resumed["resumed_from_epoch"], 4)
    self.assertEqual(resumed["meta_steps"], summary["meta_steps"])
    self.assertEqual(resumed["best_epoch"], summary["best_epoch"])
    self.assertAlmostEqual(resumed["best_validation_log10_loss"],
                           summary["best_validation_log10_loss"], places=6)
    # Nets, Adam's moments, counters and the instance generator all end the same.
    expected = checkpoint_tensors(os.path.join(full, training.TRAIN_STATE, "ckpt-6"))
    actual = checkpoint_tensors(os.path.join(state, "ckpt-6"))
    self.assertEqual(set(actual), set(expected))
    self.assertTrue(any("optimizer/m" in name for name in expected), sorted(expected))
    self.assertTrue(any("generators" in name for name in expected), sorted(expected))
    for name, value in expected.items():
      np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-7, err_msg=name)

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


class KillAndResumeTest(absltest.TestCase):
  """train.py killed with SIGKILL mid-run; the same command resumes and finishes the run."""

  def test_sigkill_then_same_command_resumes(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    epochs, unrolls = 40, 2
    command = [sys.executable, "train.py", "--problem=quadratic", f"--num_epochs={epochs}",
               "--num_steps=10", "--unroll_length=5", "--checkpoint_period=2",
               "--evaluation_period=5", "--evaluation_epochs=2", "--log_period=1",
               f"--save_path={path}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    state = os.path.join(path, training.TRAIN_STATE)
    with open(os.path.join(tempfile.mkdtemp(), "first.log"), "w") as log:
      first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
      try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
          if (tf.train.latest_checkpoint(state) or "").endswith(("ckpt-6", "ckpt-8")):
            break
          time.sleep(0.05)
        self.assertIsNone(first.poll(), "train.py ended before it could be killed")
        os.kill(first.pid, signal.SIGKILL)
      finally:
        first.kill()
        first.wait()
    self.assertEqual(first.returncode, -signal.SIGKILL)
    saved_epoch = int(re.search(r"ckpt-(\d+)$", tf.train.latest_checkpoint(state)).group(1))
    self.assertGreater(saved_epoch, 0)
    self.assertLess(saved_epoch, epochs)
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    self.assertEqual(second.returncode, 0, second.stderr[-2000:])
    match = re.search(r"resuming from checkpoint \S+ at epoch (\d+)/40 \((\d+) meta-steps done\)",
                      second.stderr)
    self.assertIsNotNone(match, second.stderr[-2000:])
    self.assertEqual(int(match.group(1)), saved_epoch)
    self.assertEqual(int(match.group(2)), saved_epoch * unrolls)
    self.assertNotRegex(second.stderr, rf"epoch {saved_epoch}/40  meta-loss")  # Not repeated.
    self.assertRegex(second.stderr, rf"epoch {saved_epoch + 1}/40  meta-loss")
    self.assertRegex(second.stderr, rf"done in \d+s: {epochs * unrolls} meta-steps")


if __name__ == "__main__":
  absltest.main()
