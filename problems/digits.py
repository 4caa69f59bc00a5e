"""An MLP on batches of scikit-learn's 8x8 digits: the MNIST problem offline.

The digits are bundled with scikit-learn (1797 images, no download), so this problem runs
anywhere; `mode` picks a fixed 80% / 20% train / test split.
"""

from typing import Optional, Sequence

from l2l.capture import MakeLoss
from problems import datasets
from problems import minibatch

NUM_CLASSES = 10


def digits(hidden_sizes: Sequence[int] = (20,), activation: str = "sigmoid",
           batch_size: int = 128, mode: str = "train", seed: Optional[int] = 0) -> MakeLoss:
  """Returns `make_loss` of an MLP classifier on random batches of the 8x8 digits.

  Args:
    hidden_sizes: widths of the hidden layers (may be empty: a linear classifier).
    activation: "sigmoid" or "relu", after every hidden layer.
    batch_size: examples per batch, at most 1438 (train) or 359 (test).
    mode: "train" (the first 80% of the digits) or "test" (the rest).
    seed: seeds the initial weights (N(0, 0.01^2)) and the batches.

  Raises:
    ValueError: a bad option.
  """
  hidden_sizes = minibatch.check_sizes("digits", "hidden_sizes", hidden_sizes)
  activation_fn = minibatch.check_activation("digits", activation)
  batch_size = minibatch.check_positive_int("digits", "batch_size", batch_size)
  data = datasets.load_digits(datasets.check_mode("digits", mode))
  init, batches = minibatch.generators(seed)
  sampler = minibatch.BatchSampler(data.images, data.labels, batch_size, batches, "digits")

  def make_loss():
    inputs, labels = sampler()
    logits = minibatch.mlp(hidden_sizes, NUM_CLASSES, activation_fn, init)(inputs)
    return minibatch.cross_entropy(logits, labels)

  return make_loss
