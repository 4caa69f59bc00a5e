"""`l2l.Problem`: variable capture, the functional loss, initial values and errors."""

from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
import problems

# The functional loss runs the same float32 ops as the eager model; the NumPy references run in
# float64, so they differ by float32 rounding only.
NUMPY_TOL = dict(rtol=1e-5, atol=1e-6)
# Gradients against float64 central differences (eps 1e-6) of the NumPy reference.
GRAD_TOL = dict(rtol=1e-4, atol=1e-5)

DATA = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], np.float32)  # [batch 3, features 2]


def linear_make_loss():
  """Two snt.Linear, a plain trainable tf.Variable and a non-trainable data constant."""
  data = tf.Variable(lambda: tf.constant(DATA), trainable=False, name="data")
  scale = tf.Variable(lambda: tf.constant(2.0), name="scale")
  hidden = snt.Linear(4)(data)
  out = snt.Linear(1)(tf.tanh(hidden))
  return scale * tf.reduce_mean(tf.square(out))


def linear_loss_np(params, constants):
  scale, w1, b1, w2, b2 = [np.asarray(p, np.float64) for p in params]
  (data,) = [np.asarray(c, np.float64) for c in constants]
  out = np.tanh(data @ w1 + b1) @ w2 + b2
  return scale * np.mean(np.square(out))


def mlp_make_loss():
  data = tf.Variable(lambda: tf.constant(DATA), trainable=False)
  return tf.reduce_mean(snt.nets.MLP([5, 1])(data))


def mlp_loss_np(params, constants):
  w1, b1, w2, b2 = [np.asarray(p, np.float64) for p in params]
  (data,) = [np.asarray(c, np.float64) for c in constants]
  return np.mean(np.maximum(data @ w1 + b1, 0.) @ w2 + b2)


def quadratic_loss_np(params, constants):
  (x,) = [np.asarray(p, np.float64) for p in params]
  w, y = [np.asarray(c, np.float64) for c in constants]
  return np.mean(np.sum(np.square(np.einsum("bij,bj->bi", w, x) - y), axis=1))


def numerical_gradient(loss_np, params, constants, eps=1e-6):
  """Central differences of a float64 NumPy loss with respect to every parameter entry."""
  params = [np.asarray(p, np.float64) for p in params]
  grads = []
  for i, p in enumerate(params):
    grad = np.zeros_like(p)
    for index in np.ndindex(*p.shape):
      plus = [q.copy() for q in params]
      minus = [q.copy() for q in params]
      plus[i][index] += eps
      minus[i][index] -= eps
      grad[index] = (loss_np(plus, constants) - loss_np(minus, constants)) / (2 * eps)
    grads.append(grad)
  return grads


class Counter:
  """A make_loss whose variables change after `change_after` calls."""

  def __init__(self, change_after, change):
    self.calls = 0
    self.change_after = change_after
    self.change = change
    self.__name__ = "counter"

  def __call__(self):
    self.calls += 1
    changed = self.calls > self.change_after
    if self.change == "shape":
      x = tf.Variable(lambda: tf.ones([3 if changed else 2]), name="x")
      return tf.reduce_sum(x)
    if self.change == "more":
      xs = [tf.Variable(lambda: tf.ones([2])) for _ in range(2 if changed else 1)]
      return tf.add_n([tf.reduce_sum(x) for x in xs])
    if self.change == "fewer":
      xs = [tf.Variable(lambda: tf.ones([2])) for _ in range(1 if changed else 2)]
      return tf.add_n([tf.reduce_sum(x) for x in xs])
    if self.change == "trainable":
      x = tf.Variable(tf.ones([2]), trainable=not changed, name="x")
      y = tf.Variable(tf.ones([2]), name="y")
      return tf.reduce_sum(x * y)
    raise AssertionError(self.change)


class CaptureTest(tf.test.TestCase, parameterized.TestCase):

  def test_finds_trainable_and_constant_variables_with_unique_names(self):
    problem = l2l.Problem(linear_make_loss)
    self.assertEqual(
        [(s.name, tuple(s.shape), s.trainable) for s in problem.specs],
        [("data", (3, 2), False), ("scale", (), True),
         ("linear/w", (2, 4), True), ("linear/b", (4,), True),
         ("linear_1/w", (4, 1), True), ("linear_1/b", (1,), True)])
    self.assertEqual(problem.param_names,
                     ["scale", "linear/w", "linear/b", "linear_1/w", "linear_1/b"])
    self.assertEqual([s.name for s in problem.constant_specs], ["data"])
    self.assertTrue(all(s.dtype == tf.float32 for s in problem.specs))

  def test_finds_mlp_variables(self):
    problem = l2l.Problem(mlp_make_loss)
    self.assertEqual(problem.param_names, ["mlp/linear_0/w", "mlp/linear_0/b",
                                           "mlp/linear_1/w", "mlp/linear_1/b"])
    self.assertEqual([(s.name, s.trainable) for s in problem.constant_specs],
                     [("Variable", False)])

  def test_repeated_plain_variable_names_are_made_unique(self):
    def make_loss():
      a = tf.Variable(1.0, name="x")
      b = tf.Variable(2.0, name="x")
      c = tf.Variable(3.0, name="x_1")  # Collides with the suffix the second "x" would get.
      d = tf.Variable(4.0)
      return a + b + c + d
    names = l2l.Problem(make_loss).param_names
    self.assertLen(set(names), 4, msg=f"names not unique: {names}")
    self.assertEqual(names[2], "x_1")
    self.assertEqual(names[3], "Variable")

  def test_name_defaults_to_the_function_name(self):
    def my_problem():
      return tf.Variable(1.0, trainable=False) * 2.
    with self.assertRaisesRegex(ValueError, "'my_problem'"):
      l2l.Problem(my_problem)

  @parameterized.named_parameters(
      ("linear", linear_make_loss, linear_loss_np),
      ("mlp", mlp_make_loss, mlp_loss_np),
      ("quadratic", problems.quadratic(batch_size=2, num_dims=3, stddev=1.0), quadratic_loss_np),
  )
  def test_loss_matches_numpy(self, make_loss, loss_np):
    problem = l2l.Problem(make_loss)
    params, constants = problem.initial_values()
    expected = loss_np([p.numpy() for p in params], [c.numpy() for c in constants])
    self.assertAllClose(problem.loss(params, constants), expected, **NUMPY_TOL)
    # Other values than the initial ones: the loss uses what it is given.
    rng = np.random.RandomState(0)
    params = [np.asarray(rng.randn(*p.shape), np.float32) for p in params]
    expected = loss_np(params, [c.numpy() for c in constants])
    self.assertAllClose(problem.loss([tf.constant(p) for p in params], constants), expected,
                        **NUMPY_TOL)

  def test_loss_matches_the_eager_model(self):
    """The functional loss equals make_loss run eagerly on real variables holding the values."""
    problem = l2l.Problem(linear_make_loss)
    params, constants = problem.initial_values()
    rng = np.random.RandomState(1)
    params = [tf.constant(np.asarray(rng.randn(*p.shape), np.float32)) for p in params]
    in_creation_order = iter(constants + params)  # data is created first, then the parameters.
    created = []

    def creator(next_creator, **kwargs):
      kwargs["initial_value"] = next(in_creation_order)
      created.append(next_creator(**kwargs))
      return created[-1]
    with tf.variable_creator_scope(creator):
      eager_loss = linear_make_loss()
    self.assertTrue(all(isinstance(v, tf.Variable) for v in created))
    self.assertAllClose(problem.loss(params, constants), eager_loss, rtol=1e-6, atol=1e-7)

  @parameterized.named_parameters(
      ("linear", linear_make_loss, linear_loss_np),
      ("quadratic", problems.quadratic(batch_size=2, num_dims=3, stddev=1.0), quadratic_loss_np),
  )
  def test_gradients_flow_to_the_substituted_tensors(self, make_loss, loss_np):
    problem = l2l.Problem(make_loss)
    params, constants = problem.initial_values()
    with tf.GradientTape() as tape:
      tape.watch(params)
      loss = problem.loss(params, constants)
    grads = tape.gradient(loss, params)
    expected = numerical_gradient(loss_np, [p.numpy() for p in params],
                                  [c.numpy() for c in constants])
    for name, grad, ref in zip(problem.param_names, grads, expected):
      self.assertIsNotNone(grad, msg=name)
      self.assertAllClose(grad, ref, msg=name, **GRAD_TOL)

  def test_quadratic_gradient_matches_closed_form(self):
    """d/dx mean_b ||W_b x_b - y_b||^2 = 2 W_b^T (W_b x_b - y_b) / B, and flows to W and y too."""
    problem = l2l.Problem(problems.quadratic(batch_size=3, num_dims=2, stddev=1.0))
    params, constants = problem.initial_values()
    with tf.GradientTape() as tape:
      tape.watch(params + constants)
      loss = problem.loss(params, constants)
    grad_x, grad_w, grad_y = tape.gradient(loss, params + constants)
    x, w, y = [t.numpy().astype(np.float64) for t in params + constants]
    residual = np.einsum("bij,bj->bi", w, x) - y
    self.assertAllClose(grad_x, 2 * np.einsum("bij,bi->bj", w, residual) / 3, **NUMPY_TOL)
    self.assertAllClose(grad_w, 2 * residual[:, :, None] * x[:, None, :] / 3, **NUMPY_TOL)
    self.assertAllClose(grad_y, -2 * residual / 3, **NUMPY_TOL)

  def test_loss_works_inside_tf_function(self):
    problem = l2l.Problem(linear_make_loss)
    params, constants = problem.initial_values()
    compiled = tf.function(problem.loss)
    self.assertAllClose(compiled(params, constants), problem.loss(params, constants),
                        rtol=1e-6, atol=1e-7)

  def test_quadratic_initial_values_are_new_instances_and_reproducible(self):
    first = l2l.Problem(problems.quadratic(batch_size=2, num_dims=3, seed=7))
    second = l2l.Problem(problems.quadratic(batch_size=2, num_dims=3, seed=7))
    draws_first = [first.initial_values() for _ in range(2)]
    draws_second = [second.initial_values() for _ in range(2)]
    # Each call draws a new instance: x, W and y all change.
    for a, b in zip(tf.nest.flatten(draws_first[0]), tf.nest.flatten(draws_first[1])):
      self.assertNotAllClose(a, b)
    # The same seed gives the same sequence of instances.
    for a, b in zip(tf.nest.flatten(draws_first), tf.nest.flatten(draws_second)):
      self.assertAllEqual(a, b)

  def test_non_random_initial_values_are_the_initializers(self):
    problem = l2l.Problem(problems.simple_multi_optimizer(num_dims=3))
    params, constants = problem.initial_values()
    self.assertEqual(problem.param_names, ["x_0", "x_1", "x_2"])
    self.assertAllEqual(params, [1., 1., 1.])
    self.assertEqual(constants, [])

  # Errors.

  def test_not_callable(self):
    with self.assertRaisesRegex(TypeError, "make_loss must be a callable.*got int"):
      l2l.Problem(3)

  @parameterized.named_parameters(
      ("only_constants", lambda: tf.Variable(1.0, trainable=False) * 2.),
      ("no_variables", lambda: tf.constant(1.0)),
  )
  def test_no_trainable_variable(self, make_loss):
    with self.assertRaisesRegex(ValueError, "created no trainable variable"):
      l2l.Problem(make_loss)

  @parameterized.named_parameters(
      ("vector", lambda: tf.Variable(tf.ones([3])) * 2., r"scalar loss tensor, got \(3,\)"),
      ("python_float", lambda: (tf.Variable(1.0), 2.0)[1], "scalar loss tensor, got float"),
  )
  def test_non_scalar_loss(self, make_loss, message):
    with self.assertRaisesRegex(ValueError, message):
      l2l.Problem(make_loss)

  @parameterized.named_parameters(
      ("shape", "shape", r"variable #0 was .*shape=TensorShape\(\[2\]\).*now shape \(3,\)"),
      ("more", "more", "more than the 1 of its first call"),
      ("fewer", "fewer", "2 on the first call, 1 now"),
  )
  def test_different_variables_on_the_second_call(self, change, message):
    problem = l2l.Problem(Counter(change_after=1, change=change))  # The trace is call 1.
    with self.assertRaisesRegex(ValueError,
                                "'counter' created different variables on different calls"):
      problem.initial_values()
    with self.assertRaisesRegex(ValueError, message):
      problem.initial_values()

  @parameterized.named_parameters(
      ("more", "more", "more than the 1 of its first call"),
      ("fewer", "fewer", "2 on the first call, 1 now"),
      ("trainable", "trainable", "variable #0 was .*trainable=True.*trainable False"),
  )
  def test_different_variables_in_loss(self, change, message):
    make_loss = Counter(change_after=2, change=change)
    problem = l2l.Problem(make_loss)
    params, constants = problem.initial_values()  # Calls 1 and 2 agree; call 3 differs.
    with self.assertRaisesRegex(ValueError, message):
      problem.loss(params, constants)

  @parameterized.named_parameters(
      ("too_few_params", lambda p, c: ([], c), r"params has 0 tensors, expected 1 \(\['x'\]\)"),
      ("too_many_params", lambda p, c: (p + p, c), "params has 2 tensors, expected 1"),
      ("too_few_constants", lambda p, c: (p, c[:1]), "constants has 1 tensors, expected 2"),
      ("wrong_shape", lambda p, c: ([tf.zeros([5])], c),
       r"params for variable 'x' has shape \(5,\), expected \(2, 3\)"),
  )
  def test_loss_checks_its_arguments(self, modify, message):
    problem = l2l.Problem(problems.quadratic(batch_size=2, num_dims=3))
    params, constants = problem.initial_values()
    with self.assertRaisesRegex(ValueError, message):
      problem.loss(*modify(params, constants))


if __name__ == "__main__":
  tf.test.main()
