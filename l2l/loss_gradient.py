"""The optimizee's loss and gradient as one call, compiled with XLA where that is faster.

Every optimizee step of an unroll computes f(x_t) and grad f(x_t). On a small problem that is a
handful of tiny ops (the 1,280-coordinate quadratic of `python -m bench`: a batched 10x10 matvec
and its transpose, ~12 ops a step), and TensorFlow's per-op dispatch and thread hand-offs cost
more than the arithmetic: 117 us a step with TensorFlow's default threads, against 58 us for the
same loss and gradient as one XLA executable (BUILD.md "Speed"). On a problem whose matmuls are
large, TensorFlow's own kernels are as fast or faster. So `LossGradient` measures, once per
problem, and keeps the faster:

* "graph": the loss and `tf.GradientTape` gradient as TensorFlow ops (the reference path);
* "xla": the same function under `tf.function(jit_compile=True)`;
* "auto" (the default): "xla" if it compiles, the loss has no stateful ops (random minibatch
  draws, iterators, `py_function`: XLA would change or refuse them) and one call is at least
  `MIN_SPEEDUP` times as fast as "graph" on the problem's initial values; otherwise "graph".
  Which is faster depends on the ops more than on the size (on the 2-vCPU AMD EPYC of BUILD.md:
  XLA 1.6-2.8x faster on batched quadratics of 1,280-82K coordinates, 1.1-1.8x slower on MLPs
  of 2K-80K parameters), so it is measured, not guessed.

The two paths round differently (~1e-7 relative a step), so a run must not switch between them:
"auto"'s decision is kept per machine, in `~/.cache/l2l/loss_gradient.json` (with
`$XDG_CACHE_HOME`, the kernels' cache), keyed by the traced loss-and-gradient graph, the
TensorFlow version and the CPU's flags. The first process to meet a problem measures it; every
later one (a resumed train.py, evaluate.py, another instance of the same problem) reads the
decision, so repeated runs on a machine are the same run. The choice and both timings are
logged (absl INFO). Pin the mode ("graph" or "xla") for the same trajectories across machines.

Only first-order unrolls use it: with second derivatives the meta-gradient differentiates the
gradient itself, which the tape does through the TensorFlow ops.
"""

import hashlib
import json
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from l2l import capture
from l2l import unroll as unroll_lib
from nets import kernel_build

MODES = ("auto", "graph", "xla")
# "auto" compiles with XLA only if a call is at least this many times as fast.
MIN_SPEEDUP = 1.25
# "auto"'s measurement: chains of _CHAIN dependent calls of each path, alternating, at most
# _ROUNDS of them (fewer once _BUDGET_S seconds have passed).
_CHAIN = 10
_ROUNDS = 7
_BUDGET_S = 1.0
# "auto"'s decisions by key (`_key`): this process's, and the machine's file once read.
_DECISIONS: Dict[str, Tuple[bool, Optional[Tuple[float, float]]]] = {}
# XLA functions by the full traced graph (`LossGradient._share_compiled`), this process.
_COMPILED: Dict[str, Callable] = {}
_FILE = "loss_gradient.json"
_loaded = [False]


def _path() -> str:
  return os.path.join(kernel_build.cache_dir(), _FILE)


def _read() -> Dict[str, Dict]:
  try:
    with open(_path()) as f:
      data = json.load(f)
    return data if isinstance(data, dict) else {}
  except (OSError, ValueError):
    return {}


def _decision(key: str) -> Optional[Tuple[bool, Optional[Tuple[float, float]]]]:
  if not _loaded[0]:
    _loaded[0] = True
    for k, entry in _read().items():
      try:
        timings = entry.get("timings_us")
        _DECISIONS.setdefault(k, (bool(entry["xla"]), tuple(timings) if timings else None))
      except (AttributeError, KeyError, TypeError):
        continue
  return _DECISIONS.get(key)


def _remember(key: str, use_xla: bool, timings: Optional[Tuple[float, float]],
              name: str) -> None:
  """Keeps a decision for this process and, best effort, for the machine's later processes."""
  _DECISIONS[key] = (use_xla, timings)
  data = _read()
  data[key] = {"xla": use_xla, "timings_us": list(timings) if timings else None,
               "problem": name}
  try:
    os.makedirs(os.path.dirname(_path()), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(_path()), suffix=".tmp")
    with os.fdopen(handle, "w") as f:
      json.dump(data, f, indent=1, sort_keys=True)
    os.replace(temporary, _path())
  except OSError as e:
    logging.log_first_n(logging.WARNING, "l2l: cannot write %s (%s): the compile_loss='auto' "
                        "decision holds for this process only", 1, _path(), e)


def _key(concrete) -> str:
  """The traced graph's op types and output shapes in order (names, which can carry a process's
  unique ids, left out), the TensorFlow version and the CPU's flags."""
  digest = hashlib.sha256()
  for op in concrete.graph.get_operations():
    digest.update(f"{op.type}:{[(t.dtype.name, str(t.shape)) for t in op.outputs]};".encode())
  digest.update(tf.__version__.encode())
  digest.update(kernel_build.cpu_flags().encode())
  return digest.hexdigest()


_default_mode = "auto"


def check_mode(mode: Optional[str]) -> str:
  """`mode`, or the process default for None; raises ValueError unless one of MODES."""
  if mode is None:
    return _default_mode
  if mode not in MODES:
    raise ValueError(f"compile_loss must be one of {MODES}, got {mode!r}")
  return mode


def set_default_mode(mode: str) -> None:
  """The mode of every MetaLoss / PESMinimize built later without `compile_loss` (train.py
  and evaluate.py's --compile_loss)."""
  global _default_mode
  _default_mode = check_mode(mode)


def _stateful_ops(concrete) -> List[str]:
  """The stateful op types in a traced function's graph (nested function calls included)."""
  return sorted({op.type for op in concrete.graph.get_operations() if op._is_stateful})  # pylint: disable=protected-access


def _chain(value_and_grads, length: int):
  """A tf.function of `length` dependent calls, as an unroll makes them (each call's parameters
  depend on the previous call's gradient), so the timing sees in-graph costs, not Python's."""
  def chain(params, constants):
    total = tf.zeros([])
    for _ in range(length):
      loss, grads = value_and_grads(params, constants)
      params = [p + tf.zeros_like(p) * g for p, g in zip(params, grads)]
      total += tf.cast(loss, tf.float32)
    return total
  return tf.function(chain, autograph=False)


def _seconds(fn, args) -> float:
  start = time.perf_counter()
  fn(*args).numpy()
  return time.perf_counter() - start


class LossGradient:
  """f and grad f of a captured problem, as TensorFlow ops or one XLA call (see module doc).

  Args:
    problem: the captured `make_loss`.
    mode: "auto", "graph", "xla", or None for the process default (`set_default_mode`).

  Raises:
    ValueError: `mode` is not one of MODES.
  """

  def __init__(self, problem: capture.Problem, mode: Optional[str] = None):
    self.problem = problem
    self.mode = check_mode(mode)
    self._graph = tf.function(self._value_and_grads, autograph=False)
    self._xla = tf.function(self._value_and_grads, autograph=False, jit_compile=True)
    self.use_xla: Optional[bool] = None if self.mode == "auto" else self.mode == "xla"
    self.timings_us: Optional[Tuple[float, float]] = None  # (graph, xla) median per call
    self._decided = False

  def _value_and_grads(self, params, constants):
    return unroll_lib.value_and_grads(lambda p: self.problem.loss(p, constants), params)

  def choose(self, params: Sequence[tf.Tensor], constants: Sequence[tf.Tensor]) -> bool:
    """Decides "auto" (once; eagerly, on these values); returns whether XLA is used.

    Raises:
      ValueError: mode "xla" and the loss does not compile with XLA.
    """
    if self.mode == "graph" or self._decided or not tf.executing_eagerly():
      # Inside a tf.function nothing can be measured: "auto" undecided stays "graph".
      return bool(self.use_xla)
    self._decided = True
    params, constants = list(params), list(constants)
    name = self.problem.name
    concrete = self._graph.get_concrete_function(params, constants)
    self._share_compiled(concrete)
    stateful = _stateful_ops(concrete)
    if stateful and self.mode == "auto":
      logging.info("l2l: problem %r: loss and gradient as TensorFlow ops (stateful ops %s)",
                   name, ", ".join(stateful))
      self.use_xla = False
      return False
    # Problems built alike (another instance, a later process) reuse the decision.
    key = _key(concrete)
    known = _decision(key) if self.mode == "auto" else None
    if known is not None:
      self.use_xla, self.timings_us = known
      return self.use_xla
    try:
      self._xla(params, constants)  # Compiles.
    except (tf.errors.OpError, ValueError, TypeError) as e:
      message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      if self.mode == "xla":
        raise ValueError(f"compile_loss='xla': problem {name!r}'s loss and gradient do not "
                         f"compile with XLA: {message}") from None
      logging.info("l2l: problem %r: loss and gradient as TensorFlow ops (XLA: %s)", name,
                   message)
      self.use_xla = False
      _remember(key, False, None, name)
      return False
    if self.mode == "xla":
      return True
    chains = (_chain(self._graph, _CHAIN), _chain(self._xla, _CHAIN))
    times = ([], [])
    for chain in chains:
      _seconds(chain, (params, constants))  # Traces.
    start = time.perf_counter()
    for _ in range(_ROUNDS):
      for chain, seconds in zip(chains, times):
        seconds.append(_seconds(chain, (params, constants)) / _CHAIN)
      if time.perf_counter() - start > _BUDGET_S and len(times[0]) >= 3:
        break
    graph_us, xla_us = (statistics.median(t) * 1e6 for t in times)
    self.timings_us = (graph_us, xla_us)
    self.use_xla = graph_us >= MIN_SPEEDUP * xla_us
    _remember(key, self.use_xla, self.timings_us, name)
    logging.info("l2l: problem %r: loss and gradient %s (a call: %.0f us as TensorFlow ops, "
                 "%.0f us with XLA)", name, "compiled with XLA" if self.use_xla else
                 "as TensorFlow ops", graph_us, xla_us)
    return self.use_xla

  def _share_compiled(self, concrete) -> None:
    """Takes the XLA function of an earlier problem whose traced loss and gradient are the same
    graph (every node and constant; nothing captured from outside), so that another instance
    of a problem (evaluate.py's runs, a meta-batch) reuses its compiled executable."""
    if concrete.captured_inputs:
      return
    key = hashlib.sha256(concrete.graph.as_graph_def().SerializeToString(
        deterministic=True)).hexdigest()
    self._xla = _COMPILED.setdefault(key, self._xla)

  def value_and_grads_fn(self, constants: Sequence[tf.Tensor]) -> Optional[unroll_lib.ValueAndGradsFn]:
    """`params -> (f, grad f)` with these constants for the unroll engine, or None for the
    engine's own TensorFlow ops ("graph", or "auto" decided against XLA). Call `choose` first
    ("auto" undecided counts as "graph")."""
    if not self.use_xla:
      return None
    constants = list(constants)
    return lambda params: self._xla(list(params), constants)
