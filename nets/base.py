"""The update-rule interface shared by every optimizer net, learned or hand-designed.

An update rule is an RNN core over gradients (Andrychowicz et al. 2016):

    updates, state = rule(grads, state)
    params = params + updates

`grads` and `updates` are sequences of tensors with the parameters' shapes; `state` is any
`tf.nest` structure of tensors whose layout the rule chooses and keeps fixed across steps, so that
it can be carried through `tf.function`, `tf.while_loop` and `tf.train.Checkpoint`. Everything is
differentiable: gradients flow from the updates to the rule's own variables (meta-learning the
rule), to the incoming gradients (second-order meta-gradients) and to the initial parameters
(MAML-style meta-learning).

Rules that need more than the gradient (the versatile per-parameter rules of VeLO / Celo read
the parameters and the training progress) set `uses_context = True` and then take

    state = rule.initial_state(params, num_steps=T)     # T: the planned number of steps
    updates, state = rule(grads, state, params=params, loss=loss)

Every caller goes through `initial_state_of` and `call_rule`, which pass the context only to
rules that ask for it, so the gradient-only rules keep their two-argument interface unchanged.
"""

import abc
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import sonnet as snt
import tensorflow as tf

State = Any  # A tf.nest structure of tensors.


class UpdateRule(snt.Module, metaclass=abc.ABCMeta):
  """Base class of optimizer nets: `initial_state(params)` and `__call__(grads, state)`.

  Attributes:
    uses_context: False for rules of the gradient alone. True for rules whose
      `initial_state` also takes `num_steps` (the horizon, None for the rule's default) and
      whose `__call__` also takes `params` (the parameters the gradients were taken at) and
      `loss` (the loss there, a scalar, or None when the caller does not have it).
  """

  uses_context: bool = False

  @abc.abstractmethod
  def initial_state(self, params: Sequence[tf.Tensor]) -> State:
    """Returns the state for optimizing `params` (a sequence of tensors) from step 0."""

  @abc.abstractmethod
  def __call__(self, grads: Sequence[tf.Tensor],
               state: State) -> Tuple[List[tf.Tensor], State]:
    """Maps gradients to additive parameter updates.

    Args:
      grads: one gradient tensor per parameter, in the order given to `initial_state`.
      state: the state returned by `initial_state` or by the previous call.

    Returns:
      `(updates, new_state)`: `updates[i]` has the shape and dtype of `grads[i]` and is added
      to the parameter; `new_state` has the structure, shapes and dtypes of `state`.
    """

  @property
  def config(self) -> Dict[str, Any]:
    """`{"net": registry name, "net_options": constructor kwargs}`, as `nets.factory` takes."""
    return {"net": type(self).__name__, "net_options": json.loads(self._options_json)}

  def _remember_options(self, **options: Any) -> None:
    """Records constructor options (JSON-serializable) so that `config` can rebuild the rule.

    They are kept as a JSON string: tf.Module would otherwise wrap a dict attribute for tracking.
    """
    try:
      self._options_json = json.dumps(options)
    except TypeError as e:
      raise TypeError(f"{type(self).__name__}: net_options must be JSON-serializable: {e}") from None


def as_list(tensors: Sequence[tf.Tensor], argument: str = "grads") -> List[tf.Tensor]:
  """Checks that `tensors` is a sequence of tensors and returns it as a list."""
  if isinstance(tensors, (tf.Tensor, tf.Variable)) or not isinstance(tensors, (list, tuple)):
    raise TypeError(f"`{argument}` must be a list or tuple of tensors, got {type(tensors).__name__}")
  return list(tensors)


def initial_state_of(rule: UpdateRule, params: Sequence[tf.Tensor],
                     num_steps: Optional[int] = None) -> State:
  """`rule.initial_state(params)`, with the horizon `num_steps` for rules that use context."""
  if rule.uses_context:
    return rule.initial_state(params, num_steps=num_steps)
  return rule.initial_state(params)


def call_rule(rule: UpdateRule, grads: Sequence[tf.Tensor], state: State,
              params: Optional[Sequence[tf.Tensor]] = None,
              loss: Optional[tf.Tensor] = None) -> Tuple[List[tf.Tensor], State]:
  """`rule(grads, state)`, with the parameters and the loss for rules that use context.

  Raises:
    ValueError: a rule that uses context is called without `params`.
  """
  if rule.uses_context:
    if params is None:
      raise ValueError(f"{type(rule).__name__} reads the parameters: pass params= with the "
                       "gradients")
    return rule(grads, state, params=params, loss=loss)
  return rule(grads, state)
