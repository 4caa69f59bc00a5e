"""The 2016 code's toy problems: x^2 and a sum of squares over several scalar variables."""

import tensorflow as tf

from l2l.capture import MakeLoss


def simple() -> MakeLoss:
  """f(x) = x^2 for one scalar variable `x` starting at 1."""
  def make_loss():
    x = tf.Variable(lambda: tf.ones([]), name="x")
    return tf.square(x)
  return make_loss


def simple_multi_optimizer(num_dims: int = 2) -> MakeLoss:
  """f = sum_i x_i^2 over scalar variables `x_0`, ..., starting at 1 (one net per variable)."""
  if not isinstance(num_dims, int) or isinstance(num_dims, bool) or num_dims < 1:
    raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")

  def make_loss():
    xs = [tf.Variable(lambda: tf.ones([]), name=f"x_{i}") for i in range(num_dims)]
    return tf.add_n([tf.square(x) for x in xs])
  return make_loss
