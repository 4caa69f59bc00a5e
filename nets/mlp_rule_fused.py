"""The forward step of `nets.PerParameterMLP` as one fused C++ op per parameter tensor.

`mlp_rule_kernels.cc` computes, for one tensor, the new statistics (momenta, second moment,
Adafactor's row and column statistics), the nine features, the per-coordinate MLP and the update
in two passes over memory (the reductions, then everything per coordinate), where the reference
ops of `nets.mlp_rule` (`tensor_features`, `mlp_update`) make ~60 passes and write out every
intermediate. The schedule's step sizes (one scalar per tensor and step) and the progress
features stay TF ops. Results agree with the reference to float32 round-off
(tests/mlp_rule_fused_test.py).

Only the forward step is fused. `fused_rule_step` wraps it in `tf.custom_gradient` whose gradient
recomputes the reference step (`nets.mlp_rule.rule_step`) and differentiates it, so gradients to
the gradients, the parameters, the state and every weight are the reference path's, and so are
gradients of gradients (the recomputation is made of differentiable TF ops). Meta-training thus
pays the reference's cost in the backward pass plus one fused forward step.

The op is compiled on first use like the LSTM's kernels (`nets.lstm.lstm_kernels`): into
`$XDG_CACHE_HOME/l2l` (default `~/.cache/l2l`), keyed by the source, TensorFlow's version and the
CPU, with `$CXX` (default `g++`). Without a compiler, after a failed build, with
`L2L_NO_KERNELS=1`, or on a machine with accelerators (the op is CPU-only) the rule runs the
reference ops (same results, slower).
"""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from nets import kernel_build

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlp_rule_kernels.cc")
_kernels: Dict[str, Any] = {}  # Caches the loaded op library (or the reason it is unavailable).


@tf.autograph.experimental.do_not_convert
def mlp_rule_kernels() -> Optional[Any]:
  """The op library of `mlp_rule_kernels.cc`, compiled on first use; None if unavailable."""
  return kernel_build.load(_SOURCE, _kernels, "fused PerParameterMLP kernel")


def applies(grads: Sequence[tf.Tensor], params: Sequence[tf.Tensor], state: Any) -> bool:
  """Whether `fused_rule_step` can run these tensors: float32, on CPU, the op built."""
  tensors = [*grads, *params, *state.m, *state.v, *state.row, *state.col]
  if not tensors or any(t.dtype != tf.float32 for t in tensors):
    return False
  if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
    # The op has a CPU kernel only: with accelerators, run it only on tensors placed on CPU.
    if not all("CPU" in (getattr(t, "device", "") or "").upper() for t in tensors):
      return False
  return mlp_rule_kernels() is not None


def _forward(kernels: Any, grads, params, m, v, row, col, step, num_steps, layers,
             schedule_layers, log_lr, direction_scale: float, magnitude_scale: float,
             schedule_scale: float, use_tensor_features: bool, size_scale=None,
             direction_factor=None):
  """The fused forward step: (updates, m', v', row', col'), one op per tensor."""
  from nets import mlp_rule  # pylint: disable=g-import-not-at-top (mlp_rule imports this module)
  progress = mlp_rule.progress_features(step, num_steps)
  # The schedule (one step size per tensor) by the reference's own ops: a few small ops.
  sizes = mlp_rule.tensor_step_sizes(grads, m, v, step, progress, schedule_layers, log_lr,
                                     schedule_scale, use_tensor_features, size_scale)
  attrs = dict(decays=[float(d) for d in mlp_rule.MOMENTUM_DECAYS],
               adam_momentum=mlp_rule.ADAM_MOMENTUM, rms_decay=mlp_rule.RMS_DECAY,
               rms_rate=1. - mlp_rule.RMS_DECAY, epsilon=mlp_rule.EPSILON,
               feature_clip=mlp_rule.FEATURE_CLIP, direction_scale=float(direction_scale),
               magnitude_scale=float(magnitude_scale))
  ws, bs = [w for w, _ in layers], [b for _, b in layers]
  if direction_factor is None:
    direction_factor = tf.ones([len(grads)])
  outs = [kernels.l2l_mlp_rule_step(*t, step, progress, sizes[i], direction_factor[i], ws, bs,
                                    **attrs)
          for i, t in enumerate(zip(grads, params, m, v, row, col))]
  return tuple(list(x) for x in zip(*outs))


def fused_rule_step(grads: Sequence[tf.Tensor], params: Sequence[tf.Tensor],
                    m: Sequence[tf.Tensor], v: Sequence[tf.Tensor], row: Sequence[tf.Tensor],
                    col: Sequence[tf.Tensor], step: tf.Tensor, num_steps: tf.Tensor,
                    layers: Sequence[Tuple[tf.Tensor, tf.Tensor]],
                    schedule_layers: Sequence[Tuple[tf.Tensor, tf.Tensor]], log_lr: tf.Tensor,
                    direction_scale: float, magnitude_scale: float, schedule_scale: float,
                    use_tensor_features: bool = False, size_scale: Optional[tf.Tensor] = None,
                    direction_factor: Optional[tf.Tensor] = None
                    ) -> Tuple[List[tf.Tensor], Tuple[Tuple[tf.Tensor, ...], ...]]:
  """`nets.mlp_rule.rule_step` with a fused forward pass and the reference's gradients.

  Same arguments and results as `rule_step` (float32 gradients and parameters; see `applies`).
  The gradient recomputes `rule_step` with TF ops and differentiates it (see the module doc).

  Raises:
    RuntimeError: the op is unavailable (call only when `applies` is True).
  """
  from nets import mlp_rule  # pylint: disable=g-import-not-at-top (mlp_rule imports this module)
  kernels = mlp_rule_kernels()
  if kernels is None:
    raise RuntimeError(f"fused PerParameterMLP op unavailable: {_kernels.get('error')}")
  k = len(grads)
  num_layers, num_schedule = len(layers), len(schedule_layers)
  if size_scale is None:
    size_scale = tf.ones([k])
  if direction_factor is None:
    direction_factor = tf.ones([k])
  flat = [tf.convert_to_tensor(t) for t in
          [*grads, *params, *m, *v, *row, *col, step, num_steps,
           *[t for wb in layers for t in wb], *[t for wb in schedule_layers for t in wb], log_lr,
           size_scale, direction_factor]]

  def unflatten(args):
    lists = [list(args[i * k:(i + 1) * k]) for i in range(6)]
    rest = args[6 * k:]
    step, num_steps = rest[0], rest[1]
    lw = rest[2:2 + 2 * num_layers]
    sw = rest[2 + 2 * num_layers:2 + 2 * (num_layers + num_schedule)]
    pairs = lambda t: [(t[2 * i], t[2 * i + 1]) for i in range(len(t) // 2)]
    return (*lists, step, num_steps, pairs(lw), pairs(sw), rest[-3], direction_scale,
            magnitude_scale, schedule_scale, use_tensor_features, rest[-2], rest[-1])

  def reference(args) -> List[tf.Tensor]:
    updates, stats = mlp_rule.rule_step(*unflatten(args))
    return [*updates, *[t for s in stats for t in s]]

  @tf.custom_gradient
  def run(*args):
    updates, *stats = _forward(kernels, *unflatten(args))
    outputs = [*updates, *[t for s in stats for t in s]]

    def grad(*d_outputs):
      # Only the forward pass is fused: differentiate the reference step, recomputed.
      with tf.GradientTape() as tape:
        tape.watch(args)
        ref = reference(args)
      used = [(o, d) for o, d in zip(ref, d_outputs) if d is not None]
      if not used:
        return [None] * len(args)
      return tape.gradient([o for o, _ in used], list(args),
                           output_gradients=[d for _, d in used])

    return outputs, grad

  outputs = run(*flat)
  updates = list(outputs[:k])
  stats = tuple(tuple(outputs[(1 + i) * k:(2 + i) * k]) for i in range(4))
  return updates, stats
