"""Gradient preprocessing for coordinatewise optimizer nets.

Andrychowicz et al. 2016, appendix A: each gradient coordinate g becomes two features,

    (log(|g|) / k, sign(g))   if |g| >= e^-k
    (-1, e^k g)               otherwise,

computed here branch-free as `(max(log(|g| + eps) / k, -1), clip(g e^k, -1, 1))`, as the
2016 code does (the log feature is not clipped from above).
"""

import math
from typing import Any, Callable, Dict, Optional

import sonnet as snt
import tensorflow as tf


def log_and_sign(grads: tf.Tensor, k: float = 5.0, eps: float = 1e-10) -> tf.Tensor:
  """LogAndSign features of a `[..., 1]` tensor of gradients; returns `[..., 2]`."""
  log = tf.maximum(tf.math.log(tf.abs(grads) + eps) / k, -1.0)
  sign = tf.clip_by_value(grads * math.exp(k), -1.0, 1.0)
  return tf.concat([log, sign], axis=-1)


class LogAndSign(snt.Module):
  """Module form of `log_and_sign` with `k` fixed at construction."""

  def __init__(self, k: float = 5.0, eps: float = 1e-10, name: Optional[str] = None):
    super().__init__(name=name)
    if k <= 0:
      raise ValueError(f"LogAndSign: `k` must be positive, got {k}")
    self.k = float(k)
    self.eps = float(eps)

  def __call__(self, grads: tf.Tensor) -> tf.Tensor:
    return log_and_sign(grads, self.k, self.eps)

  def output_size(self, input_size: int) -> int:
    return 2 * input_size


class Identity(snt.Module):
  """No preprocessing."""

  def __call__(self, grads: tf.Tensor) -> tf.Tensor:
    return grads

  def output_size(self, input_size: int) -> int:
    return input_size


PREPROCESSORS: Dict[str, Callable[..., snt.Module]] = {
    "LogAndSign": LogAndSign,
    "identity": Identity,
}


def make_preprocessor(name: Optional[str], options: Optional[Dict[str, Any]] = None) -> snt.Module:
  """Builds the preprocessing named `name` (None means no preprocessing)."""
  if name is None:
    name = "identity"
  if name not in PREPROCESSORS:
    raise ValueError(
        f"unknown preprocess_name {name!r}; expected one of {sorted(PREPROCESSORS)} or None")
  return PREPROCESSORS[name](**(options or {}))
