"""The task suite's models (`problems.suite`): MLPs, a conv net and a GRU over `suite_data`.

Each builder takes the options of a task and a seed and returns `make_loss`: the mean training
loss of the model on a new random minibatch at every call (softmax cross-entropy for classes,
sigmoid cross-entropy for binary labels, mean squared error for regression). The seed's
generators (`problems.minibatch.generators`) draw the initial weights, as deferred initial values,
and the batches; parameter shapes never depend on it.

Initialisations (`init`): a number `s` is N(0, s^2) for weights and biases (the 2016 code's
scheme with s = 0.01); "glorot" is Glorot & Bengio's uniform, "he" He et al.'s normal, both with
zero biases.
"""

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import sonnet as snt
import tensorflow as tf

from l2l.capture import MakeLoss
from problems import minibatch
from problems import suite_data

Init = Union[float, str]
ACTIVATIONS = {"sigmoid": tf.sigmoid, "tanh": tf.tanh, "relu": tf.nn.relu, "gelu": tf.nn.gelu,
               "linear": tf.identity}


def _fans(shape: Sequence[int]) -> Tuple[int, int]:
  """`(fan_in, fan_out)` of a weight `[..., in, out]` (a conv kernel's receptive field counts)."""
  if len(shape) < 2:
    return (int(shape[0]),) * 2 if shape else (1, 1)
  receptive = int(np.prod(shape[:-2]))
  return int(shape[-2]) * receptive, int(shape[-1]) * receptive


class _Deferred(snt.initializers.Initializer):
  """Draws from `generator` as a deferred (callable) initial value, as
  `problems.minibatch.NormalInitializer` does, by `scheme`: a stddev, "glorot", "he" or "zeros"."""

  def __init__(self, generator: tf.random.Generator, scheme: Init):
    self.generator = generator
    self.scheme = scheme

  def __call__(self, shape, dtype: tf.DType) -> Callable[[], tf.Tensor]:  # pytype: disable=signature-mismatch
    shape = [int(n) for n in shape]
    fan_in, fan_out = _fans(shape)
    if self.scheme == "zeros":
      return lambda: tf.zeros(shape, dtype)
    if self.scheme == "glorot":
      limit = math.sqrt(6. / (fan_in + fan_out))
      return lambda: self.generator.uniform(shape, -limit, limit, dtype=dtype)
    stddev = math.sqrt(2. / fan_in) if self.scheme == "he" else float(self.scheme)
    return lambda: self.generator.normal(shape, stddev=stddev, dtype=dtype)


def initializers(generator: tf.random.Generator, init: Init) -> Tuple[_Deferred, _Deferred]:
  """`(w_init, b_init)` of an `init` scheme.

  Raises:
    ValueError: an unknown scheme.
  """
  if isinstance(init, str):
    if init not in ("glorot", "he"):
      raise ValueError(f"init must be a stddev, 'glorot' or 'he', got {init!r}")
    return _Deferred(generator, init), _Deferred(generator, "zeros")
  if not isinstance(init, (int, float)) or isinstance(init, bool) or not init >= 0:
    raise ValueError(f"init must be a stddev >= 0, 'glorot' or 'he', got {init!r}")
  return _Deferred(generator, init), _Deferred(generator, init)


def loss_fn(table: suite_data.Table) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """The mean loss of outputs `[B, num_outputs]` against a batch of `table`'s targets."""
  if table.kind == suite_data.CLASSES:
    return minibatch.cross_entropy
  if table.kind == suite_data.BINARY:
    return lambda logits, labels: tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels, logits[:, 0]))
  return lambda outputs, targets: tf.reduce_mean(tf.square(outputs - targets))


def _sampler(data: str, batch_size: int, seed: Optional[int]):
  table = suite_data.load(data)
  init, batches = minibatch.generators(seed)
  return table, init, suite_data.Sampler(table, batch_size, batches, data)


def mlp(seed: Optional[int], data: str, hidden_sizes: Sequence[int], activation: str,
        init: Init, batch_size: int) -> MakeLoss:
  """An MLP from the flattened inputs to the table's outputs (a linear last layer).

  Raises:
    ValueError: an unknown activation or init.
  """
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
  table, generator, sampler = _sampler(data, batch_size, seed)
  w_init, b_init = initializers(generator, init)
  loss = loss_fn(table)
  sizes = list(hidden_sizes) + [table.num_outputs]

  def make_loss():
    inputs, targets = sampler()
    net = snt.nets.MLP(sizes, w_init=w_init, b_init=b_init, activation=ACTIVATIONS[activation],
                       name="mlp")
    return loss(net(snt.flatten(inputs)), targets)

  return make_loss


def conv(seed: Optional[int], data: str, side: int, channels: Sequence[int], init: Init,
         batch_size: int) -> MakeLoss:
  """A conv net on `side` x `side` one-channel images: 3x3 ReLU convolutions, the first with
  stride 1 and the rest stride 2, then a linear layer on the flattened features."""
  table, generator, sampler = _sampler(data, batch_size, seed)
  w_init, b_init = initializers(generator, init)
  loss = loss_fn(table)

  def make_loss():
    inputs, targets = sampler()
    x = tf.reshape(inputs, [-1, side, side, 1])
    for i, c in enumerate(channels):
      x = tf.nn.relu(snt.Conv2D(c, 3, stride=1 if i == 0 else 2, w_init=w_init, b_init=b_init,
                                name=f"conv_{i}")(x))
    logits = snt.Linear(table.num_outputs, w_init=w_init, b_init=b_init,
                        name="linear")(snt.flatten(x))
    return loss(logits, targets)

  return make_loss


def gru(seed: Optional[int], data: str, hidden_size: int, init: Init,
        batch_size: int) -> MakeLoss:
  """A GRU over sequences `[B, T, features]` (unrolled statically), then a linear layer on its
  last output."""
  table, generator, sampler = _sampler(data, batch_size, seed)
  w_init, b_init = initializers(generator, init)
  loss = loss_fn(table)

  def make_loss():
    inputs, targets = sampler()
    core = snt.GRU(hidden_size, w_i_init=w_init, w_h_init=w_init, b_init=b_init, name="gru")
    sequence = tf.transpose(inputs, [1, 0, 2])  # Time major.
    outputs, _ = snt.static_unroll(core, sequence, core.initial_state(tf.shape(inputs)[0]))
    predictions = snt.Linear(table.num_outputs, w_init=w_init, b_init=b_init,
                             name="linear")(outputs[-1])
    return loss(predictions, targets)

  return make_loss
