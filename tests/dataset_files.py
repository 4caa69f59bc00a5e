"""Tiny MNIST and CIFAR-10 files in the datasets' own formats, written by tests (no download).

Images are learnable: class c has a bright band at a position set by c, plus noise.
"""

import gzip
import os
import pickle

import numpy as np


def _images(labels, shape, rng):
  images = rng.randint(0, 60, size=(len(labels),) + shape).astype(np.uint8)
  for i, c in enumerate(labels):
    images[i, 2 * c:2 * c + 3] = 255
  return images


def _write_idx(path, array, gzipped):
  header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(
      int(n).to_bytes(4, "big") for n in array.shape)
  opener = gzip.open if gzipped else open
  with opener(path + (".gz" if gzipped else ""), "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(directory, num_train=40, num_test=20, gzipped=True, seed=0):
  """Writes the four MNIST idx files; returns {"train": (images, labels), "test": ...}."""
  rng = np.random.RandomState(seed)
  written = {}
  for mode, prefix, count in (("train", "train", num_train), ("test", "t10k", num_test)):
    labels = np.arange(count) % 10
    images = _images(labels, (28, 28), rng)
    _write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte"), images, gzipped)
    _write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte"), labels, gzipped)
    written[mode] = (images, labels)
  return written


def write_cifar10(directory, per_batch=8, num_test=10, subdir=False, seed=0):
  """Writes data_batch_1..5 and test_batch; returns {"train": (images NHWC, labels), ...}."""
  rng = np.random.RandomState(seed)
  if subdir:
    directory = os.path.join(directory, "cifar-10-batches-py")
  os.makedirs(directory, exist_ok=True)
  written = {"train": ([], [])}
  names = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", num_test)]
  for name, count in names:
    labels = rng.permutation(np.arange(count) % 10)
    images = _images(labels, (32, 32, 3), rng)
    data = images.transpose(0, 3, 1, 2).reshape(count, 3072)  # Planes R, G, B per row.
    with open(os.path.join(directory, name), "wb") as f:
      pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": name.encode()}, f)
    if name == "test_batch":
      written["test"] = (images, labels)
    else:
      written["train"][0].append(images)
      written["train"][1].append(labels)
  written["train"] = tuple(np.concatenate(a) for a in written["train"])
  return written
