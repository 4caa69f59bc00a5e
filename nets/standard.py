"""A deep LSTM over the whole gradient vector at once (the 2016 code's `StandardDeepLSTM`).

Unlike the coordinatewise net, the LSTM sees every coordinate together, as one row of a batch
of one, so its size is tied to the number of coordinates N fixed at construction:

    features = preprocess(g)                      (per coordinate, flattened: [1, N * features])
    out, state = DeepLSTM(features, state)        (out: [1, N])
    update = scale * out
"""

import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from nets import base
from nets import coordinatewise
from nets import lstm
from nets import preprocess


class StandardDeepLSTM(base.UpdateRule):
  """A deep LSTM whose input is all N gradient coordinates and output all N updates.

  Args:
    output_size: N, the total number of coordinates of the parameters it updates.
    layers: hidden sizes of the LSTM layers.
    preprocess_name: "LogAndSign" or None; applied to each coordinate.
    preprocess_options: kwargs of the preprocessing, e.g. `{"k": 5}`.
    scale: the output is multiplied by this.
    initializer: None (truncated normal, stddev 1/sqrt(fan_in)), "zeros", or a normal stddev.
    forget_bias: added to the forget gate at run time.
    seed: op seed of the weight initializers.
  """

  def __init__(self, output_size: int, layers: Sequence[int] = (20, 20),
               preprocess_name: Optional[str] = None,
               preprocess_options: Optional[Dict[str, Any]] = None, scale: float = 1.0,
               initializer: lstm.Initializer = None, forget_bias: float = 1.0,
               seed: Optional[int] = None, name: str = "standard_deep_lstm"):
    super().__init__(name=name)
    if isinstance(output_size, bool) or not isinstance(output_size, numbers.Integral):
      raise TypeError(f"StandardDeepLSTM: `output_size` must be an int, got {output_size!r}")
    if output_size <= 0:
      raise ValueError(f"StandardDeepLSTM: `output_size` must be positive, got {output_size}")
    self.output_size = int(output_size)
    self._remember_options(output_size=self.output_size, layers=tuple(layers),
                           preprocess_name=preprocess_name,
                           preprocess_options=dict(preprocess_options or {}), scale=scale,
                           initializer=initializer, forget_bias=forget_bias, seed=seed)
    self.scale = float(scale)
    with self.name_scope:
      self.preprocess = preprocess.make_preprocessor(preprocess_name, preprocess_options)
      self.core = lstm.DeepLSTMCore(self.preprocess.output_size(self.output_size), layers,
                                    self.output_size, initializer=initializer,
                                    forget_bias=forget_bias, seed=seed, name="core")

  def _check_size(self, tensors: Sequence[tf.Tensor], argument: str) -> None:
    size = coordinatewise.num_coordinates(tensors)
    if size != self.output_size:
      raise ValueError(f"StandardDeepLSTM: `{argument}` have {size} coordinates in total; "
                       f"the net was built for output_size={self.output_size}")

  def initial_state(self, params: Sequence[tf.Tensor]) -> lstm.LSTMState:
    params = base.as_list(params, "params")
    self._check_size(params, "params")
    return self.core.initial_state(1, params[0].dtype)

  def __call__(self, grads: Sequence[tf.Tensor],
               state: lstm.LSTMState) -> Tuple[List[tf.Tensor], lstm.LSTMState]:
    grads = base.as_list(grads)
    self._check_size(grads, "grads")
    features = self.preprocess(coordinatewise.flatten_coordinates(grads))  # [N, features]
    out, state = self.core(tf.reshape(features, [1, -1]), state)
    column = tf.reshape(out * self.scale, [-1, 1])
    return coordinatewise.split_coordinates(column, grads), state
