"""mnist, cifar10 and digits: fresh batches per call, NumPy references, structure, errors."""

import importlib
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import dataset_files
import l2l
import problems
from problems import datasets
from problems import minibatch

# `problems.cifar10` is the problem function; its module holds BatchNorm.
cifar10_lib = importlib.import_module("problems.cifar10")


def mlp_loss_np(params, inputs, labels):
  """Cross-entropy of a sigmoid MLP ([w0, b0, w1, b1, ...]) in float64."""
  x = np.asarray(inputs, np.float64)
  weights = [np.asarray(p, np.float64) for p in params]
  for i in range(0, len(weights), 2):
    x = x @ weights[i] + weights[i + 1]
    if i + 2 < len(weights):
      x = 1. / (1. + np.exp(-x))
  x = x - x.max(axis=1, keepdims=True)
  log_probs = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
  return -np.mean(log_probs[np.arange(len(labels)), labels])


class MinibatchProblemTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._dir = tempfile.TemporaryDirectory()
    dataset_files.write_mnist(cls._dir.name, num_train=40, num_test=20)
    dataset_files.write_cifar10(cls._dir.name, per_batch=8)

  @classmethod
  def tearDownClass(cls):
    cls._dir.cleanup()
    super().tearDownClass()

  def test_full_batch_loss_matches_numpy(self):
    problem = l2l.Problem(problems.mnist(hidden_sizes=(5, 4), batch_size=20, mode="test",
                                         data_dir=self._dir.name, seed=1))
    self.assertEqual(problem.param_names, ["mlp/linear_0/w", "mlp/linear_0/b", "mlp/linear_1/w",
                                           "mlp/linear_1/b", "mlp/linear_2/w", "mlp/linear_2/b"])
    self.assertEqual(problem.constant_specs, [])  # The data are not problem variables.
    rng = np.random.RandomState(0)
    params = [tf.constant(rng.randn(*s.shape).astype(np.float32)) for s in problem.param_specs]
    data = datasets.load_mnist(self._dir.name, "test")
    expected = mlp_loss_np(params, data.images.reshape(20, -1) / 255., data.labels)
    # float32 vs float64, and the batch is all 20 test images in a random order.
    self.assertAllClose(problem.loss(params, []), expected, rtol=1e-5)

  def test_initial_weights_are_the_papers(self):
    problem = l2l.Problem(problems.digits(hidden_sizes=(300,), seed=0))
    (w0, b0, w1, b1), _ = problem.initial_values()
    # 19200 + 300 + 3000 + 10 draws of N(0, 0.01^2): std within 5%, mean within 5 s.e.
    values = np.concatenate([np.ravel(t) for t in (w0, b0, w1, b1)])
    self.assertAllClose(values.std(), 0.01, rtol=0.05)
    self.assertAllClose(values.mean(), 0., atol=5 * 0.01 / np.sqrt(values.size))

  @parameterized.parameters("eager", "function")
  def test_each_call_draws_a_new_batch(self, mode):
    problem = l2l.Problem(problems.digits(batch_size=16, seed=0))
    params, _ = problem.initial_values()
    loss = lambda: problem.loss(params, [])
    if mode == "function":
      loss = tf.function(loss)
    values = [float(loss()) for _ in range(4)]
    self.assertLen(set(values), 4)
    # The same seed gives the same stream of batches, eager or compiled.
    again = l2l.Problem(problems.digits(batch_size=16, seed=0))
    again_params, _ = again.initial_values()
    self.assertAllClose([float(again.loss(again_params, [])) for _ in range(4)], values)

  def test_batches_are_subsets_without_replacement(self):
    # digits test mode: 359 examples; batches of 100 hold 100 distinct examples of the split.
    _, generator = minibatch.generators(3)
    data = datasets.load_digits("test")
    sampler = minibatch.BatchSampler(data.images, data.labels, 100, generator, "digits")
    seen = []
    for _ in range(3):
      inputs, labels = sampler()
      index = [int(np.flatnonzero((data.images == r).all(axis=1))[0]) for r in inputs.numpy()]
      self.assertLen(set(index), 100)
      self.assertAllEqual(labels, data.labels[index])
      seen.append(frozenset(index))
    self.assertLen(set(seen), 3)

  def test_unroll_sees_different_batches(self):
    opt = l2l.MetaOptimizer(sgd={"net": "Sgd", "net_options": {"learning_rate": 1e-6}})
    meta_loss = opt.meta_loss(problems.digits(batch_size=8, seed=0), 10)
    meta_loss.run()
    # With a negligible learning rate, the losses differ only through the batches.
    self.assertGreater(np.std(meta_loss.losses.numpy()), 1e-3)

  def test_cifar10_structure_matches_the_problem(self):
    architecture = dict(conv_channels=(3, 5), linear_layers=(7,), batch_norm=False)
    real = l2l.Problem(problems.cifar10(batch_size=4, data_dir=self._dir.name, **architecture))
    structure = l2l.Problem(problems.cifar10_structure(**architecture))
    self.assertEqual(real.param_specs, structure.param_specs)
    self.assertEqual([(s.name, s.shape.as_list()) for s in real.param_specs],
                     [("conv_0/w", [5, 5, 3, 3]), ("conv_0/b", [3]), ("conv_1/w", [5, 5, 3, 5]),
                      ("conv_1/b", [5]), ("linear_0/w", [8 * 8 * 5, 7]), ("linear_0/b", [7]),
                      ("output/w", [7, 10]), ("output/b", [10])])
    with_bn = l2l.Problem(problems.cifar10(conv_channels=(3,), linear_layers=(), batch_size=4,
                                           data_dir=self._dir.name))
    self.assertIn("batch_norm_0/scale", with_bn.param_names)

  def test_batch_norm_normalizes(self):
    bn = cifar10_lib.BatchNorm()
    x = tf.constant(np.random.RandomState(0).randn(6, 4, 4, 3).astype(np.float32) * 5 + 2)
    y = bn(x).numpy()
    self.assertAllClose(y.mean(axis=(0, 1, 2)), np.zeros(3), atol=1e-5)
    self.assertAllClose(y.std(axis=(0, 1, 2)), np.ones(3), atol=1e-3)

  @parameterized.named_parameters(
      ("activation", "digits", dict(activation="tanh"),
       r"digits: activation must be one of \['relu', 'sigmoid'\], got 'tanh'"),
      ("hidden", "digits", dict(hidden_sizes=(4, 0)),
       r"digits: hidden_sizes\[1\] must be a positive integer, got 0"),
      ("batch", "digits", dict(batch_size=2000),
       "digits: batch_size 2000 is larger than the 1438 examples"),
      ("mode", "digits", dict(mode="val"), r"digits: mode must be one of"),
      ("channels", "cifar10", dict(conv_channels="16"),
       "cifar10: conv_channels must be a list of positive integers, got '16'"),
      ("mnist_batch", "mnist", dict(batch_size=0),
       "mnist: batch_size must be a positive integer, got 0"),
  )
  def test_bad_options(self, name, options, message):
    with self.assertRaisesRegex(ValueError, message):
      problems.get(name, **options)

  def test_no_data_is_an_error_not_fake_data(self):
    with tempfile.TemporaryDirectory() as empty:
      with self.assertRaisesRegex(ValueError, r"^mnist: no data .*pass data_dir=DIR"):
        problems.mnist(data_dir=empty)
      with self.assertRaisesRegex(ValueError, r"^cifar10: no data .*pass data_dir=DIR"):
        problems.cifar10(data_dir=empty)


if __name__ == "__main__":
  tf.test.main()
