"""Logistic regression whose minibatches are often linearly separable: a loss that can reach 0.

Each problem instance draws `num_points` inputs x ~ N(0, I_dims) and labels y = sign(x . w*)
of a random teacher w*, each flipped with probability `label_noise`, so the whole data set is
not separable (the minimum of the full loss is well above 0) while a minibatch of
`batch_size` points often is: weights blown up along such a minibatch's separator give it a
loss of exactly 0 in float32. Every call of `make_loss` draws a new minibatch. The log
objective without a floor rewards that (log 0 = -inf); see `l2l.unroll.LOG_FLOOR`.

    PYTHONPATH=bench python train.py --problem=separable_logistic:separable_logistic ...

(`bench/log_floor_result.sh` runs the measurement of README "The log objective's floor".)
"""

from typing import Optional

import tensorflow as tf


def separable_logistic(seed: Optional[int] = 0, num_points: int = 64, dims: int = 5,
                       batch_size: int = 4, label_noise: float = 0.1):
  """Returns `make_loss` of a stream of logistic regressions (a new instance per call of the
  initializers, a new minibatch per call of `make_loss`)."""
  generator = tf.random.Generator.from_seed(0 if seed is None else seed)

  def make_data():
    x = generator.normal([num_points, dims])
    teacher = generator.normal([dims])
    y = tf.sign(tf.linalg.matvec(x, teacher) + 1e-6)
    flip = tf.cast(generator.uniform([num_points]) < label_noise, tf.float32)
    return tf.concat([x, (y * (1.0 - 2.0 * flip))[:, None]], axis=1)

  def make_loss():
    data = tf.Variable(make_data, trainable=False, name="data")
    w = tf.Variable(lambda: 0.01 * generator.normal([dims]), name="w")
    b = tf.Variable(lambda: tf.zeros([]), name="b")
    index = generator.uniform([batch_size], 0, num_points, dtype=tf.int64)
    batch = tf.gather(data, index)
    x, y = batch[:, :dims], batch[:, dims]
    margins = y * (tf.linalg.matvec(x, w) + b)
    return tf.reduce_mean(tf.nn.softplus(-margins))

  return make_loss
