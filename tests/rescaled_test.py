"""Random rescaling (Lv et al. 2017) of a problem's parameters, and the training options that
use it and the horizon curriculum."""

import math
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
import problems
from l2l import training


def quadratic_numpy(w, y, x):
  """The quadratic problem's loss in NumPy: mean over the batch of ||W x - y||^2."""
  return np.mean(np.sum((np.einsum("bij,bj->bi", w, x) - y) ** 2, axis=1))


class RescaledTest(parameterized.TestCase, tf.test.TestCase):

  def test_same_function_from_the_same_start_in_new_coordinates(self):
    plain = l2l.Problem(problems.quadratic(batch_size=3, num_dims=4, seed=5))
    scaled = l2l.Problem(problems.rescaled(problems.quadratic(batch_size=3, num_dims=4, seed=5),
                                           max_log_scale=2.0, seed=7))
    x0, (w, y) = plain.initial_values()
    (v0,), constants = scaled.initial_values()
    self.assertEqual([s.name for s in scaled.param_specs], [s.name for s in plain.param_specs])
    self.assertLen(constants, 3)  # The scale (created before its parameter), W and y.
    c, w2, y2 = (t.numpy() for t in constants)
    self.assertAllEqual(w2, w)  # Same instance stream: the wrapper draws nothing else from it.
    self.assertAllEqual(y2, y)
    self.assertTrue(np.all(np.abs(np.log(c)) <= 2.0))
    self.assertGreater(np.std(np.log(c)), 0.5)  # Per coordinate, spread over [-2, 2].
    self.assertAllClose(v0 * c, x0[0], rtol=1e-6)  # v starts at w0 / c.

    v = tf.constant(np.random.RandomState(0).normal(size=v0.shape).astype(np.float32))
    with tf.GradientTape() as tape:
      tape.watch(v)
      loss = scaled.loss([v], constants)
    grad = tape.gradient(loss, v).numpy()
    x = c * v.numpy()
    self.assertAllClose(loss, quadratic_numpy(w, y, x), rtol=1e-5)
    # The chain rule through w = c * v: dL/dv = c * dL/dw, with dL/dw from NumPy.
    residual = np.einsum("bij,bj->bi", w, x) - y
    grad_w = 2 * np.einsum("bij,bi->bj", w, residual) / w.shape[0]
    self.assertAllClose(grad, c * grad_w, rtol=1e-4, atol=1e-6)

  def test_new_scales_per_instance_and_seeded(self):
    def scales(seed, instances=2):
      problem = l2l.Problem(problems.rescaled(problems.simple(), 1.0, seed=seed))
      return [problem.initial_values()[1][0].numpy() for _ in range(instances)]
    first, second = scales(3)
    self.assertNotEqual(float(first), float(second))
    self.assertAllEqual(scales(3), [first, second])
    self.assertNotEqual(float(scales(4)[0]), float(first))

  def test_zero_is_the_problem_itself(self):
    make_loss = problems.simple()
    self.assertIs(problems.rescaled(make_loss, 0.0), make_loss)

  def test_outside_the_capture_it_builds_real_variables(self):
    loss = problems.rescaled(problems.simple(), 1.0, seed=0)()
    self.assertAllClose(loss, 1.0)  # simple() is x^2 from x = 1: unchanged at the start.

  @parameterized.parameters(-1.0, float("nan"), "1", True)
  def test_bad_max_log_scale(self, value):
    with self.assertRaisesRegex(ValueError, "max_log_scale must be a number >= 0"):
      problems.rescaled(problems.simple(), value)


TINY = dict(problem="quadratic", num_epochs=6, num_steps=20, unroll_length=5, log_period=1,
            evaluation_period=6, evaluation_epochs=2, checkpoint_period=6, seed=4)


class TrainingOptionsTest(parameterized.TestCase, tf.test.TestCase):

  def test_curriculum_stages_split_the_epochs(self):
    config = training.TrainConfig(**dict(TINY, curriculum=(5, 10, 20)))
    self.assertEqual([config.steps_at(e) for e in range(1, 7)], [5, 5, 10, 10, 20, 20])
    self.assertEqual(training.TrainConfig(**TINY).steps_at(3), 20)

  def test_curriculum_and_rescaling_meta_train(self):
    with tempfile.TemporaryDirectory() as root:
      path = os.path.join(root, "opt")
      summary = training.meta_train(training.TrainConfig(
          save_path=path, curriculum=(5, 10, 20), rescale=1.0, **TINY))
      self.assertEqual(summary["meta_steps"], 2 * (1 + 2 + 4))
      self.assertTrue(math.isfinite(summary["best_validation_log10_loss"]))
      # The saved optimizer works on the plain problem (the scales are training-only).
      opt = l2l.MetaOptimizer.load(path)
      loss = opt.meta_loss(problems.quadratic(batch_size=4, seed=1), 5)
      self.assertTrue(np.isfinite(loss.run().numpy()))

  @parameterized.parameters(
      (dict(rescale=-0.5), "rescale must be a number >= 0"),
      (dict(curriculum=(5, 7)), r"curriculum\[1\] \(7\) must be a multiple of unroll_length"),
      (dict(curriculum=(0,)), r"curriculum\[0\] must be a positive integer"),
      (dict(curriculum="5,10"), "curriculum must be a list of step counts"),
      (dict(curriculum=(5,) * 7), "curriculum has 7 stages, more than num_epochs"),
  )
  def test_bad_options(self, change, message):
    with self.assertRaisesRegex(ValueError, message):
      training.TrainConfig(**dict(TINY, **change)).validate()


if __name__ == "__main__":
  tf.test.main()
