"""`MetaOptimizer`: learned optimizers trained by gradient descent (Andrychowicz et al. 2016).

    opt = l2l.MetaOptimizer(cw={"net": "CoordinateWiseDeepLSTM", "net_options": {...}})
    trainer = opt.meta_minimize(make_loss, len_unroll=20, learning_rate=1e-3)
    for epoch in range(num_epochs):
      trainer.reset()                      # a new problem instance, fresh rule states
      for _ in range(num_steps // 20):
        meta_loss = trainer.step()         # one truncated unroll + one Adam step on the nets
    opt.save("/tmp/opt")

`meta_loss(...)` returns the same object without the Adam step: call it under a
`tf.GradientTape` to get a meta-loss differentiable in `opt.trainable_variables`.
"""

import json
import math
import numbers
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import sonnet as snt
import tensorflow as tf

import nets
from l2l import capture
from l2l import checks
from l2l import loss_gradient
from l2l import unroll as unroll_lib

NetAssignments = Sequence[Tuple[str, Sequence[str]]]
_CONFIG_FILE = "config.json"
_WEIGHTS_PREFIX = "nets"


def resolve_assignments(netids: Sequence[str], param_names: Sequence[str],
                        net_assignments: Optional[NetAssignments]) -> List[Tuple[str, List[int]]]:
  """Maps `net_assignments` (netid, [variable names]) to (netid, [parameter indices]).

  Raises:
    ValueError: an unknown net or variable, a variable assigned twice or not at all, or no
      assignments while there are several nets.
  """
  if net_assignments is None:
    if len(netids) != 1:
      raise ValueError(f"net_assignments is required when the MetaOptimizer has several nets "
                       f"({sorted(netids)}); give a list of (netid, [variable names])")
    return [(netids[0], list(range(len(param_names))))]
  index = {name: i for i, name in enumerate(param_names)}
  seen: Dict[str, str] = {}
  resolved = []
  for entry in net_assignments:
    if (not isinstance(entry, (tuple, list)) or len(entry) != 2 or isinstance(entry[1], str)):
      raise ValueError(f"net_assignments entries must be (netid, [variable names]), got {entry!r}")
    netid, names = entry
    if netid not in netids:
      raise ValueError(f"net_assignments names unknown net {netid!r}; nets are {sorted(netids)}")
    indices = []
    for name in names:
      if name not in index:
        raise ValueError(f"net_assignments names unknown variable {name!r} (net {netid!r}); "
                         f"the problem's variables are {list(param_names)}")
      if name in seen:
        raise ValueError(f"net_assignments assigns variable {name!r} twice (nets {seen[name]!r} "
                         f"and {netid!r})")
      seen[name] = netid
      indices.append(index[name])
    if indices:
      resolved.append((netid, indices))
  missing = [n for n in param_names if n not in seen]
  if missing:
    raise ValueError(f"net_assignments leaves variables {missing} without a net")
  return resolved


@snt.allow_empty_variables
class MetaOptimizer(snt.Module):
  """One update rule ("net") per variable group, built by `nets.factory` from a config.

  Args:
    **net_configs: netid -> `{"net": name, "net_options": {...}, "net_path": optional}`.
  """

  def __init__(self, **net_configs: Mapping[str, Any]):
    super().__init__(name="meta_optimizer")
    if not net_configs:
      raise ValueError("MetaOptimizer needs at least one net config, e.g. "
                       "MetaOptimizer(cw={'net': 'CoordinateWiseDeepLSTM'})")
    with self.name_scope:
      self.nets = {netid: nets.factory(config) for netid, config in net_configs.items()}

  @property
  def net_configs(self) -> Dict[str, Dict[str, Any]]:
    return {netid: net.config for netid, net in self.nets.items()}

  def meta_loss(self, make_loss: capture.MakeLoss, len_unroll: int,
                net_assignments: Optional[NetAssignments] = None,
                second_derivatives: bool = False, **kwargs: Any) -> "MetaLoss":
    """A `MetaLoss` for `make_loss` unrolled `len_unroll` steps (see `MetaLoss`)."""
    return MetaLoss(self, make_loss, len_unroll, net_assignments, second_derivatives, **kwargs)

  def meta_minimize(self, make_loss: capture.MakeLoss, len_unroll: int,
                    learning_rate: float = 1e-3, net_assignments: Optional[NetAssignments] = None,
                    second_derivatives: bool = False, max_grad_norm: Optional[float] = None,
                    **kwargs: Any) -> "MetaMinimize":
    """A `MetaMinimize` whose `step()` trains the nets with Adam on the meta-loss.

    `max_grad_norm` clips the meta-gradient's global norm; other kwargs go to `MetaLoss`.
    """
    return MetaMinimize(self.meta_loss(make_loss, len_unroll, net_assignments,
                                       second_derivatives, **kwargs), learning_rate,
                        max_grad_norm)

  def save(self, path: str) -> str:
    """Writes the net configs (`config.json`) and weights into the directory `path`."""
    os.makedirs(path, exist_ok=True)
    prefix = tf.train.Checkpoint(**self.nets).write(os.path.join(path, _WEIGHTS_PREFIX))
    with open(os.path.join(path, _CONFIG_FILE), "w") as f:
      json.dump(self.net_configs, f, indent=2, sort_keys=True)
    return prefix

  def restore(self, path: str) -> None:
    """Restores the nets' weights from a directory written by `save`.

    Raises:
      ValueError: no such checkpoint, a corrupt one, or one of differently shaped nets.
    """
    prefix = os.path.join(path, _WEIGHTS_PREFIX)
    if not os.path.exists(prefix + ".index"):
      raise ValueError(f"no saved optimizer at {path!r} (expected {prefix}.index; save_path of "
                       "train.py or MetaOptimizer.save writes it)")
    status = None
    try:
      status = tf.train.Checkpoint(**self.nets).read(prefix)
      status.assert_consumed()
    except (AssertionError, ValueError) as e:  # Read fine, but of other nets.
      raise ValueError(f"saved optimizer at {path!r} does not match these nets (its "
                       f"{_CONFIG_FILE}): {_first_line(e)}") from None
    except (tf.errors.OpError, IndexError) as e:  # Truncated, damaged or missing files.
      raise ValueError(f"saved optimizer at {path!r} is corrupt or incomplete "
                       f"({prefix}.index / .data-*): {_first_line(e)}") from None
    finally:
      if status is not None:
        status.expect_partial()  # No "unrestored values" warnings after a failure.

  @classmethod
  def load(cls, path: str) -> "MetaOptimizer":
    """Builds a MetaOptimizer from `config.json` in `path` and restores its weights.

    Raises:
      TypeError: `path` is not a path.
      ValueError: naming `path`: it is not a directory written by `save` (train.py's
        --save_path), or its files are damaged, truncated or of other nets.
    """
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
      raise TypeError(f"path must be the directory of a saved optimizer (a str), got {path!r}")
    path = os.fspath(path)
    if os.path.isfile(path):
      raise ValueError(f"saved optimizer path {path!r} is a file, not a directory (give the "
                       "directory train.py --save_path or MetaOptimizer.save wrote)")
    config_file = os.path.join(path, _CONFIG_FILE)
    if not os.path.isfile(config_file):
      raise ValueError(f"no saved optimizer at {path!r} (missing {config_file})")
    try:
      with open(config_file) as f:
        configs = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"corrupt optimizer config {config_file!r}: {e}") from None
    if not isinstance(configs, dict):
      raise ValueError(f"corrupt optimizer config {config_file!r}: expected a JSON object")
    try:
      optimizer = cls(**configs)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
      raise ValueError(f"bad optimizer config {config_file!r}: {e}") from None
    optimizer.restore(path)
    return optimizer


def _first_line(error: Exception) -> str:
  """The first line of an error's message, without TensorFlow's {{function_node ...}} prefix."""
  text = (str(error).strip().splitlines() or [""])[0]
  text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text)
  return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


class MetaLoss(tf.Module):
  """Truncated unrolls of one problem under a MetaOptimizer's nets.

  The optimizee's parameters, its constants and the rules' states live in variables of this
  object, so successive calls continue the trajectory (truncated backprop through time) until
  `reset()` draws a new problem instance.

  Calling the object runs one unroll of `len_unroll` steps from the stored state, stores the final
  state and returns the meta-loss, differentiable in the nets' variables. `run()` is the same
  compiled with `tf.function`, without gradients. With `segment_length`, the unroll is
  checkpointed (`unroll.unroll`): the same meta-gradient, with memory growing with the segment
  length instead of `len_unroll`. `num_steps` is the planned number of steps per problem
  instance (all unrolls until `reset()`), for rules that read the training progress.
  `compile_loss` ("auto", "graph" or "xla"; None: the process default, "auto" unless
  `l2l.loss_gradient.set_default_mode` changed it) is how a first-order unroll computes the
  optimizee's loss and gradient: "auto" measures once, here, whether one XLA call is faster
  than TensorFlow's ops (small problems) and uses it if so.

  Attributes:
    problem: the captured `make_loss` (`capture.Problem`).
  """

  def __init__(self, meta_optimizer: MetaOptimizer, make_loss: capture.MakeLoss,
               len_unroll: int, net_assignments: Optional[NetAssignments] = None,
               second_derivatives: bool = False,
               loss_weights: Optional[Sequence[float]] = None,
               use_while_loop: Optional[bool] = None, objective: str = "sum",
               segment_length: Optional[int] = None, num_steps: Optional[int] = None,
               compile_loss: Optional[str] = None):
    super().__init__(name="meta_loss")
    loss_gradient.check_mode(compile_loss)
    if num_steps is not None:
      checks.positive_int("num_steps", num_steps)
    self.num_steps = num_steps
    if segment_length is not None:
      checks.positive_int("segment_length", segment_length)
    self.segment_length = segment_length
    if objective not in unroll_lib.OBJECTIVES:
      raise ValueError(f"objective must be one of {unroll_lib.OBJECTIVES}, got {objective!r}")
    self.objective = objective
    checks.positive_int("len_unroll", len_unroll)
    self.meta_optimizer = meta_optimizer
    self.problem = make_loss if isinstance(make_loss, capture.Problem) else capture.Problem(
        make_loss)
    self.len_unroll = len_unroll
    self.second_derivatives = bool(second_derivatives)
    self.loss_weights = loss_weights
    self.use_while_loop = use_while_loop
    names = self.param_names
    resolved = resolve_assignments(list(meta_optimizer.nets), names, net_assignments)
    self._assignments_json = json.dumps([(netid, [names[i] for i in idx]) for netid, idx in resolved])
    self._groups = [unroll_lib.Group(meta_optimizer.nets[netid], tuple(idx))
                    for netid, idx in resolved]

    params, constants = self.problem.initial_values()
    # Second derivatives differentiate the gradient: the tape's TensorFlow ops do.
    self.loss_gradient = loss_gradient.LossGradient(
        self.problem, "graph" if self.second_derivatives else compile_loss)
    self.loss_gradient.choose(params, constants)
    state = unroll_lib.initial_state(self._groups, params, num_steps)
    self._params = [tf.Variable(p, trainable=False, name=s.name.replace("/", "__"))
                    for p, s in zip(params, self.problem.param_specs)]
    self._constants = [tf.Variable(c, trainable=False) for c in constants]
    self._rule_states = tf.nest.map_structure(lambda t: tf.Variable(t, trainable=False),
                                              state.rule_states)
    self._losses = tf.Variable(tf.zeros([len_unroll + 1]), trainable=False)
    self._meta_loss = tf.Variable(0.0, trainable=False)
    # f(x_0) of the problem instance (NaN until the first unroll after a reset measures it):
    # the log objective's floor is LOG_FLOOR times it.
    self._initial_loss = tf.Variable(float("nan"), trainable=False)
    self._num_unrolls = tf.Variable(0, dtype=tf.int64, trainable=False)
    self._run = tf.function(self.__call__, autograph=False)
    self._reset = tf.function(self._reset_impl, autograph=False)

  def _state(self) -> unroll_lib.UnrollState:
    return unroll_lib.UnrollState(tuple(tf.convert_to_tensor(v) for v in self._params),
                                  tf.nest.map_structure(tf.convert_to_tensor, self._rule_states))

  def _store(self, state: unroll_lib.UnrollState) -> None:
    for var, value in zip(self._params, state.params):
      var.assign(value)
    tf.nest.map_structure(lambda var, value: var.assign(value), self._rule_states,
                          state.rule_states)

  def __call__(self) -> tf.Tensor:
    constants = [tf.convert_to_tensor(c) for c in self._constants]
    result = unroll_lib.unroll(lambda p: self.problem.loss(p, constants), self._groups,
                               self._state(), self.len_unroll, self.second_derivatives,
                               self.loss_weights, self.use_while_loop, self.objective,
                               self.segment_length, self._initial_loss,
                               self.loss_gradient.value_and_grads_fn(constants))
    self._store(unroll_lib.UnrollState(
        tuple(tf.stop_gradient(p) for p in result.state.params),
        tf.nest.map_structure(tf.stop_gradient, result.state.rule_states)))
    self._losses.assign(tf.stop_gradient(result.losses))
    self._initial_loss.assign(tf.where(tf.math.is_nan(self._initial_loss),
                                       tf.stop_gradient(result.losses[0]), self._initial_loss))
    self._meta_loss.assign(tf.stop_gradient(result.meta_loss))
    self._num_unrolls.assign_add(1)
    return result.meta_loss

  def run(self) -> tf.Tensor:
    """One unroll compiled with `tf.function` (traced once), without a meta-gradient."""
    return self._run()

  def _reset_impl(self) -> None:
    params, constants = self.problem.initial_values()
    for var, value in zip(self._constants, constants):
      var.assign(value)
    self._store(unroll_lib.initial_state(self._groups, params, self.num_steps))
    self._initial_loss.assign(float("nan"))
    self._num_unrolls.assign(0)

  def reset(self) -> None:
    """Draws a new problem instance (runs the initializers) and resets the rules' states."""
    self._reset()

  @property
  def param_names(self) -> List[str]:
    """The optimizee's trainable variable names, as `net_assignments` uses them."""
    return list(self.problem.param_names)

  @property
  def assignments(self) -> List[Tuple[str, List[str]]]:
    """The resolved `(netid, [variable names])` of every net that updates something."""
    return [(netid, names) for netid, names in json.loads(self._assignments_json)]

  @property
  def last_meta_loss(self) -> tf.Tensor:
    """The meta-loss of the last unroll."""
    return tf.convert_to_tensor(self._meta_loss)

  @property
  def losses(self) -> tf.Tensor:
    """f(x_0), ..., f(x_T) of the last unroll."""
    return tf.convert_to_tensor(self._losses)

  @property
  def final_loss(self) -> tf.Tensor:
    """The optimizee loss at the end of the last unroll."""
    return self._losses[-1]

  @property
  def params(self) -> Dict[str, tf.Tensor]:
    """The optimizee's current parameters by variable name."""
    return {name: tf.convert_to_tensor(v) for name, v in zip(self.param_names, self._params)}

  @property
  def num_unrolls(self) -> int:
    """Unrolls since the last reset."""
    return int(self._num_unrolls.numpy())


def apply_if_finite(tensors: Sequence[tf.Tensor], apply: Callable[[], Any],
                    skipped_steps: tf.Variable) -> tf.Tensor:
  """Runs `apply()` (a meta-update) if every entry of `tensors` (the meta-loss and
  meta-gradient) is finite; else leaves everything as it was and adds 1 to `skipped_steps`.

  A NaN / Inf meta-loss or meta-gradient would corrupt the trained variables and the
  meta-optimizer's moments. Returns whether `apply` ran. Shared by `MetaMinimize`,
  `PESMinimize` and `MetaTrainer`.
  """
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])

  def run() -> tf.Tensor:
    apply()
    return tf.constant(True)

  def skip() -> tf.Tensor:
    skipped_steps.assign_add(1)
    return tf.constant(False)

  return tf.cond(finite, run, skip)


def _check_positive(name: str, value: Any) -> float:
  if (not isinstance(value, numbers.Real) or isinstance(value, bool)
      or not 0 < value < math.inf):
    raise ValueError(f"{name} must be a positive number, got {value!r}")
  return float(value)


class MetaMinimize(tf.Module):
  """`step()`: one truncated unroll and one Adam step on the nets' weights (`tf.function`).

  A step whose meta-loss or meta-gradient is not finite is skipped: the nets and Adam's state
  (moments and step count) stay as they were, and `skipped_steps` counts it.

  Attributes:
    learning_rate: a variable; assign to it to schedule the learning rate without retracing.
    skipped_steps: a variable; the number of steps skipped for a non-finite meta-loss or
      meta-gradient.
  """

  def __init__(self, meta_loss: MetaLoss, learning_rate: float = 1e-3,
               max_grad_norm: Optional[float] = None):
    super().__init__(name="meta_minimize")
    _check_positive("learning_rate", learning_rate)
    self.max_grad_norm = (None if max_grad_norm is None
                          else _check_positive("max_grad_norm", max_grad_norm))
    self.meta_loss = meta_loss
    self.meta_optimizer = meta_loss.meta_optimizer
    self.learning_rate = tf.Variable(float(learning_rate), trainable=False, name="learning_rate")
    self.optimizer = snt.optimizers.Adam(self.learning_rate)
    self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
    variables = self.meta_optimizer.trainable_variables
    if variables:
      # Adam's moments exist from the start, so that a checkpoint can be restored into them
      # before the first step and `step()` never creates variables inside its `tf.cond`.
      with tf.init_scope():
        self.optimizer._initialize(variables)  # pylint: disable=protected-access
    self._step = tf.function(self._step_impl, autograph=False)

  def _step_impl(self) -> tf.Tensor:
    variables = self.meta_optimizer.trainable_variables
    with tf.GradientTape() as tape:
      loss = self.meta_loss()
    if variables:
      grads = tape.gradient(loss, variables,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
      checked = [loss, *grads]
      if self.max_grad_norm is not None:
        grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm)
      apply_if_finite(checked, lambda: self.optimizer.apply(grads, variables),
                      self.skipped_steps)
    return loss

  def step(self) -> tf.Tensor:
    """Runs one unroll from the stored state, updates the nets; returns the meta-loss."""
    return self._step()

  def run(self) -> tf.Tensor:
    """One unroll without updating the nets (for evaluation)."""
    return self.meta_loss.run()

  def reset(self) -> None:
    self.meta_loss.reset()

  last_meta_loss = property(lambda self: self.meta_loss.last_meta_loss)
  losses = property(lambda self: self.meta_loss.losses)
  final_loss = property(lambda self: self.meta_loss.final_loss)
  params = property(lambda self: self.meta_loss.params)
