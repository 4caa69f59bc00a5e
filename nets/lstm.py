"""A deep LSTM written as pure functions of tensors, with a thin module holding its weights.

Gate order is (i, j, f, o) with the forget bias added at run time, as in the 2016 code and the
speed peers in ../shared/peers, so that weights transfer between them unchanged. Weights are
created eagerly in `__init__` (not on first call) so that a checkpoint restores into them and a
mismatched checkpoint is detected at once.
"""

from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import sonnet as snt
import tensorflow as tf

LSTMState = Tuple[Tuple[tf.Tensor, tf.Tensor], ...]  # ((h, c) per layer)
Initializer = Union[None, str, float]


def lstm_step(x: tf.Tensor, h: tf.Tensor, c: tf.Tensor, w: tf.Tensor, b: tf.Tensor,
              forget_bias: float = 1.0) -> Tuple[tf.Tensor, tf.Tensor]:
  """One LSTM step: gates = [x, h] w + b, split (i, j, f, o); returns (h', c')."""
  gates = tf.matmul(tf.concat([x, h], axis=-1), w) + b
  i, j, f, o = tf.split(gates, 4, axis=-1)
  c = tf.sigmoid(f + forget_bias) * c + tf.sigmoid(i) * tf.tanh(j)
  h = tf.sigmoid(o) * tf.tanh(c)
  return h, c


def make_initializer(initializer: Initializer, fan_in: int, seed: Optional[int] = None,
                     index: int = 0) -> Callable[[Sequence[int], tf.DType], tf.Tensor]:
  """Returns `init(shape, dtype)`.

  `initializer` is None (truncated normal with stddev 1/sqrt(fan_in), Sonnet's default),
  "zeros", or a float: the stddev of a normal distribution. With a `seed`, draws are stateless
  (seeded by `(seed, index)`), so the same seed gives the same weights in any process or order.
  """
  if isinstance(initializer, str):
    if initializer != "zeros":
      raise ValueError(f"unknown initializer {initializer!r}; expected None, 'zeros' or a stddev")
    return lambda shape, dtype: tf.zeros(shape, dtype)
  if initializer is None:
    stddev, truncated = 1.0 / np.sqrt(fan_in), True
  elif isinstance(initializer, (int, float)) and not isinstance(initializer, bool) \
      and initializer >= 0:
    stddev, truncated = float(initializer), False
  else:
    raise ValueError(f"unknown initializer {initializer!r}; expected None, 'zeros' or a stddev")
  if seed is None:
    init = (snt.initializers.TruncatedNormal(stddev=stddev) if truncated
            else snt.initializers.RandomNormal(stddev=stddev))
    return init
  draw = tf.random.stateless_truncated_normal if truncated else tf.random.stateless_normal
  return lambda shape, dtype: draw(shape, seed=[int(seed), int(index)], dtype=dtype) * stddev


class DeepLSTMCore(snt.Module):
  """Stacked LSTM layers followed by a linear output layer."""

  def __init__(self, input_size: int, layers: Sequence[int], output_size: int,
               initializer: Initializer = None, forget_bias: float = 1.0,
               seed: Optional[int] = None, name: Optional[str] = None):
    super().__init__(name=name)
    self.layers = tuple(int(n) for n in layers)
    if any(n <= 0 for n in self.layers):
      raise ValueError(f"`layers` must be positive sizes, got {tuple(layers)}")
    self.forget_bias = float(forget_bias)
    self.weights: List[tf.Variable] = []
    self.biases: List[tf.Variable] = []
    size = int(input_size)
    with self.name_scope:
      for index, hidden in enumerate(self.layers):
        init = make_initializer(initializer, size + hidden, seed, index)
        self.weights.append(tf.Variable(init([size + hidden, 4 * hidden], tf.float32),
                                        name=f"lstm_{index}/w"))
        self.biases.append(tf.Variable(tf.zeros([4 * hidden]), name=f"lstm_{index}/b"))
        size = hidden
      init = make_initializer(initializer, size, seed, len(self.layers))
      self.out_w = tf.Variable(init([size, output_size], tf.float32), name="linear/w")
      self.out_b = tf.Variable(tf.zeros([output_size]), name="linear/b")

  def initial_state(self, batch_size: int, dtype=tf.float32) -> LSTMState:
    return tuple((tf.zeros([batch_size, n], dtype), tf.zeros([batch_size, n], dtype))
                 for n in self.layers)

  def __call__(self, x: tf.Tensor, state: LSTMState) -> Tuple[tf.Tensor, LSTMState]:
    new_state = []
    for w, b, (h, c) in zip(self.weights, self.biases, state):
      h, c = lstm_step(x, h, c, w, b, self.forget_bias)
      new_state.append((h, c))
      x = h
    return tf.matmul(x, self.out_w) + self.out_b, tuple(new_state)
