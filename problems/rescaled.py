"""Random rescaling of a problem's parameters (Lv et al. 2017, "Learning gradient descent:
better generalization and longer horizons", section 3.2).

`rescaled(make_loss, max_log_scale, seed)` returns the same problem in new coordinates: every
trainable parameter `w` becomes `c * v`, where each instance draws `c` per coordinate as
`exp(U[-max_log_scale, max_log_scale])` and the new parameter `v` starts at `w0 / c`. The model
computes the same function from the same starting point, but the gradients with respect to `v`
are `c` times larger and the distance to travel `1 / c` times longer, coordinate by coordinate.
Meta-training on such instances discourages a learned optimizer from memorising the gradient
scale of its training problem.

`c` is a problem constant (a non-trainable variable), so the learned optimizer never updates it
and each problem instance, drawn when a `MetaLoss` resets, has its own.
"""

import numbers
from typing import Optional

import tensorflow as tf

from l2l.capture import MakeLoss


def rescaled(make_loss: MakeLoss, max_log_scale: float, seed: Optional[int] = 0) -> MakeLoss:
  """`make_loss` with every trainable parameter randomly rescaled per coordinate.

  Args:
    make_loss: the problem; its trainable variables get the scales.
    max_log_scale: the scales are `exp(U[-max_log_scale, max_log_scale])`; 0 returns
      `make_loss` unchanged.
    seed: seeds the scales (None: nondeterministic).

  Raises:
    ValueError: `max_log_scale` is negative or not a number.
  """
  if (not isinstance(max_log_scale, numbers.Real) or isinstance(max_log_scale, bool)
      or not max_log_scale >= 0):
    raise ValueError(f"max_log_scale must be a number >= 0, got {max_log_scale!r}")
  if max_log_scale == 0:
    return make_loss
  with tf.init_scope():
    generator = (tf.random.Generator.from_seed(seed) if seed is not None
                 else tf.random.Generator.from_non_deterministic_state())

  def creator(next_creator, **kwargs):
    trainable = kwargs.get("trainable")
    if trainable is not None and not trainable:
      return next_creator(**kwargs)
    initial, dtype = kwargs.get("initial_value"), kwargs.get("dtype")
    drawn = []

    def original():  # The wrapped initial value, drawn at most once per instance.
      if not drawn:
        drawn.append(tf.convert_to_tensor(initial() if callable(initial) else initial,
                                          dtype=dtype))
      return drawn[0]

    def draw_scale():
      value = original()
      log_scale = generator.uniform(value.shape, -max_log_scale, max_log_scale,
                                    dtype=value.dtype)
      return tf.exp(log_scale)

    name = (kwargs.get("name") or "Variable").split(":")[0]
    scale = next_creator(initial_value=draw_scale, trainable=False, dtype=dtype,
                         name=f"{name}_scale")
    scaled = dict(kwargs, initial_value=lambda: original() / scale)
    return scale * next_creator(**scaled)

  def make_rescaled_loss():
    with tf.variable_creator_scope(creator):
      return make_loss()

  return make_rescaled_loss
