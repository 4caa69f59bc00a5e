"""Variable capture: the TF2 form of the 2016 code's custom getter.

A problem is a `make_loss` callable that builds its optimizee (any Sonnet 2 modules, or plain
`tf.Variable`s) and returns a scalar loss. `tf.variable_creator_scope` sees every variable it
creates: trainable ones are the optimizee's parameters, non-trainable ones are problem constants
(a quadratic's W and y). `Problem` then calls `make_loss` again in three modes:

* `specs`: traced once (never executed) to learn names, shapes, dtypes and trainability;
* `initial_values()`: returns every variable's initial value (a new problem instance when the
  initializers are random);
* `loss(params, constants)`: each trainable variable is replaced by a tensor of `params` and each
  constant by a tensor of `constants`, so gradients flow through a whole optimization trajectory.

Variables are matched by creation order; each call must create the same variables.
"""

import contextlib
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

MakeLoss = Callable[[], tf.Tensor]


class VariableSpec(NamedTuple):
  """What `make_loss` creates: a variable's canonical name, shape, dtype and trainability."""
  name: str
  shape: tf.TensorShape
  dtype: tf.DType
  trainable: bool


def _initial_value(kwargs) -> tf.Tensor:
  value = kwargs.get("initial_value")
  if callable(value):
    value = value()
  return tf.convert_to_tensor(value, dtype=kwargs.get("dtype"))


@contextlib.contextmanager
def _replace_variables(replace: Callable[..., tf.Tensor]) -> Iterator[None]:
  def creator(next_creator, **kwargs):
    del next_creator  # No variable is ever created inside make_loss.
    return replace(**kwargs)
  with tf.variable_creator_scope(creator):
    yield


class Problem:
  """A captured `make_loss`: its variable specs, initial values and a functional loss.

  Args:
    make_loss: builds an optimizee and returns a scalar loss; may be called many times.
    name: used in error messages.

  Raises:
    ValueError: `make_loss` creates no trainable variable, returns a non-scalar, or fails.
    TypeError: `make_loss` is not callable.
  """

  def __init__(self, make_loss: MakeLoss, name: Optional[str] = None):
    if not callable(make_loss):
      raise TypeError(f"make_loss must be a callable returning a scalar loss, got "
                      f"{type(make_loss).__name__}")
    self.make_loss = make_loss
    self.name = name or getattr(make_loss, "__name__", "make_loss")
    self.specs = self._trace_specs()
    self.param_specs = [s for s in self.specs if s.trainable]
    self.constant_specs = [s for s in self.specs if not s.trainable]
    if not self.param_specs:
      raise ValueError(f"make_loss {self.name!r} created no trainable variable: an optimizee "
                       f"needs at least one trainable parameter (tf.Variable(..., trainable=True))")
    self.param_names = [s.name for s in self.param_specs]

  def _trace_specs(self) -> List[VariableSpec]:
    specs = []

    def record(**kwargs):
      value = _initial_value(kwargs)
      scope = tf.get_current_name_scope()
      base = (kwargs.get("name") or "Variable").split(":")[0]
      name = f"{scope}/{base}" if scope else base
      trainable = kwargs.get("trainable")
      specs.append(VariableSpec(name, value.shape, value.dtype.base_dtype,
                                True if trainable is None else bool(trainable)))
      return value

    def trace():
      with _replace_variables(record):
        loss = self.make_loss()
      self._check_loss(loss)
      return loss

    # Tracing in a tf.function gives TF1-style unique names ("linear", "linear_1") and runs nothing.
    tf.function(trace, autograph=False).get_concrete_function()
    names = [s.name for s in specs]
    taken = set(names)
    for i, s in enumerate(specs):
      if not s.shape.is_fully_defined():
        raise ValueError(f"make_loss {self.name!r}: variable {s.name!r} has shape {s.shape}; "
                         "optimizee variables need fully defined shapes")
      if names.count(s.name) > 1:
        # Suffixes skip every name already in use: "x", "x", "x_1" -> "x_0", "x_2", "x_1".
        suffix = names[:i].count(s.name)
        while f"{s.name}_{suffix}" in taken:
          suffix += 1
        specs[i] = s._replace(name=f"{s.name}_{suffix}")
        taken.add(specs[i].name)
    return specs

  def _check_loss(self, loss) -> None:
    if not isinstance(loss, (tf.Tensor, tf.Variable)) or loss.shape.rank != 0:
      shape = getattr(loss, "shape", type(loss).__name__)
      raise ValueError(f"make_loss {self.name!r} must return a scalar loss tensor, got {shape}")

  def _mismatch(self, index: int, kwargs) -> ValueError:
    if index >= len(self.specs):
      return ValueError(f"make_loss {self.name!r} created different variables on different "
                        f"calls: more than the {len(self.specs)} of its first call")
    value = _initial_value(kwargs)
    return ValueError(
        f"make_loss {self.name!r} created different variables on different calls: variable "
        f"#{index} was {self.specs[index]}, now shape {value.shape} dtype {value.dtype.name} "
        f"trainable {kwargs.get('trainable')}")

  def _check_count(self, count: int) -> None:
    if count != len(self.specs):
      raise ValueError(f"make_loss {self.name!r} created different variables on different calls: "
                       f"{len(self.specs)} on the first call, {count} now")

  def initial_values(self) -> Tuple[List[tf.Tensor], List[tf.Tensor]]:
    """Runs the initializers: returns `(params, constants)` of a fresh problem instance."""
    values = []

    def record(**kwargs):
      index = len(values)
      value = _initial_value(kwargs)
      spec = self.specs[index] if index < len(self.specs) else None
      if spec is None or value.shape != spec.shape or value.dtype.base_dtype != spec.dtype:
        raise self._mismatch(index, kwargs)
      values.append(value)
      return value

    with _replace_variables(record):
      self.make_loss()
    self._check_count(len(values))
    params = [v for v, s in zip(values, self.specs) if s.trainable]
    constants = [v for v, s in zip(values, self.specs) if not s.trainable]
    return params, constants

  def loss(self, params: Sequence[tf.Tensor], constants: Sequence[tf.Tensor]) -> tf.Tensor:
    """The loss of `make_loss` with its variables replaced by `params` and `constants`.

    Raises:
      ValueError: `params` or `constants` do not match the specs in number or shape, or
        `make_loss` creates different variables than on its first call.
    """
    for argument, values, specs in (("params", params, self.param_specs),
                                    ("constants", constants, self.constant_specs)):
      if len(values) != len(specs):
        raise ValueError(f"make_loss {self.name!r}: {argument} has {len(values)} tensors, "
                         f"expected {len(specs)} ({[s.name for s in specs]})")
      for value, spec in zip(values, specs):
        if not tf.TensorShape(getattr(value, "shape", None)).is_compatible_with(spec.shape):
          raise ValueError(f"make_loss {self.name!r}: {argument} for variable {spec.name!r} "
                           f"has shape {tf.TensorShape(value.shape)}, expected {spec.shape}")
    params_iter, constants_iter = iter(params), iter(constants)
    count = [0]

    def substitute(**kwargs):
      index = count[0]
      count[0] += 1
      if index >= len(self.specs):
        raise self._mismatch(index, kwargs)
      spec = self.specs[index]
      trainable = kwargs.get("trainable")
      if (True if trainable is None else bool(trainable)) != spec.trainable:
        raise self._mismatch(index, kwargs)
      initial = kwargs.get("initial_value")
      if not callable(initial) and hasattr(initial, "shape") and initial.shape != spec.shape:
        raise self._mismatch(index, kwargs)
      return next(params_iter) if spec.trainable else next(constants_iter)

    with _replace_variables(substitute):
      loss = self.make_loss()
    self._check_count(count[0])
    self._check_loss(loss)
    return loss
