"""train.py / meta_train with --gradient=checkpointed and --gradient=pes."""

import os
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
from l2l import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(problem="quadratic", num_epochs=4, num_steps=10, unroll_length=5, log_period=2,
            evaluation_period=2, evaluation_epochs=2, seed=3)


class LongHorizonTrainingTest(tf.test.TestCase, parameterized.TestCase):

  def test_checkpointed_trains_like_backprop(self):
    """Same meta-gradients, same Adam steps: the same validation scores (float32 summation
    order aside; observed equal to 1e-6)."""
    plain = training.meta_train(training.TrainConfig(**TINY))
    checkpointed = training.meta_train(training.TrainConfig(
        gradient="checkpointed", segment_length=2, **TINY))
    self.assertAlmostEqual(plain["best_validation_log10_loss"],
                           checkpointed["best_validation_log10_loss"], places=4)
    self.assertEqual(plain["best_epoch"], checkpointed["best_epoch"])

  def test_pes_trains_and_saves(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    config = dict(TINY, gradient="pes", pes_particles=2, pes_std=0.01, learning_rate=1e-2)
    untrained = training.meta_train(training.TrainConfig(**dict(config, learning_rate=1e-12)))
    summary = training.meta_train(training.TrainConfig(save_path=path, **config))
    self.assertTrue(np.isfinite(summary["best_validation_log10_loss"]))
    self.assertEqual(summary["meta_steps"], 8)
    self.assertEqual(summary["skipped_steps"], 0)
    # Eight PES steps improve the nets: a lower validation score than the same run with a
    # learning rate of 1e-12 (observed 1.092 vs 1.148, log10 of the mean final loss; seeded,
    # so deterministic). A wrong-signed or mis-scaled estimate raises it or stays within 0.02.
    self.assertLess(summary["best_validation_log10_loss"],
                    untrained["best_validation_log10_loss"] - 0.02)
    self.assertEqual(summary["best_epoch"], 4)  # The last validation is the best one.
    self.assertIsInstance(l2l.MetaOptimizer.load(path), l2l.MetaOptimizer)
    # The training state (nets, Adam, PES particles and xi) is checkpointed for resuming.
    latest = tf.train.latest_checkpoint(os.path.join(path, training.TRAIN_STATE))
    names = [name for name, _ in tf.train.list_variables(latest)]
    self.assertTrue(any("_xi" in n for n in names), msg=names)

  def test_net_layers_resizes_the_nets(self):
    """--net_layers=4: the trained and saved net is a 1x4 LSTM (fewer weights for PES)."""
    path = os.path.join(tempfile.mkdtemp(), "opt")
    training.meta_train(training.TrainConfig(
        save_path=path, gradient="pes", pes_particles=2, net_layers=(4,), **TINY))
    loaded = l2l.MetaOptimizer.load(path)
    self.assertEqual(loaded.net_configs["cw"]["net_options"]["layers"], [4])
    # LogAndSign's 2 features + 4 hidden -> 16 gates, then a 4 -> 1 output layer.
    self.assertEqual(sum(int(v.shape.num_elements()) for v in loaded.trainable_variables),
                     (2 + 4) * 16 + 16 + 4 + 1)

  @parameterized.parameters(
      (dict(net_layers=(8, 0)), "net_layers\\[1\\] must be a positive integer"),
      (dict(net_layers="8"), "net_layers must be a list of layer sizes"),
      (dict(gradient="adjoint"), "gradient must be one of"),
      (dict(gradient="checkpointed"), "segment_length is required"),
      (dict(segment_length=2), "segment_length is required"),
      (dict(gradient="checkpointed", segment_length=0), "segment_length must be a positive"),
      (dict(gradient="pes", pes_particles=0), "pes_particles must be a positive integer"),
      (dict(gradient="pes", pes_std=0.0), "pes_std must be positive"),
      (dict(gradient="pes", second_derivatives=True), "second_derivatives has no effect"))
  def test_bad_options(self, change, message):
    with self.assertRaisesRegex(ValueError, message):
      training.TrainConfig(**dict(TINY, **change)).validate()

  def test_train_script_flags(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "train.py", "--problem=simple", "--num_epochs=2", "--num_steps=4",
         "--unroll_length=2", "--evaluation_period=2", "--evaluation_epochs=1",
         "--gradient=pes", "--pes_particles=2"], cwd=REPO, capture_output=True, text=True,
        env=env, timeout=300)
    self.assertEqual(result.returncode, 0, msg=result.stderr[-2000:])
    self.assertIn("done in", result.stderr)
    result = subprocess.run([sys.executable, "train.py", "--gradient=checkpointed"], cwd=REPO,
                            capture_output=True, text=True, env=env, timeout=300)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("segment_length is required", result.stderr)
    result = subprocess.run([sys.executable, "train.py", "--net_layers=8,x"], cwd=REPO,
                            capture_output=True, text=True, env=env, timeout=300)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("--net_layers must be a comma-separated list of integers", result.stderr)


if __name__ == "__main__":
  tf.test.main()
