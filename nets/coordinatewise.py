"""The coordinatewise deep LSTM optimizer of Andrychowicz et al. 2016 (section 2.1).

One small LSTM is shared by every parameter coordinate; each coordinate is a row of one batch,
so a single call updates all the parameters given to it:

    features = preprocess(g)               (per coordinate)
    out, state = DeepLSTM(features, state)
    update = scale * Linear(out)

For float32 with LogAndSign or no preprocessing, a step is one fused op and its gradient another
(`lstm.fused_coordinatewise_step`); `core.fast_path = False` runs the reference TF ops instead.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from nets import base
from nets import lstm
from nets import preprocess


def flatten_coordinates(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
  """Concatenates tensors into one `[num_coordinates, 1]` column."""
  return tf.concat([tf.reshape(t, [-1, 1]) for t in tensors], axis=0)


def split_coordinates(column: tf.Tensor, like: Sequence[tf.Tensor]) -> List[tf.Tensor]:
  """Inverse of `flatten_coordinates`: splits a column back into tensors shaped like `like`."""
  if len(like) == 1:
    return [tf.reshape(column, like[0].shape)]
  sizes = [t.shape.num_elements() for t in like]
  parts = tf.split(column, sizes, axis=0)
  return [tf.reshape(p, t.shape) for p, t in zip(parts, like)]


def num_coordinates(tensors: Sequence[tf.Tensor]) -> int:
  total = 0
  for t in tensors:
    if t.shape.num_elements() is None:
      raise ValueError(f"parameters need fully defined shapes, got {t.shape}")
    total += t.shape.num_elements()
  return total


class CoordinateWiseDeepLSTM(base.UpdateRule):
  """A deep LSTM applied to every parameter coordinate independently (shared weights).

  Args:
    layers: hidden sizes of the LSTM layers; `()` leaves only the linear output layer (a learned
      elementwise function of the preprocessed gradient, as the 2016 `simple` config).
    preprocess_name: "LogAndSign" or None.
    preprocess_options: kwargs of the preprocessing, e.g. `{"k": 5}`.
    scale: the output is multiplied by this.
    initializer: None (truncated normal, stddev 1/sqrt(fan_in)), "zeros", or a normal stddev.
    forget_bias: added to the forget gate at run time.
    seed: op seed of the weight initializers.
  """

  def __init__(self, layers: Sequence[int] = (20, 20), preprocess_name: Optional[str] = None,
               preprocess_options: Optional[Dict[str, Any]] = None, scale: float = 1.0,
               initializer: lstm.Initializer = None, forget_bias: float = 1.0,
               seed: Optional[int] = None, name: str = "coordinatewise_deep_lstm"):
    super().__init__(name=name)
    self._remember_options(layers=tuple(layers), preprocess_name=preprocess_name,
                           preprocess_options=dict(preprocess_options or {}), scale=scale,
                           initializer=initializer, forget_bias=forget_bias, seed=seed)
    self.scale = float(scale)
    with self.name_scope:
      self.preprocess = preprocess.make_preprocessor(preprocess_name, preprocess_options)
      self.core = lstm.DeepLSTMCore(self.preprocess.output_size(1), layers, 1,
                                    initializer=initializer, forget_bias=forget_bias, seed=seed,
                                    name="core")

  def _fused_step(self, grads: List[tf.Tensor], state: lstm.LSTMState
                  ) -> Optional[Tuple[List[tf.Tensor], lstm.LSTMState]]:
    """The whole step as one fused op (`lstm.fused_coordinatewise_step`) where it applies:
    float32, the core's `fast_path`, LSTM layers, LogAndSign or no preprocessing. Else None."""
    core = self.core
    if not (core.fast_path and core.layers and grads[0].dtype == tf.float32
            and isinstance(self.preprocess, (preprocess.LogAndSign, preprocess.Identity))):
      return None
    log_and_sign = self.preprocess.k if isinstance(self.preprocess, preprocess.LogAndSign) else None
    eps = self.preprocess.eps if log_and_sign is not None else 0.0
    g = tf.concat([tf.reshape(t, [-1]) for t in grads], axis=0) if len(grads) > 1 \
        else tf.reshape(grads[0], [-1])
    result = lstm.fused_coordinatewise_step(
        g, state, core.weights, core.biases, core.out_w, core.out_b, core.forget_bias,
        log_and_sign, eps, self.scale)
    if result is None:
      return None
    update, state = result
    return split_coordinates(update, grads), state

  def initial_state(self, params: Sequence[tf.Tensor]) -> lstm.LSTMState:
    params = base.as_list(params, "params")
    return self.core.initial_state(num_coordinates(params), params[0].dtype)

  def __call__(self, grads: Sequence[tf.Tensor],
               state: lstm.LSTMState) -> Tuple[List[tf.Tensor], lstm.LSTMState]:
    grads = base.as_list(grads)
    fused = self._fused_step(grads, state)
    if fused is not None:
      return fused
    features = self.preprocess(flatten_coordinates(grads))
    out, state = self.core(features, state)
    return split_coordinates(out * self.scale, grads), state
