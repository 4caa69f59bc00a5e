"""Differentiable inner-loop optimizers over any `nets` update rule, like PyTorch's `higher`.

    rule = nets.Adam(learning_rate=0.01, learnable=True)    # or a trained LSTM: rule_from(path)
    with tf.GradientTape() as tape:
      with l2l.innerloop_ctx(model, rule) as (fmodel, diffopt):
        for _ in range(5):
          diffopt.step(lambda f: mse(f(x_support), y_support))
        meta_loss = mse(fmodel(x_query), y_query)
    tape.gradient(meta_loss, model.trainable_variables + rule.trainable_variables)

`fmodel` runs the module at its current "fast" parameters (`l2l.functional.call`); each
`diffopt.step` takes the gradient of the loss in them and adds the rule's update, so the whole
trajectory is differentiable in the module's initial variables and in the rule's trainable
variables (a learned LSTM's weights, `learnable=True` hyperparameters). With
`track_higher_grads=False` (test time) gradients and parameters are cut at every step: no
second-order graph, and nothing flows back to the initial parameters.

The rest of `higher.innerloop_ctx`'s signature, with higher's meanings:

* `copy_initial_weights`: True starts the fast weights from copies of the module's variables
  that are cut from the gradient tape, so *no meta-gradient reaches the module's variables*
  (higher's default, and a trap for MAML users, whose meta-gradient is exactly that). l2l's
  default is False: the fast weights start at the variables themselves, as MAML needs. Pass
  True for higher's behaviour (e.g. when only the rule's hyperparameters are meta-learned).
* `override`: hyperparameter name -> value for the rule, e.g. `{"learning_rate": lr}`; the
  value may be a tensor or variable outside the rule, which then receives meta-gradients.
  higher's one-element lists (`{"lr": [lr]}`) are accepted (one rule = one parameter group).
* `device`: the device the fast weights, the rule's state and the steps are placed on (e.g.
  "/CPU:0"); the module's variables' devices when None.
"""

import contextlib
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

import nets
from l2l.meta_learning import functional
from l2l.meta_learning import maml as maml_lib
from l2l import meta_optimizer as meta_optimizer_lib

Forward = Callable[..., Any]


def rule_from(source: Union[nets.UpdateRule, meta_optimizer_lib.MetaOptimizer, str],
              netid: Optional[str] = None) -> nets.UpdateRule:
  """An update rule from a rule, a `MetaOptimizer`, or a directory saved by `MetaOptimizer.save`.

  Args:
    source: the rule itself, a MetaOptimizer, or the path of a saved one (a trained LSTM).
    netid: which of the MetaOptimizer's nets; optional when it has one.

  Raises:
    ValueError: no saved optimizer at the path, or an ambiguous / unknown `netid`.
  """
  if isinstance(source, nets.UpdateRule):
    return source
  if isinstance(source, str):
    source = meta_optimizer_lib.MetaOptimizer.load(source)
  if not isinstance(source, meta_optimizer_lib.MetaOptimizer):
    raise TypeError(f"expected an update rule, a MetaOptimizer or a path, got "
                    f"{type(source).__name__}")
  if netid is None:
    if len(source.nets) != 1:
      raise ValueError(f"the MetaOptimizer has nets {sorted(source.nets)}; pass netid")
    netid = next(iter(source.nets))
  if netid not in source.nets:
    raise ValueError(f"unknown netid {netid!r}; the MetaOptimizer has {sorted(source.nets)}")
  return source.nets[netid]


class FunctionalModel:
  """A module bound to "fast" parameter values: calling it runs the module at `params`.

  Buffers (BatchNorm statistics) are threaded explicitly through `buffers`, as in
  `l2l.meta_learning.maml.Learner`: the module's own buffer variables are never assigned.
  """

  def __init__(self, module: tf.Module, params: Optional[functional.Params] = None):
    self.module = module
    self.params: Dict[str, Any] = dict(functional.named_parameters(module)
                                       if params is None else params)
    self.init_params: Dict[str, Any] = dict(self.params)  # higher's `parameters(time=0)`.
    self.buffers: Optional[Dict[str, tf.Tensor]] = functional.initial_buffers(module)

  def forward_at(self, params: functional.Params) -> Forward:
    """The module's forward at `params`, reading and updating `self.buffers`."""
    def forward(*args: Any, **kwargs: Any) -> Any:
      output, self.buffers = functional.call_threaded(self.module, params, self.buffers, *args,
                                                      **kwargs)
      return output
    return forward

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return self.forward_at(self.params)(*args, **kwargs)


def check_device(device: Any) -> Optional[str]:
  """`device` as a device string, checked against this machine's logical devices.

  Raises:
    ValueError: a malformed device string, or a device this machine does not have.
  """
  if device is None:
    return None
  name = getattr(device, "name", device)  # A tf.config.LogicalDevice.
  if not isinstance(name, str):
    raise TypeError(f"device must be a device string such as '/CPU:0', got {device!r}")
  try:
    spec = tf.DeviceSpec.from_string(name)
  except ValueError as error:
    raise ValueError(f"device {name!r} is not a device string such as '/CPU:0' ({error})") \
        from None
  devices = tf.config.list_logical_devices()
  for available in devices:
    found = tf.DeviceSpec.from_string(available.name)
    if (spec.device_type or "").upper() == (found.device_type or "").upper() and \
        spec.device_index in (None, found.device_index):
      return name
  raise ValueError(f"device {name!r} is not one of this machine's devices "
                   f"{[d.name for d in devices]}")


def hyperparameters(rule: nets.UpdateRule) -> Dict[str, Any]:
  """The rule's scalar hyperparameters (its own scalar variables), by attribute name."""
  return {attr: value for attr, value in vars(rule).items()
          if isinstance(value, tf.Variable) and value.shape.rank == 0}


def _check_override(rule: nets.UpdateRule, override: Optional[Mapping[str, Any]]
                    ) -> Dict[str, Any]:
  if override is None:
    return {}
  if not isinstance(override, Mapping):
    raise TypeError(f"override must be a mapping from hyperparameter names to values, got "
                    f"{type(override).__name__}")
  known = hyperparameters(rule)
  unknown = [k for k in override if k not in known]
  if unknown:
    raise ValueError(f"override names {unknown}, which are not hyperparameters of rule "
                     f"{rule.name!r}; its hyperparameters are {sorted(known)}")
  checked = {}
  for name, value in override.items():
    if isinstance(value, (list, tuple)):
      if len(value) != 1:
        raise ValueError(f"override[{name!r}] is a list of {len(value)} values; an l2l rule is "
                         "one parameter group, give one value (or a one-element list)")
      value = value[0]
    value = tf.convert_to_tensor(value, dtype_hint=known[name].dtype)
    if value.shape.rank != 0 or not value.dtype.is_floating:
      raise ValueError(f"override[{name!r}] must be a floating scalar, got {value!r}")
    checked[name] = value
  return checked


@contextlib.contextmanager
def _overridden(rule: nets.UpdateRule, override: Mapping[str, Any]) -> Iterator[None]:
  """The rule reads the override values instead of its hyperparameter variables meanwhile."""
  saved = {name: getattr(rule, name) for name in override}
  try:
    for name, value in override.items():
      object.__setattr__(rule, name, value)
    yield
  finally:
    for name, value in saved.items():
      object.__setattr__(rule, name, value)


class DifferentiableOptimizer:
  """Steps a `FunctionalModel`'s parameters with an update rule, differentiably.

  Args:
    fmodel: the model whose `params` this optimizer updates.
    rule: any `nets` update rule (hand-designed or learned).
    adapt_names: the parameters to update (default all), in the order the rule sees them.
    track_higher_grads: keep the trajectory differentiable (meta-training); False cuts
      gradients and parameters at each step (test time, no second-order graph).
    first_order: keep the trajectory differentiable but stop the gradients fed to the rule
      (first-order MAML with this rule).
    allow_unused: parameters the loss does not use get zero gradients instead of an error.
    num_steps: the planned number of steps, for rules that read the training progress
      (`nets.UpdateRule.uses_context`); None gives them their default horizon.
    override: hyperparameter name -> value used instead of the rule's own (see the module
      docstring); tensors receive meta-gradients.
    device: where the rule's state and the steps are placed (see `check_device`).

  Raises:
    TypeError: `rule` is not an update rule.
    ValueError: an `override` name that is not one of the rule's hyperparameters, or an
      unknown `device`.
  """

  def __init__(self, fmodel: FunctionalModel, rule: nets.UpdateRule,
               adapt_names: Optional[Sequence[str]] = None, track_higher_grads: bool = True,
               first_order: bool = False, allow_unused: bool = False,
               num_steps: Optional[int] = None, override: Optional[Mapping[str, Any]] = None,
               device: Any = None):
    if not isinstance(rule, nets.UpdateRule):
      raise TypeError(f"rule must be a nets.UpdateRule, got {type(rule).__name__}")
    self.fmodel = fmodel
    self.rule = rule
    self.names = maml_lib.check_names(adapt_names, fmodel.params)
    self.track_higher_grads = bool(track_higher_grads)
    self.first_order = bool(first_order)
    self.allow_unused = bool(allow_unused)
    self.override = _check_override(rule, override)
    self.device = check_device(device)
    with self._placed(), _overridden(rule, self.override):
      self.state = nets.initial_state_of(
          rule, [tf.convert_to_tensor(fmodel.params[n]) for n in self.names], num_steps)

  def _placed(self):
    return tf.device(self.device) if self.device is not None else contextlib.nullcontext()

  def step(self, loss_fn: Callable[[Forward], tf.Tensor]) -> tf.Tensor:
    """One update on `loss_fn(forward)`; returns the loss before the update."""
    with self._placed(), _overridden(self.rule, self.override):
      return self._step(loss_fn)

  def _step(self, loss_fn: Callable[[Forward], tf.Tensor]) -> tf.Tensor:
    loss, grads = maml_lib.gradients(
        self.fmodel.params, lambda p: loss_fn(self.fmodel.forward_at(p)), self.names,
        self.allow_unused)
    grads = [grads[n] for n in self.names]
    if self.first_order or not self.track_higher_grads:
      grads = [tf.stop_gradient(g) for g in grads]
    updates, self.state = nets.call_rule(self.rule, grads, self.state,
                                         params=[self.fmodel.params[n] for n in self.names],
                                         loss=tf.stop_gradient(loss))
    params = dict(self.fmodel.params)
    for name, update in zip(self.names, updates):
      params[name] = params[name] + update
      if not self.track_higher_grads:
        params[name] = tf.stop_gradient(params[name])
    if not self.track_higher_grads:
      self.state = tf.nest.map_structure(tf.stop_gradient, self.state)
    self.fmodel.params = params
    return loss


@contextlib.contextmanager
def innerloop_ctx(module: tf.Module, rule: Union[nets.UpdateRule, str, Any], device: Any = None,
                  copy_initial_weights: bool = False,
                  override: Optional[Mapping[str, Any]] = None, track_higher_grads: bool = True,
                  *, adapt_names: Optional[Sequence[str]] = None, first_order: bool = False,
                  allow_unused: bool = False, num_steps: Optional[int] = None
                  ) -> Iterator[Tuple[FunctionalModel, DifferentiableOptimizer]]:
  """`(fmodel, diffopt)` starting at the module's variables, as `higher.innerloop_ctx`.

  The positional arguments follow higher's order: `(model, opt, device, copy_initial_weights,
  override, track_higher_grads)`; l2l's own options are keyword-only.

  Args:
    module: a built Sonnet module.
    rule: any `nets` update rule, a MetaOptimizer, or the path of a saved one (`rule_from`).
    device: where the fast weights, the rule's state and the steps live (e.g. "/CPU:0").
    copy_initial_weights: False (l2l's default; higher's is True): the fast weights start at
      the module's variables and meta-gradients reach them, as MAML needs. True (higher's
      default): they start at copies cut from the tape, so the module's variables get no
      meta-gradient (`fmodel.init_params` holds the copies).
    override: hyperparameter name -> value (a number, tensor or variable; tensors receive
      meta-gradients) used by the rule instead of its own, e.g. `{"learning_rate": lr}`.
    track_higher_grads: False cuts gradients and parameters at every step (test time).
    adapt_names, first_order, allow_unused, num_steps: see `DifferentiableOptimizer`.

  Raises:
    TypeError: a bad `rule`, `override` or `device` type.
    ValueError: an `override` name the rule does not have, an unknown `device`.
  """
  rule = rule_from(rule)
  device = check_device(device)
  params = functional.named_parameters(module)
  if copy_initial_weights or device is not None:
    placed = tf.device(device) if device is not None else contextlib.nullcontext()
    with placed:
      params = {k: tf.identity(v) for k, v in params.items()}
    if copy_initial_weights:
      params = {k: tf.stop_gradient(v) for k, v in params.items()}
  fmodel = FunctionalModel(module, params)
  yield fmodel, DifferentiableOptimizer(fmodel, rule, adapt_names, track_higher_grads,
                                        first_order, allow_unused, num_steps, override, device)
