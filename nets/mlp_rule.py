"""A versatile per-parameter learned optimizer: a small MLP over scale-free features.

The rule of small_fc_lopt / AdafacMLPLOpt (Metz et al. 2022, google/learned_optimization),
VeLO (Metz et al. 2022) and Celo (Moudgil et al. 2025), written for l2l's update-rule interface.
One MLP is shared by every coordinate of every tensor; it reads, per coordinate,

    f1 = g / (sqrt(v) + eps)                 the gradient in Adam's units
    f2..f4 = m_b / (sqrt(v) + eps)           momenta at b = 0.5, 0.9, 0.99 (bias-corrected)
    f5 = g / (sqrt(v_fac) + eps)             the gradient over Adafactor's factored second
    f6 = m_0.9 / (sqrt(v_fac) + eps)         moment (row x column statistics of a matrix;
                                             v itself for vectors and scalars)
    f7 = p / rms(p)                          the parameter, normalised over its tensor
    f8 = g / rms(g)                          the gradient, normalised over its tensor
    f9 = log(rms(p) + 1e-3) / 3              the scale of the parameter's tensor

(v: the second moment at decay 0.999, bias-corrected; every feature clipped to [-10, 10]) and
the training progress `s = min(t / T, 1)` of step t of a horizon of T steps, as
`[s, s^2, tanh(10 s), tanh(10 (1 - s))]`. All inputs are invariant to the scale of the loss;
all but f9 to the scale of the parameters (f9 lets the rule size its steps to the parameters,
the way VeLO scales its updates by the tensor's norm). The MLP outputs a direction correction d and a log-magnitude
m per coordinate; a second small MLP of the progress alone gives a learned schedule q. The
update starts from Adam's:

    u = -lr * exp(c_q tanh(q)) * (m_0.9 / (sqrt(v) + eps) + c_d tanh(d)) * exp(c_m tanh(m))

with lr = exp(log_lr) learned too. The tanh bounds keep every learned factor within a fixed
range of Adam's step (exp(+-c_m), exp(+-c_q), a direction change of at most c_d, so at most
exp(2) ~ 7.4 times larger or smaller by default): a meta-training step can make the rule worse,
never unbounded, which is what kept PES meta-training stable here (unbounded outputs diverged
after a few hundred meta-steps). The last layers of both MLPs start at zero, so an untrained
rule *is* Adam (beta1 0.9, beta2 0.999) at `learning_rate`: meta-training starts at parity with
a sound hand-designed rule and learns a schedule, a step size and per-coordinate corrections.

**Online step-size adaptation** (`step_adaptation` > 0; off in `versatile-mlp-v1`). A learned
schedule is a function of the progress, so it gives every task the same step size, and no one
step size suits a shallow MLP and a deep ReLU or conv net alike (tuned Adam's rate differs by
10x across the held-out tasks). The adaptation multiplies the step size by exp(a), a per-run
state updated at every step from the cosine c between the new gradient and the previous Adam
direction (`adaptation_signal`: minus the normalised hypergradient of the loss with respect to the
log step size, Baydin et al. 2018):

    a <- clip(a + beta * (c if c > 0 else k * c), adaptation_min, adaptation_max)

c > 0 means the last step fell short, c < 0 that it overshot. With the defaults
(`adaptation_max` 0, `adaptation_min` -3, asymmetry k > 1) it only ever slows the learned rule
down, and faster than it recovers: on a task where the learned step oscillates or spikes, the
step shrinks within tens of steps, and under pure gradient noise (E[c] ~ 0) the asymmetry lets it
anneal. beta = exp(log_adaptation_rate) is a weight of the rule (meta-trainable).

**Quiet gate** (`quiet_gate` > 0; off in v1 and v2, 1e-4 in `versatile-mlp-v3`). Adam's step m / (sqrt(v) + eps) vanishes
with the gradient; the learned correction c_d tanh(d) does not (its inputs are scale-free and
include the parameter itself), so an ungated rule keeps moving the weights of a classifier whose
loss has reached zero, until a minibatch it no longer fits blows the run up. `quiet_factors`
scales each tensor's c_d by min(1, rms(g) / (quiet_gate * (rms of the recent gradients + eps))).
At 0.1 .. 1 the gate also fades the correction through a classifier's ordinary late training
(its gradient keeps falling) and costs the rule its lead there; at 1e-3 .. 1e-5 it acts only
once a gradient has fallen by orders of magnitude (float32 zero loss) and keeps it.

The maths are module-level functions of tensors (`tensor_features`, `progress_features`,
`mlp_update`); the module holds the weights and maps them over the parameters. All parameters
share one MLP call: their features are concatenated into one [num_coordinates, 9] matrix.
"""

import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from nets import base
from nets import mlp_rule_fused

MOMENTUM_DECAYS = (0.5, 0.9, 0.99)
ADAM_MOMENTUM = 1  # Index of 0.9 in MOMENTUM_DECAYS: the base direction's momentum.
RMS_DECAY = 0.999
EPSILON = 1e-8
FEATURE_CLIP = 10.
NUM_FEATURES = 9
NUM_PROGRESS_FEATURES = 4
NUM_TENSOR_FEATURES = 3  # `schedule_features`: snr at 0.9 and 0.99, cos(g, m_0.9).
SCHEDULE_SAMPLE = 4096  # Coordinates per tensor that `schedule_features` reads (at most ~this).
Tensors = Tuple[tf.Tensor, ...]


class MLPRuleState(NamedTuple):
  step: tf.Tensor       # Float32 scalar: steps taken so far.
  num_steps: tf.Tensor  # Float32 scalar: the horizon T.
  m: Tensors            # Per parameter: [*shape, len(MOMENTUM_DECAYS)] momenta.
  v: Tensors            # Per parameter: second moments.
  row: Tensors          # Per parameter: shape[:-1] row statistics of g^2 (rank >= 2), else [1].
  col: Tensors          # Per parameter: shape[:-2] + shape[-1:] column statistics, else [1].
  log_scale: tf.Tensor  # [num_params] (the parameters' dtype): the step-size adaptation's log-factors.


def factored(shape: Sequence[int]) -> bool:
  """Whether a parameter of this shape keeps Adafactor's row and column statistics."""
  return len(shape) >= 2


def progress_features(step: tf.Tensor, num_steps: tf.Tensor) -> tf.Tensor:
  """`[s, s^2, tanh(10 s), tanh(10 (1 - s))]` of the progress s = min(step / num_steps, 1)."""
  s = tf.minimum(step / num_steps, 1.)
  return tf.stack([s, s * s, tf.tanh(10. * s), tf.tanh(10. * (1. - s))])


def _rms(x: tf.Tensor, floor: float) -> tf.Tensor:
  return tf.sqrt(tf.reduce_mean(tf.square(x)) + floor)


def tensor_features(g: tf.Tensor, p: tf.Tensor, m: tf.Tensor, v: tf.Tensor, row: tf.Tensor,
                    col: tf.Tensor, step: tf.Tensor
                    ) -> Tuple[tf.Tensor, tf.Tensor, Tuple[tf.Tensor, ...]]:
  """One parameter tensor's features, its Adam direction and its new statistics.

  Args:
    g, p: the gradient and the parameter (the same shape and float dtype).
    m, v, row, col: the statistics of `MLPRuleState` for this parameter (g's dtype).
    step: the step being taken, t >= 1 (a scalar of g's dtype).

  Returns:
    `(features [n, NUM_FEATURES], adam_direction [n], (m', v', row', col'))`, n = g.size.
  """
  decays = tf.constant(MOMENTUM_DECAYS, g.dtype)
  m = decays * m + (1. - decays) * g[..., None]
  g2 = tf.square(g)
  v = RMS_DECAY * v + (1. - RMS_DECAY) * g2
  m_hat = m / (1. - tf.pow(decays, step))
  v_hat = v / (1. - tf.pow(RMS_DECAY, step))
  inv_rms = 1. / (tf.sqrt(v_hat) + EPSILON)
  if factored(g.shape):
    row = RMS_DECAY * row + (1. - RMS_DECAY) * tf.reduce_mean(g2, axis=-1)
    col = RMS_DECAY * col + (1. - RMS_DECAY) * tf.reduce_mean(g2, axis=-2)
    # Adafactor: v_fac[i, j] = row[i] col[j] / mean(row); the bias corrections cancel but one.
    row_mean = tf.reduce_mean(row, axis=-1, keepdims=True)
    v_fac = (row[..., :, None] * col[..., None, :] / (row_mean[..., None] + 1e-30)
             / (1. - tf.pow(RMS_DECAY, step)))
    inv_fac = 1. / (tf.sqrt(v_fac) + EPSILON)
  else:
    inv_fac = inv_rms
  adam_direction = m_hat[..., ADAM_MOMENTUM] * inv_rms
  columns = [g * inv_rms] + [m_hat[..., i] * inv_rms for i in range(len(MOMENTUM_DECAYS))] + [
      g * inv_fac, m_hat[..., ADAM_MOMENTUM] * inv_fac, p / _rms(p, 1e-12), g / _rms(g, 1e-30),
      tf.fill(tf.shape(g), tf.math.log(_rms(p, 1e-12) + 1e-3) / 3.)]
  features = tf.clip_by_value(tf.stack([tf.reshape(c, [-1]) for c in columns], axis=1),
                              -FEATURE_CLIP, FEATURE_CLIP)
  return features, tf.reshape(adam_direction, [-1]), (m, v, row, col)


def schedule_features(g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
  """The tensor's `[NUM_TENSOR_FEATURES]` inputs to the schedule: how its optimization is going.

  From the statistics *before* this step (`m`, `v` as in `MLPRuleState`; zeros at step 1) and the
  new gradient `g`, on at most about `SCHEDULE_SAMPLE` coordinates taken at a fixed stride:

      snr_b = mean(|m_b| / (sqrt(v) + eps))   b = 0.9, 0.99 (bias-corrected): ~1 while the
                                              gradient keeps its sign, ~sqrt((1 - b) / (1 + b))
                                              when it is noise or oscillates
      cos = <g, m_0.9> / (|g| |m_0.9|)        < 0 when the new gradient reverses the momentum

  All three are invariant to the scales of the loss and the parameters, and to the tensor's size:
  they let the learned schedule slow down a tensor that oscillates or has reached its noise floor
  (what tuned Adam does with a smaller learning rate on a deeper or convolutional net), whatever
  the task. At step 1 they are 0.
  """
  n = int(g.shape.num_elements())
  stride = max(1, -(-n // SCHEDULE_SAMPLE))
  g = tf.reshape(g, [-1])[::stride]
  m = tf.reshape(m, [-1, len(MOMENTUM_DECAYS)])[::stride]
  v = tf.reshape(v, [-1])[::stride]
  previous = step - 1.
  decays = tf.constant(MOMENTUM_DECAYS, g.dtype)
  m_hat = m / tf.maximum(1. - tf.pow(decays, previous), 1e-8)  # m = 0 at step 1: then 0.
  v_hat = v / tf.maximum(1. - tf.pow(RMS_DECAY, previous), 1e-8)
  inv_rms = 1. / (tf.sqrt(v_hat) + EPSILON)
  snr = [tf.reduce_mean(tf.abs(m_hat[:, i]) * inv_rms) for i in (1, 2)]
  dot, g2, m2 = _cosine_sums(g, m[:, ADAM_MOMENTUM])
  cos = _cosine(dot, g2, m2)
  return tf.clip_by_value(tf.stack([*snr, cos]), -2., 2.)


def _unit_scaled(x: tf.Tensor) -> tf.Tensor:
  """`x / max|x|` (zeros stay zeros): the sums of `_cosine_sums` then neither underflow nor
  overflow whatever the scale of x (CPUs flush float32 below ~1e-38 to zero, so the squares of
  gradients of ~1e-20, common once a classifier's loss has reached zero in float32, vanish
  while their products with an O(1) vector do not)."""
  scale = tf.reduce_max(tf.abs(x))
  return x / tf.where(scale > 0, scale, tf.ones_like(scale))


def _cosine_sums(x: tf.Tensor, y: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """`(<x', y'>, |x'|^2, |y'|^2)` of x and y each scaled by its largest magnitude."""
  x, y = _unit_scaled(x), _unit_scaled(y)
  return tf.reduce_sum(x * y), tf.reduce_sum(x * x), tf.reduce_sum(y * y)


def _cosine(dot: tf.Tensor, x2: tf.Tensor, y2: tf.Tensor) -> tf.Tensor:
  """`dot / sqrt(x2 y2)` clipped to [-1, 1]; 0 where x or y is zero."""
  return tf.clip_by_value(dot / (tf.sqrt(x2) * tf.sqrt(y2) + 1e-30), -1., 1.)


def adaptation_signal(grads: Sequence[tf.Tensor], m: Tensors, v: Tensors, step: tf.Tensor,
                      per_tensor: bool) -> tf.Tensor:
  """`[num_tensors]` cosines between each new gradient and the previous step's Adam direction.

  `c = <g_t, m_hat_{t-1} / (sqrt(v_hat_{t-1}) + eps)> / (|g_t| |...|)`, from the statistics *before*
  this step (0 at step 1), on at most about `SCHEDULE_SAMPLE` coordinates per tensor taken at a
  fixed stride (the sums scaled by the stride, so that a tensor weighs by its size). It is minus
  the normalised hypergradient of the loss with respect to the log of the previous step size
  (Baydin et al. 2018, "Online learning rate adaptation with hypergradient descent"): > 0 while
  the new gradient still points along the last step (the step was too short), < 0 when it
  reverses it (too long: the step overshot). `per_tensor`: one cosine per tensor; else one over
  every tensor's coordinates, repeated. Invariant to the scales of the loss and the parameters,
  down to gradients of any size: the sums are taken of g and d scaled by their largest entries
  (`_cosine_sums`), so that a classifier whose float32 loss has reached zero, with gradients of
  1e-20 whose squares the CPU flushes to zero, gets a cosine in [-1, 1] and not the 1e13 that
  the plain formula gives (which set the step size to its maximum in one step and blew such
  runs up). Computed in the gradients' dtype.
  """
  dots, g2s, d2s, g_scales, d_scales = [], [], [], [], []
  previous = step - 1.
  for g, m_, v_ in zip(grads, m, v):
    n = int(g.shape.num_elements())
    stride = max(1, -(-n // SCHEDULE_SAMPLE))
    dtype = g.dtype
    g = tf.reshape(g, [-1])[::stride]
    m_fast = tf.reshape(m_, [-1, len(MOMENTUM_DECAYS)])[::stride, ADAM_MOMENTUM]
    v_ = tf.reshape(tf.cast(v_, dtype), [-1])[::stride]
    t = tf.cast(previous, dtype)
    m_hat = m_fast / tf.maximum(1. - tf.pow(tf.constant(MOMENTUM_DECAYS[ADAM_MOMENTUM], dtype),
                                            t), 1e-8)
    v_hat = v_ / tf.maximum(1. - tf.pow(tf.constant(RMS_DECAY, dtype), t), 1e-8)
    d = m_hat / (tf.sqrt(v_hat) + EPSILON)
    # The sums of g and d each scaled by its largest magnitude (no underflow however small the
    # gradient), and those magnitudes, to combine the tensors.
    g_scales.append(tf.reduce_max(tf.abs(g)))
    d_scales.append(tf.reduce_max(tf.abs(d)))
    dot, g2, d2 = _cosine_sums(g, d)
    dots.append(stride * dot)
    g2s.append(stride * g2)
    d2s.append(stride * d2)
  dots, g2s, d2s = tf.stack(dots), tf.stack(g2s), tf.stack(d2s)
  if per_tensor:
    return _cosine(dots, g2s, d2s)
  # One cosine over every coordinate: each tensor's sums weighed by its scales relative to the
  # model's largest (r_k = G_k / max G, s_k = D_k / max D).
  r, s = _unit_scaled(tf.stack(g_scales)), _unit_scaled(tf.stack(d_scales))
  cos = _cosine(tf.reduce_sum(dots * r * s), tf.reduce_sum(g2s * r * r),
                tf.reduce_sum(d2s * s * s))
  return tf.fill([len(grads)], cos)


def quiet_factors(grads: Sequence[tf.Tensor], v: Tensors, step: tf.Tensor,
                  threshold: float) -> tf.Tensor:
  """`[num_tensors]` factors of the learned direction correction: none on quiet gradients.

      min(1, rms(g_t) / (threshold * (sqrt(mean(v_hat_t)) + eps)))

  per tensor, with v_hat_t the bias-corrected second moment after this step's gradient (decay
  0.999: the gradient's RMS over about the last 1,000 steps), on the same strided sample of at
  most about `SCHEDULE_SAMPLE` coordinates as `adaptation_signal`. Adam's part of the step,
  m / (sqrt(v) + eps), fades by itself when the gradient vanishes; the learned correction
  c_d tanh(d) does not (its features are scale-free, and the parameter's own features do not
  vanish), so without this gate a learned rule keeps moving the weights at a fixed rate once
  the loss has reached zero (measured: 0.2% of a conv net's weights per step, the correction
  1,000 times the Adam step), until a minibatch it can no longer fit blows the run up. A
  gradient at its usual level (ratio ~1, noisy batches a few times less) keeps the whole
  correction; one that has fallen below `threshold` times its recent RMS, or towards Adam's
  eps, scales it down in proportion. Scale-safe: the gradient's sums are taken relative to its
  largest entry.
  """
  factors = []
  for g, v_ in zip(grads, v):
    n = int(g.shape.num_elements())
    stride = max(1, -(-n // SCHEDULE_SAMPLE))
    dtype = g.dtype
    g = tf.reshape(g, [-1])[::stride]
    v_ = tf.reshape(tf.cast(v_, dtype), [-1])[::stride]
    scale = tf.reduce_max(tf.abs(g))
    mean_g2 = tf.reduce_mean(tf.square(_unit_scaled(g)))  # mean(g^2) / scale^2
    rms_g = scale * tf.sqrt(mean_g2)
    mean_v = RMS_DECAY * tf.reduce_mean(v_) + (1. - RMS_DECAY) * tf.square(scale) * mean_g2
    mean_v_hat = mean_v / (1. - tf.pow(tf.constant(RMS_DECAY, dtype), tf.cast(step, dtype)))
    factors.append(tf.minimum(1., rms_g / (threshold * (tf.sqrt(mean_v_hat) + EPSILON))))
  return tf.stack(factors)


def step_sizes(progress: tf.Tensor, tensor_features: Optional[tf.Tensor], num_tensors: int,
               schedule_layers: Sequence[Tuple[tf.Tensor, tf.Tensor]], log_lr: tf.Tensor,
               schedule_scale: float = 2.) -> tf.Tensor:
  """The learned step size of each of `num_tensors` tensors, `[num_tensors]`:

      lr * exp(c_q tanh(q)),   q = schedule MLP(progress [, the tensor's schedule_features])

  With `tensor_features` None (the rule's `tensor_features=False`) the schedule reads the
  progress only and every tensor gets the same step size. Computed in the progress' dtype.
  """
  dtype = progress.dtype
  inputs = tf.tile(progress[None], [num_tensors, 1])
  if tensor_features is not None:
    inputs = tf.concat([inputs, tf.cast(tensor_features, dtype)], axis=1)
  q = inputs
  for i, (w, b) in enumerate(schedule_layers):
    q = tf.matmul(q, tf.cast(w, dtype)) + tf.cast(b, dtype)
    if i + 1 < len(schedule_layers):
      q = tf.nn.relu(q)
  return tf.exp(tf.cast(log_lr, dtype) + schedule_scale * tf.tanh(q[:, 0]))


def mlp_update(features: tf.Tensor, adam_direction: tf.Tensor, progress: tf.Tensor,
               layers: Sequence[Tuple[tf.Tensor, tf.Tensor]], step_size: tf.Tensor,
               direction_scale, magnitude_scale: float) -> tf.Tensor:
  """The updates [n] of n coordinates from their features [n, F] and the progress [P].

  `layers` are the (w, b) of the per-coordinate MLP (ReLU between layers, 2 outputs: d, m);
  `step_size` is the schedule's step size (`step_sizes`), a scalar or one per coordinate [n];
  `direction_scale` c_d a float, or a tensor of one per coordinate [n] (the quiet gate's).
  Everything is computed in the features' dtype.
  """
  dtype = features.dtype
  layers = [(tf.cast(w, dtype), tf.cast(b, dtype)) for w, b in layers]
  progress = tf.cast(progress, dtype)
  n = tf.shape(features)[0]
  h = tf.concat([features, tf.tile(progress[None], [n, 1])], axis=1)
  for i, (w, b) in enumerate(layers):
    h = tf.matmul(h, w) + b
    if i + 1 < len(layers):
      h = tf.nn.relu(h)
  direction = adam_direction + tf.cast(direction_scale, dtype) * tf.tanh(h[:, 0])
  return -tf.cast(step_size, dtype) * direction * tf.exp(magnitude_scale * tf.tanh(h[:, 1]))


def tensor_step_sizes(grads: Sequence[tf.Tensor], m: Tensors, v: Tensors, step: tf.Tensor,
                      progress: tf.Tensor, schedule_layers: Sequence[Tuple[tf.Tensor, tf.Tensor]],
                      log_lr: tf.Tensor, schedule_scale: float,
                      use_tensor_features: bool,
                      size_scale: Optional[tf.Tensor] = None) -> tf.Tensor:
  """`step_sizes` of the tensors of `grads` (the schedule's features from the state before the
  step when `use_tensor_features`), times `size_scale` ([num_tensors], the online adaptation's
  factors) when given."""
  features = None
  if use_tensor_features:
    features = tf.stack([schedule_features(g, m_, tf.cast(v_, g.dtype), tf.cast(step, g.dtype))
                         for g, m_, v_ in zip(grads, m, v)])
  sizes = step_sizes(progress, features, len(grads), schedule_layers, log_lr, schedule_scale)
  if size_scale is not None:
    sizes = sizes * tf.cast(size_scale, sizes.dtype)
  return sizes


def rule_step(grads: Sequence[tf.Tensor], params: Sequence[tf.Tensor], m: Tensors, v: Tensors,
              row: Tensors, col: Tensors, step: tf.Tensor, num_steps: tf.Tensor,
              layers: Sequence[Tuple[tf.Tensor, tf.Tensor]],
              schedule_layers: Sequence[Tuple[tf.Tensor, tf.Tensor]], log_lr: tf.Tensor,
              direction_scale: float, magnitude_scale: float, schedule_scale: float,
              use_tensor_features: bool = False, size_scale: Optional[tf.Tensor] = None,
              direction_factor: Optional[tf.Tensor] = None
              ) -> Tuple[List[tf.Tensor], Tuple[Tensors, Tensors, Tensors, Tensors]]:
  """One step of the rule with the reference ops: `(updates, (m', v', row', col'))`.

  `size_scale` ([num_tensors]) multiplies each tensor's step size, `direction_factor`
  ([num_tensors]) its direction correction's bound c_d (None: 1).

  `tensor_features` per tensor, the schedule's step size per tensor (`tensor_step_sizes`), then
  one `mlp_update` over every coordinate of every tensor, in the gradients' dtype.
  `nets.mlp_rule_fused.fused_rule_step` computes the same (float32) with one fused op per tensor.
  """
  if not grads:
    return [], ((),) * 4
  dtype = grads[0].dtype
  progress = progress_features(tf.cast(step, dtype), tf.cast(num_steps, dtype))
  sizes_per_tensor = tensor_step_sizes(grads, m, v, step, progress, schedule_layers, log_lr,
                                       schedule_scale, use_tensor_features, size_scale)
  features, directions, new_stats = [], [], []
  for g, p, m_, v_, row_, col_ in zip(grads, params, m, v, row, col):
    f, d, s = tensor_features(g, tf.cast(p, g.dtype), m_, v_, row_, col_, tf.cast(step, g.dtype))
    features.append(f)
    directions.append(d)
    new_stats.append(s)
  sizes = [int(g.shape.num_elements()) for g in grads]
  if direction_factor is not None:
    direction_scale = direction_scale * tf.repeat(tf.cast(direction_factor, dtype), sizes)
  flat = mlp_update(tf.concat(features, 0), tf.concat(directions, 0), progress, layers,
                    tf.repeat(sizes_per_tensor, sizes), direction_scale, magnitude_scale)
  updates = [tf.cast(tf.reshape(u, g.shape), g.dtype)
             for u, g in zip(tf.split(flat, sizes), grads)]
  stats = tuple(tuple(s) for s in zip(*new_stats))
  return updates, stats


class PerParameterMLP(base.UpdateRule):
  """The versatile learned rule (see the module docstring).

  The rule computes in the dtype of the gradients (float32, or float64 for exact checks); its
  statistics have the parameters' dtype.

  Args:
    hidden_sizes: widths of the per-coordinate MLP's hidden layers.
    schedule_hidden_size: width of the schedule MLP's hidden layer.
    learning_rate: the initial lr = exp(log_lr): the untrained rule is Adam at this rate.
    direction_scale: c_d, the bound of the MLP's direction change.
    magnitude_scale: c_m, the bound of the MLP's log-magnitude output.
    schedule_scale: c_q, the bound of the schedule's log-factor.
    tensor_features: the schedule also reads each tensor's `schedule_features` (whether its
      gradient keeps its sign), so that it sets a step size per tensor; False: one step size
      from the progress alone (the rule of `versatile-mlp-v1`).
    step_adaptation: the initial rate beta of the online step-size adaptation (0: off, the
      rule of `versatile-mlp-v1`; see the module docstring). On, each step multiplies the step
      size by exp(a), with `a <- clip(a + beta c', adaptation_min, adaptation_max)` accumulated
      over the steps of a run from the cosine c of `adaptation_signal` (c' = c, or
      `adaptation_asymmetry` * c when c < 0): steps that overshoot shrink the step size, steps
      that fall short let it recover, so one rule settles at a different step size on each
      task. beta is a weight of the rule (`log_adaptation_rate`).
    adaptation_per_tensor: one adaptation factor per tensor instead of one for the whole model.
    adaptation_min, adaptation_max: the bounds of the adaptation's log-factor a (the step size
      between exp(adaptation_min) and exp(adaptation_max) times the learned one; the default
      maximum 0: the adaptation only slows the learned rule down).
    adaptation_asymmetry: k >= 1 multiplies the rate of the decreases (c < 0).
    quiet_gate: > 0 scales each tensor's direction correction (c_d) by `quiet_factors` with
      this threshold: once a tensor's gradient has fallen below `quiet_gate` times its recent
      RMS (a classifier at zero loss) the rule moves it no more than Adam would; 0 (the
      default, and `versatile-mlp-v1` / v2's): off; `versatile-mlp-v3`: 1e-4.
    default_num_steps: the horizon T when the caller gives none.
    seed: seed of the hidden layers' initial weights (N(0, 1 / fan_in)).
    fused: run the forward step as one fused C++ op per tensor on CPU
      (`nets.mlp_rule_fused`; same results to float32 round-off, gradients by the reference ops)
      when it applies (float32, CPU, the op built); False: always the reference ops.
  """

  uses_context = True

  def __init__(self, hidden_sizes: Sequence[int] = (8, 8), schedule_hidden_size: int = 8,
               learning_rate: float = 1e-3, direction_scale: float = 1.0,
               magnitude_scale: float = 2.0, schedule_scale: float = 2.0,
               default_num_steps: int = 1000, seed: int = 0, fused: bool = True,
               tensor_features: bool = False, step_adaptation: float = 0.,
               adaptation_per_tensor: bool = False, adaptation_min: float = -3.,
               adaptation_max: float = 0., adaptation_asymmetry: float = 1.,
               quiet_gate: float = 0., name: str = "per_parameter_mlp"):
    super().__init__(name=name)
    hidden_sizes = [int(h) for h in hidden_sizes]
    if not hidden_sizes or min(hidden_sizes) < 1 or int(schedule_hidden_size) < 1:
      raise ValueError(f"PerParameterMLP: hidden sizes must be positive integers, got "
                       f"{hidden_sizes} and {schedule_hidden_size!r}")
    for arg, value in (("learning_rate", learning_rate), ("direction_scale", direction_scale),
                       ("magnitude_scale", magnitude_scale), ("schedule_scale", schedule_scale)):
      if not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise ValueError(f"PerParameterMLP: `{arg}` must be a positive number, got {value!r}")
    if not (isinstance(step_adaptation, (int, float)) and 0 <= step_adaptation < math.inf):
      raise ValueError(f"PerParameterMLP: `step_adaptation` must be a number >= 0, got "
                       f"{step_adaptation!r}")
    if not (isinstance(adaptation_min, (int, float)) and isinstance(adaptation_max, (int, float))
            and -math.inf < adaptation_min <= 0 <= adaptation_max < math.inf):
      raise ValueError(f"PerParameterMLP: need adaptation_min <= 0 <= adaptation_max (finite), "
                       f"got {adaptation_min!r} and {adaptation_max!r}")
    if not (isinstance(adaptation_asymmetry, (int, float))
            and 1 <= adaptation_asymmetry < math.inf):
      raise ValueError(f"PerParameterMLP: `adaptation_asymmetry` must be a number >= 1, got "
                       f"{adaptation_asymmetry!r}")
    if not (isinstance(quiet_gate, (int, float)) and 0 <= quiet_gate < math.inf):
      raise ValueError(f"PerParameterMLP: `quiet_gate` must be a number >= 0, got "
                       f"{quiet_gate!r}")
    if not isinstance(default_num_steps, int) or default_num_steps < 1:
      raise ValueError(f"PerParameterMLP: `default_num_steps` must be a positive integer, got "
                       f"{default_num_steps!r}")
    self._remember_options(hidden_sizes=hidden_sizes,
                           schedule_hidden_size=int(schedule_hidden_size),
                           learning_rate=float(learning_rate),
                           direction_scale=float(direction_scale),
                           magnitude_scale=float(magnitude_scale),
                           schedule_scale=float(schedule_scale),
                           default_num_steps=default_num_steps, seed=int(seed),
                           fused=bool(fused), tensor_features=bool(tensor_features),
                           **({} if not step_adaptation else dict(
                               step_adaptation=float(step_adaptation),
                               adaptation_per_tensor=bool(adaptation_per_tensor),
                               adaptation_min=float(adaptation_min),
                               adaptation_max=float(adaptation_max),
                               adaptation_asymmetry=float(adaptation_asymmetry))),
                           **({} if not quiet_gate else dict(quiet_gate=float(quiet_gate))))
    self.fused = bool(fused)
    self.tensor_features = bool(tensor_features)
    self.direction_scale = float(direction_scale)
    self.magnitude_scale = float(magnitude_scale)
    self.schedule_scale = float(schedule_scale)
    self.default_num_steps = default_num_steps
    self.step_adaptation = float(step_adaptation)
    self.adaptation_per_tensor = bool(adaptation_per_tensor)
    self.adaptation_min = float(adaptation_min)
    self.adaptation_max = float(adaptation_max)
    self.adaptation_asymmetry = float(adaptation_asymmetry)
    self.quiet_gate = float(quiet_gate)
    rng = np.random.default_rng(seed)

    def layer_stack(sizes: List[int], prefix: str) -> List[Tuple[tf.Variable, tf.Variable]]:
      out = []
      for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i + 2 == len(sizes)
        w = (np.zeros([fan_in, fan_out]) if last else
             rng.normal(size=[fan_in, fan_out]) / math.sqrt(fan_in))
        out.append((tf.Variable(w.astype(np.float32), name=f"{prefix}{i}_w"),
                    tf.Variable(tf.zeros([fan_out]), name=f"{prefix}{i}_b")))
      return out

    with self.name_scope:
      self.layers = layer_stack([NUM_FEATURES + NUM_PROGRESS_FEATURES] + hidden_sizes + [2],
                                "mlp")
      self.schedule_layers = layer_stack(
          [NUM_PROGRESS_FEATURES + NUM_TENSOR_FEATURES * self.tensor_features,
           int(schedule_hidden_size), 1], "schedule")
      self.log_lr = tf.Variable(math.log(learning_rate), dtype=tf.float32, name="log_lr")
      if self.step_adaptation:
        self.log_adaptation_rate = tf.Variable(math.log(self.step_adaptation), dtype=tf.float32,
                                               name="log_adaptation_rate")

  def initial_state(self, params: Sequence[tf.Tensor],
                    num_steps: Optional[int] = None) -> MLPRuleState:
    params = base.as_list(params, "params")
    horizon = self.default_num_steps if num_steps is None else num_steps
    if isinstance(horizon, (int, float)) and not horizon >= 1:
      raise ValueError(f"PerParameterMLP: num_steps must be >= 1, got {num_steps!r}")

    def stats(p):
      shape = p.shape.as_list()
      if factored(shape):
        return tf.zeros(shape[:-1], p.dtype), tf.zeros(shape[:-2] + shape[-1:], p.dtype)
      return tf.zeros([1], p.dtype), tf.zeros([1], p.dtype)

    rows, cols = zip(*[stats(p) for p in params]) if params else ((), ())
    return MLPRuleState(
        tf.zeros([], tf.float32), tf.cast(horizon, tf.float32),
        tuple(tf.zeros(p.shape.as_list() + [len(MOMENTUM_DECAYS)], p.dtype) for p in params),
        tuple(tf.zeros(p.shape, p.dtype) for p in params), tuple(rows), tuple(cols),
        tf.zeros([len(params)], params[0].dtype if params else tf.float32))

  def __call__(self, grads: Sequence[tf.Tensor], state: MLPRuleState,
               params: Optional[Sequence[tf.Tensor]] = None,
               loss: Optional[tf.Tensor] = None) -> Tuple[List[tf.Tensor], MLPRuleState]:
    del loss  # Not a feature of this rule.
    grads = base.as_list(grads)
    if params is None:
      raise ValueError("PerParameterMLP reads the parameters: call it with params=")
    params = base.as_list(params, "params")
    if not len(grads) == len(params) == len(state.v):
      raise ValueError(f"PerParameterMLP: {len(grads)} gradients, {len(params)} params and "
                       f"{len(state.v)} states")
    step = state.step + 1.
    log_scale, size_scale = state.log_scale, None
    if self.step_adaptation and grads:
      signal = adaptation_signal(grads, state.m, state.v, step, self.adaptation_per_tensor)
      rate = tf.exp(tf.cast(self.log_adaptation_rate, log_scale.dtype))
      signal = tf.cast(signal, log_scale.dtype)
      signal = tf.where(signal < 0, self.adaptation_asymmetry * signal, signal)
      log_scale = tf.clip_by_value(log_scale + rate * signal, self.adaptation_min,
                                   self.adaptation_max)
      size_scale = tf.exp(log_scale)
    direction_factor = None
    if self.quiet_gate and grads:
      direction_factor = quiet_factors(grads, state.v, step, self.quiet_gate)
    args = (grads, params, state.m, state.v, state.row, state.col, step, state.num_steps,
            self.layers, self.schedule_layers, self.log_lr, self.direction_scale,
            self.magnitude_scale, self.schedule_scale, self.tensor_features, size_scale,
            direction_factor)
    if self.fused and mlp_rule_fused.applies(grads, params, state):
      updates, (m, v, row, col) = mlp_rule_fused.fused_rule_step(*args)
    else:
      updates, (m, v, row, col) = rule_step(*args)
    return updates, MLPRuleState(step, state.num_steps, m, v, row, col, log_scale)
