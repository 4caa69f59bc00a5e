"""The kernel deep LSTM optimizer of the 2016 code (Andrychowicz et al. 2016, `KernelDeepLSTM`).

For convolution kernels of shape `[kh, kw, cin, cout]` the LSTM sees one row per
`(cin, cout)` pair holding that filter's `kh * kw` spatial gradient values, and returns
`kh * kw` updates for it; the same LSTM is shared by every row of every kernel given to it:

    rows[c * cout + d, a * kw + b] = g[a, b, c, d]
    features = preprocess(rows)               (per value, flattened per row)
    out, state = DeepLSTM(features, state)    (out: [rows, kh * kw])
    update = scale * unrows(out)
"""

import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from nets import base
from nets import lstm
from nets import preprocess


def check_kernels(tensors: Sequence[tf.Tensor], kernel_shape: Tuple[int, int],
                  argument: str = "grads") -> None:
  """Raises ValueError unless every tensor has a fully defined shape `[kh, kw, cin, cout]`."""
  for i, t in enumerate(tensors):
    shape = t.shape
    if (shape.rank != 4 or not shape.is_fully_defined()
        or tuple(shape[:2].as_list()) != tuple(kernel_shape)):
      raise ValueError(
          f"KernelDeepLSTM: `{argument}[{i}]` has shape {shape}; expected a fully defined "
          f"[{kernel_shape[0]}, {kernel_shape[1]}, in_channels, out_channels] kernel")


def kernel_rows(kernels: Sequence[tf.Tensor]) -> tf.Tensor:
  """Concatenates `[kh, kw, cin, cout]` kernels into `[sum(cin * cout), kh * kw]` rows."""
  rows = []
  for k in kernels:
    kh, kw, cin, cout = k.shape.as_list()
    rows.append(tf.reshape(tf.transpose(k, [2, 3, 0, 1]), [cin * cout, kh * kw]))
  return tf.concat(rows, axis=0)


def split_kernel_rows(rows: tf.Tensor, like: Sequence[tf.Tensor]) -> List[tf.Tensor]:
  """Inverse of `kernel_rows`: splits rows back into kernels shaped like `like`."""
  shapes = [[int(n) for n in k.shape] for k in like]
  parts = tf.split(rows, [cin * cout for _, _, cin, cout in shapes], axis=0)
  return [tf.transpose(tf.reshape(p, [cin, cout, kh, kw]), [2, 3, 0, 1])
          for p, (kh, kw, cin, cout) in zip(parts, shapes)]


def row_features(rows: tf.Tensor, preprocessor: tf.Module) -> tf.Tensor:
  """Applies `preprocessor` to every value of `[n, m]` rows; returns `[n, m * features]`.

  The features of one value are adjacent (for LogAndSign: log, sign, log, sign, ...), as the
  2016 code's `expand_dims` / preprocess / reshape.
  """
  features = preprocessor(tf.expand_dims(rows, -1))
  return tf.reshape(features, [-1, features.shape[1] * features.shape[2]])


class KernelDeepLSTM(base.UpdateRule):
  """A deep LSTM over the spatial gradient of each filter of convolution kernels.

  Args:
    layers: hidden sizes of the LSTM layers.
    kernel_shape: `(kh, kw)`, the spatial shape of every kernel it updates.
    preprocess_name: "LogAndSign" or None; applied to each gradient value.
    preprocess_options: kwargs of the preprocessing, e.g. `{"k": 5}`.
    scale: the output is multiplied by this.
    initializer: None (truncated normal, stddev 1/sqrt(fan_in)), "zeros", or a normal stddev.
    forget_bias: added to the forget gate at run time.
    seed: op seed of the weight initializers.
  """

  def __init__(self, layers: Sequence[int] = (20, 20), kernel_shape: Sequence[int] = (3, 3),
               preprocess_name: Optional[str] = None,
               preprocess_options: Optional[Dict[str, Any]] = None, scale: float = 1.0,
               initializer: lstm.Initializer = None, forget_bias: float = 1.0,
               seed: Optional[int] = None, name: str = "kernel_deep_lstm"):
    super().__init__(name=name)
    kernel_shape = tuple(kernel_shape)
    if len(kernel_shape) != 2 or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0
        for n in kernel_shape):
      raise ValueError(f"KernelDeepLSTM: `kernel_shape` must be two positive ints (kh, kw), "
                       f"got {kernel_shape}")
    kernel_shape = (int(kernel_shape[0]), int(kernel_shape[1]))
    self._remember_options(layers=tuple(layers), kernel_shape=kernel_shape,
                           preprocess_name=preprocess_name,
                           preprocess_options=dict(preprocess_options or {}), scale=scale,
                           initializer=initializer, forget_bias=forget_bias, seed=seed)
    self.kernel_shape = kernel_shape
    self.scale = float(scale)
    row_size = kernel_shape[0] * kernel_shape[1]
    with self.name_scope:
      self.preprocess = preprocess.make_preprocessor(preprocess_name, preprocess_options)
      self.core = lstm.DeepLSTMCore(self.preprocess.output_size(row_size), layers, row_size,
                                    initializer=initializer, forget_bias=forget_bias, seed=seed,
                                    name="core")

  def initial_state(self, params: Sequence[tf.Tensor]) -> lstm.LSTMState:
    params = base.as_list(params, "params")
    check_kernels(params, self.kernel_shape, "params")
    num_rows = sum(p.shape[2] * p.shape[3] for p in params)
    return self.core.initial_state(num_rows, params[0].dtype)

  def __call__(self, grads: Sequence[tf.Tensor],
               state: lstm.LSTMState) -> Tuple[List[tf.Tensor], lstm.LSTMState]:
    grads = base.as_list(grads)
    check_kernels(grads, self.kernel_shape)
    out, state = self.core(row_features(kernel_rows(grads), self.preprocess), state)
    return split_kernel_rows(out * self.scale, grads), state
