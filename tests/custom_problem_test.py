"""train.py / evaluate.py --problem=module:function: a user's own problem, defined outside l2l."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest
from absl.testing import parameterized

from l2l import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = textwrap.dedent("""
    import tensorflow as tf

    def make_problem(seed):
      '''A least-squares problem: a new random start per instance of the stream `seed`.'''
      generator = tf.random.Generator.from_seed(seed if seed is not None else 0)
      target = tf.constant([[1.0, -2.0, 0.5]])

      def make_loss():
        w = tf.Variable(lambda: generator.normal([1, 3]), name="w")
        return tf.reduce_sum(tf.square(w - target))
      return make_loss

    def not_a_factory(seed):
      return 42

    def broken(seed):
      def make_loss():
        return tf.constant(1.0)  # Creates no trainable variable.
      return make_loss

    number = 3
""")


class CustomProblemTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.directory = tempfile.mkdtemp()
    with open(os.path.join(cls.directory, "user_problems.py"), "w") as f:
      f.write(MODULE)
    sys.path.insert(0, cls.directory)

  def test_config_of_a_user_factory(self):
    config = configs.get_config("user_problems:make_problem")
    self.assertIsNone(config.net_assignments)
    self.assertEqual(config.net_configs, {"cw": configs.MLP_LSTM})
    self.assertTrue(callable(config.make_problem(0)))

  @parameterized.parameters(
      ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
      ("user_problems:missing", "module 'user_problems' has no function 'missing'"),
      ("user_problems:number", "module 'user_problems' has no function 'number'"),
      ("user_problems:not_a_factory", r"not_a_factory\(seed\) must return a make_loss callable, "
       "got int"),
      ("user_problems:broken", "created no trainable variable"),
      ("user_problems:", "expected a configuration name or module:function"),
  )
  def test_bad_problems_get_one_line_errors(self, spec, message):
    with self.assertRaisesRegex(ValueError, f"^problem '{spec}'[^\n]*{message}[^\n]*$"):
      configs.get_config(spec)

  def test_options_are_rejected(self):
    with self.assertRaisesRegex(ValueError, "takes no options"):
      configs.get_config("user_problems:make_problem", data_dir="/tmp")

  def test_scripts_train_and_evaluate_a_user_problem(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=self.directory)
    path = os.path.join(tempfile.mkdtemp(), "opt")
    train = subprocess.run(
        [sys.executable, "train.py", "--problem=user_problems:make_problem",
         f"--save_path={path}", "--num_epochs=4", "--num_steps=10", "--unroll_length=5",
         "--evaluation_period=2", "--evaluation_epochs=2", "--log_period=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(train.returncode, 0, train.stderr[-2000:])
    self.assertTrue(os.path.isfile(os.path.join(path, "config.json")))
    output = os.path.join(tempfile.mkdtemp(), "results.json")
    evaluate = subprocess.run(
        [sys.executable, "evaluate.py", "--problem=user_problems:make_problem",
         "--optimizer=all", f"--path={path}", "--num_epochs=2", "--num_steps=10",
         "--tuning_epochs=1", f"--output_json={output}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(evaluate.returncode, 0, evaluate.stderr[-2000:])
    with open(output) as f:
      results = json.load(f)["results"]
    self.assertEqual(sorted(results), ["Adam", "L2L", "NAG", "RMSProp", "SGD"])
    for name, row in results.items():  # Every optimizer makes progress on the least squares.
      self.assertLess(row["loss_curve"][-1], row["loss_curve"][0], name)
    bad = subprocess.run([sys.executable, "train.py", "--problem=user_problems:missing"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn("module 'user_problems' has no function 'missing'", bad.stderr)
    self.assertNotIn("Traceback", bad.stderr)


if __name__ == "__main__":
  absltest.main()
