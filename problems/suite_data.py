"""The task suite's data sets (`problems.suite`): small, fixed, offline, as NumPy arrays.

Synthetic sets are generated once from fixed NumPy seeds; the tabular sets are the ones bundled
with scikit-learn (no download), features standardised to zero mean and unit variance. A problem
instance's seed never changes the data, only the initial weights and the batch order.

Every loader returns a read-only `Table`, cached, so building many instances reads or generates
each set once.
"""

import functools
from typing import Callable, Dict, NamedTuple, Tuple

import numpy as np
import tensorflow as tf

CLASSES, BINARY, REGRESSION = "classes", "binary", "regression"


class Table(NamedTuple):
  """Examples and targets.

  Attributes:
    inputs: float32 `[N, ...]`.
    targets: int64 `[N]` class labels (`kind` "classes"), float32 `[N]` 0/1 labels ("binary"),
      or float32 `[N, k]` regression targets ("regression").
    kind: "classes", "binary" or "regression": which loss the problems put on the outputs.
    num_outputs: classes for "classes", 1 for "binary", k for "regression".
  """
  inputs: np.ndarray
  targets: np.ndarray
  kind: str
  num_outputs: int


def _table(inputs, targets, kind: str) -> Table:
  inputs = np.ascontiguousarray(inputs, np.float32)
  targets = np.ascontiguousarray(targets, np.int64 if kind == CLASSES else np.float32)
  if len(inputs) != len(targets):
    raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
  num_outputs = {CLASSES: int(targets.max()) + 1 if len(targets) else 0, BINARY: 1}.get(
      kind, targets.shape[-1] if targets.ndim == 2 else 0)
  inputs.setflags(write=False)
  targets.setflags(write=False)
  return Table(inputs, targets, kind, num_outputs)


def standardise(x: np.ndarray) -> np.ndarray:
  """Zero mean and unit variance per column (constant columns are only centred)."""
  x = np.asarray(x, np.float64)
  std = x.std(axis=0)
  return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.)


# Synthetic data sets: generated in NumPy from fixed seeds.

def _blobs(seed: int, num_features: int, num_classes: int, clusters_per_class: int,
           spread: float, num_examples: int = 2048) -> Table:
  """Gaussian clusters, several per class (so a linear classifier is not enough), unit noise."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(0., spread, [num_classes * clusters_per_class, num_features])
  cluster = rng.integers(0, len(centres), num_examples)
  inputs = centres[cluster] + rng.normal(size=[num_examples, num_features])
  return _table(standardise(inputs), cluster % num_classes, CLASSES)


def _teacher(seed: int, num_features: int, num_outputs: int, hidden: int, activation: str,
             noise: float, num_examples: int = 2048) -> Table:
  """Regression on the outputs of a random one-hidden-layer teacher net, plus noise;
  standardised targets (so a constant predictor has loss ~1)."""
  rng = np.random.default_rng(seed)
  inputs = rng.normal(size=[num_examples, num_features])
  w1 = rng.normal(size=[num_features, hidden]) * (2. / num_features) ** .5
  b1 = rng.normal(size=[hidden]) * .5
  w2 = rng.normal(size=[hidden, num_outputs]) / hidden ** .5
  pre = inputs @ w1 + b1
  act = np.tanh(pre) if activation == "tanh" else np.maximum(pre, 0.)
  targets = act @ w2 + noise * rng.normal(size=[num_examples, num_outputs])
  return _table(inputs, standardise(targets), REGRESSION)


def _adding(seed: int, length: int, num_examples: int = 4096) -> Table:
  """The adding problem (Hochreiter & Schmidhuber 1997): a sequence of (value, marker) pairs,
  values U[0, 1), two positions marked; the target is the sum of the two marked values.
  Predicting the mean gives a loss of 1/6; a model that adds does better."""
  rng = np.random.default_rng(seed)
  values = rng.uniform(size=[num_examples, length])
  first = rng.integers(0, length // 2, num_examples)
  second = rng.integers(length // 2, length, num_examples)
  markers = np.zeros_like(values)
  markers[np.arange(num_examples), first] = 1.
  markers[np.arange(num_examples), second] = 1.
  targets = np.sum(values * markers, axis=1, keepdims=True)
  return _table(np.stack([values, markers], axis=-1), targets, REGRESSION)


def _bars(seed: int, side: int, num_examples: int = 2048) -> Table:
  """Images `[N, side * side]` of one line segment (length 3 to side - 2, at a random place) in
  noise N(0, 0.5^2); the class is its orientation: horizontal, vertical, diagonal or
  anti-diagonal. A small image task for conv nets whose data is not the digits."""
  rng = np.random.default_rng(seed)
  images = rng.normal(0., 0.5, [num_examples, side, side])
  labels = rng.integers(0, 4, num_examples)
  lengths = rng.integers(3, side - 1, num_examples)
  directions = np.array([(0, 1), (1, 0), (1, 1), (1, -1)])
  for i, (label, length) in enumerate(zip(labels, lengths)):
    dr, dc = directions[label]
    r0 = rng.integers(0, side - dr * (length - 1))
    c0 = rng.integers(max(0, -dc * (length - 1)), side - max(0, dc) * (length - 1))
    steps = np.arange(length)
    images[i, r0 + dr * steps, c0 + dc * steps] += 2.
  return _table(images.reshape(num_examples, side * side), labels, CLASSES)


# scikit-learn's bundled data sets (imported at call time: scikit-learn is heavy).

def _sklearn(name: str):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  return getattr(datasets, f"load_{name}")()


def _digits(reconstruct: bool = False) -> Table:
  """The 8x8 digits' training split (`problems.datasets.load_digits("train")`), pixels in
  [0, 1]; `reconstruct` makes the targets the inputs (an autoencoder's)."""
  from problems import datasets  # pylint: disable=g-import-not-at-top (avoids a cycle)
  data = datasets.load_digits("train")
  if reconstruct:
    return _table(data.images, data.images, REGRESSION)
  return _table(data.images, data.labels, CLASSES)


def _tabular(name: str, kind: str) -> Table:
  bunch = _sklearn(name)
  targets = bunch.target
  if kind == REGRESSION:
    targets = standardise(targets.reshape(-1, 1))
  return _table(standardise(bunch.data), targets, kind)


LOADERS: Dict[str, Callable[[], Table]] = {
    # Synthetic, used by the training suite.
    "blobs8": lambda: _blobs(seed=1, num_features=8, num_classes=3, clusters_per_class=2,
                             spread=1.5),
    "blobs32": lambda: _blobs(seed=2, num_features=32, num_classes=8, clusters_per_class=2,
                              spread=0.6),
    "teacher16": lambda: _teacher(seed=3, num_features=16, num_outputs=4, hidden=32,
                                  activation="tanh", noise=0.1),
    "teacher8": lambda: _teacher(seed=4, num_features=8, num_outputs=1, hidden=16,
                                 activation="relu", noise=0.1),
    "tiny_blobs": lambda: _blobs(seed=5, num_features=4, num_classes=3, clusters_per_class=1,
                                 spread=2., num_examples=256),
    "tiny_teacher": lambda: _teacher(seed=6, num_features=4, num_outputs=1, hidden=8,
                                     activation="tanh", noise=0.1, num_examples=256),
    "bars8": lambda: _bars(seed=8, side=8),
    # Synthetic, held out.
    "adding10": lambda: _adding(seed=7, length=10),
    # scikit-learn's digits (training and held out).
    "digits": _digits,
    "digits_pixels": lambda: _digits(reconstruct=True),
    # scikit-learn's tabular sets, held out: 178 / 569 / 150 / 442 examples.
    "wine": lambda: _tabular("wine", CLASSES),
    "breast_cancer": lambda: _tabular("breast_cancer", BINARY),
    "iris": lambda: _tabular("iris", CLASSES),
    "diabetes": lambda: _tabular("diabetes", REGRESSION),
}


@functools.lru_cache(maxsize=None)
def load(name: str) -> Table:
  """The data set `name` (one of `LOADERS`), cached.

  Raises:
    ValueError: an unknown name.
  """
  if name not in LOADERS:
    raise ValueError(f"unknown suite data set {name!r}; expected one of {sorted(LOADERS)}")
  return LOADERS[name]()


class Sampler:
  """Draws random batches (without replacement within a batch) of a `Table` held as constants.

  Args:
    table: the data.
    batch_size: examples per batch, at most the table's size.
    generator: draws the batches.
    name: used in error messages.
  """

  def __init__(self, table: Table, batch_size: int, generator: tf.random.Generator, name: str):
    self.num_examples = len(table.inputs)
    if batch_size > self.num_examples:
      raise ValueError(f"{name}: batch_size {batch_size} is larger than the "
                       f"{self.num_examples} examples")
    self.batch_size = batch_size
    self.generator = generator
    with tf.init_scope():  # Eager constants, captured by reference in every tf.function.
      self.inputs = tf.constant(table.inputs)
      self.targets = tf.constant(table.targets)

  def __call__(self) -> Tuple[tf.Tensor, tf.Tensor]:
    """A batch `(inputs, targets)`."""
    if self.batch_size == self.num_examples:  # The whole set: the order does not matter.
      return self.inputs, self.targets
    # The batch_size largest of N uniform scores: a uniformly random subset.
    scores = self.generator.uniform([self.num_examples])
    index = tf.math.top_k(scores, k=self.batch_size, sorted=False).indices
    return tf.gather(self.inputs, index), tf.gather(self.targets, index)
