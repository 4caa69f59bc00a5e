"""problems.tasks: Task checks, the sinusoid and N-way K-shot samplers, digits."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

import problems
from problems import tasks


class TaskTest(absltest.TestCase):

  def test_shapes_checked(self):
    tasks.Task(np.zeros([5, 1]), np.zeros([5, 1]), np.zeros([7, 1]), np.zeros([7, 1]))
    tasks.Task(np.zeros([2, 5, 64]), np.zeros([2, 5]), np.zeros([2, 9, 64]), np.zeros([2, 9]))
    with self.assertRaisesRegex(ValueError, "support and query examples must have the same "
                                "shape"):
      tasks.Task(np.zeros([5, 2]), np.zeros([5, 1]), np.zeros([7, 1]), np.zeros([7, 1]))
    with self.assertRaisesRegex(ValueError, "x and y must hold the same number of examples"):
      tasks.Task(np.zeros([5, 1]), np.zeros([4, 1]), np.zeros([7, 1]), np.zeros([7, 1]))
    with self.assertRaisesRegex(ValueError, "matching ranks"):
      tasks.Task(np.zeros([5, 1]), np.zeros([5, 1]), np.zeros([2, 7, 1]), np.zeros([2, 7, 1]))

  def test_works_with_tf_nest(self):
    task = tasks.Task(np.zeros([5, 1]), np.ones([5, 1]), np.zeros([7, 1]), np.ones([7, 1]))
    doubled = tf.nest.map_structure(lambda a: a * 2, task)
    self.assertIsInstance(doubled, tasks.Task)
    self.assertEqual(float(doubled.query_y[0, 0]), 2.)


class SinusoidTest(absltest.TestCase):

  def test_shapes_ranges_and_function(self):
    sampler = problems.SinusoidTaskSampler(k_support=5, k_query=7, seed=0)
    task, amp, phase = sampler.sample_with_parameters(600)
    self.assertEqual(task.support_x.shape, (600, 5, 1))
    self.assertEqual(task.query_y.shape, (600, 7, 1))
    self.assertEqual(task.support_x.dtype, np.float32)
    self.assertTrue(np.all((amp >= 0.1) & (amp <= 5.)))
    self.assertTrue(np.all((phase >= 0.) & (phase <= np.pi)))
    self.assertTrue(np.all(np.abs(task.query_x) <= 5.))
    expected = amp[:, None, None] * np.sin(task.support_x - phase[:, None, None])
    np.testing.assert_allclose(task.support_y, expected, rtol=1e-5, atol=1e-5)
    # Uniform amplitudes: the mean over 600 tasks is near 2.55 (std of the mean ~0.06).
    self.assertAlmostEqual(amp.mean(), 2.55, delta=0.25)

  def test_seeded(self):
    a = problems.SinusoidTaskSampler(seed=3).sample(4)
    b = problems.SinusoidTaskSampler(seed=3).sample(4)
    c = problems.SinusoidTaskSampler(seed=4).sample(4)
    np.testing.assert_array_equal(a.support_x, b.support_x)
    self.assertFalse(np.allclose(a.support_x, c.support_x))

  def test_generator_seed_and_dtype(self):
    # A caller's generator is drawn from in place: seeded identically, it gives the same tasks as
    # `seed`, and two samplers sharing it take successive draws.
    shared = np.random.default_rng(7)
    a = problems.SinusoidTaskSampler(generator=shared).sample(3)
    b = problems.SinusoidTaskSampler(generator=shared).sample(3)
    by_seed = problems.SinusoidTaskSampler(seed=7)
    np.testing.assert_array_equal(a.support_x, by_seed.sample(3).support_x)
    np.testing.assert_array_equal(b.query_y, by_seed.sample(3).query_y)
    # No seed and no generator is seed 0.
    np.testing.assert_array_equal(problems.SinusoidTaskSampler().sample(2).support_y,
                                  problems.SinusoidTaskSampler(seed=0).sample(2).support_y)
    # dtype: the same float64 draws, cast; float64 keeps the exact sinusoid.
    for dtype in ("float64", np.float64, tf.float64):
      task, amp, phase = problems.SinusoidTaskSampler(seed=1, dtype=dtype).sample_with_parameters(4)
      self.assertEqual(task.support_x.dtype, np.float64)
      np.testing.assert_allclose(
          task.query_y, amp[:, None, None] * np.sin(task.query_x - phase[:, None, None]),
          rtol=1e-14, atol=1e-14)
    single = problems.SinusoidTaskSampler(seed=1).sample(4)
    self.assertEqual(single.support_x.dtype, np.float32)
    np.testing.assert_array_equal(single.support_x, task.support_x.astype(np.float32))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "k_support must be an integer >= 1, got 0"):
      problems.SinusoidTaskSampler(k_support=0)
    with self.assertRaisesRegex(ValueError, "give generator or seed, not both"):
      problems.SinusoidTaskSampler(generator=np.random.default_rng(0), seed=0)
    with self.assertRaisesRegex(TypeError, "generator must be a np.random.Generator, got int"):
      problems.SinusoidTaskSampler(generator=3)
    with self.assertRaisesRegex(ValueError, "dtype must be a floating dtype"):
      problems.SinusoidTaskSampler(dtype="int32")
    with self.assertRaisesRegex(ValueError, "dtype must be a floating dtype"):
      problems.SinusoidTaskSampler(dtype="flaot32")
    with self.assertRaisesRegex(ValueError, "seed must be a non-negative integer or None"):
      problems.SinusoidTaskSampler(seed=-1)
    with self.assertRaisesRegex(ValueError, "amp_range must have low <= high"):
      problems.SinusoidTaskSampler(amp_range=(5, 0.1))


class NWayKShotTest(absltest.TestCase):

  def test_labels_classes_and_no_overlap(self):
    inputs = np.arange(60, dtype=np.float32)[:, None]  # The input is the example's index.
    labels = np.repeat(np.arange(6), 10)
    sampler = tasks.NWayKShotSampler(inputs, labels, n_way=3, k_shot=2, k_query=4, seed=0)
    batch = sampler.sample(20)
    self.assertEqual(batch.support_x.shape, (20, 6, 1))
    self.assertEqual(batch.query_y.shape, (20, 12))
    for t in range(20):
      task = batch.task(t)
      np.testing.assert_array_equal(task.support_y, [0, 0, 1, 1, 2, 2])
      support, query = task.support_x.ravel().astype(int), task.query_x.ravel().astype(int)
      self.assertEmpty(set(support) & set(query))
      # Every example's new label names one original class, the same in support and query.
      for new_label in range(3):
        original = set(labels[support[task.support_y == new_label]]) | set(
            labels[query[task.query_y == new_label]])
        self.assertLen(original, 1)

  def test_class_split_and_errors(self):
    inputs, labels = tasks.load_digits()
    self.assertEqual(inputs.shape, (1797, 64))
    self.assertLessEqual(inputs.max(), 1.)
    train, test = tasks.digits_samplers(n_way=5, k_shot=1, k_query=5, seed=0)
    q = test.sample(3)
    self.assertEqual(q.support_x.shape, (3, 5, 64))
    classes = {int(labels[np.flatnonzero((inputs == x).all(1))[0]]) for x in q.query_x[0]}
    self.assertTrue(classes <= set(tasks.DIGITS_TEST_CLASSES))
    del train
    with self.assertRaisesRegex(ValueError, "n_way=3 needs at least 3 classes"):
      tasks.NWayKShotSampler(inputs, labels, n_way=3, classes=[0, 1])
    with self.assertRaisesRegex(ValueError, "fewer than k_shot \\+ k_query = 500"):
      tasks.NWayKShotSampler(inputs, labels, k_shot=250, k_query=250)



class DigitsSplitTest(absltest.TestCase):

  def test_dihedral_transforms(self):
    image = np.arange(9, dtype=np.float32).reshape(1, 3, 3)  # No symmetry: 8 distinct images.
    images = [tasks.dihedral(image, t)[0] for t in range(8)]
    np.testing.assert_array_equal(images[0], image[0])
    np.testing.assert_array_equal(images[1], np.rot90(image[0]))
    np.testing.assert_array_equal(images[4], np.fliplr(image[0]))
    self.assertLen({im.tobytes() for im in images}, 8)
    with self.assertRaisesRegex(ValueError, "transform must be in 0..7, got 8"):
      tasks.dihedral(image, 8)

  def test_dihedral_classes(self):
    inputs, labels = tasks.load_digits()
    x, y, classes = tasks.dihedral_classes(inputs, labels, [0, 1])
    self.assertEqual(classes, [0, 1, 10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71])
    self.assertEqual(sorted(set(y.tolist())), sorted(classes))
    zeros = inputs[labels == 0].reshape(-1, 8, 8)
    np.testing.assert_array_equal(x[y == 50].reshape(-1, 8, 8),
                                  np.rot90(zeros[:, :, ::-1], 1, axes=(1, 2)))
    with self.assertRaisesRegex(ValueError, "flattened 8x8 images"):
      tasks.dihedral_classes(inputs[:, :10], labels, [0])

  def test_test_split_keeps_held_out_digits_plain_and_disjoint(self):
    inputs, labels = tasks.load_digits()
    x, y, train, held_out = tasks.digits_split("test")
    self.assertLen(train, 40)
    self.assertEqual(held_out, [5, 6, 7, 8, 9])
    self.assertEmpty(set(train) & set(held_out))
    self.assertTrue(all(c % 10 < 5 for c in train))
    # Standardized with the meta-training images' statistics only.
    in_train = np.isin(y, train)
    self.assertAlmostEqual(float(x[in_train].mean()), 0., delta=1e-4)
    self.assertAlmostEqual(float(x[in_train].std()), 1., delta=1e-4)
    # Held-out images are the original ones under that one affine map (no augmentation).
    original = inputs[np.isin(labels, held_out)]
    plain = x[~in_train]
    self.assertEqual(plain.shape, original.shape)
    scale = original.std() / plain.std()
    np.testing.assert_allclose(plain * scale - (plain * scale - original).mean(), original,
                               atol=1e-5)

  def test_validation_split_never_sees_test_digits(self):
    _, y, train, held_out = tasks.digits_split("validation")
    self.assertLen(train, 24)
    self.assertLen(held_out, 16)
    self.assertEqual({c % 10 for c in train}, {0, 1, 2})
    self.assertEqual({c % 10 for c in held_out}, {3, 4})
    self.assertEqual({c % 10 for c in set(y.tolist())}, {0, 1, 2, 3, 4})
    with self.assertRaisesRegex(ValueError, "split must be 'test' or 'validation'"):
      tasks.digits_split("train")

if __name__ == "__main__":
  absltest.main()
