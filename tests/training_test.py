"""Meta-training options: learning-rate schedule and meta-gradient clipping."""

import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
import problems
from l2l import training

LSTM = {"net": "CoordinateWiseDeepLSTM",
        "net_options": {"layers": [4], "preprocess_name": "LogAndSign", "scale": 0.1, "seed": 1}}


def first_meta_gradient_norm(max_grad_norm):
  """The norm of Adam's first moment after one step, divided by (1 - beta1): the applied grad."""
  opt = l2l.MetaOptimizer(cw=LSTM)
  trainer = opt.meta_minimize(problems.quadratic(batch_size=4, num_dims=3, seed=2), 5, 1e-3,
                              max_grad_norm=max_grad_norm)
  trainer.step()
  m = trainer.optimizer.m
  return float(tf.linalg.global_norm([tf.convert_to_tensor(v) for v in m])) / (1 - 0.9)


class TrainingOptionsTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters((0.0, 1.0), (0.5, 0.51), (1.0, 0.02))
  def test_cosine_schedule(self, fraction, expected_ratio):
    self.assertAlmostEqual(training.scheduled_learning_rate(3e-3, "cosine", fraction),
                           3e-3 * expected_ratio, places=9)
    self.assertEqual(training.scheduled_learning_rate(3e-3, "constant", fraction), 3e-3)

  def test_clipping_bounds_the_applied_meta_gradient(self):
    unclipped = first_meta_gradient_norm(None)
    self.assertGreater(unclipped, 1e-3)
    clipped = first_meta_gradient_norm(unclipped / 10)
    self.assertAllClose(clipped, unclipped / 10, rtol=1e-4)
    # A bound above the norm changes nothing.
    self.assertAllClose(first_meta_gradient_norm(unclipped * 10), unclipped, rtol=1e-4)

  def test_learning_rate_variable_drives_adam_without_retracing(self):
    opt = l2l.MetaOptimizer(cw=LSTM)
    trainer = opt.meta_minimize(problems.quadratic(batch_size=4, num_dims=3, seed=2), 3, 1e-2)
    trainer.step()
    traces = trainer._step.experimental_get_tracing_count()
    before = [v.numpy() for v in opt.trainable_variables]
    trainer.learning_rate.assign(0.0)
    trainer.step()
    # With a zero learning rate Adam moves nothing.
    for b, v in zip(before, opt.trainable_variables):
      self.assertAllEqual(b, v.numpy())
    self.assertEqual(trainer._step.experimental_get_tracing_count(), traces)

  def test_non_finite_meta_step_is_skipped(self):
    flag = tf.Variable(1.0, trainable=False)

    def make_loss():
      x = tf.Variable(tf.ones([3]), name="x")
      return tf.reduce_sum(tf.square(x)) * flag  # flag = NaN makes loss and gradients NaN.

    opt = l2l.MetaOptimizer(cw=LSTM)
    trainer = opt.meta_minimize(make_loss, 3, 1e-2)
    self.assertLen(trainer.optimizer.m, len(opt.trainable_variables))  # Created eagerly.
    self.assertTrue(np.isfinite(trainer.step().numpy()))
    self.assertEqual(int(trainer.skipped_steps.numpy()), 0)

    def state():
      adam = trainer.optimizer
      return [v.numpy() for v in [*opt.trainable_variables, *adam.m, *adam.v, adam.step]]

    before = state()
    flag.assign(float("nan"))
    trainer.reset()
    self.assertTrue(np.isnan(trainer.step().numpy()))
    self.assertEqual(int(trainer.skipped_steps.numpy()), 1)
    for b, a in zip(before, state()):
      self.assertAllEqual(b, a)  # Nets and Adam's moments and step count untouched.
    flag.assign(1.0)
    trainer.reset()
    self.assertTrue(np.isfinite(trainer.step().numpy()))
    self.assertEqual(int(trainer.skipped_steps.numpy()), 1)
    self.assertEqual(int(trainer.optimizer.step.numpy()), 2)
    self.assertNotAllClose(before[0], opt.trainable_variables[0].numpy())
    self.assertEqual(trainer._step.experimental_get_tracing_count(), 1)

  @parameterized.parameters(
      (dict(learning_rate_schedule="step"), "learning_rate_schedule must be one of"),
      (dict(max_grad_norm=0.0), "max_grad_norm must be positive"),
  )
  def test_bad_options(self, change, message):
    with self.assertRaisesRegex(ValueError, message):
      training.TrainConfig(**change).validate()

  def test_bad_max_grad_norm_in_meta_minimize(self):
    opt = l2l.MetaOptimizer(cw=LSTM)
    with self.assertRaisesRegex(ValueError, "max_grad_norm must be a positive number"):
      opt.meta_minimize(problems.simple(), 3, 1e-3, max_grad_norm=-1.0)


if __name__ == "__main__":
  tf.test.main()
