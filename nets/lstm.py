"""A deep LSTM written as pure functions of tensors, with a thin module holding its weights.

Gate order is (i, j, f, o) with the forget bias added at run time, as in the 2016 code and the
speed peers in ../shared/peers, so that weights transfer between them unchanged. Weights are
created eagerly in `__init__` (not on first call) so that a checkpoint restores into them and a
mismatched checkpoint is detected at once.

Two implementations of the same maths:

* `lstm_step` / `deep_lstm`: plain TF ops, differentiated by autodiff (the reference);
* `fast_deep_lstm` (the default of `DeepLSTMCore` for float32): one `tf.custom_gradient` over the
  whole stack with a hand-written backward pass. Matmuls stay TF ops (oneDNN); the element-wise
  gate maths of each layer, forward and backward, is one fused C++ kernel (`lstm_kernels.cc`,
  compiled on first use), so each layer is a matmul plus one kernel instead of ~15 (forward) and
  ~30 (backward) small ops, each a pass over memory. The backward pass reuses the gate
  activations of the forward one. Results agree with the reference up to float32 round-off
  (tests/fast_lstm_test.py).

Coordinatewise nets (`nets.CoordinateWiseDeepLSTM`, the 2016 optimizer) go further:
`fused_coordinatewise_step` runs a whole optimizer step, preprocessing, every layer's matmul and
gates and the output layer, as one op, and its gradient as another (`L2lCwLstm` /
`L2lCwLstmGrad` in `lstm_kernels.cc`). Coordinates never interact, so the ops work through
blocks of 64 coordinates with each block's intermediates in the core's cache, matmuls
register-tiled over GCC vector types, the gate maths on whole vectors (a 16-unit chunk per
gate), and the rows split into parts that TensorFlow's threads claim as they come.
"""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import sonnet as snt
import tensorflow as tf

from nets import kernel_build

LSTMState = Tuple[Tuple[tf.Tensor, tf.Tensor], ...]  # ((h, c) per layer)
Initializer = Union[None, str, float]


def lstm_step(x: tf.Tensor, h: tf.Tensor, c: tf.Tensor, w: tf.Tensor, b: tf.Tensor,
              forget_bias: float = 1.0) -> Tuple[tf.Tensor, tf.Tensor]:
  """One LSTM step: gates = [x, h] w + b, split (i, j, f, o); returns (h', c')."""
  gates = tf.matmul(tf.concat([x, h], axis=-1), w) + b
  i, j, f, o = tf.split(gates, 4, axis=-1)
  c = tf.sigmoid(f + forget_bias) * c + tf.sigmoid(i) * tf.tanh(j)
  h = tf.sigmoid(o) * tf.tanh(c)
  return h, c


def deep_lstm(x: tf.Tensor, state: LSTMState, weights: Sequence[tf.Tensor],
              biases: Sequence[tf.Tensor], out_w: tf.Tensor, out_b: tf.Tensor,
              forget_bias: float = 1.0) -> Tuple[tf.Tensor, LSTMState]:
  """Stacked `lstm_step`s and a linear output layer: returns `(output, new_state)`."""
  new_state = []
  for w, b, (h, c) in zip(weights, biases, state):
    h, c = lstm_step(x, h, c, w, b, forget_bias)
    new_state.append((h, c))
    x = h
  return tf.matmul(x, out_w) + out_b, tuple(new_state)


_KERNEL_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lstm_kernels.cc")
_kernels: Dict[str, Any] = {}  # Caches the loaded op library (or the reason it is unavailable).


def placed_on_cpu(tensors: Sequence[Any]) -> bool:
  """Whether the fused CPU kernels may run on `tensors` without copies to and from the host.

  Without GPUs or TPUs (no logical devices of those types), always. With them, only when every
  tensor (or variable) is explicitly on a CPU: an eager tensor's actual device, a graph
  tensor's requested one (`tf.device`); an unplaced graph tensor may land on the accelerator,
  so it takes the reference ops, which run wherever TensorFlow places them.
  """
  if not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")):
    return True
  return all("CPU" in (getattr(t, "device", "") or "").upper() for t in tensors)


@tf.autograph.experimental.do_not_convert
def lstm_kernels() -> Optional[Any]:
  """The fused gate ops of `lstm_kernels.cc`, compiled on first use; None if unavailable.

  Built and cached by `nets.kernel_build.load` (see there: the cache directory, `$CXX`,
  `L2L_NO_KERNELS=1`); when unavailable, `DeepLSTMCore` falls back to the reference
  implementation (same results, slower).
  """
  return kernel_build.load(_KERNEL_SOURCE, _kernels, "fused LSTM kernels",
                           ("-fopenmp-simd", "-fno-tree-loop-distribute-patterns"))


def fast_deep_lstm(x: tf.Tensor, state: LSTMState, weights: Sequence[tf.Tensor],
                   biases: Sequence[tf.Tensor], out_w: tf.Tensor, out_b: tf.Tensor,
                   forget_bias: float = 1.0) -> Tuple[tf.Tensor, LSTMState]:
  """`deep_lstm` with fused gate kernels and a hand-written backward pass (see the module doc).

  Same arguments, results and gradients (to the input, every weight and the state) as
  `deep_lstm`, up to float32 round-off. Falls back to `deep_lstm` when the kernels are
  unavailable (`lstm_kernels()` is None) or a tensor may be on an accelerator (`placed_on_cpu`).
  """
  kernels = lstm_kernels()
  if kernels is None or not placed_on_cpu(
      [x, *[t for hc in state for t in hc], *weights, *biases, out_w, out_b]):
    return deep_lstm(x, state, weights, biases, out_w, out_b, forget_bias)
  num_layers = len(weights)
  flat_state = [t for hc in state for t in hc]
  tensors = [tf.convert_to_tensor(t) for t in [*weights, *biases, out_w, out_b]]

  @tf.custom_gradient
  def run(x, *args):
    flat_state = args[:2 * num_layers]
    ws = args[2 * num_layers:3 * num_layers]
    bs = args[3 * num_layers:4 * num_layers]
    out_w, out_b = args[4 * num_layers:]
    saved, new_state, inp = [], [], x
    for layer in range(num_layers):
      h, c = flat_state[2 * layer], flat_state[2 * layer + 1]
      xh = tf.concat([inp, h], axis=-1)
      h, c_new, acts, tanh_c = kernels.l2l_lstm_gates(tf.matmul(xh, ws[layer]), bs[layer], c,
                                                      forget_bias=forget_bias)
      saved.append((xh, c, acts, tanh_c))
      new_state += [h, c_new]
      inp = h
    out = tf.matmul(inp, out_w) + out_b

    def grad(d_out, *d_state):
      # Outputs without a gradient (e.g. the state after the last step) get zeros.
      d_out = tf.zeros_like(out) if d_out is None else d_out
      d_state = [tf.zeros_like(s) if d is None else d for d, s in zip(d_state, new_state)]
      d_out_w = tf.matmul(inp, d_out, transpose_a=True)
      d_out_b = tf.reduce_sum(d_out, axis=0)
      dh_above = tf.matmul(d_out, out_w, transpose_b=True)
      d_flat_state = [None] * (2 * num_layers)
      dws, dbs = [None] * num_layers, [None] * num_layers
      for layer in reversed(range(num_layers)):
        xh, c_prev, acts, tanh_c = saved[layer]
        dz, d_flat_state[2 * layer + 1] = kernels.l2l_lstm_gates_grad(
            d_state[2 * layer], dh_above, d_state[2 * layer + 1], acts, tanh_c, c_prev)
        dws[layer] = tf.matmul(xh, dz, transpose_a=True)
        dbs[layer] = tf.reduce_sum(dz, axis=0)
        dxh = tf.matmul(dz, ws[layer], transpose_b=True)
        dh_above, d_flat_state[2 * layer] = tf.split(
            dxh, [xh.shape[-1] - c_prev.shape[-1], c_prev.shape[-1]], axis=-1)
      return (dh_above, *d_flat_state, *dws, *dbs, d_out_w, d_out_b)

    return (out, *new_state), grad

  out, *new_state = run(x, *flat_state, *tensors)
  return out, tuple((new_state[2 * i], new_state[2 * i + 1]) for i in range(num_layers))


def kernel_threads() -> Dict[str, Any]:
  """The fused ops' thread attributes, from this process's TensorFlow thread settings.

  Helpers come from TensorFlow's inter-op pool when it has threads besides the one running the
  op (ForParts in lstm_kernels.cc), and the rows are split over as many threads as the larger
  of the two pools has: with one intra-op thread (`l2l.threads.use_intra_op_threads(1)`, which
  keeps a small problem's own ops unsplit) the fused ops still use every core.
  """
  inter = tf.config.threading.get_inter_op_parallelism_threads()
  return dict(inter_op_helpers=inter != 1,
              inter_op_threads=inter if inter > 0 else available_cpus())


def available_cpus() -> int:
  """The CPUs this process may run on (TensorFlow's default inter-op pool size)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def fused_coordinatewise_step(g: tf.Tensor, state: LSTMState, weights: Sequence[tf.Tensor],
                              biases: Sequence[tf.Tensor], out_w: tf.Tensor, out_b: tf.Tensor,
                              forget_bias: float = 1.0, log_and_sign: Optional[float] = None,
                              eps: float = 1e-10, scale: float = 1.0
                              ) -> Optional[Tuple[tf.Tensor, LSTMState]]:
  """One step of a coordinatewise optimizer net as one fused op, forward and backward.

  Computes, for the gradient coordinates `g` (`[N]`, one row each),

      update = scale * deep_lstm(features(g), state)[0][:, 0]

  with `features` the LogAndSign preprocessing with `k = log_and_sign` (`nets.preprocess`), or
  the identity when `log_and_sign` is None; `out_w` must be `[H_top, 1]`. Returns
  `(update [N], new_state)`, or None when the fused kernels are unavailable or a tensor may be
  on an accelerator (`placed_on_cpu`: the caller then runs the reference ops). Each step is one
  op (`L2lCwLstm`), its gradient another (`L2lCwLstmGrad`, reading the gate activations and
  input features the forward op saved, written only when a gradient consumes them); both run
  the whole stack for a block of rows at a time (see lstm_kernels.cc). Values and gradients (to
  `g`, the state and every weight) agree with the reference ops up to float32 round-off
  (tests/fast_lstm_test.py).
  """
  kernels = lstm_kernels()
  if kernels is None or not placed_on_cpu(
      [g, *[t for hc in state for t in hc], *weights, *biases, out_w, out_b]):
    return None
  num_layers = len(weights)
  attrs = dict(log_and_sign=log_and_sign is not None,
               k=float(log_and_sign if log_and_sign is not None else 1.0), eps=float(eps),
               forget_bias=float(forget_bias), scale=float(scale),
               **kernel_threads())
  hs = [tf.convert_to_tensor(h) for h, _ in state]
  cs = [tf.convert_to_tensor(c) for _, c in state]
  tensors = [tf.convert_to_tensor(t) for t in [*weights, *biases, out_w, out_b]]

  @tf.custom_gradient
  def run(g, *args):
    hs, cs = list(args[:num_layers]), list(args[num_layers:2 * num_layers])
    ws = list(args[2 * num_layers:3 * num_layers])
    bs = list(args[3 * num_layers:4 * num_layers])
    out_w, out_b = args[4 * num_layers:]
    update, new_h, new_c, saved = kernels.l2l_cw_lstm(g, hs, cs, ws, bs, out_w, out_b, **attrs)

    def grad(d_update, *d_state):
      # Outputs without a gradient (e.g. the state after the last step) get zeros.
      d_update = tf.zeros_like(update) if d_update is None else d_update
      d_state = [tf.zeros_like(s) if d is None else d
                 for d, s in zip(d_state, [*new_h, *new_c])]
      d_g, d_h, d_c, d_w, d_b, d_out_w, d_out_b = kernels.l2l_cw_lstm_grad(
          g, hs, cs, ws, bs, out_w, out_b, d_update, d_state[:num_layers],
          d_state[num_layers:], new_h, new_c, saved, **attrs)
      return (d_g, *d_h, *d_c, *d_w, *d_b, d_out_w, d_out_b)

    return (update, *new_h, *new_c), grad

  update, *flat = run(g, *hs, *cs, *tensors)
  return update, tuple((flat[i], flat[num_layers + i]) for i in range(num_layers))


def make_initializer(initializer: Initializer, fan_in: int, seed: Optional[int] = None,
                     index: int = 0) -> Callable[[Sequence[int], tf.DType], tf.Tensor]:
  """Returns `init(shape, dtype)`.

  `initializer` is None (truncated normal with stddev 1/sqrt(fan_in), Sonnet's default),
  "zeros", or a float: the stddev of a normal distribution. With a `seed`, draws are stateless
  (seeded by `(seed, index)`), so the same seed gives the same weights in any process or order.
  """
  if isinstance(initializer, str):
    if initializer != "zeros":
      raise ValueError(f"unknown initializer {initializer!r}; expected None, 'zeros' or a stddev")
    return lambda shape, dtype: tf.zeros(shape, dtype)
  if initializer is None:
    stddev, truncated = 1.0 / np.sqrt(fan_in), True
  elif isinstance(initializer, (int, float)) and not isinstance(initializer, bool) \
      and initializer >= 0:
    stddev, truncated = float(initializer), False
  else:
    raise ValueError(f"unknown initializer {initializer!r}; expected None, 'zeros' or a stddev")
  if seed is None:
    init = (snt.initializers.TruncatedNormal(stddev=stddev) if truncated
            else snt.initializers.RandomNormal(stddev=stddev))
    return init
  draw = tf.random.stateless_truncated_normal if truncated else tf.random.stateless_normal
  return lambda shape, dtype: draw(shape, seed=[int(seed), int(index)], dtype=dtype) * stddev


class DeepLSTMCore(snt.Module):
  """Stacked LSTM layers followed by a linear output layer."""

  def __init__(self, input_size: int, layers: Sequence[int], output_size: int,
               initializer: Initializer = None, forget_bias: float = 1.0,
               seed: Optional[int] = None, name: Optional[str] = None):
    super().__init__(name=name)
    self.layers = tuple(int(n) for n in layers)
    if any(n <= 0 for n in self.layers):
      raise ValueError(f"`layers` must be positive sizes, got {tuple(layers)}")
    self.forget_bias = float(forget_bias)
    # Set to False to run the autodiff reference implementation (tests compare the two).
    self.fast_path = True
    self.weights: List[tf.Variable] = []
    self.biases: List[tf.Variable] = []
    size = int(input_size)
    with self.name_scope:
      for index, hidden in enumerate(self.layers):
        init = make_initializer(initializer, size + hidden, seed, index)
        self.weights.append(tf.Variable(init([size + hidden, 4 * hidden], tf.float32),
                                        name=f"lstm_{index}/w"))
        self.biases.append(tf.Variable(tf.zeros([4 * hidden]), name=f"lstm_{index}/b"))
        size = hidden
      init = make_initializer(initializer, size, seed, len(self.layers))
      self.out_w = tf.Variable(init([size, output_size], tf.float32), name="linear/w")
      self.out_b = tf.Variable(tf.zeros([output_size]), name="linear/b")

  def initial_state(self, batch_size: int, dtype=tf.float32) -> LSTMState:
    return tuple((tf.zeros([batch_size, n], dtype), tf.zeros([batch_size, n], dtype))
                 for n in self.layers)

  def __call__(self, x: tf.Tensor, state: LSTMState) -> Tuple[tf.Tensor, LSTMState]:
    """One step on a batch `x` of rows: returns `(output, new_state)`.

    Runs `fast_deep_lstm` when it applies (float32 and `self.fast_path`, True by default), else
    the reference `deep_lstm`; both compute the same values and gradients.
    """
    args = (x, state, self.weights, self.biases, self.out_w, self.out_b, self.forget_bias)
    if self.fast_path and x.dtype == tf.float32 and self.layers:
      return fast_deep_lstm(*args)
    return deep_lstm(*args)
