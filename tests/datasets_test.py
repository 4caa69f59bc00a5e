"""Dataset loading through the real code paths, on tiny files in the datasets' own formats."""

import gzip
import os
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import dataset_files
from problems import datasets


class MnistTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_reads_idx_files(self, gzipped):
    with tempfile.TemporaryDirectory() as d:
      written = dataset_files.write_mnist(d, num_train=30, num_test=12, gzipped=gzipped)
      for mode in ("train", "test"):
        data = datasets.load_mnist(d, mode)
        np.testing.assert_array_equal(data.images, written[mode][0])
        np.testing.assert_array_equal(data.labels, written[mode][1])
        self.assertEqual(data.images.dtype, np.uint8)
        self.assertEqual(data.labels.dtype, np.int64)
        self.assertFalse(data.images.flags.writeable)
      self.assertEqual(datasets.load_mnist(d, "test").images.shape, (12, 28, 28))

  def test_missing_files_name_both_options(self):
    with tempfile.TemporaryDirectory() as d:
      with self.assertRaisesRegex(ValueError, r"^mnist: no data \(neither train-images-idx3-ubyte "
                                  r"nor train-images-idx3-ubyte.gz in .*\); pass data_dir=DIR .*"
                                  r"keras.datasets.mnist.load_data\(\)") as cm:
        datasets.load_mnist(d, "train")
      self.assertNotIn("\n", str(cm.exception))

  def test_corrupt_file(self):
    with tempfile.TemporaryDirectory() as d:
      dataset_files.write_mnist(d, gzipped=True)
      with gzip.open(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"\x00" * 20)
      with self.assertRaisesRegex(ValueError, r"mnist: no data \(.*is not an idx file of 1-d"):
        datasets.load_mnist(d, "test")

  def test_failed_download_names_both_options(self):
    from keras import datasets as keras_datasets  # pylint: disable=g-import-not-at-top
    # No network here: the Keras loader is replaced by one that fails as an offline one does.
    with mock.patch.object(keras_datasets.mnist, "load_data",
                           side_effect=OSError("URL fetch failure: no network")):
      with self.assertRaisesRegex(ValueError, r"^mnist: no data \(no data_dir, and the Keras "
                                  r"download failed: OSError: URL fetch failure.*\); pass "
                                  r"data_dir=DIR .* L2L_DATA_DIR") as cm:
        datasets.load_mnist(None, "test")
      self.assertNotIn("\n", str(cm.exception))

  def test_keras_arrays_are_used_without_data_dir(self):
    from keras import datasets as keras_datasets  # pylint: disable=g-import-not-at-top
    train = (np.ones([3, 28, 28], np.uint8), np.array([1, 2, 3], np.uint8))
    test = (np.zeros([2, 28, 28], np.uint8), np.array([4, 5], np.uint8))
    datasets.load_mnist.cache_clear()
    try:
      with mock.patch.object(keras_datasets.mnist, "load_data", return_value=(train, test)):
        data = datasets.load_mnist(None, "test")
    finally:
      datasets.load_mnist.cache_clear()
    np.testing.assert_array_equal(data.labels, [4, 5])
    self.assertEqual(data.labels.dtype, np.int64)

  def test_bad_mode(self):
    with self.assertRaisesRegex(ValueError, r"mnist: mode must be one of \('train', 'test'\), "
                                "got 'valid'"):
      datasets.load_mnist("/nonexistent", "valid")


class Cifar10Test(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_reads_python_batches(self, subdir):
    with tempfile.TemporaryDirectory() as d:
      written = dataset_files.write_cifar10(d, per_batch=4, num_test=6, subdir=subdir)
      for mode, count in (("train", 20), ("test", 6)):
        data = datasets.load_cifar10(d, mode)
        self.assertEqual(data.images.shape, (count, 32, 32, 3))
        np.testing.assert_array_equal(data.images, written[mode][0])
        np.testing.assert_array_equal(data.labels, written[mode][1])

  def test_channel_layout(self):
    # One image: red plane all 1, green 2, blue 3 in the file's row-major R, G, B layout.
    with tempfile.TemporaryDirectory() as d:
      dataset_files.write_cifar10(d)
      import pickle  # pylint: disable=g-import-not-at-top
      row = np.concatenate([np.full(1024, v, np.uint8) for v in (1, 2, 3)])
      with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump({b"data": row[None], b"labels": [7]}, f)
      data = datasets.load_cifar10(d, "test")
      np.testing.assert_array_equal(data.images[0, 5, 9], [1, 2, 3])
      np.testing.assert_array_equal(data.labels, [7])

  def test_missing_batch(self):
    with tempfile.TemporaryDirectory() as d:
      dataset_files.write_cifar10(d)
      os.remove(os.path.join(d, "data_batch_3"))
      with self.assertRaisesRegex(ValueError, r"^cifar10: no data \(.*data_batch_3.*\); pass "
                                  r"data_dir=DIR holding data_batch_1..5 .*keras.datasets.cifar10"):
        datasets.load_cifar10(d, "train")

  def test_not_a_batch(self):
    with tempfile.TemporaryDirectory() as d:
      dataset_files.write_cifar10(d)
      with open(os.path.join(d, "test_batch"), "wb") as f:
        f.write(b"not a pickle")
      with self.assertRaisesRegex(ValueError, "is not a CIFAR-10 python batch"):
        datasets.load_cifar10(d, "test")


class DigitsTest(tf.test.TestCase):

  def test_fixed_split(self):
    train, test = datasets.load_digits("train"), datasets.load_digits("test")
    self.assertEqual(train.images.shape, (1438, 64))
    self.assertEqual(test.images.shape, (359, 64))
    self.assertEqual(train.images.dtype, np.float32)
    self.assertBetween(float(train.images.max()), 0.99, 1.0)
    self.assertCountEqual(np.unique(test.labels), range(10))


if __name__ == "__main__":
  tf.test.main()
