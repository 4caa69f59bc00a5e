"""Deliberate mistakes a new user makes (issue 17): each ends in a clear error naming the argument.

The full list, with how each ended before and after, is BUILD.md's "Deliberate mistakes (issue
17)"; this file tests the ones that needed a fix. Scripts are checked through one subprocess per
script with several cases (their flag validation runs before TensorFlow loads, so each is fast).
"""

import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
import nets
from l2l.meta_learning import fewshot_config
from l2l.meta_learning import meta_trainer
from problems import tasks as tasks_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mlp():
  model = snt.nets.MLP([4, 1], name="mlp")
  model(tf.zeros([1, 1]))
  return model


class ApiMistakesTest(tf.test.TestCase):

  def test_meta_trainer_checks_its_collaborators(self):
    maml = l2l.MAML(_mlp(), 0.01)
    adam = snt.optimizers.Adam(1e-3)
    sampler = tasks_lib.SinusoidTaskSampler(k_support=3, k_query=3, seed=0)
    cases = [((maml, "adam", meta_trainer.mse, sampler), "meta_optimizer must be a Sonnet "
              "optimizer .* got str"),
             ((maml, adam, meta_trainer.mse, [1, 2]), r"task_sampler must have a "
              r"sample\(num_tasks\) method .* got list"),
             ((maml, adam, "mse", sampler), "loss_fn must be a function .* got str")]
    for args, message in cases:
      with self.subTest(message=message):
        with self.assertRaisesRegex(TypeError, message):
          l2l.MetaTrainer(*args)
    with self.assertRaisesRegex(TypeError, "metric_fn must be a function .* got int"):
      l2l.MetaTrainer(maml, adam, meta_trainer.mse, sampler, metric_fn=1)
    # Without a sampler, meta_step / evaluate on given tasks work; fit says what it lacks.
    with self.assertRaisesRegex(ValueError, "fit samples tasks: give MetaTrainer a task_sampler"):
      l2l.MetaTrainer(maml, adam, meta_trainer.mse, None).fit(1, 2)

  def test_maml_step_learning_rate_must_be_a_number(self):
    batch, v = {"x": tf.constant([1., 2.])}, {"latent": tf.Variable([[1.], [1.]])}
    cost = lambda b, v: tf.reduce_mean(b["x"]) / tf.reduce_mean(v["latent"])
    with self.assertRaisesRegex(TypeError, "inner_learning_rate must be a number or a tensor, "
                                "got str 'x'"):
      l2l.maml_step(batch, cost, cost, v, 1, "x")
    # Numbers, arrays and tensors are fine; all three give the same step.
    results = [l2l.maml_step(batch, cost, cost, v, 1, lr)[0]
               for lr in (0.01, np.float32(0.01), tf.constant(0.01))]
    self.assertAllClose(results[1:], [results[0]] * 2, rtol=1e-6)

  def test_costs_must_be_scalars(self):
    batch, v = {"x": tf.constant([1., 2.])}, {"latent": tf.Variable([[1.], [1.]])}
    scalar = lambda b, v: tf.reduce_mean(b["x"]) / tf.reduce_mean(v["latent"])
    vector = lambda b, v: b["x"] * v["latent"][0]
    for inner, outer, name in ((vector, scalar, "inner_cost_fn"),
                               (scalar, vector, "outer_cost_fn")):
      for per_task in (False, True):
        with self.subTest(name=name, per_task=per_task):
          with self.assertRaisesRegex(ValueError, f"the value of {name} must be a scalar .* "
                                      r"got a tensor of shape \(1,\)"):
            l2l.maml_step(batch, inner, outer, v, 1, 0.01, per_task=per_task, batched=False)
    learner = l2l.MAML(_mlp(), 0.1).clone()
    with self.assertRaisesRegex(ValueError, r"the inner loss must be a scalar .* shape \(3, 1\)"):
      learner.adapt(lambda f: tf.square(f(tf.ones([3, 1]))))

  def test_adapt_needs_a_function(self):
    with self.assertRaisesRegex(TypeError, "support_loss must be a function of the forward .* "
                                "got float"):
      l2l.MAML(_mlp(), 0.1).clone().adapt(3.0)

  def test_learned_optimizer_checks_gradient_shapes(self):
    w = tf.Variable(tf.ones([3]), name="w")
    optimizer = l2l.LearnedOptimizer(nets.Sgd(learning_rate=0.1))
    with self.assertRaisesRegex(ValueError, r"updates\[0\] has shape \(4,\), its parameter "
                                r"'w' \(3,\)"):
      optimizer.apply([tf.ones([4])], [w])
    self.assertAllEqual(w, [1., 1., 1.])
    optimizer.apply([tf.ones([3])], [w])  # The same optimizer still works with the right shape.
    self.assertAllClose(w, [0.9] * 3)


class MamlScriptMistakesTest(absltest.TestCase):
  """maml.py's settings are checked before TensorFlow loads (l2l.meta_learning.fewshot_config)."""

  def test_settings_out_of_range(self):
    cases = [(dict(log_every=0), "log_every must be a positive integer, got 0"),
             (dict(checkpoint_every=-1), "checkpoint_every must be a positive integer"),
             (dict(num_eval_tasks=0), "num_eval_tasks must be a positive integer, got 0"),
             (dict(hidden=(0,)), r"hidden must be positive integers, got \[0\]"),
             (dict(hidden=()), r"hidden must be positive integers, got \[\]"),
             (dict(eval_steps=()), "eval_steps must name at least one number of inner steps"),
             (dict(problem="digits", n_way=1), "n_way must be at least 2 for classification"),
             (dict(meta_lr=float("nan")), "meta_lr must be a finite positive number, got nan"),
             (dict(inner_lr=float("inf")), "inner_lr must be a finite positive number"),
             (dict(seed=-1), "seed must be a non-negative integer, got -1"),
             (dict(shots=(0,)), r"shots must be positive integers, got \[0\]"),
             (dict(methods=("NoSuch",)), r"unknown methods \['NoSuch'\]")]
    for change, message in cases:
      with self.subTest(change=change):
        with self.assertRaisesRegex(ValueError, message):
          fewshot_config.check_workdir(fewshot_config.FewShotConfig(**change))
    for seeds, message in (((-1,), r"seeds must be distinct non-negative integers, got \[-1\]"),
                           ((1, 1), r"seeds must be distinct .* got \[1, 1\]")):
      with self.subTest(seeds=seeds):
        with self.assertRaisesRegex(ValueError, message):
          fewshot_config.check_workdir(fewshot_config.FewShotConfig(), seeds)
    fewshot_config.check_workdir(fewshot_config.FewShotConfig(), (0, 1))  # Seed 0 is a seed.

  def test_script_says_it_in_one_line(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "maml.py", "--seeds=-1", "--log_every=5"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    self.assertEqual(out.returncode, 1)
    self.assertEqual(out.stderr, "maml.py: error: seeds must be distinct non-negative integers, "
                     "got [-1]\n")


class ScriptMistakesTest(absltest.TestCase):

  def test_evaluate_output_json_is_checked_before_the_work(self):
    # It used to fail at the very end, after the whole evaluation, with a FileNotFoundError.
    missing = os.path.join(tempfile.mkdtemp(), "no_dir", "r.json")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    code = ("import runpy, sys\n"
            "sys.argv = ['evaluate.py'] + sys.argv[1:]\n"
            "try:\n  runpy.run_path('evaluate.py', run_name='__main__')\n"
            "finally:\n  print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, "--optimizer=SGD",
                          f"--output_json={missing}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    self.assertEqual(out.returncode, 1)
    self.assertEqual(out.stderr, f"evaluate.py: error: --output_json: directory "
                     f"{os.path.dirname(missing)!r} of {missing!r} does not exist\n")
    self.assertEqual(out.stdout, "False\n")  # Said before TensorFlow loads.
    from l2l import cli  # pylint: disable=g-import-not-at-top
    with self.assertRaisesRegex(cli.app.UsageError, "--output_json: .* is a directory"):
      cli.check_output_file("output_json", tempfile.mkdtemp())
    cli.check_output_file("output_json", os.path.join(tempfile.mkdtemp(), "r.json"))

  def test_ship_a_directory_that_is_not_a_saved_optimizer(self):
    from l2l.versatile import __main__ as versatile_main  # pylint: disable=g-import-not-at-top
    from l2l.versatile import zoo  # pylint: disable=g-import-not-at-top
    before = zoo.available()
    for source in ("/nonexistent/opt", tempfile.mkstemp()[1]):
      with self.subTest(source=source):
        with self.assertRaises(SystemExit) as raised:
          versatile_main.main(["--ship", source, "--name", "mistake", "--description", "d",
                               "--command", "c"])
        message = str(raised.exception.code)
        self.assertRegex(message, f"^python -m l2l.versatile: error: --ship {source}: ")
        self.assertNotIn("\n", message)
    self.assertEqual(zoo.available(), before)
    self.assertFalse(os.path.exists(os.path.join(zoo.DIRECTORY, "mistake")))
