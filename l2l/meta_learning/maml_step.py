"""One meta-step as one function call, with the semantics of ivy's `maml_step` family.

    cost, grads = l2l.maml_step(batch, inner_cost_fn, outer_cost_fn, variables,
                                inner_grad_steps=1, inner_learning_rate=0.01)
    optimizer.apply([grads[k] for k in names], [variables[k] for k in names])

`batch` is a `tf.nest` structure of tensors whose leading dimension indexes tasks; each task's
slice is adapted by `inner_grad_steps` steps of `inner_optimization_step` on
`inner_cost_fn(inner_batch, v)` and scored by `outer_cost_fn(outer_batch, v)` (both take the
task's sub-batch and a name -> tensor mapping `v`). `cost` is the mean over tasks of the outer
cost and `grads` its gradient in the outer variables. With `batched=True` the tasks run as one
vectorized computation (`tf.vectorized_map`), otherwise one after the other.

`maml_step` differentiates through the inner loop (second order); `fomaml_step` stops the inner
gradients; `reptile_step` (Nichol et al. 2018) returns (theta - theta~) / (lr * steps), the mean
inner gradient along each task's SGD trajectory, averaged over tasks.
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

from l2l.meta_learning import maml as maml_lib

Variables = Mapping[str, Any]  # name -> tf.Variable or tensor.
CostFn = Callable[[Any, Dict[str, tf.Tensor]], tf.Tensor]
StepFn = Callable[[Dict[str, tf.Tensor], Dict[str, tf.Tensor], Any], Dict[str, tf.Tensor]]
RETURN_INNER_V = (False, "first", "all")


def gradient_descent_update(variables: Dict[str, tf.Tensor], grads: Dict[str, tf.Tensor],
                            learning_rate: Any) -> Dict[str, tf.Tensor]:
  """The default inner step: `v - learning_rate * g` for every entry of `grads`."""
  return {k: variables[k] - maml_lib.to_dtype(learning_rate, grads[k].dtype) * grads[k]
          for k in grads}


def _select(names: Sequence[str], chosen: Optional[Sequence[str]], keep: bool,
            argument: str) -> List[str]:
  if chosen is None:
    return list(names)
  if isinstance(chosen, str):
    raise TypeError(f"{argument} must be a list of variable names, not a string ({chosen!r})")
  unknown = [k for k in chosen if k not in names]
  if unknown:
    raise ValueError(f"{argument} names {unknown}, which are not in variables {list(names)}")
  return [k for k in names if (k in chosen) == keep]


def _num_tasks(batch: Any, num_tasks: Optional[int]) -> int:
  leaves = tf.nest.flatten(batch)
  if not leaves:
    raise ValueError("batch holds no tensors")
  sizes = {tf.convert_to_tensor(t).shape[0] for t in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"every tensor of batch needs the same, known leading (task) dimension; "
                     f"got {sorted(str(s) for s in sizes)}")
  size = sizes.pop()
  if num_tasks is not None and num_tasks != size:
    raise ValueError(f"num_tasks={num_tasks} but batch holds {size} tasks")
  return size


class _Config:
  """The per-call options of `_train_task`, checked once."""

  def __init__(self, inner_cost_fn, outer_cost_fn, inner_grad_steps, inner_learning_rate,
               inner_optimization_step, inner_batch_fn, outer_batch_fn, average_across_steps,
               inner_names, first_order):
    self.inner_cost_fn = inner_cost_fn
    self.outer_cost_fn = inner_cost_fn if outer_cost_fn is None else outer_cost_fn
    self.steps = maml_lib.check_steps(inner_grad_steps, "inner_grad_steps")
    self.lr = inner_learning_rate
    self.step_fn = inner_optimization_step or gradient_descent_update
    self.inner_batch_fn = inner_batch_fn or (lambda b: b)
    self.outer_batch_fn = outer_batch_fn or (lambda b: b)
    self.average = average_across_steps
    self.inner_names = inner_names
    self.first_order = first_order


def _train_task(config: _Config, task_batch: Any, variables: Dict[str, tf.Tensor]
               ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """Adapts `variables` to one task; returns its outer cost and the adapted variables."""
  inner_batch = config.inner_batch_fn(task_batch)
  outer_batch = config.outer_batch_fn(task_batch)
  v = dict(variables)
  costs = []
  for _ in range(config.steps):
    if config.average:
      costs.append(config.outer_cost_fn(outer_batch, v))
    _, grads = maml_lib.gradients(v, lambda p: config.inner_cost_fn(inner_batch, p),
                                  config.inner_names, allow_unused=True)
    if config.first_order:
      grads = {k: tf.stop_gradient(g) for k, g in grads.items()}
    v.update(config.step_fn({k: v[k] for k in config.inner_names}, grads, config.lr))
  costs.append(config.outer_cost_fn(outer_batch, v))
  cost = tf.add_n(costs) / len(costs) if config.average else costs[-1]
  return cost, v


def _train_tasks(config: _Config, batch: Any, variables: Dict[str, tf.Tensor], batched: bool,
                 num_tasks: int) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """Mean outer cost over tasks and the adapted variables stacked over tasks."""
  if batched:
    # tf.identity: pfor cannot return a captured tensor itself (e.g. a variable not adapted).
    task_fn = lambda b: tf.nest.map_structure(tf.identity, _train_task(config, b, variables))
    costs, adapted = tf.vectorized_map(task_fn, batch)
  else:
    results = [_train_task(config, tf.nest.map_structure(lambda t, i=i: t[i], batch), variables)
               for i in range(num_tasks)]
    costs = tf.stack([c for c, _ in results])
    adapted = {k: tf.stack([a[k] for _, a in results]) for k in variables}
  return tf.reduce_mean(costs), adapted


def _step(batch, inner_cost_fn, outer_cost_fn, variables, inner_grad_steps, inner_learning_rate,
          inner_optimization_step, inner_batch_fn, outer_batch_fn, average_across_steps,
          batched, inner_v, keep_inner_v, outer_v, keep_outer_v, return_inner_v, num_tasks,
          stop_gradients, first_order, reptile=False):
  if not isinstance(variables, Mapping) or not variables:
    raise TypeError("variables must be a non-empty mapping from names to variables or tensors")
  if return_inner_v not in RETURN_INNER_V:
    raise ValueError(f"return_inner_v must be one of {RETURN_INNER_V}, got {return_inner_v!r}")
  names = list(variables)
  inner_names = _select(names, inner_v, keep_inner_v, "inner_v")
  outer_names = _select(names, outer_v, keep_outer_v, "outer_v")
  num_tasks = _num_tasks(batch, num_tasks)
  config = _Config(inner_cost_fn, outer_cost_fn, inner_grad_steps, inner_learning_rate,
                   inner_optimization_step, inner_batch_fn, outer_batch_fn, average_across_steps,
                   inner_names, first_order)
  values = {k: tf.convert_to_tensor(v) for k, v in variables.items()}
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch([values[k] for k in outer_names])
    cost, adapted = _train_tasks(config, batch, values, batched, num_tasks)
  if reptile:
    scale = 1. / (float(inner_learning_rate) * max(config.steps, 1))
    grads = {k: (values[k] - tf.reduce_mean(adapted[k], axis=0))
             * maml_lib.to_dtype(scale, values[k].dtype) for k in outer_names}
  else:
    raw = tape.gradient(cost, [values[k] for k in outer_names],
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = dict(zip(outer_names, raw))
  if stop_gradients:
    cost = tf.stop_gradient(cost)
    grads = {k: tf.stop_gradient(g) for k, g in grads.items()}
    adapted = {k: tf.stop_gradient(a) for k, a in adapted.items()}
  if return_inner_v == "first":
    return cost, grads, {k: a[:1] for k, a in adapted.items()}
  if return_inner_v == "all":
    return cost, grads, adapted
  return cost, grads


_ARGS = """
  Args:
    batch: a `tf.nest` structure of tensors with a leading task dimension.
    inner_cost_fn: `(sub_batch, v) -> scalar`, the inner (support) cost of one task.
    outer_cost_fn: `(sub_batch, v) -> scalar`, the outer (query) cost of one task after
      adaptation; None uses `inner_cost_fn`.
    variables: name -> tf.Variable or tensor: the meta-parameters.
    inner_grad_steps: number of inner steps, >= 0.
    inner_learning_rate: passed to `inner_optimization_step`.
    inner_optimization_step: `(v, grads, lr) -> v'` over the inner variables; gradient
      descent by default.
    inner_batch_fn, outer_batch_fn: map a task's sub-batch to the inner / outer cost's batch
      (e.g. pick the support / query split); identity by default.
    average_across_steps: the outer cost is the mean of the outer costs at theta_0 .. theta_K
      instead of at theta_K only.
    batched: vectorize across tasks (`tf.vectorized_map`) instead of a Python loop.
    inner_v: names of the variables adapted in the inner loop (all when None).
    keep_inner_v: if False, `inner_v` lists the variables that are *not* adapted.
    outer_v: names of the variables that get outer gradients (all when None).
    keep_outer_v: if False, `outer_v` lists the variables that get *no* gradient.
    return_inner_v: False, "first" (the first task's adapted variables, leading dimension 1)
      or "all" (every task's, leading dimension num_tasks).
    num_tasks: the number of tasks; checked against the batch when given.
    stop_gradients: return the cost, gradients and adapted variables with gradients stopped;
      False keeps them differentiable (e.g. in a learnable inner learning rate).

  Returns:
    `(cost, grads)`, or `(cost, grads, adapted)` when `return_inner_v`; `grads` maps the outer
    variable names to gradients.

  Raises:
    ValueError: negative inner_grad_steps, names not in `variables`, a batch whose tensors
      disagree on the number of tasks, or a bad `return_inner_v`.
"""


def maml_step(batch: Any, inner_cost_fn: CostFn, outer_cost_fn: Optional[CostFn],
              variables: Variables, inner_grad_steps: int, inner_learning_rate: Any, *,
              inner_optimization_step: Optional[StepFn] = None,
              inner_batch_fn: Optional[Callable[[Any], Any]] = None,
              outer_batch_fn: Optional[Callable[[Any], Any]] = None,
              average_across_steps: bool = False, batched: bool = True,
              inner_v: Optional[Sequence[str]] = None, keep_inner_v: bool = True,
              outer_v: Optional[Sequence[str]] = None, keep_outer_v: bool = True,
              return_inner_v: Union[bool, str] = False, num_tasks: Optional[int] = None,
              stop_gradients: bool = True):
  return _step(batch, inner_cost_fn, outer_cost_fn, variables, inner_grad_steps,
               inner_learning_rate, inner_optimization_step, inner_batch_fn, outer_batch_fn,
               average_across_steps, batched, inner_v, keep_inner_v, outer_v, keep_outer_v,
               return_inner_v, num_tasks, stop_gradients, first_order=False)


def fomaml_step(batch: Any, inner_cost_fn: CostFn, outer_cost_fn: Optional[CostFn],
                variables: Variables, inner_grad_steps: int, inner_learning_rate: Any, *,
                inner_optimization_step: Optional[StepFn] = None,
                inner_batch_fn: Optional[Callable[[Any], Any]] = None,
                outer_batch_fn: Optional[Callable[[Any], Any]] = None,
                average_across_steps: bool = False, batched: bool = True,
                inner_v: Optional[Sequence[str]] = None, keep_inner_v: bool = True,
                outer_v: Optional[Sequence[str]] = None, keep_outer_v: bool = True,
                return_inner_v: Union[bool, str] = False, num_tasks: Optional[int] = None,
                stop_gradients: bool = True):
  return _step(batch, inner_cost_fn, outer_cost_fn, variables, inner_grad_steps,
               inner_learning_rate, inner_optimization_step, inner_batch_fn, outer_batch_fn,
               average_across_steps, batched, inner_v, keep_inner_v, outer_v, keep_outer_v,
               return_inner_v, num_tasks, stop_gradients, first_order=True)


def reptile_step(batch: Any, cost_fn: CostFn, variables: Variables, inner_grad_steps: int,
                 inner_learning_rate: float, *,
                 inner_optimization_step: Optional[StepFn] = None, batched: bool = True,
                 return_inner_v: Union[bool, str] = False, num_tasks: Optional[int] = None,
                 stop_gradients: bool = True):
  """One Reptile step (Nichol et al. 2018): adapt each task, move toward the adapted weights.

  `grads[k] = (theta_k - mean_tasks theta~_k) / (inner_learning_rate * inner_grad_steps)`:
  for SGD, the mean inner gradient along the trajectory, so one step equals the plain gradient;
  feed it to any optimizer. `cost` is the task-mean of `cost_fn` averaged over
  theta_0 .. theta_K. Arguments as `maml_step`.
  """
  if isinstance(inner_learning_rate, bool) or not isinstance(inner_learning_rate, (int, float)) \
      or not inner_learning_rate > 0:
    raise ValueError(f"reptile_step: inner_learning_rate must be a positive number, got "
                     f"{inner_learning_rate!r}")
  return _step(batch, cost_fn, None, variables, inner_grad_steps, inner_learning_rate,
               inner_optimization_step, None, None, True, batched, None, True, None, True,
               return_inner_v, num_tasks, stop_gradients, first_order=True, reptile=True)


maml_step.__doc__ = """Second-order MAML step (Finn et al. 2017) over a batch of tasks.
""" + _ARGS
fomaml_step.__doc__ = """First-order MAML step: the inner gradients are stopped.
""" + _ARGS
