"""A trained (or hand-designed) update rule as an ordinary optimizer, like `snt.optimizers`.

    opt = l2l.LearnedOptimizer("/tmp/opt")         # a directory written by MetaOptimizer.save
    for batch in data:
      with tf.GradientTape() as tape:
        loss = loss_fn(model(batch))
      opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

Any rule of `nets` works the same way (`l2l.LearnedOptimizer(nets.Adam(1e-3))` takes the steps
of `snt.optimizers.Adam`). The rules' states live in `tf.Variable`s created on the first
`apply`, so `apply` works inside `tf.function` and the optimizer checkpoints with
`tf.train.Checkpoint`. With several nets, `net_assignments` says which net updates which
variable.
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import sonnet as snt
import tensorflow as tf

from nets import base as nets_base
from l2l import checks
from l2l import meta_optimizer as meta_optimizer_lib

Rule = Union[str, nets_base.UpdateRule, meta_optimizer_lib.MetaOptimizer,
             Mapping[str, nets_base.UpdateRule]]
# (netid, [variable names]) pairs, or a function from a variable to its netid.
Assignments = Union[Sequence[Tuple[str, Sequence[str]]], Callable[[tf.Variable], str]]


def variable_name(variable) -> str:
  """A variable's name without the `:0` suffix (Keras 3 variables: their `path`)."""
  name = getattr(variable, "path", None) or variable.name
  return name[:-2] if name.endswith(":0") else name


def _nets_from(rule: Rule) -> Dict[str, nets_base.UpdateRule]:
  if isinstance(rule, str):
    return dict(meta_optimizer_lib.MetaOptimizer.load(rule).nets)
  if isinstance(rule, meta_optimizer_lib.MetaOptimizer):
    return dict(rule.nets)
  if isinstance(rule, nets_base.UpdateRule):
    return {"rule": rule}
  if isinstance(rule, Mapping) and rule and all(
      isinstance(r, nets_base.UpdateRule) for r in rule.values()):
    return dict(rule)
  raise TypeError(f"rule must be a saved optimizer directory, a MetaOptimizer, an update rule "
                  f"of `nets` or a dict of them, got {type(rule).__name__}")


def resolve_groups(netids: Sequence[str], variables: Sequence[Any],
                   assignments: Optional[Assignments], owner: str
                   ) -> List[Tuple[str, Tuple[int, ...]]]:
  """`(netid, variable indices)` per net: every variable to the one net, or by `assignments`
  (`(netid, [names])` pairs or a function variable -> netid; names as `variable_name`).

  Raises:
    ValueError: variables sharing a name (with assignments), or assignments that do not cover
      the variables; `owner` names the optimizer in the message.
  """
  if assignments is None and len(netids) == 1:
    return [(netids[0], tuple(range(len(variables))))]
  names = [variable_name(v) for v in variables]
  if len(set(names)) != len(names):
    duplicated = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f"{owner}: variables share the names {duplicated}; net_assignments needs "
                     "distinct names")
  if callable(assignments):
    by_net: Dict[str, List[str]] = {}
    for variable, name in zip(variables, names):
      by_net.setdefault(assignments(variable), []).append(name)
    assignments = sorted(by_net.items())
  resolved = meta_optimizer_lib.resolve_assignments(list(netids), names, assignments)
  return [(netid, tuple(indices)) for netid, indices in resolved]


class LearnedOptimizer(snt.Module):
  """Applies update rules to variables: `x <- x + rule(g)` with the rule's state kept here.

  Args:
    rule: a directory written by `MetaOptimizer.save` (or train.py's save_path), a
      `MetaOptimizer`, any rule of `nets` (learned or hand-designed), or a dict netid -> rule.
    net_assignments: required with several nets: `(netid, [variable names])` pairs covering
      every variable given to `apply`, or a function variable -> netid (e.g. by rank, to send
      conv kernels to a `KernelDeepLSTM`). Names are `tf.Variable.name` without `:0` (a Keras
      3 variable's `path`).
    num_steps: the planned number of `apply` calls, for rules that read the training progress
      (the pretrained per-parameter rules); None gives them the horizon they were trained for.

  Raises:
    TypeError: `rule` is none of the above.
    ValueError: no saved optimizer at the path.
  """

  def __init__(self, rule: Rule, net_assignments: Optional[Assignments] = None,
               name: str = "learned_optimizer", num_steps: Optional[int] = None):
    super().__init__(name=name)
    if num_steps is not None:
      checks.positive_int("num_steps", num_steps)
    self.num_steps = num_steps
    self.nets = _nets_from(rule)
    self._net_assignments = net_assignments
    self._groups: Optional[List[Tuple[str, Tuple[int, ...]]]] = None
    self._variable_refs: Optional[List] = None
    self.states: List = []  # One tf.nest structure of tf.Variables per group.

  def _resolve(self, variables: Sequence[tf.Variable]) -> List[Tuple[str, Tuple[int, ...]]]:
    return resolve_groups(list(self.nets), variables, self._net_assignments,
                          "LearnedOptimizer")

  def _initialize(self, variables: Sequence[tf.Variable]) -> None:
    self._groups = self._resolve(variables)
    self._variable_refs = [v.ref() if hasattr(v, "ref") else id(v) for v in variables]
    with tf.init_scope():  # Eager, so the state variables outlive any tf.function trace.
      # Placeholders of the variables' shapes: variables created in the same tf.function trace
      # (a model built on its first call) cannot be read here. Rules' states depend on shapes.
      values = [tf.zeros(v.shape, tf.as_dtype(v.dtype)) for v in variables]
      for netid, indices in self._groups:
        state = nets_base.initial_state_of(self.nets[netid], [values[i] for i in indices],
                                           self.num_steps)
        self.states.append(tf.nest.map_structure(
            lambda t: tf.Variable(t, trainable=False, name="state"), state))

  def _check_variables(self, variables: Sequence[tf.Variable]) -> None:
    refs = [v.ref() if hasattr(v, "ref") else id(v) for v in variables]
    if refs != self._variable_refs:
      raise ValueError(f"LearnedOptimizer.apply: got {len(variables)} variables that differ "
                       f"from the {len(self._variable_refs)} of the first call; use one "
                       "optimizer per set of variables")

  def apply(self, updates: Sequence[Optional[tf.Tensor]],
            parameters: Sequence[tf.Variable], loss: Optional[tf.Tensor] = None) -> None:
    """Takes one step: `parameters[i] += rule(updates)[i]`.

    As in `snt.optimizers`, `updates` are the gradients of the loss. A `None` gradient leaves its
    variable unchanged (its rule sees a zero gradient for it).

    Args:
      updates: one gradient (or None) per parameter.
      parameters: the variables, the same ones in the same order at every call.
      loss: the loss the gradients were taken of, for rules that read it (optional).

    Raises:
      ValueError: different lengths, a gradient whose shape is not its parameter's, variables
        that differ from the first call's, or assignments that do not cover the variables.
    """
    updates, parameters = list(updates), list(parameters)
    if len(updates) != len(parameters):
      raise ValueError(f"LearnedOptimizer.apply: {len(updates)} gradients for "
                       f"{len(parameters)} parameters")
    if self._groups is None:
      self._initialize(parameters)
    else:
      self._check_variables(parameters)
    grads = []
    for g, v in zip(updates, parameters):
      if g is None:
        grads.append(tf.zeros(v.shape, tf.as_dtype(v.dtype)))
      else:
        grads.append(tf.convert_to_tensor(g))  # IndexedSlices become dense.
        if not grads[-1].shape.is_compatible_with(v.shape):
          raise ValueError(f"LearnedOptimizer.apply: updates[{len(grads) - 1}] has shape "
                           f"{grads[-1].shape}, its parameter {variable_name(v)!r} {v.shape}")
    for (netid, indices), state_vars in zip(self._groups, self.states):
      state = tf.nest.map_structure(tf.convert_to_tensor, state_vars)
      steps, state = nets_base.call_rule(
          self.nets[netid], [grads[i] for i in indices], state,
          params=[tf.convert_to_tensor(parameters[i]) for i in indices], loss=loss)
      for i, step in zip(indices, steps):
        if updates[i] is not None:
          parameters[i].assign_add(tf.cast(step, tf.as_dtype(parameters[i].dtype)))
      tf.nest.map_structure(lambda var, value: var.assign(value), state_vars, state)

  @property
  def assignments(self) -> List[Tuple[str, List[int]]]:
    """`(netid, [parameter indices])` of every net, once `apply` has been called."""
    if self._groups is None:
      raise ValueError("LearnedOptimizer.assignments: call apply first")
    return [(netid, list(indices)) for netid, indices in self._groups]
