"""Few-shot tasks: `Task` (support and query splits), seeded samplers, and scikit-learn digits.

    sampler = problems.SinusoidTaskSampler(k_support=10, seed=0)
    tasks = sampler.sample(25)          # a Task of arrays with a leading task dimension
    tasks.support_x.shape               # (25, 10, 1)

A sampler's `sample(num_tasks)` draws from its own `np.random.Generator`, so a sampler built with
the same seed yields the same tasks; use distinct seeds for meta-training and held-out tasks.
"""

import collections
import math
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np

_TaskBase = collections.namedtuple("Task", ["support_x", "support_y", "query_x", "query_y"])


class Task(_TaskBase):
  """One task (or a batch of tasks, with a leading task dimension): support and query data.

  A NamedTuple, so it works with `tf.nest`, `tf.function` and `tf.vectorized_map`.

  Raises:
    ValueError: support and query whose examples have different shapes, or an x and y that hold
      different numbers of examples.
  """
  __slots__ = ()

  def __new__(cls, support_x, support_y, query_x, query_y):
    shapes = [getattr(a, "shape", None) for a in (support_x, support_y, query_x, query_y)]
    if all(s is not None and len(s) >= 1 for s in shapes):
      sx, sy, qx, qy = (tuple(s) for s in shapes)
      # Leading dims shared by x and y index examples (and tasks, in a batch); y has one fewer
      # dim than x for class labels, the same number for regression targets.
      e = len(sy) if len(sy) < len(sx) else len(sy) - 1
      if len(sx) != len(qx) or len(sy) != len(qy) or e < 1:
        raise ValueError(f"support and query must have matching ranks: support_x {sx}, "
                         f"support_y {sy}, query_x {qx}, query_y {qy}")
      if sx[:e] != sy[:e] or qx[:e] != qy[:e]:
        raise ValueError(f"x and y must hold the same number of examples: support_x {sx} vs "
                         f"support_y {sy}, query_x {qx} vs query_y {qy}")
      if sx[e:] != qx[e:] or sy[e:] != qy[e:] or sx[:e - 1] != qx[:e - 1]:
        raise ValueError(f"support and query examples must have the same shape: support_x "
                         f"{sx} vs query_x {qx}, support_y {sy} vs query_y {qy}")
    return super().__new__(cls, support_x, support_y, query_x, query_y)

  @property
  def num_tasks(self) -> int:
    """The leading dimension of a batch of tasks."""
    return int(self.support_x.shape[0])

  def task(self, i: int) -> "Task":
    """The i-th task of a batch."""
    return Task(*(a[i] for a in self))


class TaskSampler(Protocol):
  """Draws batches of tasks: `sample(num_tasks)` returns a `Task` with a leading task dim."""

  def sample(self, num_tasks: int) -> Task:
    ...


def _check_count(name: str, value, minimum: int = 1) -> int:
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return value


def _check_range(name: str, value) -> Tuple[float, float]:
  try:
    low, high = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
  if not low <= high:
    raise ValueError(f"{name} must have low <= high, got {value!r}")
  return low, high


def _float_dtype(dtype) -> np.dtype:
  """A floating NumPy dtype from a NumPy / TensorFlow dtype or its name; float32 for None."""
  if dtype is None:
    return np.dtype(np.float32)
  try:
    result = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
  except TypeError:
    result = None
  if result is None or not np.issubdtype(result, np.floating):
    raise ValueError(f"dtype must be a floating dtype (e.g. 'float32', np.float64, "
                     f"tf.float64), got {dtype!r}")
  return result


class SinusoidTaskSampler:
  """Sinusoid regression tasks, y = A sin(x - phase) (Finn et al. 2017, section 5.1).

  Args:
    amp_range: the amplitude A is uniform in this range (paper: 0.1 to 5).
    phase_range: the phase is uniform in this range (paper: 0 to pi).
    x_range: inputs are uniform in this range (paper: -5 to 5).
    k_support: examples in a task's support set (K).
    k_query: examples in its query set.
    generator: a `np.random.Generator` to draw from (shared with the caller, who may pass
      the same one to several samplers); give either this or `seed`.
    seed: seeds the sampler's own generator; when neither is given, seed 0 (samplers are
      reproducible by default).
    dtype: the floating dtype of the arrays (NumPy, TensorFlow or a name such as
      "float64"); float32 when None. The draws are made in float64 and then cast.

  Raises:
    ValueError: bad ranges or counts, both `generator` and `seed`, or a non-floating dtype.
    TypeError: `generator` is not a `np.random.Generator`.
  """

  def __init__(self, amp_range: Sequence[float] = (0.1, 5.0),
               phase_range: Sequence[float] = (0.0, math.pi),
               x_range: Sequence[float] = (-5.0, 5.0), k_support: int = 10,
               k_query: int = 10, generator: Optional[np.random.Generator] = None,
               seed: Optional[int] = None, dtype=None):
    self.amp_range = _check_range("amp_range", amp_range)
    self.phase_range = _check_range("phase_range", phase_range)
    self.x_range = _check_range("x_range", x_range)
    self.k_support = _check_count("k_support", k_support)
    self.k_query = _check_count("k_query", k_query)
    if generator is not None and seed is not None:
      raise ValueError("SinusoidTaskSampler: give generator or seed, not both")
    if generator is not None and not isinstance(generator, np.random.Generator):
      raise TypeError(f"generator must be a np.random.Generator, got {type(generator).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
      raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    self.rng = generator if generator is not None else np.random.default_rng(
        0 if seed is None else seed)
    self.dtype = _float_dtype(dtype)

  def sample_with_parameters(self, num_tasks: int) -> Tuple[Task, np.ndarray, np.ndarray]:
    """`(tasks, amplitudes, phases)`; x and y of shape [tasks, k, 1] in the sampler's dtype."""
    _check_count("num_tasks", num_tasks)
    amp = self.rng.uniform(*self.amp_range, size=(num_tasks, 1, 1))
    phase = self.rng.uniform(*self.phase_range, size=(num_tasks, 1, 1))
    x = self.rng.uniform(*self.x_range, size=(num_tasks, self.k_support + self.k_query, 1))
    y = amp * np.sin(x - phase)
    x, y = x.astype(self.dtype), y.astype(self.dtype)
    k = self.k_support
    return Task(x[:, :k], y[:, :k], x[:, k:], y[:, k:]), amp.ravel(), phase.ravel()

  def sample(self, num_tasks: int) -> Task:
    return self.sample_with_parameters(num_tasks)[0]


class NWayKShotSampler:
  """N-way K-shot classification tasks over a labelled dataset.

  Each task picks `n_way` distinct classes from `classes`, relabels them 0..n_way-1 in a random
  order, and draws `k_shot` support and `k_query` query examples per class without overlap.

  Args:
    inputs: `[num_examples, ...]` array of inputs.
    labels: `[num_examples]` integer labels.
    n_way: classes per task.
    k_shot: support examples per class.
    k_query: query examples per class.
    classes: the classes tasks draw from (e.g. the meta-train or meta-test split); all labels
      present when None.
    seed: seeds the sampler's generator.
    shuffle_labels: relabel each task's classes in a random order; if False, in the order of
      `classes` (so with `n_way == len(classes)` tasks are ordinary supervised batches, as a
      pretrained, non-meta-learned baseline needs).

  Raises:
    ValueError: fewer than `n_way` classes, or a class with fewer than `k_shot + k_query`
      examples.
  """

  def __init__(self, inputs: np.ndarray, labels: np.ndarray, n_way: int = 5, k_shot: int = 1,
               k_query: int = 15, classes: Optional[Sequence[int]] = None, seed: int = 0,
               shuffle_labels: bool = True):
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    if len(inputs) != len(labels) or labels.ndim != 1:
      raise ValueError(f"inputs and labels must hold the same number of examples, got shapes "
                       f"{inputs.shape} and {labels.shape}")
    self.n_way = _check_count("n_way", n_way, 2)
    self.k_shot = _check_count("k_shot", k_shot)
    self.k_query = _check_count("k_query", k_query)
    self.classes = sorted(set(labels.tolist())) if classes is None else list(classes)
    if len(self.classes) < n_way:
      raise ValueError(f"n_way={n_way} needs at least {n_way} classes, got {self.classes}")
    self.by_class = {}
    for c in self.classes:
      index = np.flatnonzero(labels == c)
      if len(index) < k_shot + k_query:
        raise ValueError(f"class {c} has {len(index)} examples, fewer than k_shot + k_query = "
                         f"{k_shot + k_query}")
      self.by_class[c] = index
    self.inputs = inputs.astype(np.float32)
    self.rng = np.random.default_rng(seed)
    self.shuffle_labels = bool(shuffle_labels)

  def sample(self, num_tasks: int) -> Task:
    """Support x `[tasks, n_way * k_shot, ...]`, y `[tasks, n_way * k_shot]` int32; same for
    the query with `k_query`."""
    _check_count("num_tasks", num_tasks)
    splits = {"sx": [], "sy": [], "qx": [], "qy": []}
    k = self.k_shot
    for _ in range(num_tasks):
      chosen = self.rng.choice(self.classes, size=self.n_way, replace=False)
      if not self.shuffle_labels:
        chosen = sorted(chosen, key=self.classes.index)
      s_index, q_index, s_label, q_label = [], [], [], []
      for new_label, c in enumerate(chosen):
        picked = self.rng.choice(self.by_class[c], size=k + self.k_query, replace=False)
        s_index.extend(picked[:k])
        q_index.extend(picked[k:])
        s_label.extend([new_label] * k)
        q_label.extend([new_label] * self.k_query)
      splits["sx"].append(self.inputs[s_index])
      splits["sy"].append(np.array(s_label, np.int32))
      splits["qx"].append(self.inputs[q_index])
      splits["qy"].append(np.array(q_label, np.int32))
    return Task(*(np.stack(splits[k]) for k in ("sx", "sy", "qx", "qy")))


DIGITS_TRAIN_CLASSES = (0, 1, 2, 3, 4)
DIGITS_TEST_CLASSES = (5, 6, 7, 8, 9)
# Hyperparameter selection (`digits_split(..., "validation")`): meta-train on 0-2, validate on
# 3-4, both inside DIGITS_TRAIN_CLASSES, so meta-test classes 5-9 are never looked at.
DIGITS_VALIDATION_TRAIN_CLASSES = (0, 1, 2)
DIGITS_VALIDATION_CLASSES = (3, 4)
NUM_DIHEDRAL = 8  # The symmetries of a square: 4 rotations, each with and without a flip.


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
  """scikit-learn's 8x8 digits (1797 images, embedded in the package: no download).

  Returns:
    `(inputs, labels)`: float32 `[1797, 64]` pixel intensities scaled to [0, 1], int64 labels.
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top (optional at import time)
  digits = datasets.load_digits()
  return (digits.data / 16.).astype(np.float32), digits.target.astype(np.int64)


def dihedral(images: np.ndarray, transform: int) -> np.ndarray:
  """One of the 8 rotations / reflections of square images `[n, side, side]`.

  `transform` t in 0..7: rotate by 90 degrees (t % 4) times, after a left-right flip if t >= 4;
  t = 0 is the identity.
  """
  if not 0 <= transform < NUM_DIHEDRAL:
    raise ValueError(f"transform must be in 0..{NUM_DIHEDRAL - 1}, got {transform!r}")
  images = images[:, :, ::-1] if transform >= 4 else images
  return np.rot90(images, transform % 4, axes=(1, 2))


def dihedral_classes(inputs: np.ndarray, labels: np.ndarray, classes: Sequence[int],
                     side: int = 8) -> Tuple[np.ndarray, np.ndarray, List[int]]:
  """Every image of `classes` under each of the 8 dihedral transforms, as a distinct class.

  The Omniglot recipe (Santoro et al. 2016; Finn et al. 2017 use rotations): a rotated or
  mirrored digit is a new class, so 5 digits give 40 meta-training classes.

  Args:
    inputs: `[n, side * side]` flattened images.
    labels: `[n]` integer labels.
    classes: the labels to augment.
    side: image height and width.

  Returns:
    `(inputs, labels, new_classes)` of the augmented examples only; transform t of class c is
    labelled `c + t * (max(labels) + 1)` (t = 0 keeps c).
  """
  inputs, labels = np.asarray(inputs), np.asarray(labels)
  if inputs.ndim != 2 or inputs.shape[1] != side * side:
    raise ValueError(f"inputs must be [n, {side * side}] flattened {side}x{side} images, got "
                     f"shape {inputs.shape}")
  keep = np.isin(labels, list(classes))
  images, base = inputs[keep].reshape(-1, side, side), labels[keep]
  stride = int(labels.max()) + 1
  new_inputs, new_labels = [], []
  for t in range(NUM_DIHEDRAL):
    new_inputs.append(dihedral(images, t).reshape(len(images), side * side))
    new_labels.append(base + t * stride)
  new_classes = [c + t * stride for t in range(NUM_DIHEDRAL) for c in classes]
  return np.concatenate(new_inputs), np.concatenate(new_labels), new_classes


def digits_split(split: str = "test", augment: bool = True, standardize: bool = True
                 ) -> Tuple[np.ndarray, np.ndarray, List[int], List[int]]:
  """Digits for few-shot learning: `(inputs, labels, meta_train_classes, eval_classes)`.

  Args:
    split: "test" meta-trains on digits 0-4 and evaluates on the unaugmented digits 5-9;
      "validation" (for choosing hyperparameters) meta-trains on 0-2 and evaluates on the
      8 dihedral transforms of 3 and 4 (16 classes).
    augment: the meta-training classes are the 8 dihedral transforms of each digit (else the
      digits themselves).
    standardize: shift and scale the [0, 1] pixel intensities by one mean and one standard
      deviation over the meta-training images (no statistics of the evaluation classes).
  """
  if split not in ("test", "validation"):
    raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
  inputs, labels = load_digits()
  if split == "test":
    train, held_out = DIGITS_TRAIN_CLASSES, DIGITS_TEST_CLASSES
  else:
    train, held_out = DIGITS_VALIDATION_TRAIN_CLASSES, DIGITS_VALIDATION_CLASSES
  parts_x, parts_y = [], []
  if augment:
    x, y, train_classes = dihedral_classes(inputs, labels, train)
  else:
    keep = np.isin(labels, train)
    x, y, train_classes = inputs[keep], labels[keep], list(train)
  parts_x.append(x)
  parts_y.append(y)
  if split == "test":
    keep = np.isin(labels, held_out)
    x, y, eval_classes = inputs[keep], labels[keep], list(held_out)
  else:
    x, y, eval_classes = dihedral_classes(inputs, labels, held_out)
  parts_x.append(x)
  parts_y.append(y)
  mean, std = (parts_x[0].mean(), parts_x[0].std()) if standardize else (0., 1.)
  inputs = ((np.concatenate(parts_x) - mean) / std).astype(np.float32)
  return inputs, np.concatenate(parts_y), list(train_classes), list(eval_classes)


def digits_samplers(n_way: int = 5, k_shot: int = 1, k_query: int = 15, seed: int = 0
                    ) -> Tuple[NWayKShotSampler, NWayKShotSampler]:
  """Meta-train and meta-test samplers over disjoint digit classes (0-4 and 5-9).

  With 10 classes, 5-way test tasks always use all of 5-9, in a random label order. Raw [0, 1]
  pixels, no augmentation (`digits_split` gives the augmented, standardized version).
  """
  inputs, labels = load_digits()
  train = NWayKShotSampler(inputs, labels, n_way, k_shot, k_query, DIGITS_TRAIN_CLASSES, seed)
  test = NWayKShotSampler(inputs, labels, n_way, k_shot, k_query, DIGITS_TEST_CLASSES, seed + 1)
  return train, test
