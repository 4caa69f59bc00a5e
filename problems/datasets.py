"""Image classification datasets: MNIST, CIFAR-10 and scikit-learn's 8x8 digits, as NumPy arrays.

MNIST and CIFAR-10 load from `data_dir`, in the datasets' own formats, or, without a `data_dir`,
through `keras.datasets` (which downloads once and caches under `~/.keras/datasets`):

* MNIST: the idx files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally gzipped (`.gz`).
* CIFAR-10: the python pickle batches `data_batch_1` ... `data_batch_5` and `test_batch`, in
  `data_dir` or in its `cifar-10-batches-py` subdirectory (the extracted tarball).

When neither works a `ValueError` says so in one line naming both options: there is never a
silent fallback to fake data. The digits are bundled with scikit-learn (no download).

Loaded arrays are cached per `(data_dir, mode)` and read-only, so building many problem
instances reads the files once.
"""

import functools
import gzip
import os
import pickle
from typing import NamedTuple, Optional

import numpy as np

MODES = ("train", "test")
ENV_DATA_DIR = "L2L_DATA_DIR"  # Read by the named configs (l2l.configs), never by this module.

_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)),
                  "test": ("test_batch",)}
_CIFAR10_SUBDIR = "cifar-10-batches-py"
_IDX_MAGIC = {1: 0x801, 3: 0x803}  # Unsigned bytes, 1 or 3 dimensions.
DIGITS_TRAIN_FRACTION = 0.8


class Dataset(NamedTuple):
  """Examples and their labels.

  Attributes:
    images: uint8 `[N, H, W]` (MNIST) or `[N, H, W, C]` (CIFAR-10); float32 `[N, 64]` in [0, 1]
      for the digits.
    labels: int64 `[N]`.
  """
  images: np.ndarray
  labels: np.ndarray


def check_mode(problem: str, mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"{problem}: mode must be one of {MODES}, got {mode!r}")
  return mode


def _no_data(name: str, files: str, reason: str) -> ValueError:
  return ValueError(
      f"{name}: no data ({reason}); pass data_dir=DIR holding {files} (or set {ENV_DATA_DIR} for "
      f"the named configs), or allow the Keras download and cache "
      f"(keras.datasets.{name}.load_data(), which needs network access once)")


def _read_only(images: np.ndarray, labels: np.ndarray) -> Dataset:
  images = np.ascontiguousarray(images)
  labels = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
  if len(images) != len(labels):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  images.setflags(write=False)
  labels.setflags(write=False)
  return Dataset(images, labels)


def _open_maybe_gzipped(data_dir: str, name: str):
  for candidate, opener in ((name, open), (name + ".gz", gzip.open)):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path, opener(path, "rb")
  raise FileNotFoundError(f"neither {name} nor {name}.gz in {data_dir}")


def read_idx(data_dir: str, name: str, rank: int) -> np.ndarray:
  """Reads an idx file of unsigned bytes (LeCun's MNIST format), gzipped or not.

  Raises:
    FileNotFoundError: no such file.
    ValueError: a file that is not an idx file of `rank` dimensions of unsigned bytes.
  """
  path, f = _open_maybe_gzipped(data_dir, name)
  with f:
    raw = f.read()
  if len(raw) < 4 + 4 * rank:
    raise ValueError(f"{path} is too short for an idx file")
  magic = int.from_bytes(raw[:4], "big")
  if magic != _IDX_MAGIC[rank]:
    raise ValueError(f"{path} is not an idx file of {rank}-d unsigned bytes (magic {magic:#x}, "
                     f"expected {_IDX_MAGIC[rank]:#x})")
  shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * rank)
  if data.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values")
  return data.reshape(shape)


@functools.lru_cache(maxsize=4)
def load_mnist(data_dir: Optional[str] = None, mode: str = "train") -> Dataset:
  """MNIST's 60000 training or 10000 test images, uint8 `[N, 28, 28]`, and their labels.

  Raises:
    ValueError: the files are missing or malformed in `data_dir`, or, without `data_dir`, the
      Keras download fails.
  """
  check_mode("mnist", mode)
  images_file, labels_file = _MNIST_FILES[mode]
  files = f"{images_file}[.gz] and {labels_file}[.gz]"
  if data_dir is not None:
    try:
      return _read_only(read_idx(data_dir, images_file, 3), read_idx(data_dir, labels_file, 1))
    except (OSError, ValueError) as e:
      raise _no_data("mnist", files, f"{e}") from None
  return _keras_download("mnist", files, mode)


def _cifar10_dir(data_dir: str) -> str:
  nested = os.path.join(data_dir, _CIFAR10_SUBDIR)
  return nested if os.path.isdir(nested) else data_dir


def read_cifar10_batch(path: str) -> Dataset:
  """Reads one CIFAR-10 python pickle batch: uint8 images `[N, 32, 32, 3]` and labels.

  Raises:
    FileNotFoundError: no such file.
    ValueError: a file that is not a CIFAR-10 batch.
  """
  with open(path, "rb") as f:
    try:
      batch = pickle.load(f, encoding="bytes")
    except Exception as e:  # pylint: disable=broad-except (any unpickling error)
      raise ValueError(f"{path} is not a CIFAR-10 python batch: {e}") from None
  if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
    raise ValueError(f"{path} is not a CIFAR-10 python batch (expected a dict with b'data' "
                     "and b'labels')")
  data = np.asarray(batch[b"data"], np.uint8)
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise ValueError(f"{path}: data has shape {data.shape}, expected [N, 3072]")
  # Rows hold the red, then green, then blue 32x32 planes.
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return Dataset(images, np.asarray(batch[b"labels"], np.int64))


@functools.lru_cache(maxsize=4)
def load_cifar10(data_dir: Optional[str] = None, mode: str = "train") -> Dataset:
  """CIFAR-10's 50000 training or 10000 test images, uint8 `[N, 32, 32, 3]`, and labels.

  Raises:
    ValueError: the batches are missing or malformed in `data_dir`, or, without `data_dir`,
      the Keras download fails.
  """
  check_mode("cifar10", mode)
  names = _CIFAR10_FILES[mode]
  files = (f"{names[0]}..{names[-1][-1]}" if len(names) > 1 else names[0])
  files += f" (or a {_CIFAR10_SUBDIR} subdirectory with them)"
  if data_dir is not None:
    directory = _cifar10_dir(data_dir)
    try:
      batches = [read_cifar10_batch(os.path.join(directory, n)) for n in names]
    except (OSError, ValueError) as e:
      raise _no_data("cifar10", files, f"{e}") from None
    return _read_only(np.concatenate([b.images for b in batches]),
                      np.concatenate([b.labels for b in batches]))
  return _keras_download("cifar10", files, mode)


@functools.lru_cache(maxsize=2)
def load_digits(mode: str = "train") -> Dataset:
  """scikit-learn's 1797 8x8 digits: float32 `[N, 64]` in [0, 1]; the first 80% train, the rest
  test (a fixed split: the digits have no official one)."""
  check_mode("digits", mode)
  from problems import tasks  # pylint: disable=g-import-not-at-top (sklearn at call time)
  inputs, labels = tasks.load_digits()
  split = int(round(DIGITS_TRAIN_FRACTION * len(inputs)))
  part = slice(None, split) if mode == "train" else slice(split, None)
  return _read_only(inputs[part], labels[part])


def _keras_download(name: str, files: str, mode: str):
  """`keras.datasets.<name>.load_data()` (download and cache), or a one-line ValueError."""
  try:
    from keras import datasets  # pylint: disable=g-import-not-at-top (heavy, optional)
    train, test = getattr(datasets, name).load_data()
  except Exception as e:  # pylint: disable=broad-except (any download or cache failure)
    raise _no_data(name, files, f"no data_dir, and the Keras download failed: "
                   f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
  return _read_only(*(train if mode == "train" else test))
