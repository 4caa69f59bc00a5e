"""l2l.pretrained: every shipped optimizer loads and reproduces its stored trajectory."""

import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow as tf

import l2l
import nets
from l2l.versatile import zoo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ZooTest(absltest.TestCase):

  def test_ships_the_versatile_rule_and_the_2016_lstms(self):
    names = zoo.available()
    self.assertIsInstance(l2l.pretrained(), nets.PerParameterMLP)
    self.assertEqual(zoo.info(zoo.recommended())["recommended"], True)
    self.assertTrue(any(n.startswith("lstm-quadratic") for n in names), names)
    for name in names:
      data = zoo.info(name)
      for key in ("description", "command", "trajectory"):
        self.assertIn(key, data, name)
      files = os.listdir(zoo.path(name))
      size = sum(os.path.getsize(os.path.join(zoo.path(name), f)) for f in files)
      self.assertLess(size, 200_000, name)  # Package data of a few KB, not a run directory.

  def test_every_shipped_optimizer_reproduces_its_trajectory(self):
    for name in zoo.available():
      stored = np.array(zoo.info(name)["trajectory"])
      got = np.array(zoo.reference_trajectory(l2l.pretrained(name)))
      np.testing.assert_allclose(got, stored, rtol=1e-4, atol=1e-7, err_msg=name)
      self.assertLess(got[-1], got[0], name)  # The optimizers do optimize.

  def test_v2_and_v3_are_v1_plus_the_step_adaptation(self):
    v1 = l2l.pretrained("versatile-mlp-v1")
    self.assertEqual(zoo.recommended(), "versatile-mlp-v3")
    weights = lambda r: tf.nest.flatten([r.layers, r.schedule_layers, r.log_lr])
    for name, gate in (("versatile-mlp-v2", 0.), ("versatile-mlp-v3", 1e-4)):
      rule = l2l.pretrained(name)
      self.assertEqual((v1.step_adaptation, rule.step_adaptation), (0., 0.03))
      self.assertFalse(rule.adaptation_per_tensor)
      self.assertEqual((rule.adaptation_min, rule.adaptation_max, rule.adaptation_asymmetry),
                       (-3., 0., 1.))
      self.assertEqual((v1.quiet_gate, rule.quiet_gate), (0., gate))
      self.assertLen(rule.trainable_variables, len(v1.trainable_variables) + 1)
      for a, b in zip(weights(v1), weights(rule)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
      self.assertAlmostEqual(float(np.exp(rule.log_adaptation_rate.numpy())), 0.03, places=6)

  def test_the_cost_benchmark_measures_the_recommended_rule(self):
    from bench import apply_cost  # pylint: disable=g-import-not-at-top
    options = apply_cost.recommended_options()
    rule, shipped = nets.PerParameterMLP(**options), l2l.pretrained()
    for key in ("step_adaptation", "quiet_gate", "adaptation_per_tensor", "tensor_features",
                "direction_scale", "magnitude_scale"):
      self.assertEqual(getattr(rule, key), getattr(shipped, key), key)
    self.assertEqual([w.shape for w in rule.trainable_variables],
                     [w.shape for w in shipped.trainable_variables])

  def test_shipping_a_recommended_optimizer_unsets_the_previous_one(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    for name in zoo.available():
      shutil.copytree(zoo.path(name), os.path.join(directory, name))
    with mock.patch.object(zoo, "DIRECTORY", directory):
      zoo.ship(zoo.path("versatile-mlp-v1"), "copy", "a copy", "cp", 1000, recommended=True)
      self.assertEqual(zoo.recommended(), "copy")
      self.assertEqual(sum(bool(zoo.info(n)["recommended"]) for n in zoo.available()), 1)

  def test_pretrained_rule_works_where_rules_do(self):
    rule = l2l.pretrained()
    module = tf.Module()
    module.w = tf.Variable(tf.ones([3, 2]))
    optimizer = l2l.LearnedOptimizer(rule, num_steps=10)
    before = module.w.numpy()
    optimizer.apply([tf.ones([3, 2])], [module.w])
    self.assertTrue(np.all(module.w.numpy() < before))  # A descent step on a positive gradient.

  def test_unknown_name_lists_the_available_ones(self):
    with self.assertRaisesRegex(ValueError, "unknown pretrained optimizer 'nope'; available: "
                                + zoo.available()[0]):
      l2l.pretrained("nope")

  def test_evaluate_script_with_a_bad_name(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "evaluate.py", "--optimizer=pretrained:nope"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("unknown pretrained optimizer 'nope'; available:", result.stderr)
    self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
  absltest.main()
