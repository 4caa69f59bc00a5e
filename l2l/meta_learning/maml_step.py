"""One meta-step as one function call: ivy's `maml_step`, `fomaml_step` and `reptile_step`.

    cost, grads, _ = l2l.maml_step(batch, inner_cost_fn, outer_cost_fn, variables,
                                   inner_grad_steps=5, inner_learning_rate=0.01)
    optimizer.apply([grads[k] for k in names], [variables[k] for k in names])

The semantics are ivy 0.0.9.16's (`ivy/functional/ivy/meta.py`), value for value; the tests
compare against ivy's outputs on a grid of options (tests/ivy_reference/). In ivy's words and
with its quirks:

* `batched=True` (the default) calls the cost functions once with the *whole* batch and the
  variables as given (a per-task model keeps a leading task axis on its variables); the inner
  gradients are multiplied by the number of tasks. `batched=False` loops over tasks: task `i`
  gets the batch sliced `[i:i+1]` (the task axis kept, of size 1) and the full variables; the
  cost and the (first-order) gradients are averaged over tasks.
* `maml_step` returns the triple `(cost, grads, rest)`: `grads` is the gradient of the cost in
  the outer variables, *summed over each variable's leading axis*; `rest` is `()`, or the
  adapted variables when `return_inner_v`.
* `fomaml_step` returns `(cost, grads)` (plus the adapted variables when `return_inner_v`):
  `grads` is the outer cost's gradient at the adapted variables (averaged with the ones at every
  inner step under `average_across_steps`), with the inner steps' gradients stopped; batched,
  it is averaged over each variable's leading axis.
* `reptile_step` is `fomaml_step` with the cost as both inner and outer cost and
  `average_across_steps=True`, its gradient divided by the inner learning rate.
* When `outer_cost_fn` is None and no variable subset is given, the cost of every inner step is
  the inner cost on the inner batch (its gradients are the first-order ones); the final cost is
  the inner cost on the outer batch.
* `return_inner_v`: "first" returns the first task's adapted variables (ivy slices every
  variable `[0:1]` in batched mode), "all" (or True) every task's (in the loop, stacked on a
  new leading task axis).

Deliberate differences: ivy replaces non-finite gradients by zeros, l2l keeps them (a diverging
step shows as NaN instead of a silent zero update); with `stop_gradients=False` the returned
cost, gradients and adapted variables stay differentiable (ivy's `maml_step` stops them
anyway), e.g. in a learnable inner learning rate; bad arguments raise a one-line ValueError /
TypeError.

`per_task=True` selects l2l's own per-task form instead (not ivy's): each task's slice of the
batch (leading axis dropped) adapts the shared variables separately, the cost is the task mean,
`grads` its plain gradient (no reduction over leading axes), `batched=True` runs the tasks with
`tf.vectorized_map`, and Reptile's gradient is `(theta - mean theta~) / (lr * steps)`. It returns
`(cost, grads)` or `(cost, grads, adapted)` for all three functions.
"""

import numbers
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from l2l.meta_learning import maml as maml_lib

Variables = Mapping[str, Any]  # name -> tf.Variable or tensor.
Tensors = Dict[str, tf.Tensor]
CostFn = Callable[[Any, Tensors], tf.Tensor]
StepFn = Callable[[Tensors, Tensors, Any], Tensors]
Names = Optional[Union[str, Sequence[str]]]
RETURN_INNER_V = (False, True, "first", "all")


def gradient_descent_update(variables: Tensors, grads: Tensors, learning_rate: Any) -> Tensors:
  """The default inner step: `v - learning_rate * g` for every entry of `grads`."""
  return {k: variables[k] - maml_lib.to_dtype(learning_rate, grads[k].dtype) * grads[k]
          for k in grads}


def _select(names: Sequence[str], chosen: Names, keep: bool, argument: str) -> List[str]:
  """ivy's `cont_at_key_chains` (keep) / `cont_prune_key_chains` (not keep) on flat names."""
  if chosen is None:
    return list(names)
  if isinstance(chosen, str):
    chosen = [chosen]
  if not all(isinstance(k, str) for k in chosen):
    raise TypeError(f"{argument} must be a variable name or a list of names, got {chosen!r}")
  unknown = [k for k in chosen if k not in names]
  if unknown:
    raise ValueError(f"{argument} names {unknown}, which are not in variables {list(names)}")
  return [k for k in names if (k in chosen) == keep]


def _leading_sizes(batch: Any) -> set:
  leaves = tf.nest.flatten(batch)
  if not leaves:
    raise ValueError("batch holds no tensors")
  return {tf.convert_to_tensor(t).shape[0] if tf.convert_to_tensor(t).shape.rank else None
          for t in leaves}


def _num_tasks(batch: Any, num_tasks: Optional[int], batched: bool, exact: bool = False) -> int:
  """The number of tasks: given, or the batch's common leading dimension.

  As in ivy, a given `num_tasks` is only a scale when batched, and the loop takes the first
  `num_tasks` tasks of the batch (`exact`: the batch must hold exactly that many).
  """
  if num_tasks is not None:
    if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or num_tasks < 1:
      raise ValueError(f"num_tasks must be a positive integer or None, got {num_tasks!r}")
    if batched and not exact:
      return num_tasks
  sizes = _leading_sizes(batch)
  if num_tasks is None or exact:
    if len(sizes) != 1 or None in sizes:
      raise ValueError(f"every tensor of batch needs the same, known leading (task) dimension; "
                       f"got {sorted(str(s) for s in sizes)}")
    size = sizes.pop()
    if num_tasks is not None and num_tasks != size:
      raise ValueError(f"num_tasks={num_tasks} but batch holds {size} tasks")
    return size
  if None in sizes or min(sizes) < num_tasks:
    raise ValueError(f"num_tasks={num_tasks} but the batch's tensors hold "
                     f"{sorted(str(s) for s in sizes)} tasks")
  return num_tasks


class _Config:
  """The per-call options, checked once."""

  def __init__(self, variables, inner_cost_fn, outer_cost_fn, inner_grad_steps,
               inner_learning_rate, inner_optimization_step, inner_batch_fn, outer_batch_fn,
               average_across_steps, inner_v, keep_inner_v, outer_v, keep_outer_v,
               return_inner_v, order, stop_gradients):
    if not isinstance(variables, Mapping) or not variables:
      raise TypeError("variables must be a non-empty mapping from names to variables or tensors")
    for argument, fn in (("inner_cost_fn", inner_cost_fn), ("outer_cost_fn", outer_cost_fn),
                         ("inner_optimization_step", inner_optimization_step),
                         ("inner_batch_fn", inner_batch_fn), ("outer_batch_fn", outer_batch_fn)):
      if fn is not None and not callable(fn) or (argument == "inner_cost_fn" and fn is None):
        raise TypeError(f"{argument} must be callable, got {type(fn).__name__}")
    if return_inner_v not in RETURN_INNER_V or isinstance(return_inner_v, int) and \
        not isinstance(return_inner_v, bool):
      raise ValueError(f"return_inner_v must be one of {RETURN_INNER_V}, got {return_inner_v!r}")
    names = list(variables)
    self.inner_names = _select(names, inner_v, keep_inner_v, "inner_v")
    self.outer_names = _select(names, outer_v, keep_outer_v, "outer_v")
    self.unique_inner, self.unique_outer = inner_v is not None, outer_v is not None
    self.inner_cost_fn, self.outer_cost_fn = inner_cost_fn, outer_cost_fn
    self.steps = maml_lib.check_steps(inner_grad_steps, "inner_grad_steps")
    if inner_optimization_step is None and (
        isinstance(inner_learning_rate, bool) or not isinstance(
            inner_learning_rate, (numbers.Real, np.ndarray, tf.Tensor, tf.Variable))):
      raise TypeError(f"inner_learning_rate must be a number or a tensor, got "
                      f"{type(inner_learning_rate).__name__} {inner_learning_rate!r}")
    self.lr = inner_learning_rate
    self.step_fn = inner_optimization_step or gradient_descent_update
    self.inner_batch_fn, self.outer_batch_fn = inner_batch_fn, outer_batch_fn
    self.average = bool(average_across_steps)
    self.return_inner_v = "all" if return_inner_v is True else return_inner_v
    self.order = order
    self.stop_gradients = bool(stop_gradients)


def _cost(config: _Config, cost_fn: CostFn, batch: Any, v: Tensors) -> tf.Tensor:
  argument = "inner_cost_fn" if cost_fn is config.inner_cost_fn else "outer_cost_fn"
  return maml_lib.check_scalar(cost_fn(batch, v), f"the value of {argument}")


def _grads(config: _Config, cost_fn: CostFn, batch: Any, v: Tensors, names: Sequence[str],
           scale: Optional[int]) -> Tuple[tf.Tensor, Tensors]:
  argument = "inner_cost_fn" if cost_fn is config.inner_cost_fn else "outer_cost_fn"
  cost, grads = maml_lib.gradients(v, lambda p: cost_fn(batch, p), names, allow_unused=True,
                                   argument=f"the value of {argument}")
  if config.order == 1:
    cost, grads = tf.stop_gradient(cost), {k: tf.stop_gradient(g) for k, g in grads.items()}
  if scale is not None:
    grads = {k: g * maml_lib.to_dtype(scale, g.dtype) for k, g in grads.items()}
  return cost, grads


def _mean(grads: List[Tensors]) -> Tensors:
  return {k: tf.add_n([g[k] for g in grads]) / len(grads) for k in grads[0]}


def _train_task(config: _Config, inner_batch: Any, outer_batch: Any, v: Tensors,
                batched: bool, num_tasks: int, stop_gradients: bool):
  """ivy's `_train_task`: `(cost, adapted variables, first-order grads or None)`."""
  scale = num_tasks if batched else None
  outer_fn = config.outer_cost_fn or config.inner_cost_fn
  total_cost, all_grads = 0., []
  for _ in range(config.steps):
    cost, inner_grads = _grads(config, config.inner_cost_fn, inner_batch, v, config.inner_names,
                               scale)
    if config.outer_cost_fn is None and not config.unique_inner and not config.unique_outer:
      all_grads.append(inner_grads)
    elif config.order == 1:
      cost, outer_grads = _grads(config, outer_fn, outer_batch, v, config.outer_names, scale)
      if config.average:
        all_grads.append(outer_grads)
    else:
      cost = _cost(config, outer_fn, outer_batch, v)
    total_cost = total_cost + cost
    updated = config.step_fn({k: v[k] for k in config.inner_names}, inner_grads, config.lr)
    if stop_gradients:
      updated = {k: tf.stop_gradient(t) for k, t in updated.items()}
    v = {**v, **updated}
  if config.order == 1:
    final_cost, outer_grads = _grads(config, outer_fn, outer_batch, v, config.outer_names, scale)
    all_grads.append(outer_grads)
  else:
    final_cost = _cost(config, outer_fn, outer_batch, v)
  if stop_gradients:
    v = {k: tf.stop_gradient(t) for k, t in v.items()}
  if not batched:
    v = {k: t[None] for k, t in v.items()}
  if config.average:
    grads = _mean(all_grads) if config.order == 1 else None
    return (total_cost + final_cost) / (config.steps + 1), v, grads
  return final_cost, v, all_grads[-1] if config.order == 1 else None


def _train_tasks(config: _Config, batch: Any, variables: Tensors, batched: bool, num_tasks: int,
                 stop_gradients: bool) -> Tuple[tf.Tensor, Optional[Tensors], Tensors]:
  """ivy's `_train_tasks`: `(cost, first-order grads or None, adapted variables)`."""
  inner_fn = config.inner_batch_fn or (lambda b: b)
  outer_fn = config.outer_batch_fn or (lambda b: b)
  if batched:
    cost, adapted, grads = _train_task(config, inner_fn(batch), outer_fn(batch), variables, True,
                                       num_tasks, stop_gradients)
    if grads is not None:
      grads = {k: _reduce(tf.reduce_mean, g) for k, g in grads.items()}
    if config.return_inner_v == "first":
      adapted = {k: a[0:1] for k, a in adapted.items()}
    return cost, grads, adapted
  costs, grads, adapted = [], [], []
  for i in range(num_tasks):
    sub_batch = tf.nest.map_structure(lambda t, i=i: tf.convert_to_tensor(t)[i:i + 1], batch)
    cost, task_adapted, task_grads = _train_task(config, inner_fn(sub_batch), outer_fn(sub_batch),
                                                 variables, False, num_tasks, stop_gradients)
    costs.append(cost)
    grads.append(task_grads)
    if config.return_inner_v == "all" or (config.return_inner_v == "first" and i == 0):
      adapted.append(task_adapted)
  stacked = {k: tf.concat([a[k] for a in adapted], 0) for k in adapted[0]} if adapted else {}
  first_order = {k: tf.add_n([g[k] for g in grads]) / num_tasks
                 for k in grads[0]} if grads[0] is not None else None
  return tf.add_n(costs) / num_tasks, first_order, stacked


def _reduce(reduction, g: tf.Tensor) -> tf.Tensor:
  """ivy's reduction over a gradient's leading axis (a scalar has none)."""
  return reduction(g, axis=0) if g.shape.rank else g


def _stop(structure, stop: bool):
  return tf.nest.map_structure(tf.stop_gradient, structure) if stop else structure


def _values(variables: Variables) -> Tensors:
  return {k: tf.convert_to_tensor(v) for k, v in variables.items()}


def _ivy_second_order(config: _Config, batch: Any, variables: Variables, batched: bool,
                      num_tasks: Optional[int]):
  num_tasks = _num_tasks(batch, num_tasks, batched)
  values = _values(variables)
  watched = [values[k] for k in config.outer_names]
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(watched)
    cost, _, adapted = _train_tasks(config, batch, values, batched, num_tasks, False)
  raw = tape.gradient(cost, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  grads = {k: _reduce(tf.reduce_sum, g) for k, g in zip(config.outer_names, raw)}
  rest = adapted if config.return_inner_v else ()
  return _stop(cost, config.stop_gradients), _stop(grads, config.stop_gradients), \
      _stop(rest, config.stop_gradients)


def _ivy_first_order(config: _Config, batch: Any, variables: Variables, batched: bool,
                     num_tasks: Optional[int], lr_divisor: Any = None):
  num_tasks = _num_tasks(batch, num_tasks, batched)
  cost, grads, adapted = _train_tasks(config, batch, _values(variables), batched, num_tasks,
                                      config.stop_gradients)
  if lr_divisor is not None:
    grads = {k: g / maml_lib.to_dtype(lr_divisor, g.dtype) for k, g in grads.items()}
  cost = _stop(cost, config.stop_gradients)
  return (cost, grads, adapted) if config.return_inner_v else (cost, grads)


def _adapt_one_task(config: _Config, task_batch: Any, variables: Tensors
                   ) -> Tuple[tf.Tensor, Tensors]:
  """`per_task=True`: adapts the shared variables to one task's slice of the batch."""
  inner_batch = (config.inner_batch_fn or (lambda b: b))(task_batch)
  outer_batch = (config.outer_batch_fn or (lambda b: b))(task_batch)
  outer_fn = config.outer_cost_fn or config.inner_cost_fn
  v, costs = dict(variables), []
  for _ in range(config.steps):
    if config.average:
      costs.append(_cost(config, outer_fn, outer_batch, v))
    _, grads = maml_lib.gradients(v, lambda p: config.inner_cost_fn(inner_batch, p),
                                  config.inner_names, allow_unused=True,
                                  argument="the value of inner_cost_fn")
    if config.order == 1:
      grads = {k: tf.stop_gradient(g) for k, g in grads.items()}
    v.update(config.step_fn({k: v[k] for k in config.inner_names}, grads, config.lr))
  costs.append(_cost(config, outer_fn, outer_batch, v))
  return (tf.add_n(costs) / len(costs) if config.average else costs[-1]), v


def _per_task(config: _Config, batch: Any, variables: Variables, batched: bool,
              num_tasks: Optional[int], reptile: bool = False):
  """l2l's per-task form (see the module docstring)."""
  num_tasks = _num_tasks(batch, num_tasks, batched, exact=True)
  values = _values(variables)
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch([values[k] for k in config.outer_names])
    if batched:
      # tf.identity: pfor cannot return a captured tensor itself (e.g. a variable not adapted).
      task_fn = lambda b: tf.nest.map_structure(tf.identity, _adapt_one_task(config, b, values))
      costs, adapted = tf.vectorized_map(task_fn, batch)
    else:
      results = [_adapt_one_task(config, tf.nest.map_structure(lambda t, i=i: t[i], batch),
                                 values) for i in range(num_tasks)]
      costs = tf.stack([c for c, _ in results])
      adapted = {k: tf.stack([a[k] for _, a in results]) for k in values}
    cost = tf.reduce_mean(costs)
  if reptile:
    scale = 1. / (float(config.lr) * max(config.steps, 1))
    grads = {k: (values[k] - tf.reduce_mean(adapted[k], axis=0))
             * maml_lib.to_dtype(scale, values[k].dtype) for k in config.outer_names}
  else:
    raw = tape.gradient(cost, [values[k] for k in config.outer_names],
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = dict(zip(config.outer_names, raw))
  cost, grads, adapted = _stop((cost, grads, adapted), config.stop_gradients)
  if config.return_inner_v == "first":
    return cost, grads, {k: a[:1] for k, a in adapted.items()}
  if config.return_inner_v == "all":
    return cost, grads, adapted
  return cost, grads


_ARGS = """
  Args:
    batch: a `tf.nest` structure of tensors with a leading task dimension.
    inner_cost_fn: `(batch, v) -> scalar`, the inner cost; `v` maps every variable name to
      its current tensor. It receives the whole (inner) batch when `batched`, one task's
      `[i:i+1]` slice otherwise (one task's `[i]` slice with `per_task=True`).
    outer_cost_fn: `(batch, v) -> scalar`, the outer cost after adaptation; None uses
      `inner_cost_fn` (see the module docstring for how ivy then scores the inner steps).
    variables: name -> tf.Variable or tensor: the meta-parameters.
    inner_grad_steps: number of inner steps, >= 0.
    inner_learning_rate: passed to `inner_optimization_step`.
    inner_optimization_step: `(v, grads, lr) -> v'` over the inner variables; gradient
      descent by default.
    inner_batch_fn, outer_batch_fn: map the batch (or a task's slice) to the inner / outer
      cost's batch (e.g. pick the support / query split); identity by default.
    average_across_steps: average the outer cost (and, first-order, its gradients) over the
      variables before each inner step and after the last, instead of after the last only.
    batched: ivy's batched mode (the whole batch at once, inner gradients times the number of
      tasks) instead of a loop over tasks.
    inner_v: a name or names of the variables adapted in the inner loop (all when None).
    keep_inner_v: if False, `inner_v` lists the variables that are *not* adapted.
    outer_v: a name or names of the variables that get outer gradients (all when None).
    keep_outer_v: if False, `outer_v` lists the variables that get *no* gradient.
    return_inner_v: False, "first" (the first task's adapted variables, leading dimension 1)
      or "all" / True (every task's).
    num_tasks: the number of tasks; the batch's common leading dimension when None. Batched,
      it is only the inner gradients' scale (as in ivy); the loop runs the batch's first
      `num_tasks` tasks; with `per_task=True` it must equal the batch's.
    stop_gradients: return the results with gradients stopped; False keeps them
      differentiable (e.g. in a learnable inner learning rate).
    per_task: l2l's per-task form instead of ivy's (module docstring).

  Raises:
    ValueError: negative inner_grad_steps, names not in `variables`, a batch whose tensors
      disagree on the number of tasks, or a bad `return_inner_v` / `num_tasks`.
    TypeError: `variables` not a non-empty mapping, a cost or batch function not callable.
"""


def maml_step(batch: Any, inner_cost_fn: CostFn, outer_cost_fn: Optional[CostFn],
              variables: Variables, inner_grad_steps: int, inner_learning_rate: Any, *,
              inner_optimization_step: Optional[StepFn] = None,
              inner_batch_fn: Optional[Callable[[Any], Any]] = None,
              outer_batch_fn: Optional[Callable[[Any], Any]] = None,
              average_across_steps: bool = False, batched: bool = True,
              inner_v: Names = None, keep_inner_v: bool = True, outer_v: Names = None,
              keep_outer_v: bool = True, return_inner_v: Union[bool, str] = False,
              num_tasks: Optional[int] = None, stop_gradients: bool = True,
              per_task: bool = False):
  config = _Config(variables, inner_cost_fn, outer_cost_fn, inner_grad_steps,
                   inner_learning_rate, inner_optimization_step, inner_batch_fn, outer_batch_fn,
                   average_across_steps, inner_v, keep_inner_v, outer_v, keep_outer_v,
                   return_inner_v, 2, stop_gradients)
  if per_task:
    return _per_task(config, batch, variables, batched, num_tasks)
  return _ivy_second_order(config, batch, variables, batched, num_tasks)


def fomaml_step(batch: Any, inner_cost_fn: CostFn, outer_cost_fn: Optional[CostFn],
                variables: Variables, inner_grad_steps: int, inner_learning_rate: Any, *,
                inner_optimization_step: Optional[StepFn] = None,
                inner_batch_fn: Optional[Callable[[Any], Any]] = None,
                outer_batch_fn: Optional[Callable[[Any], Any]] = None,
                average_across_steps: bool = False, batched: bool = True,
                inner_v: Names = None, keep_inner_v: bool = True, outer_v: Names = None,
                keep_outer_v: bool = True, return_inner_v: Union[bool, str] = False,
                num_tasks: Optional[int] = None, stop_gradients: bool = True,
                per_task: bool = False):
  config = _Config(variables, inner_cost_fn, outer_cost_fn, inner_grad_steps,
                   inner_learning_rate, inner_optimization_step, inner_batch_fn, outer_batch_fn,
                   average_across_steps, inner_v, keep_inner_v, outer_v, keep_outer_v,
                   return_inner_v, 1, stop_gradients)
  if per_task:
    return _per_task(config, batch, variables, batched, num_tasks)
  return _ivy_first_order(config, batch, variables, batched, num_tasks)


def reptile_step(batch: Any, cost_fn: CostFn, variables: Variables, inner_grad_steps: int,
                 inner_learning_rate: float, *,
                 inner_optimization_step: Optional[StepFn] = None, batched: bool = True,
                 return_inner_v: Union[bool, str] = False, num_tasks: Optional[int] = None,
                 stop_gradients: bool = True, per_task: bool = False):
  """One Reptile step (Nichol et al. 2018), as ivy computes it.

  ivy: `fomaml_step(batch, cost_fn, None, variables, ..., average_across_steps=True)` with the
  gradients divided by `inner_learning_rate`: the mean of the cost's gradients at theta_0 ..
  theta_K (times the number of tasks and averaged over leading axes when batched), divided by
  the learning rate; `cost` is the mean cost over theta_0 .. theta_K. With `per_task=True`,
  l2l's form: `grads[k] = (theta_k - mean_tasks theta~_k) / (inner_learning_rate *
  inner_grad_steps)`, for SGD the mean inner gradient along each trajectory, so that one step
  equals the plain gradient. Arguments as `maml_step`.

  Returns:
    `(cost, grads)`, or `(cost, grads, adapted)` when `return_inner_v`.
  """
  if isinstance(inner_learning_rate, bool) or not isinstance(inner_learning_rate, (int, float)) \
      or not inner_learning_rate > 0:
    raise ValueError(f"reptile_step: inner_learning_rate must be a positive number, got "
                     f"{inner_learning_rate!r}")
  config = _Config(variables, cost_fn, None, inner_grad_steps, inner_learning_rate,
                   inner_optimization_step, None, None, True, None, True, None, True,
                   return_inner_v, 1, stop_gradients)
  if per_task:
    return _per_task(config, batch, variables, batched, num_tasks, reptile=True)
  return _ivy_first_order(config, batch, variables, batched, num_tasks, inner_learning_rate)


maml_step.__doc__ = """Second-order MAML step (Finn et al. 2017), as ivy's `maml_step`.
""" + _ARGS + """
  Returns:
    `(cost, grads, rest)`: `grads` maps the outer variable names to the cost's gradient summed
    over each variable's leading axis; `rest` is `()` or the adapted variables when
    `return_inner_v`. With `per_task=True`: `(cost, grads)` or `(cost, grads, adapted)`.
"""
fomaml_step.__doc__ = """First-order MAML step, as ivy's `fomaml_step`.
""" + _ARGS + """
  Returns:
    `(cost, grads)`, or `(cost, grads, adapted)` when `return_inner_v`.
"""
