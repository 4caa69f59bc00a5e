"""Batches of random quadratics f(x) = mean_b ||W_b x_b - y_b||^2 (Andrychowicz et al. 2016, 3.1).

W [batch, dims, dims] and y [batch, dims] are problem constants (non-trainable), drawn i.i.d.
standard normal as in the paper, or U[0, 1) as in the 2016 code (`distribution="uniform"`); x
starts at N(0, stddev^2). Every draw comes from one `tf.random.Generator` seeded by `seed`, so the
sequence of problem instances is reproducible.
"""

from typing import Optional

import tensorflow as tf

from l2l.capture import MakeLoss

DISTRIBUTIONS = ("normal", "uniform")


def quadratic(batch_size: int = 128, num_dims: int = 10, stddev: float = 0.01,
              distribution: str = "normal", seed: Optional[int] = 0) -> MakeLoss:
  """Returns `make_loss` of a batch of `batch_size` quadratics in `num_dims` dimensions."""
  for arg, value in (("batch_size", batch_size), ("num_dims", num_dims)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"quadratic: {arg} must be a positive integer, got {value!r}")
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"quadratic: distribution must be one of {DISTRIBUTIONS}, got "
                     f"{distribution!r}")
  if not stddev >= 0:
    raise ValueError(f"quadratic: stddev must be >= 0, got {stddev!r}")
  generator = (tf.random.Generator.from_seed(seed) if seed is not None
               else tf.random.Generator.from_non_deterministic_state())

  def draw(shape):
    if distribution == "normal":
      return generator.normal(shape)
    return generator.uniform(shape)

  def make_loss():
    x = tf.Variable(lambda: stddev * generator.normal([batch_size, num_dims]), name="x")
    w = tf.Variable(lambda: draw([batch_size, num_dims, num_dims]), trainable=False, name="w")
    y = tf.Variable(lambda: draw([batch_size, num_dims]), trainable=False, name="y")
    residual = tf.linalg.matvec(w, x) - y
    return tf.reduce_mean(tf.reduce_sum(tf.square(residual), axis=1))

  return make_loss
