"""The unroll engine against NumPy: trajectories, objectives and meta-gradients."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
from l2l import unroll as unroll_lib
import nets

# A 3-d quadratic f(x) = 0.5 ||W x - y||^2 with a non-diagonal Hessian W^T W (eigenvalues
# 0.05, 1.9, 2.1), so that second derivatives matter for the meta-gradient.
W = np.array([[1.0, 0.6, -0.3], [0.2, 0.9, 0.5], [-0.4, 0.3, 1.1]])
Y = np.array([0.5, -1.0, 0.8])
X0 = np.array([1.0, -0.5, 0.3])

# float32 engine against float64 NumPy over a few steps: float32 rounding only.
TRAJECTORY_TOL = dict(rtol=1e-5, atol=1e-6)
# Meta-gradients: the engine differentiates float32 ops; the reference is a float64 central
# difference (eps 1e-5, truncation error ~eps^2) of a NumPy re-implementation, so the gap is
# float32 rounding through T steps of an LSTM (observed <= 4e-7 of the largest entry).
META_GRAD_RTOL = 1e-4
# Checkpointed against plain unrolls: the same float32 ops run twice, summed in another order
# in the backward pass (observed <= 6e-8 of the largest meta-gradient entry, eagerly and under
# tf.function).
CHECKPOINT_TOL = dict(rtol=1e-5, atol=1e-6)
# The small LSTM of the meta-gradient tests: one layer of 3 units, output scale 0.3.
HIDDEN, SCALE, STEPS = 3, 0.3, 5


def f_np(x):
  return 0.5 * np.sum(np.square(W @ x - Y))


def grad_np(x):
  return W.T @ (W @ x - Y)


def loss_fn(params):
  (x,) = params
  residual = tf.linalg.matvec(tf.constant(W, tf.float32), x) - tf.constant(Y, tf.float32)
  return 0.5 * tf.reduce_sum(tf.square(residual))


def gradient_descent_np(learning_rate, steps):
  xs = [X0]
  for _ in range(steps):
    xs.append(xs[-1] - learning_rate * grad_np(xs[-1]))
  return xs


def sgd_groups(learning_rate):
  return [l2l.Group(nets.Sgd(learning_rate), (0,))]


def _initial_state(groups, params=None):
  """The state at step 0, built from the public API (each rule's own initial state)."""
  params = (tf.constant(X0, tf.float32),) if params is None else tuple(params)
  return l2l.UnrollState(params, tuple(g.rule.initial_state([params[i] for i in g.indices])
                                       for g in groups))


# NumPy coordinatewise LSTM (layers=(H,), no preprocessing): gates (i, j, f, o), forget bias 1.

def sigmoid(z):
  return 1. / (1. + np.exp(-z))


def lstm_net_np(weights, g, state, scale):
  """One step of the coordinatewise LSTM on a [n] gradient; returns (update [n], state)."""
  w, b, out_w, out_b = weights
  h, c = state
  gates = np.concatenate([g[:, None], h], axis=1) @ w + b
  i, j, f, o = np.split(gates, 4, axis=1)
  c = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
  h = sigmoid(o) * np.tanh(c)
  return scale * (h @ out_w + out_b)[:, 0], (h, c)


def meta_loss_np(weights, steps, scale, hidden, frozen_grads=None):
  """sum_{t=1..T} f(x_t) under the NumPy LSTM; with `frozen_grads`, g_t is that constant."""
  x = X0.copy()
  state = (np.zeros([3, hidden]), np.zeros([3, hidden]))
  total, losses, grads = 0., [f_np(x)], []
  for t in range(steps):
    g = grad_np(x) if frozen_grads is None else frozen_grads[t]
    grads.append(g)
    update, state = lstm_net_np(weights, g, state, scale)
    x = x + update
    losses.append(f_np(x))
    total += losses[-1]
  return total, losses, grads


def numerical_gradient(loss, weights, eps=1e-5):
  grads = []
  for k, weight in enumerate(weights):
    grad = np.zeros_like(weight)
    for index in np.ndindex(*weight.shape):
      plus = [v.copy() for v in weights]
      minus = [v.copy() for v in weights]
      plus[k][index] += eps
      minus[k][index] -= eps
      grad[index] = (loss(plus) - loss(minus)) / (2 * eps)
    grads.append(grad)
  return grads


class UnrollTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_sgd_matches_numpy_gradient_descent(self, use_while_loop):
    lr, steps = 0.3, 6
    groups = sgd_groups(lr)
    result = unroll_lib.unroll(loss_fn, groups, _initial_state(groups), steps,
                        use_while_loop=use_while_loop)
    xs = gradient_descent_np(lr, steps)
    losses = np.array([f_np(x) for x in xs])
    self.assertAllClose(result.losses, losses, **TRAJECTORY_TOL)
    self.assertAllClose(result.meta_loss, np.sum(losses[1:]), **TRAJECTORY_TOL)
    self.assertAllClose(result.state.params[0], xs[-1], **TRAJECTORY_TOL)
    self.assertEqual(result.state.rule_states, ((),))

  def test_while_loop_and_python_loop_agree(self):
    net = nets.Adam(0.1)
    groups = [l2l.Group(net, (0,))]
    results = [unroll_lib.unroll(loss_fn, groups, _initial_state(groups), 7, use_while_loop=flag)
               for flag in (False, True)]
    self.assertAllClose(results[0].losses, results[1].losses, rtol=1e-6, atol=1e-7)
    self.assertAllClose(results[0].meta_loss, results[1].meta_loss, rtol=1e-6, atol=1e-7)
    for a, b in zip(tf.nest.flatten(results[0].state), tf.nest.flatten(results[1].state)):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)

  def test_continuing_from_the_final_state_is_one_longer_unroll(self):
    groups = [l2l.Group(nets.Adam(0.1), (0,))]
    whole = unroll_lib.unroll(loss_fn, groups, _initial_state(groups), 6)
    first = unroll_lib.unroll(loss_fn, groups, _initial_state(groups), 4)
    second = unroll_lib.unroll(loss_fn, groups, first.state, 2)
    self.assertAllClose(np.concatenate([first.losses, second.losses[1:]]), whole.losses,
                        rtol=1e-6, atol=1e-7)
    for a, b in zip(tf.nest.flatten(second.state), tf.nest.flatten(whole.state)):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)

  def test_log_objective(self):
    lr, steps = 0.3, 5
    groups = sgd_groups(lr)
    result = unroll_lib.unroll(loss_fn, groups, _initial_state(groups), steps,
                        objective="log")
    losses = np.array([f_np(x) for x in gradient_descent_np(lr, steps)])
    self.assertAllClose(result.losses, losses, **TRAJECTORY_TOL)
    self.assertAllClose(result.meta_loss, np.sum(np.log(losses[1:])), **TRAJECTORY_TOL)

  @parameterized.parameters(("sum",), ("log",))
  def test_loss_weights(self, objective):
    lr, weights = 0.3, [0.0, 0.5, 2.0, 1.0]
    groups = sgd_groups(lr)
    result = unroll_lib.unroll(loss_fn, groups, _initial_state(groups), len(weights),
                        loss_weights=weights, objective=objective)
    losses = np.array([f_np(x) for x in gradient_descent_np(lr, len(weights))])[1:]
    terms = losses if objective == "sum" else np.log(losses)
    self.assertAllClose(result.meta_loss, np.dot(weights, terms), **TRAJECTORY_TOL)

  def test_parameters_outside_the_loss_get_zero_gradients(self):
    """A parameter the loss does not use keeps its value (its gradient is zero, not None)."""
    groups = [l2l.Group(nets.Sgd(0.3), (0, 1))]
    state = _initial_state(groups, [tf.constant(X0, tf.float32), tf.ones([2])])
    result = unroll_lib.unroll(lambda p: loss_fn(p[:1]), groups, state, 3)
    self.assertAllEqual(result.state.params[1], np.ones([2]))
    self.assertAllClose(result.state.params[0], gradient_descent_np(0.3, 3)[-1],
                        **TRAJECTORY_TOL)

  # Meta-gradients.

  def _lstm(self):
    # Normal(0, 1) weights: large enough that updates, and their dependence on the gradients,
    # are far from zero; no preprocessing, so the meta-loss is smooth in the weights.
    net = nets.CoordinateWiseDeepLSTM(layers=(HIDDEN,), preprocess_name=None, scale=SCALE,
                                      initializer=1.0, seed=3)
    variables = [net.core.weights[0], net.core.biases[0], net.core.out_w, net.core.out_b]
    # Non-zero biases too, so that every weight is exercised away from zero.
    net.core.biases[0].assign(0.3 * np.random.RandomState(0).randn(4 * HIDDEN).astype(np.float32))
    net.core.out_b.assign([0.2])
    return net, variables

  def _meta_gradient(self, net, variables, steps, second_derivatives, use_while_loop=False):
    groups = [l2l.Group(net, (0,))]
    with tf.GradientTape() as tape:
      result = unroll_lib.unroll(loss_fn, groups, _initial_state(groups), steps,
                          second_derivatives=second_derivatives,
                          use_while_loop=use_while_loop)
    return result, tape.gradient(result.meta_loss, variables)

  def assert_gradients_close(self, actual, expected):
    scale = max(np.max(np.abs(e)) for e in expected)
    for a, e in zip(actual, expected):
      self.assertAllClose(a, e, rtol=META_GRAD_RTOL, atol=META_GRAD_RTOL * scale)

  def test_numpy_reference_matches_the_engine(self):
    net, variables = self._lstm()
    result, _ = self._meta_gradient(net, variables, STEPS, second_derivatives=True)
    weights = [v.numpy().astype(np.float64) for v in variables]
    meta_loss, losses, _ = meta_loss_np(weights, STEPS, SCALE, HIDDEN)
    self.assertAllClose(result.losses, losses, **TRAJECTORY_TOL)
    self.assertAllClose(result.meta_loss, meta_loss, **TRAJECTORY_TOL)
    # The net moves x: the test below is not about a trivial trajectory.
    self.assertGreater(np.abs(losses[-1] - losses[0]), 0.1)

  def test_second_derivatives_meta_gradient_matches_finite_differences(self):
    net, variables = self._lstm()
    _, grads = self._meta_gradient(net, variables, STEPS, second_derivatives=True)
    weights = [v.numpy().astype(np.float64) for v in variables]
    expected = numerical_gradient(lambda w: meta_loss_np(w, STEPS, SCALE, HIDDEN)[0], weights)
    self.assert_gradients_close(grads, expected)

  def test_first_order_meta_gradient_treats_optimizee_gradients_as_constants(self):
    """second_derivatives=False is the exact gradient of the meta-loss with g_t frozen."""
    net, variables = self._lstm()
    _, grads = self._meta_gradient(net, variables, STEPS, second_derivatives=False)
    weights = [v.numpy().astype(np.float64) for v in variables]
    _, _, frozen = meta_loss_np(weights, STEPS, SCALE, HIDDEN)
    expected = numerical_gradient(
        lambda w: meta_loss_np(w, STEPS, SCALE, HIDDEN, frozen_grads=frozen)[0], weights)
    self.assert_gradients_close(grads, expected)

  def test_loss_with_gradient_keeps_the_value_and_replaces_the_gradient(self):
    x = tf.constant([1.0, -2.0, 3.0])
    given = [tf.constant([0.5, 0.25, -1.0])]
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(x ** 3)
      attached = unroll_lib.loss_with_gradient(loss, [x], given)
      out = 2.0 * attached
    self.assertAllEqual(attached, loss)
    # d out / d x = 2 * given, not 2 * 3 x^2 (loss_fn is not differentiated again).
    self.assertAllClose(tape.gradient(out, x), [1.0, 0.5, -2.0])

  def test_second_derivatives_change_the_meta_gradient(self):
    net, variables = self._lstm()
    _, first = self._meta_gradient(net, variables, STEPS, second_derivatives=False)
    _, second = self._meta_gradient(net, variables, STEPS, second_derivatives=True)
    first = np.concatenate([np.ravel(g) for g in first])
    second = np.concatenate([np.ravel(g) for g in second])
    # On this non-diagonal quadratic the Hessian terms change the meta-gradient by ~54%.
    self.assertGreater(np.linalg.norm(first - second) / np.linalg.norm(second), 0.25)

  @parameterized.parameters(False, True)
  def test_while_loop_meta_gradient_matches_python_loop(self, second_derivatives):
    net, variables = self._lstm()
    _, python_loop = self._meta_gradient(net, variables, 4, second_derivatives)
    _, while_loop = self._meta_gradient(net, variables, 4, second_derivatives,
                                        use_while_loop=True)
    for a, b in zip(python_loop, while_loop):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-7)

  # Checkpointed unrolls.

  @parameterized.parameters(
      (False, 1, False), (False, 3, False), (True, 3, False), (True, 4, True), (False, 7, True),
      (True, 10, False))
  def test_checkpointed_meta_gradient_equals_plain(self, second_derivatives, segment_length,
                                                   compiled):
    """Recomputing segments in the backward pass changes memory, not the meta-gradient."""
    net, variables = self._lstm()
    groups = [l2l.Group(net, (0,))]

    def meta_gradient(segment):
      with tf.GradientTape() as tape:
        result = unroll_lib.unroll(loss_fn, groups, _initial_state(groups), 7,
                                   second_derivatives=second_derivatives,
                                   segment_length=segment)
      return result.losses, result.state, tape.gradient(result.meta_loss, variables)

    if compiled:
      meta_gradient = tf.function(meta_gradient, autograph=False)
    plain = meta_gradient(None)
    checkpointed = meta_gradient(segment_length)
    self.assertAllClose(checkpointed[0], plain[0], **CHECKPOINT_TOL)
    for a, b in zip(tf.nest.flatten(checkpointed[1]), tf.nest.flatten(plain[1])):
      self.assertAllClose(a, b, **CHECKPOINT_TOL)
    scale = max(np.max(np.abs(g)) for g in plain[2])
    self.assertGreater(scale, 0.1)
    for a, b in zip(checkpointed[2], plain[2]):
      self.assertAllClose(a, b, rtol=CHECKPOINT_TOL["rtol"],
                          atol=CHECKPOINT_TOL["rtol"] * scale)

  def test_checkpointed_segments_with_a_while_loop_and_a_stateful_rule(self):
    """Adam's state (with its integer step count) crosses segment boundaries."""
    rule = nets.Adam(0.1, learnable=True)
    groups = [l2l.Group(rule, (0,))]

    @tf.function(autograph=False)
    def meta_gradient(segment):
      with tf.GradientTape() as tape:
        result = unroll_lib.unroll(loss_fn, groups, _initial_state(groups), 9,
                                   second_derivatives=True, use_while_loop=True,
                                   segment_length=segment)
      return result.meta_loss, tape.gradient(result.meta_loss, rule.trainable_variables)

    plain, checkpointed = meta_gradient(None), meta_gradient(4)
    self.assertAllClose(checkpointed[0], plain[0], **CHECKPOINT_TOL)
    self.assertLen(checkpointed[1], len(rule.trainable_variables))
    scale = max(np.max(np.abs(g)) for g in plain[1])
    for a, b in zip(checkpointed[1], plain[1]):
      self.assertAllClose(a, b, rtol=CHECKPOINT_TOL["rtol"],
                          atol=CHECKPOINT_TOL["rtol"] * scale)

  def test_segment_lengths(self):
    self.assertEqual(unroll_lib.segment_lengths(10, 4), [4, 4, 2])
    self.assertEqual(unroll_lib.segment_lengths(8, 4), [4, 4])
    self.assertEqual(unroll_lib.segment_lengths(3, 10), [3])

  # Errors.

  @parameterized.parameters(0, -2, 1.5)
  def test_bad_segment_length(self, segment_length):
    groups = sgd_groups(0.1)
    with self.assertRaisesRegex(ValueError, "segment_length must be a positive integer"):
      unroll_lib.unroll(loss_fn, groups, _initial_state(groups), 3,
                        segment_length=segment_length)

  @parameterized.parameters(0, -1, 2.5, True, None)
  def test_bad_len_unroll(self, len_unroll):
    groups = sgd_groups(0.1)
    with self.assertRaisesRegex(ValueError, f"len_unroll must be a positive integer, got "
                                f"{len_unroll!r}"):
      unroll_lib.unroll(loss_fn, groups, _initial_state(groups), len_unroll)

  def test_bad_loss_weights(self):
    groups = sgd_groups(0.1)
    with self.assertRaisesRegex(ValueError, "loss_weights must have len_unroll=3 entries, got 2"):
      unroll_lib.unroll(loss_fn, groups, _initial_state(groups), 3, loss_weights=[1., 1.])

  def test_bad_objective(self):
    groups = sgd_groups(0.1)
    with self.assertRaisesRegex(ValueError, r"objective must be one of .*'sum'.*got 'max'"):
      unroll_lib.unroll(loss_fn, groups, _initial_state(groups), 3, objective="max")


if __name__ == "__main__":
  tf.test.main()
