"""Central finite differences of a scalar function of tf.Variables (a shared test reference)."""

from typing import Callable, List, Sequence

import numpy as np
import tensorflow as tf


def central_differences(loss_fn: Callable[[], tf.Tensor], variables: Sequence[tf.Variable],
                        eps: float = 1e-6) -> List[np.ndarray]:
  """d loss / d variable by (f(v + eps) - f(v - eps)) / (2 eps), one coordinate at a time.

  Each variable is restored to its value afterwards.
  """
  numeric = []
  for var in variables:
    flat = var.numpy().ravel()
    grad = np.zeros_like(flat)
    for i in range(flat.size):
      values = []
      for sign in (1., -1.):
        shifted = flat.copy()
        shifted[i] += sign * eps
        var.assign(shifted.reshape(var.shape))
        values.append(float(loss_fn()))
      var.assign(flat.reshape(var.shape))
      grad[i] = (values[0] - values[1]) / (2 * eps)
    numeric.append(grad.reshape(var.shape))
  return numeric
