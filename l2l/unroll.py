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
from nets import base as nets_base

OBJECTIVES = ("sum", "log")
LOG_EPSILON = 1e-12  # Keeps log f finite when a loss reaches exactly zero.
LossFn = Callable[[Sequence[tf.Tensor]], tf.Tensor]


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


def initial_state(groups: Sequence[Group], params: Sequence[tf.Tensor]) -> UnrollState:
  """The state at step 0: the given parameters and each rule's initial state."""
  params = tuple(params)
  return UnrollState(params, tuple(g.rule.initial_state([params[i] for i in g.indices])
                                   for g in groups))


def value_and_grads(loss_fn: LossFn, params: Sequence[tf.Tensor]
                   ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
  """f(params) and its gradient (zeros for parameters the loss does not use)."""
  with tf.GradientTape() as tape:
    tape.watch(params)
    loss = loss_fn(params)
  grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return loss, grads


def apply_rules(groups: Sequence[Group], state: UnrollState, grads: Sequence[tf.Tensor]
               ) -> UnrollState:
  """x + rule(g) for every group."""
  params = list(state.params)
  rule_states = []
  for group, rule_state in zip(groups, state.rule_states):
    updates, rule_state = group.rule([grads[i] for i in group.indices], rule_state)
    for i, update in zip(group.indices, updates):
      params[i] = params[i] + update
    rule_states.append(rule_state)
  return UnrollState(tuple(params), tuple(rule_states))


def step(loss_fn: LossFn, groups: Sequence[Group], state: UnrollState,
         second_derivatives: bool = False) -> Tuple[tf.Tensor, UnrollState]:
  """One optimizer step; returns f(x_t) and the state at t + 1."""
  loss, grads = value_and_grads(loss_fn, state.params)
  if not second_derivatives:
    grads = [tf.stop_gradient(g) for g in grads]
  return loss, apply_rules(groups, state, grads)


def unroll(loss_fn: LossFn, groups: Sequence[Group], state: UnrollState, len_unroll: int,
           second_derivatives: bool = False, loss_weights: Optional[Sequence[float]] = None,
           use_while_loop: Optional[bool] = None, objective: str = "sum") -> UnrollResult:
  """Runs `len_unroll` optimizer steps from `state`.

  Args:
    loss_fn: the optimizee loss as a function of its parameters.
    groups: the rules and the parameters each updates; every parameter in exactly one group.
    state: parameters and rule states to start from.
    len_unroll: number of steps T (a Python int, >= 1).
    second_derivatives: let the meta-gradient flow through the optimizee gradients (the
      Hessian terms); False stops them, as the 2016 paper does.
    loss_weights: w_1..w_T of the meta-loss; all ones by default.
    use_while_loop: build a `tf.while_loop` instead of an unrolled Python loop. Default: only
      for long unrolls (T > 50), where an unrolled graph would be slow to build.
    objective: "sum" for sum_t w_t f(x_t); "log" for sum_t w_t log f(x_t), which weighs
      progress by its relative size, so late steps of small loss still count.

  Returns:
    An `UnrollResult` (meta_loss, losses f(x_0..x_T), final state).
  """
  checks.positive_int("len_unroll", len_unroll)
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
  if use_while_loop is None:
    use_while_loop = len_unroll > 50

  if use_while_loop:
    losses_ta = tf.TensorArray(tf.float32, size=len_unroll + 1)

    def body(t, state, losses_ta):
      loss, state = step(loss_fn, groups, state, second_derivatives)
      return t + 1, state, losses_ta.write(t, tf.cast(loss, tf.float32))

    _, state, losses_ta = tf.while_loop(
        lambda t, *_: t < len_unroll, body, (tf.constant(0), state, losses_ta),
        maximum_iterations=len_unroll)
    final = tf.cast(loss_fn(state.params), tf.float32)
    losses = tf.concat([losses_ta.stack()[:len_unroll], final[None]], axis=0)
  else:
    losses = []
    for _ in range(len_unroll):
      loss, state = step(loss_fn, groups, state, second_derivatives)
      losses.append(tf.cast(loss, tf.float32))
    losses.append(tf.cast(loss_fn(state.params), tf.float32))
    losses = tf.stack(losses)
  terms = losses[1:] if objective == "sum" else tf.math.log(losses[1:] + LOG_EPSILON)
  meta_loss = tf.reduce_sum(weights * terms)
  return UnrollResult(meta_loss, losses, state)
