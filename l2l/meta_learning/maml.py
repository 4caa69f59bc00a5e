"""MAML and its family on Sonnet modules: MAML, first-order MAML, Meta-SGD, ANIL.

Model-agnostic meta-learning (Finn et al. 2017) learns an initialization theta from which a few
inner steps on a task's support set fit the task; the meta-loss is the query loss after them:

    theta_0 = theta;  theta_{k+1} = theta_k - alpha * grad L_support(theta_k)      (k < K)
    meta-loss = L_query(theta_K),  differentiated in theta through the K inner steps

First-order MAML stops the gradient through grad L_support (the Hessian terms). Meta-SGD
(Li et al. 2017) also meta-learns alpha, one rate per parameter coordinate. ANIL (Raghu et al.
2020) adapts only the head in the inner loop; the body is learned in the outer loop only.

    maml = l2l.MAML(model, inner_lr=0.01, inner_steps=1)
    with tf.GradientTape() as tape:
      learner = maml.clone().adapt_on(mse, x_support, y_support)
      meta_loss = mse(learner(x_query), y_query)
    grads = tape.gradient(meta_loss, maml.trainable_variables)   # on model's own variables

The pure functions `inner_step` and `adapt` do the same on explicit parameter mappings.
"""

import numbers
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import sonnet as snt
import tensorflow as tf

from l2l.meta_learning import functional
from nets import base as nets_base

Params = functional.Params
LearningRate = Union[float, tf.Tensor, Mapping[str, tf.Tensor]]
Forward = Callable[..., Any]


def check_steps(steps: Any, argument: str = "inner_steps") -> int:
  """Returns `steps` if it is a non-negative Python int; raises ValueError otherwise."""
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
    raise ValueError(f"{argument} must be a non-negative integer, got {steps!r}")
  return steps


def check_names(names: Optional[Sequence[str]], params: Mapping[str, Any],
                argument: str = "adapt_names") -> List[str]:
  """The names to adapt (all of `params` when None), checked against `params`."""
  if names is None:
    return list(params)
  if isinstance(names, str):
    raise TypeError(f"{argument} must be a list of parameter names, not a string ({names!r})")
  names = list(names)
  unknown = [n for n in names if n not in params]
  if unknown:
    raise ValueError(f"{argument} names {unknown}, which are not parameters; the parameters "
                     f"are {list(params)}")
  return names


def _check_lr(lr: Any, argument: str = "inner_lr") -> float:
  if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
    raise ValueError(f"{argument} must be a positive number, got {lr!r}")
  return float(lr)


def check_scalar(value: Any, argument: str) -> Any:
  """Returns `value`; ValueError naming `argument` if it is a tensor of known rank > 0."""
  rank = tf.TensorShape(getattr(value, "shape", None)).rank
  if rank is not None and rank > 0:
    raise ValueError(f"{argument} must be a scalar (reduce it, e.g. with tf.reduce_mean), got "
                     f"a tensor of shape {value.shape}")
  return value


def gradients(params: Params, loss: Callable[[Params], tf.Tensor], names: Sequence[str],
              allow_unused: bool = False, argument: str = "the inner loss"):
  """`(loss(params), {name: d loss / d params[name]})` for `names`, under a nested tape.

  Raises:
    ValueError: a parameter in `names` does not affect the loss and `allow_unused` is False,
      or the loss is not a scalar (`argument` names it in the message).
  """
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    watched = [params[n] for n in names]
    tape.watch(watched)
    value = loss(params)
  check_scalar(value, argument)
  grads = tape.gradient(value, watched)
  unused = [n for n, g in zip(names, grads) if g is None]
  if unused and not allow_unused:
    raise ValueError(f"parameters {unused} do not affect the inner loss; leave them out of "
                     "adapt_names or pass allow_unused=True")
  grads = [tf.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]
  return value, dict(zip(names, grads))


def to_dtype(value: Any, dtype: tf.DType) -> tf.Tensor:
  """`value` (a Python number, array or tensor) as a tensor of `dtype`, differentiably.

  Unlike `tf.cast(0.1, tf.float64)`, which converts the Python float to float32 first (giving
  0.10000000149...), Python numbers are converted exactly.
  """
  return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def _lr_for(lr: LearningRate, name: str, like: tf.Tensor) -> tf.Tensor:
  value = lr[name] if isinstance(lr, Mapping) else lr
  return to_dtype(value, like.dtype)


def inner_step(params: Params, loss: Callable[[Params], tf.Tensor], lr: LearningRate,
               first_order: bool = False, adapt_names: Optional[Sequence[str]] = None,
               allow_unused: bool = False) -> Dict[str, tf.Tensor]:
  """One gradient step `theta - lr * grad loss(theta)` on the parameters in `adapt_names`.

  Args:
    params: parameter name -> tensor (or variable).
    loss: the inner (support) loss as a function of a name -> tensor mapping.
    lr: a step size, or name -> step size (a tensor of the parameter's shape for Meta-SGD).
    first_order: stop the gradient through `grad loss` (first-order MAML).
    adapt_names: the parameters to update (default all); the others are passed through.
    allow_unused: treat a parameter the loss does not use as having a zero gradient.

  Returns:
    The updated name -> tensor mapping (same keys as `params`).
  """
  names = check_names(adapt_names, params)
  _, grads = gradients(params, loss, names, allow_unused)
  new = dict(params)
  for name in names:
    g = tf.stop_gradient(grads[name]) if first_order else grads[name]
    new[name] = params[name] - _lr_for(lr, name, g) * g
  return new


def adapt(model: tf.Module, params: Params, build_loss: Callable[[Forward], tf.Tensor],
          lr: LearningRate, inner_steps: int, first_order: bool = False,
          adapt_names: Optional[Sequence[str]] = None,
          allow_unused: bool = False) -> Dict[str, tf.Tensor]:
  """`inner_steps` of `inner_step` on `build_loss(forward)`, `forward` running `model` at them.

  Args:
    model: a built Sonnet module.
    params: its parameters to start from, name -> tensor (e.g. `functional.named_parameters`).
    build_loss: maps a forward function (called like the model) to the support loss.
    lr, first_order, adapt_names, allow_unused: as `inner_step`.
    inner_steps: number of steps, >= 0 (0 returns `params`).

  Returns:
    The adapted parameters.
  """
  check_steps(inner_steps)
  loss = lambda p: build_loss(lambda *a, **k: functional.call(model, p, *a, **k))
  params = dict(params)
  check_names(adapt_names, params)
  for _ in range(inner_steps):
    params = inner_step(params, loss, lr, first_order, adapt_names, allow_unused)
  return params


def head_names(module: tf.Module, head: tf.Module) -> List[str]:
  """The names (as in `functional.named_parameters(module)`) of the head's parameters.

  Raises:
    ValueError: `head` is not `module` or one of its submodules, or has no parameters.
  """
  if not isinstance(head, tf.Module) or not (
      head is module or any(head is m for m in module.submodules)):
    raise ValueError(f"head {getattr(head, 'name', head)!r} is not a submodule of module "
                     f"{module.name!r}")
  names = [functional.variable_name(v) for v in head.trainable_variables]
  if not names:
    raise ValueError(f"head {head.name!r} has no trainable variables (is the module built?)")
  return names


@snt.allow_empty_variables
class MAML(snt.Module):
  """Meta-learns the initialization of `module` (Finn et al. 2017).

  Args:
    module: a built Sonnet module; its variables are the meta-parameters.
    inner_lr: inner-loop step size alpha.
    inner_steps: default number of inner steps per `adapt`.
    first_order: first-order MAML (no second derivatives).
    adapt_names: the parameters adapted in the inner loop (default all).
    allow_unused: parameters the support loss does not use get a zero inner gradient instead of
      an error.
    inner_optimizer: an update rule from `nets` (Adam, Momentum, a learned LSTM, ...) to use in
      the inner loop instead of `theta - inner_lr * g`; it sees the adapted parameters' gradients
      in `adapt_names` order. Its trainable variables (e.g. `learnable=True` hyperparameters) are
      meta-parameters too.
  """

  def __init__(self, module: tf.Module, inner_lr: float = 0.01, inner_steps: int = 1,
               first_order: bool = False, adapt_names: Optional[Sequence[str]] = None,
               allow_unused: bool = False,
               inner_optimizer: Optional[nets_base.UpdateRule] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.module = module
    self.inner_lr = _check_lr(inner_lr)
    self.inner_steps = check_steps(inner_steps)
    self.first_order = bool(first_order)
    self.allow_unused = bool(allow_unused)
    self.adapt_names = check_names(adapt_names, functional.named_parameters(module))
    if inner_optimizer is not None and not isinstance(inner_optimizer, nets_base.UpdateRule):
      raise TypeError(f"inner_optimizer must be a nets.UpdateRule, got "
                      f"{type(inner_optimizer).__name__}")
    self.inner_optimizer = inner_optimizer

  def learning_rates(self) -> LearningRate:
    """The inner step size(s): a float here, name -> tensor in Meta-SGD."""
    return self.inner_lr

  def clone(self) -> "Learner":
    """A learner starting at the module's current parameters (call it under the meta-tape)."""
    return Learner(self)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    """The module's forward at the meta-parameters (no adaptation)."""
    return self.module(*args, **kwargs)


class Learner:
  """A task-specific copy of a MAML module's parameters, adapted by gradient steps.

  `params` starts as the module's variables themselves, so gradients of anything computed from
  the adapted parameters reach the module's variables (and Meta-SGD's learning rates).

  Buffers (BatchNorm moving statistics, ...) are explicit: `buffers` starts as the module's
  buffer values, every forward the learner runs (inner steps and calls) reads and updates it
  (`functional.call_threaded`, no gradient through the statistics), and the module's own buffer
  variables are never assigned. So a learner is safe inside `tf.vectorized_map` and evaluation
  does not change the module; `MetaTrainer.meta_step` writes the task mean of the learners'
  final buffers back to the module. Whether a BatchNorm uses batch or moving statistics is the
  module's `is_training` argument, passed through the forward as usual.
  """

  def __init__(self, maml: MAML):
    self.maml = maml
    self.params: Dict[str, Any] = dict(functional.named_parameters(maml.module))
    # Buffers (e.g. BatchNorm moving statistics) of this learner, threaded through every forward
    # it runs instead of assigned to the module's variables; None for a module without any.
    self.buffers: Optional[Dict[str, tf.Tensor]] = functional.initial_buffers(maml.module)
    self._rule_state = None
    if maml.inner_optimizer is not None:
      self._rule_state = nets_base.initial_state_of(maml.inner_optimizer,
          [tf.convert_to_tensor(self.params[n]) for n in maml.adapt_names], maml.inner_steps)

  def _forward(self, params: Params) -> Forward:
    """The module's forward at `params`, reading and updating `self.buffers`."""
    def forward(*args: Any, **kwargs: Any) -> Any:
      output, self.buffers = functional.call_threaded(self.maml.module, params, self.buffers,
                                                      *args, **kwargs)
      return output
    return forward

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    """The module's forward at the adapted parameters (and the learner's buffers)."""
    return self._forward(self.params)(*args, **kwargs)

  def adapt(self, support_loss: Callable[[Forward], tf.Tensor],
            steps: Optional[int] = None) -> "Learner":
    """Takes `steps` (default `inner_steps`) inner steps on `support_loss(forward)`.

    Args:
      support_loss: maps a forward function (called like the module) to the support loss.
      steps: number of steps, >= 0.

    Returns:
      `self`, so that calls chain: `maml.clone().adapt(loss).adapt(loss)`.

    Raises:
      TypeError: `support_loss` is not callable.
    """
    if not callable(support_loss):
      raise TypeError(f"support_loss must be a function of the forward (e.g. lambda f: "
                      f"loss_fn(f(x), y)), got {type(support_loss).__name__}")
    maml = self.maml
    steps = maml.inner_steps if steps is None else check_steps(steps, "steps")
    loss = lambda p: support_loss(self._forward(p))
    for _ in range(steps):
      if maml.inner_optimizer is None:
        self.params = inner_step(self.params, loss, maml.learning_rates(), maml.first_order,
                                 maml.adapt_names, maml.allow_unused)
      else:
        self._rule_step(loss)
    return self

  def _rule_step(self, loss: Callable[[Params], tf.Tensor]) -> None:
    maml = self.maml
    names = maml.adapt_names
    value, grads = gradients(self.params, loss, names, maml.allow_unused)
    grads = [grads[n] for n in names]
    if maml.first_order:
      grads = [tf.stop_gradient(g) for g in grads]
    updates, self._rule_state = nets_base.call_rule(
        maml.inner_optimizer, grads, self._rule_state, params=[self.params[n] for n in names],
        loss=tf.stop_gradient(value))
    self.params = dict(self.params)
    for n, u in zip(names, updates):
      self.params[n] = self.params[n] + u

  def adapt_on(self, loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], x: tf.Tensor,
               y: tf.Tensor, steps: Optional[int] = None) -> "Learner":
    """`adapt(lambda f: loss_fn(f(x), y), steps)`.

    Raises:
      ValueError: `x` and `y` hold different numbers of examples.
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    if x.shape.rank == 0 or y.shape.rank == 0 or not x.shape[:1].is_compatible_with(y.shape[:1]):
      raise ValueError(f"x and y must hold the same number of examples (leading dimension), got "
                       f"shapes {x.shape} and {y.shape}")
    return self.adapt(lambda f: loss_fn(f(x), y), steps)


class ResidualRule(nets_base.UpdateRule):
  """Gradient descent plus a learned correction: `update = -learning_rate * g + rule(g)`.

  The inner optimizer of "MAML + learned inner optimizer" (`fewshot.METHODS["MAML+LSTM"]`):
  starting from MAML's step `theta - lr g`, a small learned rule (e.g. a coordinatewise LSTM
  whose output is small at initialization) adds a per-coordinate correction, meta-trained with
  the initialization. The rule's state is the wrapped rule's.

  Args:
    rule: an update rule of the gradient alone (`uses_context` False).
    learning_rate: the gradient-descent step size (> 0).
  """

  def __init__(self, rule: nets_base.UpdateRule, learning_rate: float = 0.01,
               name: str = "residual_rule"):
    super().__init__(name=name)
    if not isinstance(rule, nets_base.UpdateRule) or rule.uses_context:
      raise TypeError(f"rule must be a nets.UpdateRule of the gradient alone, got "
                      f"{type(rule).__name__}")
    self.rule = rule
    self.learning_rate = _check_lr(learning_rate, "learning_rate")

  def initial_state(self, params: Sequence[tf.Tensor]) -> Any:
    return self.rule.initial_state(params)

  def __call__(self, grads: Sequence[tf.Tensor], state: Any):
    grads = nets_base.as_list(grads)
    updates, state = self.rule(grads, state)
    return [u - to_dtype(self.learning_rate, g.dtype) * g for u, g in zip(updates, grads)], state


class MetaSGD(MAML):
  """MAML with a meta-learned step size per parameter coordinate (Li et al. 2017).

    theta' = theta - alpha o grad L_support(theta),  alpha meta-trained with theta

  Args:
    module: a built Sonnet module.
    inner_lr: initial value of every coordinate of alpha.
    (the rest as `MAML`; `inner_optimizer` is not supported, alpha is the optimizer.)
  """

  def __init__(self, module: tf.Module, inner_lr: float = 0.01, inner_steps: int = 1,
               first_order: bool = False, adapt_names: Optional[Sequence[str]] = None,
               allow_unused: bool = False, name: Optional[str] = None):
    super().__init__(module, inner_lr, inner_steps, first_order, adapt_names, allow_unused,
                     name=name)
    params = functional.named_parameters(module)
    with self.name_scope:
      # A list in adapt_names order: a dict keyed by "a/b" names would not checkpoint cleanly.
      self.lrs = [tf.Variable(tf.fill(params[n].shape, to_dtype(self.inner_lr, params[n].dtype)),
                              name=f"lr_{i}") for i, n in enumerate(self.adapt_names)]

  def learning_rates(self) -> Dict[str, tf.Variable]:
    return dict(zip(self.adapt_names, self.lrs))


class ANIL(MAML):
  """Almost No Inner Loop (Raghu et al. 2020): only `head`'s parameters adapt.

  Args:
    module: a built Sonnet module.
    head: the submodule of `module` adapted in the inner loop (e.g. its last layer).
    (the rest as `MAML`.)
  """

  def __init__(self, module: tf.Module, head: tf.Module, inner_lr: float = 0.01,
               inner_steps: int = 1, first_order: bool = False, allow_unused: bool = False,
               inner_optimizer: Optional[nets_base.UpdateRule] = None,
               name: Optional[str] = None):
    super().__init__(module, inner_lr, inner_steps, first_order, head_names(module, head),
                     allow_unused, inner_optimizer, name=name)


class Reptile(MAML):
  """Reptile (Nichol et al. 2018): first-order, moves theta toward the adapted weights.

  Its meta-gradient is not the gradient of a query loss but
  `(theta - theta~) / (inner_lr * inner_steps)` (for SGD the mean inner gradient along the
  trajectory), which `reptile_gradients` computes and `MetaTrainer` applies.

  Args:
    (as `MAML`; `first_order` is always True.)
  """

  def __init__(self, module: tf.Module, inner_lr: float = 0.01, inner_steps: int = 5,
               adapt_names: Optional[Sequence[str]] = None, allow_unused: bool = False,
               name: Optional[str] = None):
    if check_steps(inner_steps) < 1:
      raise ValueError("Reptile needs inner_steps >= 1 (with 0 it has no meta-gradient)")
    super().__init__(module, inner_lr, inner_steps, True, adapt_names, allow_unused, name=name)

  def reptile_gradients(self, learner: Learner) -> Dict[str, tf.Tensor]:
    """`(theta - theta~) / (inner_lr * inner_steps)` for the adapted parameters."""
    scale = 1. / (self.inner_lr * self.inner_steps)
    return {n: tf.stop_gradient(tf.convert_to_tensor(self.module_params[n]) - learner.params[n])
            * to_dtype(scale, learner.params[n].dtype) for n in self.adapt_names}

  @property
  def module_params(self) -> Dict[str, tf.Variable]:
    return functional.named_parameters(self.module)
