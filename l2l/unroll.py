"""The unroll engine: optimizee steps driven by update rules, as pure functions of tensors.

One optimizer step at parameters x_t with rule states s_t:

    f_t = f(x_t);  g_t = grad f(x_t)   (gradient stopped unless second_derivatives)
    u_t, s_{t+1} = rule(g_t, s_t)      (one rule per variable group)
    x_{t+1} = x_t + u_t

An unroll of T steps returns the meta-loss sum_{t=1..T} w_t f(x_t) (or of log f(x_t); f(x_0) does not depend on
the rules' weights and is left out, as in the speed peers; w_t = 1 by default), every loss
f(x_0..x_T), and the final state, from which the next truncated unroll continues.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

from l2l import checks
from l2l import recompute
from nets import base as nets_base

from l2l.options import OBJECTIVES  # ("sum", "log", "log_mean")
# The log objective's floor, relative to a reference loss: each term is log max(f(x_t), floor),
# floor = LOG_FLOOR * f_ref, where f_ref is the loss at the start of the problem instance
# (MetaLoss) or of the unroll (`unroll` without `log_reference`), gradient stopped. Without a floor
# log f is unbounded below when f can reach 0 (a minibatch that huge weights fit exactly): a
# learned optimizer then gains more from driving some minibatch losses to 0 than it loses on
# the others, and learns to blow the weights up. Progress down to 1e-6 of the starting loss,
# six decades (the configurations' tuned baselines end 1-3 decades down at 100-200 steps), is
# rewarded as before; beyond it a step earns nothing more, so one step's reward is at most
# log(1e6) = 13.8 over its starting loss.
LOG_FLOOR = 1e-6
# The floor's lower bound, for a reference loss of 0 (float32's smallest normal number).
_TINY = 1.1754944e-38
LossFn = Callable[[Sequence[tf.Tensor]], tf.Tensor]
# params -> (f(params), grad f(params)): a first-order unroll's replacement for `value_and_grads`
# (`l2l.loss_gradient`: the same function compiled with XLA).
ValueAndGradsFn = Callable[[Sequence[tf.Tensor]], Tuple[tf.Tensor, List[tf.Tensor]]]


class Group(NamedTuple):
  """A rule and the indices of the parameters it updates."""
  rule: nets_base.UpdateRule
  indices: Tuple[int, ...]


class UnrollState(NamedTuple):
  """What carries across truncated unrolls: parameters and one state per rule group."""
  params: Tuple[tf.Tensor, ...]
  rule_states: Tuple[nets_base.State, ...]


class UnrollResult(NamedTuple):
  meta_loss: tf.Tensor      # sum_{t=1..T} w_t f(x_t)
  losses: tf.Tensor         # [T + 1]: f(x_0), ..., f(x_T)
  state: UnrollState        # the state after T steps


def check_groups(groups: Sequence[Group], state: UnrollState) -> None:
  """Raises ValueError unless the groups partition the parameters and match the rule states."""
  if len(state.rule_states) != len(groups):
    raise ValueError(f"{len(groups)} rule groups but {len(state.rule_states)} rule states")
  indices = sorted(i for g in groups for i in g.indices)
  if indices != list(range(len(state.params))):
    raise ValueError(f"rule groups must cover each of the {len(state.params)} parameters exactly "
                     f"once, got indices {indices}")


def initial_state(groups: Sequence[Group], params: Sequence[tf.Tensor],
                  num_steps: Optional[int] = None) -> UnrollState:
  """The state at step 0: the given parameters and each rule's initial state.

  `num_steps`, the planned number of steps, reaches the rules that read the training progress
  (`nets.UpdateRule.uses_context`); None gives them their default horizon.
  """
  params = tuple(params)
  return UnrollState(params, tuple(
      nets_base.initial_state_of(g.rule, [params[i] for i in g.indices], num_steps)
      for g in groups))


def value_and_grads(loss_fn: LossFn, params: Sequence[tf.Tensor]
                   ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
  """f(params) and its gradient (zeros for parameters the loss does not use)."""
  with tf.GradientTape() as tape:
    tape.watch(params)
    loss = loss_fn(params)
  grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return loss, grads


def apply_rules(groups: Sequence[Group], state: UnrollState, grads: Sequence[tf.Tensor],
                loss: Optional[tf.Tensor] = None) -> UnrollState:
  """x + rule(g) for every group (rules that use context also see x and the loss f(x))."""
  params = list(state.params)
  rule_states = []
  for group, rule_state in zip(groups, state.rule_states):
    updates, rule_state = nets_base.call_rule(
        group.rule, [grads[i] for i in group.indices], rule_state,
        params=[state.params[i] for i in group.indices], loss=loss)
    for i, update in zip(group.indices, updates):
      params[i] = params[i] + update
    rule_states.append(rule_state)
  return UnrollState(tuple(params), tuple(rule_states))


def loss_with_gradient(loss: tf.Tensor, params: Sequence[tf.Tensor],
                       grads: Sequence[tf.Tensor]) -> tf.Tensor:
  """`loss` (a function of `params`) whose gradient to `params` is the given `grads`.

  A first-order unroll has already computed grad f(x_t) for its update, and that is exactly the
  derivative of f(x_t) in the meta-loss; attaching it saves differentiating `loss_fn` a second
  time in the backward pass (the same meta-gradient, fewer ops). Gradients to anything else
  the loss depends on (tensors `loss_fn` closes over) are not propagated.
  """
  params = list(params)

  @tf.custom_gradient
  def attach(*params):
    def grad(d_loss):
      return [tf.cast(d_loss, g.dtype) * g for g in grads]
    return tf.identity(tf.stop_gradient(loss)), grad

  return attach(*params)


def step(loss_fn: LossFn, groups: Sequence[Group], state: UnrollState,
         second_derivatives: bool = False, value_and_grads_fn: Optional[ValueAndGradsFn] = None
         ) -> Tuple[tf.Tensor, UnrollState]:
  """One optimizer step; returns f(x_t) and the state at t + 1.

  Without `second_derivatives`, the gradient of f(x_t) to x_t in the backward pass is the
  gradient computed for the update (`loss_with_gradient`), not a second differentiation of
  `loss_fn`; `value_and_grads_fn`, if given, computes f and grad f instead of `loss_fn` and a
  tape (ignored with `second_derivatives`).
  """
  if value_and_grads_fn is not None and not second_derivatives:
    loss, grads = value_and_grads_fn(state.params)
  else:
    loss, grads = value_and_grads(loss_fn, state.params)
  if not second_derivatives:
    grads = [tf.stop_gradient(g) for g in grads]
    loss = loss_with_gradient(loss, state.params, grads)
  # Rules read the loss as a feature, not as a path for the meta-gradient.
  return loss, apply_rules(groups, state, grads, tf.stop_gradient(loss))


def run_steps(loss_fn: LossFn, groups: Sequence[Group], state: UnrollState, num_steps: int,
              second_derivatives: bool = False, use_while_loop: bool = False,
              value_and_grads_fn: Optional[ValueAndGradsFn] = None
              ) -> Tuple[tf.Tensor, UnrollState]:
  """`num_steps` optimizer steps; returns f(x_t) before each step ([num_steps]) and the state."""
  if use_while_loop:
    losses_ta = tf.TensorArray(tf.float32, size=num_steps)

    def body(t, state, losses_ta):
      loss, state = step(loss_fn, groups, state, second_derivatives, value_and_grads_fn)
      return t + 1, state, losses_ta.write(t, tf.cast(loss, tf.float32))

    _, state, losses_ta = tf.while_loop(
        lambda t, *_: t < num_steps, body, (tf.constant(0), state, losses_ta),
        maximum_iterations=num_steps)
    return losses_ta.stack()[:num_steps], state
  losses = []
  for _ in range(num_steps):
    loss, state = step(loss_fn, groups, state, second_derivatives, value_and_grads_fn)
    losses.append(tf.cast(loss, tf.float32))
  return tf.stack(losses), state


def segment_lengths(len_unroll: int, segment_length: int) -> List[int]:
  """The lengths of the segments a checkpointed unroll runs: full ones, then the remainder."""
  full, rest = divmod(len_unroll, segment_length)
  return [segment_length] * full + ([rest] if rest else [])


def checkpointed_steps(loss_fn: LossFn, groups: Sequence[Group], state: UnrollState,
                       num_steps: int, segment_length: int, second_derivatives: bool = False,
                       use_while_loop: Optional[bool] = None,
                       value_and_grads_fn: Optional[ValueAndGradsFn] = None
                       ) -> Tuple[tf.Tensor, UnrollState]:
  """`run_steps` cut into segments recomputed in the backward pass (`recompute.checkpointed`).

  The backward pass holds the state at every segment boundary and one segment's
  intermediates: memory grows with `segment_length` (and num_steps / segment_length states),
  not with `num_steps`; the price is a second forward pass.
  """
  losses = []
  for length in segment_lengths(num_steps, segment_length):
    inner_while = length > 50 if use_while_loop is None else use_while_loop

    def segment(flat, length=length, inner_while=inner_while):
      seg_losses, seg_state = run_steps(loss_fn, groups, tf.nest.pack_sequence_as(state, flat),
                                        length, second_derivatives, inner_while,
                                        value_and_grads_fn)
      return [seg_losses] + tf.nest.flatten(seg_state)

    outputs = recompute.checkpointed(segment, tf.nest.flatten(state))
    losses.append(outputs[0])
    state = tf.nest.pack_sequence_as(state, outputs[1:])
  return tf.concat(losses, axis=0), state


def unroll(loss_fn: LossFn, groups: Sequence[Group], state: UnrollState, len_unroll: int,
           second_derivatives: bool = False, loss_weights: Optional[Sequence[float]] = None,
           use_while_loop: Optional[bool] = None, objective: str = "sum",
           segment_length: Optional[int] = None,
           log_reference: Optional[tf.Tensor] = None,
           value_and_grads_fn: Optional[ValueAndGradsFn] = None) -> UnrollResult:
  """Runs `len_unroll` optimizer steps from `state`.

  Args:
    loss_fn: the optimizee loss as a function of its parameters.
    groups: the rules and the parameters each updates; every parameter in exactly one group.
    state: parameters and rule states to start from.
    len_unroll: number of steps T (a Python int, >= 1).
    second_derivatives: let the meta-gradient flow through the optimizee gradients (the
      Hessian terms); False stops them, as the 2016 paper does, and reuses grad f(x_t) as the
      derivative of f(x_t) in the backward pass (`loss_with_gradient`), so the meta-gradient
      reaches the rules' variables and `state`, not tensors `loss_fn` closes over.
    loss_weights: w_1..w_T of the meta-loss; all ones by default.
    use_while_loop: build a `tf.while_loop` instead of an unrolled Python loop. Default: only
      for long unrolls (T > 50), where an unrolled graph would be slow to build. With
      `segment_length`, it applies to the loop inside each segment (default: segments > 50).
    objective: "sum" for sum_t w_t f(x_t); "log" for sum_t w_t log max(f(x_t), floor), which
      weighs progress by its relative size, so late steps of small loss still count; the
      floor, LOG_FLOOR times `log_reference` (default f(x_0)), keeps a loss that reaches 0
      from earning an unbounded reward (see LOG_FLOOR). "log_mean" for
      W log max(sum_t w_t f(x_t) / W, floor), W = sum_t w_t: the log of the unroll's
      weighted mean loss, as scale-free as "log" (its gradient does not change when f is
      multiplied by a constant) and equal to it when the losses of the unroll are equal, but
      it cannot be gamed by spreading the losses (mean of logs <= log of the mean): driving
      some minibatches' losses to 0 while others grow no longer pays.
    segment_length: None backpropagates through the stored trajectory (memory grows with T).
      A positive int checkpoints the unroll: segments of this many steps are recomputed in the
      backward pass, so memory grows with the segment length (plus T / segment_length
      states), for the same meta-gradient. Gradients reach the rules' trainable variables and
      `state`, not other tensors `loss_fn` closes over.
    log_reference: the loss the log objective's floor is relative to (a scalar, gradient
      stopped): the problem instance's initial loss when unrolls are truncated; None or NaN
      means f(x_0) of this unroll.
    value_and_grads_fn: params -> (f, grad f), the same function as `loss_fn` and its gradient
      computed another way (`l2l.loss_gradient`: one XLA call); used by first-order unrolls
      only, in place of `loss_fn` and a gradient tape.

  Returns:
    An `UnrollResult` (meta_loss, losses f(x_0..x_T), final state).
  """
  checks.positive_int("len_unroll", len_unroll)
  if segment_length is not None:
    checks.positive_int("segment_length", segment_length)
  if loss_weights is None:
    weights = tf.ones([len_unroll])
  else:
    if len(loss_weights) != len_unroll:
      raise ValueError(f"loss_weights must have len_unroll={len_unroll} entries, got "
                       f"{len(loss_weights)}")
    weights = tf.constant(loss_weights, tf.float32)
  check_groups(groups, state)
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")

  if segment_length is None:
    if use_while_loop is None:
      use_while_loop = len_unroll > 50
    losses, state = run_steps(loss_fn, groups, state, len_unroll, second_derivatives,
                              use_while_loop, value_and_grads_fn)
  else:
    losses, state = checkpointed_steps(loss_fn, groups, state, len_unroll, segment_length,
                                       second_derivatives, use_while_loop, value_and_grads_fn)
  if value_and_grads_fn is not None and not second_derivatives:
    final, grads = value_and_grads_fn(state.params)
    final = loss_with_gradient(final, state.params, [tf.stop_gradient(g) for g in grads])
  else:
    final = loss_fn(state.params)
  final = tf.cast(final, tf.float32)
  losses = tf.concat([losses, final[None]], axis=0)
  if objective == "sum":
    return UnrollResult(tf.reduce_sum(weights * losses[1:]), losses, state)
  reference = losses[0] if log_reference is None else tf.cast(log_reference, tf.float32)
  reference = tf.where(tf.math.is_nan(reference), losses[0], reference)
  floor = tf.maximum(LOG_FLOOR * tf.abs(tf.stop_gradient(reference)), _TINY)
  if objective == "log":
    meta_loss = tf.reduce_sum(weights * tf.math.log(tf.maximum(losses[1:], floor)))
  else:  # "log_mean"
    total = tf.reduce_sum(weights)
    mean = tf.reduce_sum(weights * losses[1:]) / total
    meta_loss = total * tf.math.log(tf.maximum(mean, floor))
  return UnrollResult(meta_loss, losses, state)
