"""Shared parts of minibatch classification problems (mnist, cifar10, digits).

The data are `tf.constant`s captured by the problem's closure: never variables, so they stay out
of problem states and checkpoints. Every call of `make_loss` draws a new batch (without
replacement within the batch) from a seeded `tf.random.Generator`, so the loss is stochastic as
in the 2016 paper; because the draw is an op, a `tf.function` unroll draws a new batch at every
step. Initial weights come from another generator of the same seed, as deferred (callable)
initial values, so that the capture's substitution during an unroll never draws them.
"""

import numbers
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import sonnet as snt
import tensorflow as tf

ACTIVATIONS = {"sigmoid": tf.sigmoid, "relu": tf.nn.relu}
# N(0, 0.01^2) for weights and biases, the 2016 code's `_nn_initializers`.
INIT_STDDEV = 0.01


def check_positive_int(problem: str, name: str, value) -> int:
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{problem}: {name} must be a positive integer, got {value!r}")
  return int(value)


def check_sizes(problem: str, name: str, sizes, allow_empty: bool = True) -> Tuple[int, ...]:
  if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
    raise ValueError(f"{problem}: {name} must be a list of positive integers, got {sizes!r}")
  sizes = tuple(check_positive_int(problem, f"{name}[{i}]", s) for i, s in enumerate(sizes))
  if not sizes and not allow_empty:
    raise ValueError(f"{problem}: {name} must not be empty")
  return sizes


def check_activation(problem: str, activation: str) -> Callable[[tf.Tensor], tf.Tensor]:
  if activation not in ACTIVATIONS:
    raise ValueError(f"{problem}: activation must be one of {sorted(ACTIVATIONS)}, got "
                     f"{activation!r}")
  return ACTIVATIONS[activation]


def generators(seed: Optional[int]) -> Tuple[tf.random.Generator, tf.random.Generator]:
  """`(init, batches)`: independent generators, so instance i's weights do not depend on how
  many batches were drawn before it."""
  with tf.init_scope():
    base = (tf.random.Generator.from_seed(seed) if seed is not None
            else tf.random.Generator.from_non_deterministic_state())
    init, batches = base.split(2)
  return init, batches


class NormalInitializer(snt.initializers.Initializer):
  """N(0, stddev^2) from a `tf.random.Generator`, returned as a deferred initial value.

  Sonnet passes the result straight to `tf.Variable`, which accepts a callable; the capture
  (`l2l.capture`) calls it only when it needs initial values, never while substituting
  parameters during an unroll.
  """

  def __init__(self, generator: tf.random.Generator, stddev: float = INIT_STDDEV):
    self.generator = generator
    self.stddev = stddev

  def __call__(self, shape, dtype: tf.DType) -> Callable[[], tf.Tensor]:  # pytype: disable=signature-mismatch
    shape = [int(n) for n in shape]
    return lambda: self.generator.normal(shape, stddev=self.stddev, dtype=dtype)


class BatchSampler:
  """Draws random batches of examples held as constants.

  Args:
    inputs: `[N, ...]` examples; uint8 images are scaled to [0, 1] float32 per batch.
    labels: `[N]` integer labels.
    batch_size: examples per batch, at most N; N gives the whole set in a random order.
    generator: draws the batches.
    problem: used in error messages.
  """

  def __init__(self, inputs: np.ndarray, labels: np.ndarray, batch_size: int,
               generator: tf.random.Generator, problem: str):
    self.num_examples = len(inputs)
    if batch_size > self.num_examples:
      raise ValueError(f"{problem}: batch_size {batch_size} is larger than the "
                       f"{self.num_examples} examples")
    self.batch_size = batch_size
    self.generator = generator
    self.scale = 1. / 255. if inputs.dtype == np.uint8 else 1.
    with tf.init_scope():  # Eager constants, captured by reference in every tf.function.
      self.inputs = tf.constant(inputs)
      self.labels = tf.constant(labels, tf.int64)

  def __call__(self) -> Tuple[tf.Tensor, tf.Tensor]:
    """A batch `(inputs float32 [batch_size, ...], labels int64 [batch_size])`."""
    # The batch_size largest of N uniform scores: a uniformly random subset, in random order.
    scores = self.generator.uniform([self.num_examples])
    index = tf.math.top_k(scores, k=self.batch_size, sorted=False).indices
    inputs = tf.cast(tf.gather(self.inputs, index), tf.float32) * self.scale
    return inputs, tf.gather(self.labels, index)


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Mean softmax cross-entropy."""
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def mlp(hidden_sizes: Sequence[int], num_classes: int, activation: Callable[[tf.Tensor], tf.Tensor],
        generator: tf.random.Generator) -> snt.nets.MLP:
  """The 2016 code's MLP classifier: hidden layers, then a linear output layer."""
  init = NormalInitializer(generator)
  return snt.nets.MLP(list(hidden_sizes) + [num_classes], w_init=init, b_init=init,
                      activation=activation, name="mlp")
