"""An MLP on MNIST minibatches (Andrychowicz et al. 2016, section 3.2).

The paper's base problem: one hidden layer of 20 sigmoid units, batches of 128, cross-entropy;
its generalization runs change the width, the depth and the activation (40 units, 2 layers,
ReLU). Each `make_loss` call draws a new random batch.
"""

from typing import Optional, Sequence

import tensorflow as tf

from l2l.capture import MakeLoss
from problems import datasets
from problems import minibatch

NUM_CLASSES = 10


def mnist(hidden_sizes: Sequence[int] = (20,), activation: str = "sigmoid",
          batch_size: int = 128, mode: str = "train", data_dir: Optional[str] = None,
          seed: Optional[int] = 0) -> MakeLoss:
  """Returns `make_loss` of an MLP classifier on random MNIST batches.

  Args:
    hidden_sizes: widths of the hidden layers (may be empty: a linear classifier).
    activation: "sigmoid" or "relu", after every hidden layer.
    batch_size: examples per batch.
    mode: "train" (the 60000 training images) or "test" (the 10000 test images).
    data_dir: a directory with MNIST's idx files; None uses the Keras download and cache.
    seed: seeds the initial weights (N(0, 0.01^2)) and the batches.

  Raises:
    ValueError: a bad option, or no data (the message names both ways to provide it).
  """
  hidden_sizes = minibatch.check_sizes("mnist", "hidden_sizes", hidden_sizes)
  activation_fn = minibatch.check_activation("mnist", activation)
  batch_size = minibatch.check_positive_int("mnist", "batch_size", batch_size)
  data = datasets.load_mnist(data_dir, datasets.check_mode("mnist", mode))
  init, batches = minibatch.generators(seed)
  sampler = minibatch.BatchSampler(data.images, data.labels, batch_size, batches, "mnist")

  def make_loss():
    images, labels = sampler()
    inputs = tf.reshape(images, [batch_size, -1])
    logits = minibatch.mlp(hidden_sizes, NUM_CLASSES, activation_fn, init)(inputs)
    return minibatch.cross_entropy(logits, labels)

  return make_loss
