"""A convolutional net on CIFAR-10 minibatches (Andrychowicz et al. 2016, section 3.3).

As the 2016 code: convolution layers (5x5, same padding), each followed by batch normalization
(optional), ReLU and 2x2 max pooling; then fully connected ReLU layers and a linear output layer,
cross-entropy on batches of 128. Batch normalization uses the batch's statistics (the 2016
code never ran its moving-average updates), so the problem has no state besides its weights.
"""

import functools
from typing import Optional, Sequence

import sonnet as snt
import tensorflow as tf

from l2l.capture import MakeLoss
from problems import datasets
from problems import minibatch

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
KERNEL_SHAPE = (5, 5)
BATCH_NORM_EPSILON = 1e-3


class BatchNorm(snt.Module):
  """Normalizes by the batch's mean and variance per channel, then a learned scale and offset.

      y = scale * (x - mean_batch(x)) / sqrt(var_batch(x) + eps) + offset
  """

  def __init__(self, name: Optional[str] = None):
    super().__init__(name=name)
    self._built = False

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    if not self._built:
      channels = [int(x.shape[-1])]
      self.scale = tf.Variable(lambda: tf.ones(channels, x.dtype), name="scale")
      self.offset = tf.Variable(lambda: tf.zeros(channels, x.dtype), name="offset")
      self._built = True
    mean, variance = tf.nn.moments(x, axes=list(range(x.shape.rank - 1)))
    return tf.nn.batch_normalization(x, mean, variance, self.offset, self.scale,
                                     BATCH_NORM_EPSILON)


def conv_net_loss(conv_channels: Sequence[int], linear_layers: Sequence[int], batch_norm: bool,
                  init: tf.random.Generator, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Builds the conv net (fresh modules: call it inside `make_loss`) and returns its loss."""
  initializer = minibatch.NormalInitializer(init)
  x = images
  for i, channels in enumerate(conv_channels):
    x = snt.Conv2D(channels, KERNEL_SHAPE, padding="SAME", w_init=initializer,
                   b_init=initializer, name=f"conv_{i}")(x)
    if batch_norm:
      x = BatchNorm(name=f"batch_norm_{i}")(x)
    x = tf.nn.max_pool2d(tf.nn.relu(x), ksize=2, strides=2, padding="SAME")
  x = snt.Flatten()(x)
  for i, size in enumerate(linear_layers):
    x = tf.nn.relu(snt.Linear(size, w_init=initializer, b_init=initializer,
                              name=f"linear_{i}")(x))
  logits = snt.Linear(NUM_CLASSES, w_init=initializer, b_init=initializer, name="output")(x)
  return minibatch.cross_entropy(logits, labels)


def _check_architecture(conv_channels, linear_layers):
  return (minibatch.check_sizes("cifar10", "conv_channels", conv_channels),
          minibatch.check_sizes("cifar10", "linear_layers", linear_layers))


def cifar10(conv_channels: Sequence[int] = (16, 16, 16), linear_layers: Sequence[int] = (32,),
            batch_norm: bool = True, batch_size: int = 128, mode: str = "train",
            data_dir: Optional[str] = None, seed: Optional[int] = 0) -> MakeLoss:
  """Returns `make_loss` of a conv net classifier on random CIFAR-10 batches.

  Args:
    conv_channels: output channels of the 5x5 convolution layers.
    linear_layers: widths of the fully connected hidden layers.
    batch_norm: normalize after every convolution (batch statistics).
    batch_size: examples per batch.
    mode: "train" (the 50000 training images) or "test" (the 10000 test images).
    data_dir: a directory with CIFAR-10's python batches; None uses the Keras download and
      cache.
    seed: seeds the initial weights (N(0, 0.01^2)) and the batches.

  Raises:
    ValueError: a bad option, or no data (the message names both ways to provide it).
  """
  conv_channels, linear_layers = _check_architecture(conv_channels, linear_layers)
  batch_size = minibatch.check_positive_int("cifar10", "batch_size", batch_size)
  data = datasets.load_cifar10(data_dir, datasets.check_mode("cifar10", mode))
  init, batches = minibatch.generators(seed)
  sampler = minibatch.BatchSampler(data.images, data.labels, batch_size, batches, "cifar10")
  loss = functools.partial(conv_net_loss, conv_channels, linear_layers, bool(batch_norm), init)

  def make_loss():
    return loss(*sampler())

  return make_loss


def cifar10_structure(conv_channels: Sequence[int] = (16, 16, 16),
                      linear_layers: Sequence[int] = (32,),
                      batch_norm: bool = True) -> MakeLoss:
  """The `cifar10` network on a symbolic all-zero batch of one image: only for learning its
  variables' names and shapes without loading data (e.g. to build `net_assignments`), never
  for training. The names match those of `cifar10` with the same architecture."""
  conv_channels, linear_layers = _check_architecture(conv_channels, linear_layers)
  init, _ = minibatch.generators(0)

  def make_loss():
    return conv_net_loss(conv_channels, linear_layers, bool(batch_norm), init,
                         tf.zeros((1,) + IMAGE_SHAPE), tf.zeros([1], tf.int64))

  return make_loss
