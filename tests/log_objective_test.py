"""The log objectives: "log", sum_t log max(f(x_t), LOG_FLOOR * f_ref), and "log_mean",
W log max(mean_t f(x_t), LOG_FLOOR * f_ref), checked against NumPy on losses that reach 0 or fall
many decades, in `unroll` and across a `MetaLoss`'s truncations; and which trajectory each objective
prefers when minibatch losses can reach 0 (the gaming "log_mean" removes)."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

import l2l
import nets
from l2l import unroll as unroll_lib

X0 = np.array([1.0, -2.0, 0.5], np.float32)


def square_loss(params):
  (x,) = params
  return tf.reduce_sum(tf.square(x))


def sgd_unroll(learning_rate, steps, objective="log", loss_fn=square_loss, **kwargs):
  groups = [l2l.Group(nets.Sgd(learning_rate), (0,))]
  params = (tf.constant(X0),)
  state = l2l.UnrollState(params, (groups[0].rule.initial_state(list(params)),))
  return unroll_lib.unroll(loss_fn, groups, state, steps, objective=objective, **kwargs)


def sgd_meta_loss(learning_rate, len_unroll, objective):
  """A `MetaLoss` of SGD on sum x^2 from X0, in truncations of `len_unroll` steps."""
  def make_loss():
    x = tf.Variable(X0, name="x")
    return tf.reduce_sum(tf.square(x))

  opt = l2l.MetaOptimizer(sgd={"net": "Sgd", "net_options": {"learning_rate": learning_rate}})
  return opt.meta_loss(make_loss, len_unroll, objective=objective)


def floored_log_np(losses, reference):
  """NumPy reference: the floor is LOG_FLOOR times the reference loss."""
  return np.sum(np.log(np.maximum(losses, unroll_lib.LOG_FLOOR * reference)))


class LogObjectiveTest(absltest.TestCase):

  def test_a_loss_of_zero_earns_a_bounded_reward(self):
    # SGD at lr 0.5 on sum x^2 reaches x = 0, f = 0, in one step: log f would be -inf.
    result = sgd_unroll(0.5, 3)
    f0 = float(np.sum(X0 ** 2))
    np.testing.assert_allclose(result.losses, [f0, 0.0, 0.0, 0.0], atol=1e-7)
    self.assertTrue(np.isfinite(result.meta_loss.numpy()))
    np.testing.assert_allclose(result.meta_loss, 3 * np.log(unroll_lib.LOG_FLOOR * f0),
                               rtol=1e-6)

  def test_above_the_floor_it_is_the_plain_log(self):
    # lr 0.25 halves x: f_t = f0 / 4^t, above 1e-6 f0 for t <= 9.
    result = sgd_unroll(0.25, 9)
    f0 = float(np.sum(X0 ** 2))
    losses = f0 / 4.0 ** np.arange(10)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    np.testing.assert_allclose(result.meta_loss, np.sum(np.log(losses[1:])), rtol=1e-5)

  def test_floor_is_relative_to_the_reference_and_has_no_gradient_below_it(self):
    f0 = float(np.sum(X0 ** 2))
    for reference in (f0, 1e3 * f0, None):
      with self.subTest(reference=reference):
        groups = [l2l.Group(nets.Sgd(0.25), (0,))]
        x0 = tf.constant(X0)
        with tf.GradientTape() as tape:
          tape.watch(x0)
          state = l2l.UnrollState((x0,), (groups[0].rule.initial_state([x0]),))
          result = unroll_lib.unroll(square_loss, groups, state, 12, objective="log",
                                     second_derivatives=True, log_reference=reference)
        losses = f0 / 4.0 ** np.arange(13)
        expected = floored_log_np(losses[1:], f0 if reference is None else reference)
        np.testing.assert_allclose(result.meta_loss, expected, rtol=1e-5)
        # Only terms above the floor have a gradient: f_t = f0 / 4^t with f0 = |x_0|^2, so
        # d log f_t / d x_0 = 2 x_0 / f0 for each of them.
        floor = unroll_lib.LOG_FLOOR * (f0 if reference is None else reference)
        above = sum(1 for t in range(1, 13) if losses[t] > floor)
        self.assertBetween(above, 1, 11)
        np.testing.assert_allclose(tape.gradient(result.meta_loss, x0), above * 2 * X0 / f0,
                                   rtol=1e-4)

  def test_meta_loss_floors_at_the_instance_initial_loss_across_truncations(self):
    # The second truncation's floor is 1e-6 of the instance's f(x_0), not of its own start.
    meta_loss = sgd_meta_loss(0.25, 7, "log")
    f0 = float(np.sum(X0 ** 2))
    losses = f0 / 4.0 ** np.arange(15)
    first, second = float(meta_loss.run()), float(meta_loss.run())
    np.testing.assert_allclose(first, floored_log_np(losses[1:8], f0), rtol=1e-5)
    np.testing.assert_allclose(second, floored_log_np(losses[8:15], f0), rtol=1e-5)
    # Relative to the truncation's own start it would be the plain log (all above 1e-6 f_7).
    self.assertGreater(second - np.sum(np.log(losses[8:15])), 1.0)
    meta_loss.reset()  # A new instance measures its own initial loss again.
    np.testing.assert_allclose(float(meta_loss.run()), first, rtol=1e-5)


class LogMeanObjectiveTest(absltest.TestCase):

  def test_is_the_log_of_the_weighted_mean_loss(self):
    f0 = float(np.sum(X0 ** 2))
    losses = f0 / 4.0 ** np.arange(6)
    weights = np.array([0.5, 1.0, 1.0, 2.0, 3.0])
    result = sgd_unroll(0.25, 5, objective="log_mean", loss_weights=list(weights))
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    expected = weights.sum() * np.log(np.sum(weights * losses[1:]) / weights.sum())
    np.testing.assert_allclose(result.meta_loss, expected, rtol=1e-5)
    # Equal losses (a loss that does not depend on x): "log_mean" equals "log".
    def flat(params):
      return 2.5 + 0.0 * tf.reduce_sum(params[0])
    np.testing.assert_allclose(sgd_unroll(0.1, 4, objective="log_mean", loss_fn=flat).meta_loss,
                               4 * np.log(2.5), rtol=1e-6)
    np.testing.assert_allclose(sgd_unroll(0.1, 4, objective="log", loss_fn=flat).meta_loss,
                               4 * np.log(2.5), rtol=1e-6)

  def test_gradient_matches_numpy_and_is_scale_free(self):
    # d/dx0 of T log(mean_t f_t) with f_t = f0 / 4^t = |x0|^2 / 4^t is T * 2 x0 / f0, whatever
    # the loss's scale (a loss 1000x larger gives the same meta-gradient).
    f0 = float(np.sum(X0 ** 2))
    for scale in (1.0, 1e3):
      with self.subTest(scale=scale):
        x0 = tf.constant(X0)
        groups = [l2l.Group(nets.Sgd(0.25 / scale), (0,))]
        with tf.GradientTape() as tape:
          tape.watch(x0)
          state = l2l.UnrollState((x0,), (groups[0].rule.initial_state([x0]),))
          result = unroll_lib.unroll(lambda p: scale * square_loss(p), groups, state, 4,
                                     objective="log_mean", second_derivatives=True)
        np.testing.assert_allclose(tape.gradient(result.meta_loss, x0), 4 * 2 * X0 / f0,
                                   rtol=1e-4)

  def test_a_loss_of_zero_everywhere_earns_the_floor(self):
    f0 = float(np.sum(X0 ** 2))
    result = sgd_unroll(0.5, 3, objective="log_mean")
    np.testing.assert_allclose(result.meta_loss, 3 * np.log(unroll_lib.LOG_FLOOR * f0), rtol=1e-6)

  def test_spreading_minibatch_losses_does_not_pay(self):
    # Minibatch losses of a logistic regression whose minibatches are separable: an optimizer
    # that blows the weights up fits 3 of every 4 minibatches exactly (loss 0) and pays a large
    # loss on the fourth; a sound one keeps every minibatch near the full-data optimum.
    # "log" prefers the first (log 0 is floored at -13.8 + log f0, far below log 0.6), "sum"
    # and "log_mean" prefer the second.
    blown_up = [0.0, 0.0, 0.0, 8.0] * 2
    sound = [0.6] * 8

    def scripted(losses):
      step = iter([0.7] + losses + [losses[-1]])  # f(x_0), f(x_1..x_T), final re-evaluation
      return lambda params: tf.constant(next(step)) + 0.0 * tf.reduce_sum(params[0])

    for objective, prefers_sound in (("log", False), ("sum", True), ("log_mean", True)):
      with self.subTest(objective=objective):
        scores = [float(sgd_unroll(0.1, 8, objective=objective, loss_fn=scripted(losses),
                                   use_while_loop=False).meta_loss)
                  for losses in (blown_up, sound)]
        self.assertEqual(scores[1] < scores[0], prefers_sound, scores)

  def test_meta_loss_floors_at_the_instance_initial_loss_across_truncations(self):
    # lr 0.5 reaches f = 0 at once: both truncations earn the floor of the instance's f(x_0)
    # (relative to the second truncation's own start, f = 0, it would be float32's tiniest).
    meta_loss = sgd_meta_loss(0.5, 3, "log_mean")
    f0 = float(np.sum(X0 ** 2))
    floor = unroll_lib.LOG_FLOOR * f0
    np.testing.assert_allclose(float(meta_loss.run()), 3 * np.log(floor), rtol=1e-6)
    np.testing.assert_allclose(float(meta_loss.run()), 3 * np.log(floor), rtol=1e-6)

  def test_unknown_objective_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, "objective must be one of"):
      sgd_unroll(0.1, 2, objective="mean_log")


if __name__ == "__main__":
  absltest.main()
