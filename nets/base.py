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
"""

import abc
import json
from typing import Any, Dict, List, Sequence, Tuple

import sonnet as snt
import tensorflow as tf

State = Any  # A tf.nest structure of tensors.


class UpdateRule(snt.Module, metaclass=abc.ABCMeta):
  """Base class of optimizer nets: `initial_state(params)` and `__call__(grads, state)`."""

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
