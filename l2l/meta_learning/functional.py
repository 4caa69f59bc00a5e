"""Run a built Sonnet module with given parameter values: stateless and differentiable in them.

    params = functional.named_params(model)       # {"mlp/linear_0/w": <tf.Variable>, ...}
    fast = {k: p - 0.01 * g[k] for k, p in params.items()}
    y = functional.functional_forward(model, fast, x)   # the model's forward at `fast`

(`named_params` / `functional_forward` are the names iteryne uses; `named_parameters` / `call`
are the same functions under their older l2l names.)

Sonnet 2 modules keep their variables as attributes (`Linear.w`, `BatchNorm.scale`, the
moving averages' `average`, ...). `call` swaps those attributes for the given tensors while the
forward runs and puts the variables back afterwards, so any built module works unchanged (the
TF form of `torch.func.functional_call`). Gradients flow to whatever the given tensors depend on:
the module's own variables when they are its parameters as read under a tape, or a previous
inner-loop step.

Buffers (non-trainable variables such as BatchNorm statistics) are handled explicitly: by
default the module's own buffer variables are read, and updated in place if the forward updates
them; with `buffers=` the forward reads the given tensors instead, never touches the module's
variables, and `call` returns the updated buffers next to the output.
"""

import contextlib
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import sonnet as snt
import tensorflow as tf

Params = Mapping[str, tf.Tensor]  # Parameter (or buffer) name -> tensor of its shape.


def variable_name(variable: tf.Variable) -> str:
  """A variable's name without the `:0` suffix, e.g. "mlp/linear_0/w"."""
  return variable.name.split(":")[0]


def _named(module: tf.Module, variables, kind: str) -> Dict[str, tf.Variable]:
  named: Dict[str, tf.Variable] = {}
  for v in variables:
    name = variable_name(v)
    if name in named:
      raise ValueError(f"module {module.name!r} has two {kind} named {name!r}; give its "
                       "submodules distinct names so that parameters can be addressed by name")
    named[name] = v
  return named


def _all_variables(module: tf.Module, trainable: bool) -> Tuple[tf.Variable, ...]:
  # tf.Module's getters: Sonnet's raise for modules without variables (e.g. a BatchNorm
  # without scale and offset), which here just have no parameters.
  getter = tf.Module.trainable_variables if trainable else tf.Module.variables
  return tuple(getter.fget(module))


def named_parameters(module: tf.Module) -> Dict[str, tf.Variable]:
  """The module's trainable variables by name, in `module.trainable_variables` order.

  Raises:
    TypeError: `module` is not a tf.Module.
    ValueError: the module has no variables yet (call it once to build it), or two
      parameters share a name.
  """
  if not isinstance(module, tf.Module):
    raise TypeError(f"expected a built Sonnet module (tf.Module), got {type(module).__name__}")
  if not _all_variables(module, trainable=False):
    raise ValueError(f"module {module.name!r} has no variables; call it once on example "
                     "inputs to build it before running it functionally")
  return _named(module, _all_variables(module, trainable=True), "parameters")


def named_buffers(module: tf.Module) -> Dict[str, tf.Variable]:
  """The module's non-trainable variables (e.g. BatchNorm moving statistics) by name."""
  trainable = {id(v) for v in _all_variables(module, trainable=True)}
  return _named(module, [v for v in _all_variables(module, trainable=False)
                         if id(v) not in trainable], "buffers")


def values(variables: Mapping[str, tf.Variable]) -> Dict[str, tf.Tensor]:
  """`{name: tensor}`: the current values of a name -> variable mapping."""
  return {name: tf.convert_to_tensor(v) for name, v in variables.items()}


class _Buffer:
  """Stands in for a buffer variable during a functional call: reads and assigns a tensor.

  Supports what Sonnet's stateful layers do with their buffers: `assign`, `assign_add`,
  `assign_sub`, `read_value`, `value()`, arithmetic and `tf.convert_to_tensor`.
  """

  def __init__(self, value: tf.Tensor):
    self.tensor = value

  dtype = property(lambda self: self.tensor.dtype)
  shape = property(lambda self: self.tensor.shape)

  def value(self) -> tf.Tensor:
    return self.tensor

  def read_value(self) -> tf.Tensor:
    return self.tensor

  def assign(self, value, read_value: bool = True):
    del read_value
    self.tensor = tf.cast(tf.convert_to_tensor(value), self.tensor.dtype)
    return self.tensor

  def assign_add(self, delta, read_value: bool = True):
    return self.assign(self.tensor + tf.cast(delta, self.tensor.dtype), read_value)

  def assign_sub(self, delta, read_value: bool = True):
    return self.assign(self.tensor - tf.cast(delta, self.tensor.dtype), read_value)


def _forward(name: str):
  def method(self, *args):
    return getattr(self.tensor, name)(*args)
  return method


for _op in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
            "__rtruediv__", "__neg__", "__pow__", "__getitem__", "__lt__", "__gt__", "__le__",
            "__ge__"):
  setattr(_Buffer, _op, _forward(_op))

tf.register_tensor_conversion_function(
    _Buffer, lambda b, dtype=None, name=None, as_ref=False: tf.convert_to_tensor(b.tensor, dtype))


def _locations(module: tf.Module) -> Dict[int, List[Tuple[Any, str]]]:
  """id(variable) -> every (module, attribute) that holds it directly."""
  found: Dict[int, List[Tuple[Any, str]]] = {}
  for owner in (module,) + tuple(module.submodules):
    for attr, value in list(vars(owner).items()):
      if isinstance(value, tf.Variable):
        found.setdefault(id(value), []).append((owner, attr))
  return found


@contextlib.contextmanager
def _substituted(module: tf.Module, replacements: Mapping[int, Any]) -> Iterator[None]:
  """Swaps each variable (by id) for its replacement while the context is open."""
  locations = _locations(module)
  missing = [i for i in replacements if i not in locations]
  if missing:
    names = [variable_name(v) for v in module.variables if id(v) in missing]
    raise ValueError(f"module {module.name!r}: variables {names} are not attributes of a "
                     "submodule (e.g. they sit in a list), so they cannot be substituted")
  saved = []
  try:
    for var_id, replacement in replacements.items():
      for owner, attr in locations[var_id]:
        saved.append((owner, attr, getattr(owner, attr)))
        object.__setattr__(owner, attr, replacement)
    yield
  finally:
    for owner, attr, original in reversed(saved):
      object.__setattr__(owner, attr, original)


def _check_mapping(argument: str, given: Params, expected: Mapping[str, tf.Variable],
                   module: tf.Module, complete: bool) -> None:
  if not isinstance(given, Mapping):
    raise TypeError(f"`{argument}` must be a mapping from names to tensors, got "
                    f"{type(given).__name__}")
  unknown = [k for k in given if k not in expected]
  if unknown:
    raise ValueError(f"`{argument}` names {unknown}, which are not {argument} of module "
                     f"{module.name!r}; its {argument} are {list(expected)}")
  if complete:
    missing = [k for k in expected if k not in given]
    if missing:
      raise ValueError(f"`{argument}` lacks {missing} of module {module.name!r}")
  for name, value in given.items():
    shape = tf.TensorShape(getattr(value, "shape", None))
    if not shape.is_compatible_with(expected[name].shape):
      raise ValueError(f"`{argument}[{name!r}]` has shape {shape}, expected "
                       f"{expected[name].shape}")


def call(module: tf.Module, params: Params, *args: Any, buffers: Optional[Params] = None,
         method: Optional[str] = None, **kwargs: Any) -> Any:
  """Runs `module(*args, **kwargs)` with its parameters replaced by `params`.

  Args:
    module: a built Sonnet module (it has created its variables).
    params: parameter name -> tensor; parameters left out keep the module's own variables.
    *args: positional arguments of the forward.
    buffers: if given, buffer name -> tensor for every buffer of the module: the forward reads
      these instead of the module's buffer variables, never assigns the variables, and `call`
      returns `(output, new_buffers)`. If None, the module's buffer variables are used as usual.
    method: the name of the module method to run instead of `__call__`.
    **kwargs: keyword arguments of the forward (e.g. `is_training=True`).

  Returns:
    The forward's output, or `(output, new_buffers)` when `buffers` is given.

  Raises:
    ValueError: a name that is not a parameter (or buffer) of the module, a shape mismatch, or
      a buffers mapping that leaves a buffer out.
  """
  named_params = named_parameters(module)
  _check_mapping("params", params, named_params, module, complete=False)
  replacements = {id(named_params[k]): v for k, v in params.items()}
  slots: Dict[str, _Buffer] = {}
  if buffers is not None:
    buffer_vars = named_buffers(module)
    _check_mapping("buffers", buffers, buffer_vars, module, complete=True)
    slots = {k: _Buffer(tf.convert_to_tensor(v)) for k, v in buffers.items()}
    replacements.update({id(buffer_vars[k]): slot for k, slot in slots.items()})
  forward = module if method is None else getattr(module, method)
  with _substituted(module, replacements):
    output = forward(*args, **kwargs)
  if buffers is None:
    return output
  return output, {k: slot.tensor for k, slot in slots.items()}


def functional_forward(model: tf.Module, params: Params, *args: Any,
                       buffers: Optional[Params] = None, **kwargs: Any) -> Any:
  """`model(*args, **kwargs)` with its parameters replaced by `params` (iteryne's name).

  The same as `call(model, params, *args, buffers=buffers, **kwargs)`: parameters left out of
  `params` keep the model's own variables; with `buffers` the forward reads and updates the
  given buffer tensors instead of the model's buffer variables and `(output, new_buffers)` is
  returned. `model` and `params` are positional-only in spirit: a forward keyword argument
  named `model` or `params` cannot be passed.
  """
  return call(model, params, *args, buffers=buffers, **kwargs)


def named_params(model: tf.Module) -> Dict[str, tf.Variable]:
  """The model's trainable variables by name (iteryne's name for `named_parameters`)."""
  return named_parameters(model)


def initial_buffers(module: tf.Module) -> Optional[Dict[str, tf.Tensor]]:
  """The current values of the module's buffers, or None if it has none (see `call_threaded`)."""
  buffers = named_buffers(module)
  return values(buffers) if buffers else None


def call_threaded(module: tf.Module, params: Params, buffers: Optional[Params], *args: Any,
                  **kwargs: Any) -> Tuple[Any, Optional[Dict[str, tf.Tensor]]]:
  """`call` that threads explicit buffers through: returns `(output, new_buffers)`.

  With `buffers` None (a module without buffers) it is `(call(module, params, ...), None)`.
  The new buffers are statistics, not functions to differentiate: gradients are stopped
  through them (as PyTorch updates BatchNorm's running statistics outside autograd), so a
  test-mode forward that reads them is differentiable in the parameters only directly.
  """
  if buffers is None:
    return call(module, params, *args, **kwargs), None
  output, new = call(module, params, *args, buffers=buffers, **kwargs)
  return output, {k: tf.stop_gradient(v) for k, v in new.items()}


def moments(x: tf.Tensor, axes: Sequence[int]) -> Tuple[tf.Tensor, tf.Tensor]:
  """Mean and biased variance over `axes` (kept as size-1 dims), differentiable to any order.

  `tf.nn.moments` computes the variance around `tf.stop_gradient(mean)`: harmless for first
  derivatives (the variance does not change to first order with the centre), wrong for second
  ones. Here the variance is centred on the mean itself.
  """
  mean = tf.reduce_mean(x, axes, keepdims=True)
  return mean, tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)


class BatchNorm(snt.BatchNorm):
  """`snt.BatchNorm` whose batch statistics are differentiable to second order (for MAML).

  Second-order MAML differentiates the inner gradient again. Through `snt.BatchNorm` (which
  uses `tf.nn.moments`, see `moments`) that meta-gradient is wrong: e.g. the bias of the layer
  before the normalization, which the batch mean cancels, gets a non-zero meta-gradient. This
  subclass computes the batch statistics with `moments` and never uses the fused kernel;
  otherwise it is `snt.BatchNorm` (same arguments, variables and moving statistics).
  """

  def _moments(self, inputs: tf.Tensor, use_batch_stats) -> Tuple[tf.Tensor, tf.Tensor]:
    self._fused = False  # Set by the first call's _initialize; __call__ reads it after this.
    if use_batch_stats:
      return moments(inputs, self._axis)
    return super()._moments(inputs, use_batch_stats)
