"""The paper's named configs (mnist, cifar, cifar-multi, digits) on small local data."""

import ast
import os
import re
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import dataset_files
import l2l
from l2l import configs


class PaperConfigsTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._dir = tempfile.TemporaryDirectory()
    # 130 images: enough for the configs' batches of 128.
    dataset_files.write_cifar10(cls._dir.name, per_batch=26)
    dataset_files.write_mnist(cls._dir.name, num_train=130)

  @classmethod
  def tearDownClass(cls):
    cls._dir.cleanup()
    super().tearDownClass()

  def test_configs_build_without_data(self):
    with mock.patch.dict(os.environ, {"L2L_DATA_DIR": "/nonexistent/l2l"}):
      for name in ("mnist", "cifar", "cifar-multi", "digits"):
        config = configs.get_config(name)  # Nothing is loaded yet.
        self.assertNotEmpty(config.net_configs)
      with self.assertRaisesRegex(ValueError, "^mnist: no data .*/nonexistent/l2l"):
        configs.get_config("mnist").make_problem(0)

  def test_cifar_multi_assignments(self):
    config = configs.get_config("cifar-multi")
    conv, fc = dict(config.net_assignments)["conv"], dict(config.net_assignments)["fc"]
    self.assertEqual(conv, ["conv_0/w", "conv_1/w", "conv_2/w"])
    self.assertIn("linear_0/w", fc)
    self.assertIn("batch_norm_2/offset", fc)
    self.assertLen(fc, 13)  # 3 conv biases, 3 x 2 batch norm, 2 linear layers x 2.

  @parameterized.parameters("cifar", "cifar-multi")
  def test_cifar_configs_meta_train(self, name):
    config = configs.get_config(name, data_dir=self._dir.name)
    opt = l2l.MetaOptimizer(**config.net_configs)
    trainer = opt.meta_minimize(config.make_problem(0), 2, learning_rate=1e-2,
                                net_assignments=config.net_assignments)
    self.assertEqual(sorted(n for n, _ in trainer.meta_loss.assignments),
                     sorted(config.net_configs))
    before = [v.numpy() for v in opt.trainable_variables]
    losses = [float(trainer.step()) for _ in range(2)]
    self.assertTrue(np.all(np.isfinite(losses)), msg=losses)
    # Two cross-entropies of 10 classes near log(10) each.
    self.assertAllClose(losses[0], 2 * np.log(10.), rtol=0.2)
    for netid, net in opt.nets.items():
      moved = [not np.array_equal(v.numpy(), b) for v, b in zip(opt.trainable_variables, before)
               if any(v is w for w in net.trainable_variables)]
      self.assertTrue(any(moved), msg=f"net {netid!r} was not trained")

  def test_mnist_config_reads_the_environment(self):
    with mock.patch.dict(os.environ, {"L2L_DATA_DIR": self._dir.name}):
      config = configs.get_config("mnist")
    problem = l2l.Problem(config.make_problem(0))
    self.assertEqual([tuple(s.shape) for s in problem.param_specs],
                     [(784, 20), (20,), (20, 10), (10,)])
    self.assertEqual(config.net_configs["cw"]["net"], "CoordinateWiseDeepLSTM")

  def test_digits_config(self):
    config = configs.get_config("digits")
    problem = l2l.Problem(config.make_problem(0))
    self.assertEqual([tuple(s.shape) for s in problem.param_specs],
                     [(64, 20), (20,), (20, 10), (10,)])

  def test_unknown_option(self):
    with self.assertRaisesRegex(ValueError, r"configuration 'digits' has no options "
                                r"\['data_dir'\]"):
      configs.get_config("digits", data_dir="/tmp")


class LightConstantsTest(tf.test.TestCase):
  """Constants copied so that the scripts' --help loads without TensorFlow agree with their
  sources, and --help really does not import TensorFlow."""

  def test_copies_agree(self):
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    from l2l import evaluation, options, unroll  # pylint: disable=g-import-not-at-top
    from l2l.versatile import suite_training  # pylint: disable=g-import-not-at-top
    import importlib  # pylint: disable=g-import-not-at-top
    # The module (problems.cifar10 the attribute is the problem function of that name).
    cifar10 = importlib.import_module("problems.cifar10")
    self.assertEqual(configs.CIFAR_KERNEL_SHAPE, tuple(cifar10.KERNEL_SHAPE))
    self.assertEqual(options.OPTIMIZERS, evaluation.OPTIMIZERS)
    self.assertIs(unroll.OBJECTIVES, options.OBJECTIVES)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys, runpy\n"
            "sys.argv = ['train.py', '--help']\n"
            "try:\n  runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit:\n  pass\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True,
                            text=True, timeout=120)
    with open(os.path.join(repo, "train.py")) as f:
      copied = re.search(r"^_SUITE_DEFAULTS = (\{.*?\})$", f.read(), flags=re.M | re.S)
    suite_defaults = suite_training.SuiteTrainConfig()
    for name, value in ast.literal_eval(copied.group(1)).items():
      self.assertEqual(value, getattr(suite_defaults, name), name)
    self.assertIn("--objective", result.stdout)
    self.assertEqual(result.stdout.strip().splitlines()[-1], "False")


if __name__ == "__main__":
  tf.test.main()
