"""The task suite: every task builds and is seeded, held-out tasks are disjoint from training
tasks, the smoke tasks train, and the data and initialisations are what they say."""

import contextlib
import io
import os
import re
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import dataset_files
import l2l
import problems
from l2l import evaluation
from problems import suite_data
from problems import suite_models
from problems.suite import STEP_COST_MS, SUITE_NAMES, TRAIN_MAX_LOG_SCALE

# "train_plain" is the training tasks again (checked once below); "held_out_mnist" needs files.
ALL_TASKS = [(name, task) for name in ("train", "held_out", "smoke")
             for task in problems.suite(name)] + [("train_conv", problems.suite("train_conv")[-1])]


def instance(task, seed):
  """The first instance `(params, constants)` of `task` as NumPy arrays, and its specs."""
  problem = l2l.Problem(task.make_problem(seed))
  params, constants = problem.initial_values()
  return problem, [p.numpy() for p in params], [c.numpy() for c in constants]


class SuiteTaskTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      (f"{suite_name}_{task.name}", task) for suite_name, task in ALL_TASKS)
  def test_builds_seeded_instances_with_a_finite_loss(self, task):
    problem, params, constants = instance(task, seed=0)
    _, params_again, constants_again = instance(task, seed=0)
    other, params_other, _ = instance(task, seed=1)
    self.assertEqual([s.shape for s in other.param_specs], [s.shape for s in problem.param_specs])
    self.assertEqual([s.name for s in other.param_specs], [s.name for s in problem.param_specs])
    for a, b in zip(params + constants, params_again + constants_again):
      self.assertAllEqual(a, b)  # The same seed, the same instance.
    self.assertTrue(any(not np.array_equal(a, b) for a, b in zip(params, params_other)))
    # The next instance of a stream is new.
    second, _ = problem.initial_values()
    self.assertTrue(any(not np.array_equal(a, b.numpy()) for a, b in zip(params, second)))
    loss = problem.loss([tf.constant(p) for p in params], [tf.constant(c) for c in constants])
    self.assertEqual(loss.shape, [])
    self.assertTrue(np.isfinite(loss.numpy()))
    self.assertGreater(float(loss), 0.)
    self.assertTrue(task.description and "\n" not in task.description)
    self.assertTrue(task.data and task.architecture)

  @parameterized.named_parameters(
      (f"{suite_name}_{task.name}", task) for suite_name, task in ALL_TASKS
      if task.name == "digits_linear" or suite_name == "smoke")
  def test_new_batch_every_call(self, task):
    make_loss = task.make_problem(3)
    problem = l2l.Problem(make_loss)
    params, constants = problem.initial_values()
    losses = {float(problem.loss(params, constants)) for _ in range(4)}
    self.assertGreater(len(losses), 1)

  @parameterized.named_parameters(
      (task.name, task) for _, task in ALL_TASKS
      if task.name in ("tiny_blobs_linear", "digits_conv_8x16"))
  def test_under_tf_function_new_batches_and_no_retrace(self, task):
    problem = l2l.Problem(task.make_problem(0))
    params, constants = problem.initial_values()
    other = l2l.Problem(task.make_problem(1))

    @tf.function
    def loss_and_grads(params, constants):
      with tf.GradientTape() as tape:
        tape.watch(params)
        loss = problem.loss(params, constants)
      return loss, tape.gradient(loss, params)

    losses = []
    for _ in range(3):
      loss, grads = loss_and_grads(params, constants)
      losses.append(float(loss))
      self.assertTrue(all(np.all(np.isfinite(g)) for g in grads))
    self.assertEqual(loss_and_grads.experimental_get_tracing_count(), 1)
    self.assertLen(set(losses), 3)  # A new batch at every call of the traced function.
    # Another seed, another batch order: its first batch is another loss at the same params.
    self.assertNotEqual(float(other.loss(params, constants)), losses[0])

  def test_seed_none_is_nondeterministic(self):
    task = problems.suite("smoke")[1]
    first = instance(task, None)[1]
    second = instance(task, None)[1]
    self.assertTrue(any(not np.array_equal(a, b) for a, b in zip(first, second)))


class SuiteTest(tf.test.TestCase, parameterized.TestCase):

  def test_sizes_and_unique_names(self):
    self.assertGreaterEqual(len(problems.suite("train")), 8)
    self.assertGreaterEqual(len(problems.suite("held_out")), 8)
    self.assertBetween(len(problems.suite("smoke")), 2, 3)
    names = [task.name for _, task in ALL_TASKS]
    self.assertLen(set(names), len(names))
    self.assertEqual([t.name for t in problems.suite("train_plain")],
                     [t.name for t in problems.suite("train")])
    self.assertIs(problems.suite("train"), problems.SUITES["train"])
    self.assertEqual([t.name for t in problems.suite("train_conv")[:-1]],
                     [t.name for t in problems.suite("train")])
    self.assertEqual([t.name for t in problems.suite("train_conv_plain")],
                     [t.name for t in problems.suite("train_conv")])
    self.assertEqual(problems.suite("train_conv")[-1].architecture, "conv 6-12")

  def test_training_tasks_vary_and_are_rescaled(self):
    train = problems.suite("train")
    self.assertGreaterEqual(len({t.data for t in train}), 4)
    activations = {t.architecture.split()[-1] for t in train}
    self.assertContainsSubset({"sigmoid", "tanh", "relu", "gelu"}, activations)
    self.assertTrue(any("MSE" in t.description for t in train))
    self.assertTrue(any("cross-entropy" in t.description for t in train))
    for task in train:
      self.assertEqual(task.max_log_scale, TRAIN_MAX_LOG_SCALE)
    for task in problems.suite("held_out") + problems.suite("train_plain"):
      self.assertEqual(task.max_log_scale, 0.)

  def test_rescaled_training_task_computes_the_same_function(self):
    task = problems.suite("train")[0]
    problem, params, constants = instance(task, seed=2)
    # One scale per parameter, then the parameter: w = c * v, |log c| <= max_log_scale.
    self.assertLen(constants, len(params))
    for c in constants:
      self.assertTrue(np.all(np.abs(np.log(c)) <= TRAIN_MAX_LOG_SCALE + 1e-6))
      self.assertGreater(np.std(np.log(c)), 0.1)
    self.assertLen(problem.param_specs, 4)
    # Without the rescaling: the same instance stream of w0 (w0 = c * v0), no constants.
    plain = {t.name: t for t in problems.suite("train_plain")}[task.name]
    plain_problem, plain_params, plain_constants = instance(plain, seed=2)
    self.assertEmpty(plain_constants)
    for w, v, c in zip(plain_params, params, constants):
      self.assertAllClose(w, c * v, rtol=1e-6, atol=1e-7)
    # The first batch of both streams is the same, so is the loss: the same function.
    self.assertAllClose(problem.loss(params, constants), plain_problem.loss(plain_params, []),
                        rtol=1e-5)

  def test_held_out_tasks_are_new_pairs(self):
    train = problems.suite("train")
    seen = {(t.data, t.architecture) for t in train}
    for task in problems.suite("held_out"):
      self.assertNotIn((task.data, task.architecture), seen, task.name)
    # The 2016 generalization runs: no training task puts a ReLU or sigmoid MLP on the digits.
    names = [t.name for t in problems.suite("held_out")]
    self.assertContainsSubset(["digits_mlp_relu_20", "digits_mlp_sigmoid_20x20"], names)
    for task in train:
      if task.data.startswith("digits"):
        self.assertNotIn(task.architecture.split()[-1], ("relu", "sigmoid"), task.name)

  def test_generalization_runs_are_problems_digits(self):
    task = {t.name: t for t in problems.suite("held_out")}["digits_mlp_sigmoid_20x20"]
    _, params, _ = instance(task, seed=4)
    reference = l2l.Problem(problems.digits(hidden_sizes=(20, 20), activation="sigmoid", seed=4))
    for a, b in zip(params, reference.initial_values()[0]):
      self.assertAllEqual(a, b)

  def test_unknown_suite(self):
    with self.assertRaisesRegex(ValueError, r"unknown suite 'tran'.*'train', 'train_plain', "
                                r"'train_conv', 'train_conv_plain', 'held_out', 'smoke', "
                                r"'held_out_mnist'"):
      problems.suite("tran")
    with self.assertRaisesRegex(ValueError, "data_dir is for 'held_out_mnist' only"):
      problems.suite("train", data_dir="/tmp")
    self.assertEqual(SUITE_NAMES, ("train", "train_plain", "train_conv", "train_conv_plain",
                                   "held_out", "smoke", "held_out_mnist"))

  def test_held_out_mnist_reads_local_files(self):
    directory = tempfile.mkdtemp(dir=self.get_temp_dir())
    dataset_files.write_mnist(directory, num_train=200)
    tasks = problems.suite("held_out_mnist", data_dir=directory)
    self.assertEqual([t.name for t in tasks], ["mnist_mlp_relu_20", "mnist_mlp_sigmoid_20x20"])
    seen = {(t.data, t.architecture) for t in problems.suite("train")}
    for task in tasks:
      self.assertNotIn((task.data, task.architecture), seen)
      problem, params, constants = instance(task, seed=0)
      self.assertEqual([s.shape for s in problem.param_specs][0], [784, 20])
      self.assertAllEqual(params[0], instance(task, seed=0)[1][0])
      self.assertTrue(np.isfinite(problem.loss(params, constants).numpy()))
    missing = problems.suite("held_out_mnist", data_dir=directory + "/nowhere")[0]
    with self.assertRaisesRegex(ValueError, "mnist: no data"):
      missing.make_problem(0)

  def test_step_costs_are_recorded(self):
    for name in ("train", "train_conv", "held_out"):
      for task in problems.suite(name):
        self.assertIn(task.name, STEP_COST_MS)
        self.assertIn("ms/step", task.description)

  @parameterized.named_parameters((task.name, task) for task in problems.suite("smoke"))
  def test_adam_reduces_the_loss(self, task):
    curves = evaluation.run_optimizer(evaluation.hand_designed("Adam", 0.01),
                                      task.make_problem(0), num_epochs=2, num_steps=150)
    losses = curves.losses
    self.assertTrue(np.all(np.isfinite(losses)))
    first, last = np.mean(losses[:, :5]), np.mean(losses[:, -20:])
    self.assertLess(last, 0.5 * first)


class SuiteReadmeTest(tf.test.TestCase):

  def test_readme_example_and_tables(self):
    """The README's suite example runs and its comment names the task; its tables list every
    train and held-out task."""
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "README.md")
    with open(readme) as f:
      text = f.read()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
              if 'problems.suite("held_out")' in b]
    self.assertLen(blocks, 1)
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()):
      exec(compile(blocks[0], readme, "exec"), namespace)  # pylint: disable=exec-used
    self.assertIn("# digits_mlp_relu_20", blocks[0])
    self.assertEqual(namespace["task"].name, "digits_mlp_relu_20")
    rows = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    for name in ("train", "train_conv", "held_out"):
      for task in problems.suite(name):
        self.assertIn(task.name, rows)


class SuiteDataTest(tf.test.TestCase):

  def test_tables(self):
    blobs = suite_data.load("blobs32")
    self.assertEqual(blobs.inputs.shape, (2048, 32))
    self.assertEqual(blobs.num_outputs, 8)
    self.assertAllClose(blobs.inputs.mean(axis=0), np.zeros(32), atol=1e-5)
    self.assertAllClose(blobs.inputs.std(axis=0), np.ones(32), atol=1e-4)
    self.assertFalse(blobs.inputs.flags.writeable)
    self.assertIs(suite_data.load("blobs32"), blobs)  # Cached.
    teacher = suite_data.load("teacher16")
    self.assertEqual((teacher.kind, teacher.num_outputs), (suite_data.REGRESSION, 4))
    self.assertAllClose(teacher.targets.std(axis=0), np.ones(4), atol=1e-4)
    cancer = suite_data.load("breast_cancer")
    self.assertEqual((cancer.inputs.shape, cancer.kind), ((569, 30), suite_data.BINARY))
    self.assertEqual(suite_data.load("wine").num_outputs, 3)

  def test_bars_are_oriented_as_labelled(self):
    table = suite_data.load("bars8")
    self.assertEqual((table.inputs.shape, table.kind, table.num_outputs),
                     ((2048, 64), suite_data.CLASSES, 4))
    self.assertGreater(np.bincount(table.targets).min(), 400)
    images = table.inputs.reshape(-1, 8, 8)
    # Each image's correlation of neighbouring pixels along the 4 orientations (the bar adds 2
    # along its own, the noise is independent): the largest is the labelled orientation's.
    shifts = [(0, 1), (1, 0), (1, 1), (1, -1)]

    def neighbour_products(x, dr, dc):
      a = x[:, :8 - dr, max(0, -dc):8 - max(0, dc)]
      b = x[:, dr:, max(0, dc):8 + min(0, dc)]
      return (a * b).sum(axis=(1, 2))
    scores = np.stack([neighbour_products(images, dr, dc) for dr, dc in shifts], axis=1)
    self.assertGreater(np.mean(scores.argmax(axis=1) == table.targets), 0.95)

  def test_adding_problem_targets_are_the_marked_sums(self):
    table = suite_data.load("adding10")
    values, markers = table.inputs[..., 0], table.inputs[..., 1]
    self.assertAllEqual(markers.sum(axis=1), np.full(len(values), 2.))
    self.assertAllClose(table.targets[:, 0], (values * markers).sum(axis=1))

  def test_unknown_data_set(self):
    with self.assertRaisesRegex(ValueError, "unknown suite data set 'nope'.*blobs32"):
      suite_data.load("nope")


class SuiteModelsTest(tf.test.TestCase):

  def _draw(self, init, shape):
    generator = tf.random.Generator.from_seed(0)
    w_init, b_init = suite_models.initializers(generator, init)
    return w_init(shape, tf.float32)().numpy(), b_init(shape[-1:], tf.float32)().numpy()

  def test_initialisation_scales(self):
    w, b = self._draw("he", [400, 300])
    self.assertAllClose(w.std(), np.sqrt(2. / 400), rtol=0.02)
    self.assertAllEqual(b, np.zeros(300))
    w, _ = self._draw("glorot", [400, 300])
    self.assertLessEqual(np.abs(w).max(), np.sqrt(6. / 700))
    self.assertAllClose(w.std(), np.sqrt(2. / 700), rtol=0.02)
    w, b = self._draw(0.5, [3, 3, 20, 40])
    self.assertAllClose(w.std(), 0.5, rtol=0.03)
    self.assertGreater(b.std(), 0.)

  def test_bad_init(self):
    generator = tf.random.Generator.from_seed(0)
    with self.assertRaisesRegex(ValueError, "init must be a stddev"):
      suite_models.initializers(generator, "lecun")
    with self.assertRaisesRegex(ValueError, "init must be a stddev"):
      suite_models.initializers(generator, -1.)

  def test_mlp_loss_matches_numpy(self):
    make_loss = suite_models.mlp(0, data="tiny_teacher", hidden_sizes=(8,), activation="tanh",
                                 init="glorot", batch_size=256)
    problem = l2l.Problem(make_loss)
    params, constants = problem.initial_values()
    w0, b0, w1, b1 = (p.numpy().astype(np.float64) for p in params)
    table = suite_data.load("tiny_teacher")
    predictions = np.tanh(table.inputs @ w0 + b0) @ w1 + b1
    expected = np.mean((predictions - table.targets) ** 2)
    self.assertAllClose(problem.loss(params, constants), expected, rtol=1e-5)


if __name__ == "__main__":
  tf.test.main()
