"""Any l2l update rule as a Keras 3 optimizer, for `model.compile` / `model.fit`.

    model.compile(optimizer=l2l.keras.Optimizer(l2l.pretrained(), num_steps=2000),
                  loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=...)
    model.save("m.keras")            # the rule and its state travel with the model
    model = keras.models.load_model("m.keras")   # and training continues where it stopped

The rule is any rule of `nets` (hand-designed or learned), a directory written by
`MetaOptimizer.save` (train.py's save_path), a `MetaOptimizer`, or a dict netid -> rule with
`net_assignments`, as `l2l.LearnedOptimizer` takes. Each step is

    updates, state = rule(grads, state)          # call_rule: + params for context rules
    variable <- variable + learning_rate * update

so `learning_rate` is a multiplier of the rule's updates (1.0, the default, runs the rule as it
was trained; schedules and callbacks such as ReduceLROnPlateau scale it). Everything else Keras
optimizers take works as usual: `clipnorm` / `clipvalue` / `global_clipnorm` (applied to the
gradients the rule sees), `weight_decay`, `use_ema`, `gradient_accumulation_steps`,
`loss_scale_factor`, and mixed precision (Keras wraps the optimizer in a LossScaleOptimizer,
which hands the rule unscaled gradients).

State: the rule's state (moments, LSTM hidden states, step counters) lives in optimizer
variables created by `build`, so `model.save` / `keras.models.load_model` and
`tf.train.Checkpoint` carry it. The rule's own (learned) weights travel in `get_config`: its
`config` and its variables' values as base64 float32 bytes (a few KB), so a saved model
rebuilds the same rule in a process that has never seen the optimizer's directory.

Variables: float32, float16 and bfloat16 variables are updated by the rule in float32 (the
update is cast to the variable's dtype); other dtypes raise a ValueError naming the variable at
`build`. Sparse gradients (`tf.IndexedSlices`, from Embedding layers) are made dense by default
(`sparse_gradients="densify"`: the rule's state is dense, so every row's state advances each step,
as in `keras.optimizers.Adam`); `sparse_gradients="error"` raises a ValueError naming the
variable instead.

Limits: one replica (no multi-device `tf.distribute` strategy). The fused CPU kernels of the
LSTM and PerParameterMLP rules have no XLA kernel: with `jit_compile=True` (the Keras default
on machines with a GPU) those rules run their reference ops; on CPU-only machines Keras leaves
XLA off.
"""

import base64
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

import nets
from l2l import checks
from l2l import learned_optimizer as learned_optimizer_lib
from nets import base as nets_base

SPARSE_GRADIENTS = ("densify", "error")
# Variable dtypes the rules update (in float32, the update cast back).
SUPPORTED_DTYPES = (tf.float16, tf.bfloat16, tf.float32)
_RULE_DTYPE = tf.float32


def encode_rules(rules: Mapping[str, nets_base.UpdateRule]) -> Dict[str, Any]:
  """The rules as JSON: netid -> {"config": rule.config, "weights": [float32 arrays in base64]}.

  The weights are the rule's `variables` in their (deterministic) module order, each with its
  shape and dtype; `decode_rules` rebuilds the rules bit for bit.
  """
  encoded = {}
  for netid, rule in rules.items():
    weights = []
    for variable in rule.variables:
      value = np.asarray(variable.numpy())
      weights.append({"shape": list(value.shape), "dtype": value.dtype.name,
                      "data": base64.b64encode(value.tobytes()).decode("ascii")})
    encoded[netid] = {"config": rule.config, "weights": weights}
  return encoded


def decode_rules(encoded: Mapping[str, Any]) -> Dict[str, nets_base.UpdateRule]:
  """The rules of `encode_rules`, rebuilt with `nets.factory` and their weights restored.

  Raises:
    ValueError: malformed data, or weights that do not fit the rebuilt rule.
  """
  if not isinstance(encoded, Mapping) or not encoded:
    raise ValueError(f"l2l.keras.Optimizer: `rule` config must be a non-empty dict netid -> "
                     f"{{'config', 'weights'}}, got {type(encoded).__name__}")
  rules = {}
  for netid, entry in encoded.items():
    if not isinstance(entry, Mapping) or set(entry) != {"config", "weights"}:
      raise ValueError(f"l2l.keras.Optimizer: rule {netid!r} config must have keys 'config' "
                       f"and 'weights'")
    rule = nets.factory(entry["config"])
    variables = rule.variables
    if len(variables) != len(entry["weights"]):
      raise ValueError(f"l2l.keras.Optimizer: rule {netid!r} has {len(variables)} variables, "
                       f"the config stores {len(entry['weights'])} weights")
    for variable, weight in zip(variables, entry["weights"]):
      value = np.frombuffer(base64.b64decode(weight["data"]), dtype=np.dtype(weight["dtype"]))
      value = value.reshape(weight["shape"])
      if tuple(variable.shape) != value.shape:
        raise ValueError(f"l2l.keras.Optimizer: rule {netid!r} variable {variable.name} has "
                         f"shape {tuple(variable.shape)}, the stored weight {value.shape}")
      variable.assign(value)
    rules[netid] = rule
  return rules


class _Group:
  """The variables one rule updates and the optimizer variables holding its state.

  A plain object, so that neither Keras nor TF tracking wraps it: the state variables are
  tracked by `Optimizer.add_variable`.
  """

  def __init__(self, netid: str, indices: Tuple[int, ...], structure: Any,
               state_variables: List[keras.Variable]):
    self.netid = netid
    self.indices = indices
    self.structure = structure  # The initial state, for `tf.nest.pack_sequence_as`.
    self.state_variables = state_variables


@keras.saving.register_keras_serializable(package="l2l")
class Optimizer(keras.optimizers.Optimizer):
  """A Keras 3 optimizer that applies an l2l update rule (see the module docstring).

  Args:
    rule: any rule of `nets`, a directory written by `MetaOptimizer.save`, a `MetaOptimizer`,
      or a dict netid -> rule.
    num_steps: the planned number of steps, for rules that read the training progress (the
      pretrained per-parameter rules); None gives them the horizon they were trained for.
    net_assignments: with several nets, `(netid, [variable paths])` pairs (Keras 3 variables'
      `path`), or a function variable -> netid (not serializable by `get_config`).
    sparse_gradients: "densify" (default) or "error", for `tf.IndexedSlices` gradients.
    learning_rate: a multiplier of the rule's updates (float, schedule or callable).
    name: the optimizer's name.
    **kwargs: the other arguments of `keras.optimizers.Optimizer` (clipnorm, clipvalue,
      global_clipnorm, weight_decay, use_ema, loss_scale_factor, ...).

  Raises:
    TypeError: `rule` is none of the above.
    ValueError: a bad `num_steps` or `sparse_gradients`, or no saved optimizer at the path.
  """

  def __init__(self, rule: learned_optimizer_lib.Rule, num_steps: Optional[int] = None,
               net_assignments: Optional[learned_optimizer_lib.Assignments] = None,
               sparse_gradients: str = "densify", learning_rate: Any = 1.0,
               name: str = "l2l_optimizer", **kwargs: Any):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    if num_steps is not None:
      checks.positive_int("num_steps", num_steps)
    if sparse_gradients not in SPARSE_GRADIENTS:
      raise ValueError(f"sparse_gradients must be one of {SPARSE_GRADIENTS}, got "
                       f"{sparse_gradients!r}")
    self.num_steps = num_steps
    self.sparse_gradients = sparse_gradients
    self._net_assignments = net_assignments
    # A tuple of pairs rather than a dict: tracking would wrap a dict. The rules' variables are
    # checkpoint dependencies of the optimizer (harmless: their values also travel in the config).
    self._rules = tuple(learned_optimizer_lib._nets_from(rule).items())  # pylint: disable=protected-access
    self._groups: Tuple[_Group, ...] = ()

  @property
  def rules(self) -> Dict[str, nets_base.UpdateRule]:
    """netid -> the update rule."""
    return dict(self._rules)

  def _resolve(self, variables: Sequence[Any]) -> List[Tuple[str, Tuple[int, ...]]]:
    return learned_optimizer_lib.resolve_groups([netid for netid, _ in self._rules], variables,
                                                self._net_assignments, "l2l.keras.Optimizer")

  def build(self, variables: Sequence[Any]) -> None:
    """Creates the rules' states (optimizer variables) for `variables`.

    Raises:
      ValueError: a variable of an unsupported dtype (named), or bad `net_assignments`.
    """
    if self.built:
      return
    for variable in variables:
      if tf.as_dtype(variable.dtype) not in SUPPORTED_DTYPES:
        name = learned_optimizer_lib.variable_name(variable)
        raise ValueError(f"l2l.keras.Optimizer: variable {name!r} has dtype "
                         f"{tf.as_dtype(variable.dtype).name}; update rules run on "
                         "float32, float16 and bfloat16 variables")
    super().build(variables)
    groups = self._resolve(variables)
    rules = self.rules
    built_groups = []
    with tf.init_scope():
      # The state depends on the variables' shapes only (rules get zeros of their shapes, as
      # in LearnedOptimizer), so a model built inside a trace works too.
      zeros = [tf.zeros(v.shape, _RULE_DTYPE) for v in variables]
      for netid, indices in groups:
        state = nets_base.initial_state_of(rules[netid], [zeros[i] for i in indices],
                                           self.num_steps)
        state_variables = []
        for k, leaf in enumerate(tf.nest.flatten(state)):
          value = leaf.numpy()
          state_variables.append(self.add_variable(
              shape=value.shape, dtype=leaf.dtype.name, name=f"{netid}_state_{k}",
              initializer=lambda shape, dtype=None, value=value: tf.constant(value, dtype)))
        built_groups.append(_Group(netid, indices, state, state_variables))
    self._groups = tuple(built_groups)

  def _dense_gradient(self, grad: Any, variable: Any) -> tf.Tensor:
    if isinstance(grad, tf.IndexedSlices):
      if self.sparse_gradients == "error":
        raise ValueError(f"l2l.keras.Optimizer: variable "
                         f"{learned_optimizer_lib.variable_name(variable)!r} has a sparse "
                         "(IndexedSlices) gradient; use sparse_gradients='densify'")
      grad = tf.convert_to_tensor(grad)
    return tf.cast(grad, _RULE_DTYPE)

  def _backend_update_step(self, grads: Sequence[Any], trainable_variables: Sequence[Any],
                           learning_rate: Any) -> None:
    """One step of every rule over all the variables (Keras' per-variable loop does not fit
    rules whose state spans variables)."""
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1:
      raise ValueError("l2l.keras.Optimizer supports one replica only, got a "
                       f"{type(strategy).__name__} with {strategy.num_replicas_in_sync}")
    given = {}  # Index among the built variables -> (gradient, variable).
    for grad, variable in zip(grads, trainable_variables):
      given[self._get_variable_index(variable)] = (grad, variable)
    built = self._trainable_variables
    dense = [self._dense_gradient(*given[i]) if i in given
             else tf.zeros(built[i].shape, _RULE_DTYPE) for i in range(len(built))]
    multiplier = tf.cast(learning_rate, _RULE_DTYPE)
    rules = self.rules
    for group in self._groups:
      state = tf.nest.pack_sequence_as(
          group.structure, [tf.convert_to_tensor(v.value) for v in group.state_variables])
      params = [tf.cast(tf.convert_to_tensor(built[i].value), _RULE_DTYPE)
                for i in group.indices]
      updates, state = nets_base.call_rule(rules[group.netid],
                                           [dense[i] for i in group.indices], state,
                                           params=params, loss=None)
      for i, update in zip(group.indices, updates):
        if i in given:  # A variable without a gradient is left unchanged.
          variable = given[i][1]
          variable.assign_add(tf.cast(update * multiplier, tf.as_dtype(variable.dtype)))
      for state_variable, value in zip(group.state_variables, tf.nest.flatten(state)):
        state_variable.assign(value)

  def get_config(self) -> Dict[str, Any]:
    """The Keras config plus the rules (configs and weights, see `encode_rules`).

    Raises:
      ValueError: `net_assignments` is a function.
    """
    if callable(self._net_assignments):
      raise ValueError("l2l.keras.Optimizer.get_config: a function net_assignments cannot be "
                       "saved; pass (netid, [variable paths]) pairs")
    config = super().get_config()
    config.update(
        rule=encode_rules(self.rules), num_steps=self.num_steps,
        net_assignments=(None if self._net_assignments is None else
                         [[netid, list(names)] for netid, names in self._net_assignments]),
        sparse_gradients=self.sparse_gradients)
    return config

  @classmethod
  def from_config(cls, config: Dict[str, Any], custom_objects: Any = None) -> "Optimizer":
    config = dict(config)
    config["rule"] = decode_rules(config["rule"])
    return super().from_config(config, custom_objects=custom_objects)
