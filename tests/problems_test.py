"""The contract every registered problem passes, and each problem against NumPy."""

import atexit
import functools
import shutil
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import dataset_files
import l2l
import problems

# The functional loss runs float32 ops; the NumPy references run in float64.
NUMPY_TOL = dict(rtol=1e-5, atol=1e-6)

SMALL_QUADRATIC = {"batch_size": 2, "num_dims": 3}
# Stands for a directory of tiny MNIST and CIFAR-10 files (40 training images each), written on
# first use. A batch of all of them, in a random order, makes the minibatch losses deterministic.
DATA_DIR = "<tiny data dir>"


@functools.lru_cache(maxsize=None)
def _tiny_data_dir():
  directory = tempfile.mkdtemp()
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  dataset_files.write_mnist(directory, num_train=40)
  dataset_files.write_cifar10(directory, per_batch=8)
  return directory


def resolve(options):
  return {k: _tiny_data_dir() if v == DATA_DIR else v for k, v in options.items()}


def _case(name, options, random, learning_rate):
  """A registered problem with small options; whether its instances are random; an SGD
  learning rate that converges on it."""
  return dict(testcase_name=name, name=name, options=options, random=random,
              learning_rate=learning_rate)


CASES = [
    _case("simple", {}, random=False, learning_rate=0.1),
    _case("simple-multi", {"num_dims": 3}, random=False, learning_rate=0.1),
    _case("quadratic", SMALL_QUADRATIC, random=True, learning_rate=0.02),
    _case("ensemble", {"problems": [{"name": "quadratic", "options": SMALL_QUADRATIC},
                                    {"name": "quadratic", "options": SMALL_QUADRATIC}],
                       "weights": [0.5, 2.0]},
          random=True, learning_rate=0.01),
    _case("mnist", {"hidden_sizes": (8,), "batch_size": 40, "data_dir": DATA_DIR},
          random=True, learning_rate=1.0),
    # Batch norm's scale and offset start at 1 and 0 whatever the seed.
    _case("cifar10", {"conv_channels": (4,), "linear_layers": (), "batch_size": 40,
                      "data_dir": DATA_DIR}, random="some", learning_rate=0.5),
    _case("digits", {"hidden_sizes": (8,), "batch_size": 1438}, random=True, learning_rate=2.0),
]


def instance(name, options, seed):
  """The first instance (params, constants) of a problem as NumPy arrays."""
  params, constants = l2l.Problem(problems.get(name, seed=seed, **resolve(options))
                                  ).initial_values()
  return [p.numpy() for p in params], [c.numpy() for c in constants]


def quadratic_loss_np(x, w, y):
  x, w, y = [np.asarray(t, np.float64) for t in (x, w, y)]
  return np.mean(np.sum(np.square(np.einsum("bij,bj->bi", w, x) - y), axis=1))


class ProblemContractTest(tf.test.TestCase, parameterized.TestCase):

  def test_cases_cover_the_registry(self):
    self.assertCountEqual([c["name"] for c in CASES], problems.PROBLEMS)

  @parameterized.named_parameters(*CASES)
  def test_loss_is_a_finite_scalar(self, name, options, random, learning_rate):
    del random, learning_rate
    make_loss = problems.get(name, seed=0, **resolve(options))
    eager = make_loss()  # Creates real variables.
    self.assertEqual(eager.shape, ())
    self.assertTrue(np.isfinite(eager.numpy()))
    problem = l2l.Problem(make_loss)
    params, constants = problem.initial_values()
    loss = problem.loss(params, constants)
    self.assertEqual(loss.shape, ())
    self.assertEqual(loss.dtype, tf.float32)
    self.assertTrue(np.isfinite(loss.numpy()))

  @parameterized.named_parameters(*CASES)
  def test_has_trainable_float_variables(self, name, options, random, learning_rate):
    del random, learning_rate
    problem = l2l.Problem(problems.get(name, seed=0, **resolve(options)))
    self.assertNotEmpty(problem.param_specs)
    self.assertLen(set(problem.param_names), len(problem.param_specs))
    for spec in problem.param_specs:
      self.assertTrue(spec.dtype.is_floating, msg=spec)

  @parameterized.named_parameters(*CASES)
  def test_seeds(self, name, options, random, learning_rate):
    del learning_rate
    first = instance(name, options, seed=3)
    again = instance(name, options, seed=3)
    other = instance(name, options, seed=4)
    for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(again)):
      self.assertAllEqual(a, b)
    differs = [not np.array_equal(a, b)
               for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(other))]
    if random == "some":
      self.assertTrue(any(differs), msg=f"seeds 3 and 4 give the same instance: {differs}")
    elif random:
      self.assertTrue(all(differs), msg=f"seeds 3 and 4 share a value: {differs}")
    else:
      self.assertFalse(any(differs))

  @parameterized.named_parameters(*CASES)
  def test_sgd_converges(self, name, options, random, learning_rate):
    del random
    opt = l2l.MetaOptimizer(sgd={"net": "Sgd", "net_options": {"learning_rate": learning_rate}})
    meta_loss = opt.meta_loss(problems.get(name, seed=0, **resolve(options)), 100)
    meta_loss.run()
    losses = meta_loss.losses.numpy()
    self.assertTrue(np.all(np.isfinite(losses)))
    self.assertTrue(np.all(np.diff(losses) <= 1e-6 * losses[0]), msg=losses)  # Monotone.
    self.assertLess(losses[-1], 0.5 * losses[0])


class QuadraticTest(tf.test.TestCase, parameterized.TestCase):

  def _draw(self, distribution, stddev=0.01):
    problem = l2l.Problem(problems.quadratic(batch_size=64, num_dims=5, stddev=stddev,
                                             distribution=distribution, seed=0))
    (x,), (w, y) = problem.initial_values()
    return x.numpy(), w.numpy(), y.numpy()

  def test_specs(self):
    problem = l2l.Problem(problems.quadratic(batch_size=4, num_dims=3))
    self.assertEqual([(s.name, tuple(s.shape), s.trainable) for s in problem.specs],
                     [("x", (4, 3), True), ("w", (4, 3, 3), False), ("y", (4, 3), False)])

  def test_uniform_distribution(self):
    x, w, y = self._draw("uniform")
    for name, value in (("w", w), ("y", y)):
      self.assertGreaterEqual(value.min(), 0., msg=name)
      self.assertLess(value.max(), 1., msg=name)
      # 1600 (w) or 320 (y) U[0, 1) draws: the mean is 0.5 within 5 standard errors (< 0.1).
      self.assertAllClose(value.mean(), 0.5, atol=0.1, msg=name)
    self.assertLess(x.min(), 0.)  # x is normal whatever the constants' distribution.

  def test_normal_distribution(self):
    x, w, y = self._draw("normal", stddev=0.1)
    for name, value in (("w", w), ("y", y)):
      self.assertLess(value.min(), 0., msg=name)
      self.assertAllClose(value.mean(), 0., atol=0.3, msg=name)
      self.assertAllClose(value.std(), 1., atol=0.15, msg=name)
    # x ~ N(0, stddev^2): 320 draws, the sample std within 15% of 0.1.
    self.assertAllClose(x.std(), 0.1, rtol=0.15)

  def test_zero_stddev_starts_at_zero(self):
    x, _, _ = self._draw("normal", stddev=0.)
    self.assertAllEqual(x, np.zeros_like(x))

  @parameterized.parameters("normal", "uniform")
  def test_loss_matches_numpy(self, distribution):
    problem = l2l.Problem(problems.quadratic(batch_size=3, num_dims=4, stddev=1.0,
                                             distribution=distribution, seed=2))
    params, constants = problem.initial_values()
    self.assertAllClose(problem.loss(params, constants),
                        quadratic_loss_np(params[0], *constants), **NUMPY_TOL)
    x = np.random.RandomState(0).randn(3, 4).astype(np.float32)
    self.assertAllClose(problem.loss([tf.constant(x)], constants),
                        quadratic_loss_np(x, *constants), **NUMPY_TOL)

  @parameterized.named_parameters(
      ("zero_batch", dict(batch_size=0), "batch_size must be a positive integer, got 0"),
      ("float_dims", dict(num_dims=2.5), "num_dims must be a positive integer, got 2.5"),
      ("bool_dims", dict(num_dims=True), "num_dims must be a positive integer, got True"),
      ("cauchy", dict(distribution="cauchy"),
       r"distribution must be one of \('normal', 'uniform'\), got 'cauchy'"),
      ("negative_stddev", dict(stddev=-1.), "stddev must be >= 0, got -1.0"),
  )
  def test_bad_options(self, options, message):
    with self.assertRaisesRegex(ValueError, "quadratic: " + message):
      problems.quadratic(**options)


class SimpleTest(tf.test.TestCase):

  def test_simple_is_x_squared_from_one(self):
    problem = l2l.Problem(problems.simple())
    (x,), constants = problem.initial_values()
    self.assertEqual(problem.param_names, ["x"])
    self.assertEqual(constants, [])
    self.assertAllEqual(x, 1.)
    self.assertAllEqual(problem.loss([x], []), 1.)
    self.assertAllClose(problem.loss([tf.constant(-3.)], []), 9.)

  def test_simple_multi_is_a_sum_of_squares(self):
    problem = l2l.Problem(problems.simple_multi_optimizer(num_dims=3))
    params, _ = problem.initial_values()
    self.assertEqual(problem.param_names, ["x_0", "x_1", "x_2"])
    self.assertAllEqual(problem.loss(params, []), 3.)
    self.assertAllClose(problem.loss([tf.constant(v) for v in (1., -2., 0.5)], []), 5.25)

  def test_simple_multi_bad_num_dims(self):
    for num_dims in (0, 1.5, True):
      with self.assertRaisesRegex(ValueError,
                                  f"num_dims must be a positive integer, got {num_dims!r}"):
        problems.simple_multi_optimizer(num_dims=num_dims)


class EnsembleTest(tf.test.TestCase):

  def test_loss_is_the_weighted_sum_of_its_members(self):
    members = [{"name": "quadratic", "options": {"batch_size": 2, "num_dims": 3, "stddev": 1.}},
               {"name": "simple"},
               {"name": "quadratic", "options": {"batch_size": 3, "num_dims": 2, "stddev": 1.}}]
    weights = [0.5, 3.0, 2.0]
    problem = l2l.Problem(problems.ensemble(members, weights=weights, seed=10))
    self.assertEqual(problem.param_names, ["problem_0/x", "problem_1/x", "problem_2/x"])
    self.assertEqual([s.name for s in problem.constant_specs],
                     ["problem_0/w", "problem_0/y", "problem_2/w", "problem_2/y"])
    params, constants = problem.initial_values()
    # Member i is the problem of its own with the seed derived from (10, i).
    def member_seed(i):
      return int(np.random.SeedSequence([10, i]).generate_state(1)[0] >> 1)
    for (x, w, y), seed, options in ((params[:1] + constants[:2], member_seed(0),
                                      members[0]["options"]),
                                     (params[2:] + constants[2:], member_seed(2),
                                      members[2]["options"])):
      (x_ref,), (w_ref, y_ref) = instance("quadratic", options, seed)
      self.assertAllEqual(x, x_ref)
      self.assertAllEqual(w, w_ref)
      self.assertAllEqual(y, y_ref)
    rng = np.random.RandomState(0)
    params = [tf.constant(np.asarray(rng.randn(*p.shape), np.float32)) for p in params]
    expected = (weights[0] * quadratic_loss_np(params[0], *constants[:2]) +
                weights[1] * np.square(params[1].numpy()) +
                weights[2] * quadratic_loss_np(params[2], *constants[2:]))
    self.assertAllClose(problem.loss(params, constants), expected, **NUMPY_TOL)

  def test_default_weights_are_ones(self):
    problem = l2l.Problem(problems.ensemble([{"name": "simple"}, {"name": "simple"}]))
    self.assertAllClose(problem.loss([tf.constant(2.), tf.constant(3.)], []), 13.)

  def test_bad_options(self):
    with self.assertRaisesRegex(ValueError, "ensemble: problems must be a non-empty list"):
      problems.ensemble([])
    with self.assertRaisesRegex(ValueError, "ensemble: 1 weights for 2 problems"):
      problems.ensemble([{"name": "simple"}, {"name": "simple"}], weights=[1.])
    with self.assertRaisesRegex(ValueError, "ensemble: problem 1 must be a dict with a 'name'"):
      problems.ensemble([{"name": "simple"}, "simple"])
    with self.assertRaisesRegex(ValueError, "unknown problem 'cubic'"):
      problems.ensemble([{"name": "cubic"}])


class RegistryTest(tf.test.TestCase):

  def test_unknown_problem(self):
    with self.assertRaisesRegex(ValueError, r"unknown problem 'cubic'; expected one of \["):
      problems.get("cubic")

  def test_unknown_option(self):
    with self.assertRaisesRegex(ValueError,
                                r"problem 'quadratic' has no options \['dims'\]; it takes"):
      problems.get("quadratic", dims=3)
    with self.assertRaisesRegex(ValueError, r"problem 'simple' has no options \['num_dims'\]"):
      problems.get("simple", num_dims=3)

  def test_seed_goes_only_to_seeded_problems(self):
    problems.get("simple", seed=5)  # simple takes no seed: not an error.
    first = instance("quadratic", SMALL_QUADRATIC, seed=5)
    direct = l2l.Problem(problems.quadratic(seed=5, **SMALL_QUADRATIC)).initial_values()
    for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(direct)):
      self.assertAllEqual(a, b)


if __name__ == "__main__":
  tf.test.main()
