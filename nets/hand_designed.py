"""Hand-designed update rules (SGD, momentum, Nesterov, RMSProp, Adam) as differentiable nets.

They share the `UpdateRule` interface of the learned nets, so they serve as baselines in the
same unrolls, and they are differentiable end to end: through their state, through the incoming
gradients (second-order meta-gradients) and, with `learnable=True`, to their hyperparameters
(e.g. a meta-learned inner learning rate, as in Meta-SGD / MAML).

Each rule's maths is a module-level function of tensors that returns the additive update
(`params + update`, the opposite sign of Sonnet's `*_update` functions, which return what is
subtracted); the modules only hold the hyperparameters and map the function over the parameters.
The numbers match `snt.optimizers.{SGD, Momentum, RMSProp, Adam}` step by step.
"""

import numbers
from typing import List, NamedTuple, Optional, Sequence, Tuple

import sonnet as snt
import tensorflow as tf

from nets import base

Tensors = Tuple[tf.Tensor, ...]


def safe_sqrt(x: tf.Tensor) -> tf.Tensor:
  """`sqrt(x)` for `x >= 0` whose derivatives of every order are finite at `x == 0`.

  The derivative of `sqrt` at 0 is infinite, and `inf * 0` makes Adam's derivative with respect
  to a gradient coordinate that is exactly 0 NaN. Here the derivative at 0 is taken to be 0
  (the double-`tf.where` trick: the masked branch never sees 0), the forward value is unchanged.
  """
  positive = x > 0
  safe_x = tf.where(positive, x, tf.ones_like(x))
  return tf.where(positive, tf.sqrt(safe_x), tf.zeros_like(x))


def sgd_update(grad: tf.Tensor, learning_rate: tf.Tensor) -> tf.Tensor:
  """Gradient descent: `update = -learning_rate * g`."""
  return -(learning_rate * grad)


def momentum_update(grad: tf.Tensor, accumulator: tf.Tensor, learning_rate: tf.Tensor,
                    momentum: tf.Tensor, nesterov: bool = False
                    ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Heavy-ball momentum (Polyak 1964) or Nesterov momentum (Sutskever et al. 2013).

      a' = mu a + g
      update = -lr (mu a' + g)   if nesterov
      update = -lr a'            otherwise

  Returns:
    `(update, a')`.
  """
  accumulator = momentum * accumulator + grad
  if nesterov:
    step = learning_rate * (momentum * accumulator + grad)
  else:
    step = learning_rate * accumulator
  return -step, accumulator


def rmsprop_update(grad: tf.Tensor, mom: tf.Tensor, ms: tf.Tensor, mg: Optional[tf.Tensor],
                   learning_rate: tf.Tensor, decay: tf.Tensor, momentum: tf.Tensor,
                   epsilon: tf.Tensor
                   ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
  """RMSProp (Tieleman & Hinton 2012), optionally centered (Graves 2013), with plain momentum.

      ms' = rho ms + (1 - rho) g^2
      mg' = rho mg + (1 - rho) g                      (centered only)
      mom' = mu mom + lr g / sqrt(ms' - mg'^2 + eps)  (centered; ms' + eps otherwise)
      update = -mom'

  Args:
    mg: the mean gradient, or None for the uncentered rule.

  Returns:
    `(update, mom', ms', mg')`, with `mg'` None when `mg` is None.
  """
  ms = tf.square(grad) * (1. - decay) + ms * decay
  if mg is not None:
    mg = grad * (1. - decay) + mg * decay
    denominator = ms - tf.square(mg) + epsilon
  else:
    denominator = ms + epsilon
  mom = momentum * mom + learning_rate * grad * tf.math.rsqrt(denominator)
  return -mom, mom, ms, mg


def adam_update(grad: tf.Tensor, m: tf.Tensor, v: tf.Tensor, step: tf.Tensor,
                learning_rate: tf.Tensor, beta1: tf.Tensor, beta2: tf.Tensor,
                epsilon: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Adam (Kingma & Ba 2015, algorithm 1) at step `t = step` (1 on the first call).

      m' = b1 m + (1 - b1) g
      v' = b2 v + (1 - b2) g^2
      update = -lr (m' / (1 - b1^t)) / (sqrt(v' / (1 - b2^t)) + eps)

  The square root is `safe_sqrt`, so that second derivatives stay finite where g = v = 0.

  Returns:
    `(update, m', v')`.
  """
  m = beta1 * m + (1. - beta1) * grad
  v = beta2 * v + (1. - beta2) * grad * grad
  m_hat = m / (1. - tf.pow(beta1, step))
  v_hat = v / (1. - tf.pow(beta2, step))
  return -(learning_rate * m_hat / (safe_sqrt(v_hat) + epsilon)), m, v


def _check_number(rule: str, argument: str, value, low: float, high: float,
                  include_low: bool, include_high: bool = False) -> float:
  """Returns `value` as a float, checking that it is a real number in the given interval."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{rule}: `{argument}` must be a real number, got {value!r}")
  above = value >= low if include_low else value > low
  below = value <= high if include_high else value < high
  if not (above and below):
    interval = (("[" if include_low else "(") + f"{low:g}, {high:g}" +
                ("]" if include_high else ")"))
    raise ValueError(f"{rule}: `{argument}` must be in {interval}, got {value!r}")
  return float(value)


def _check_learnable(rule: str, learnable) -> bool:
  if not isinstance(learnable, bool):
    raise TypeError(f"{rule}: `learnable` must be a bool, got {learnable!r}")
  return learnable


def _check_length(rule: str, grads: Sequence[tf.Tensor], slots: Sequence[tf.Tensor]) -> None:
  if len(grads) != len(slots):
    raise ValueError(f"{rule}: got {len(grads)} gradients for a state built for {len(slots)} "
                     f"parameters")


@snt.allow_empty_variables  # `trainable_variables` is () unless learnable, not an error.
class _HandDesigned(base.UpdateRule):
  """Holds hyperparameters as scalar float32 variables, trainable iff `learnable`.

  Variables either way, so that checkpoints have one layout whatever `learnable` is, and a
  meta-learned value restores into a net built with `learnable=False` for evaluation. `config`
  keeps the constructor values; the learned ones live in the checkpoint.
  """

  def __init__(self, learnable: bool, name: str):
    super().__init__(name=name)
    self.learnable = _check_learnable(type(self).__name__, learnable)

  def _hyperparameter(self, name: str, value: float) -> tf.Variable:
    with self.name_scope:
      return tf.Variable(value, dtype=tf.float32, trainable=self.learnable, name=name)


def _cast(value, like: tf.Tensor) -> tf.Tensor:
  return tf.cast(value, like.dtype)


class Sgd(_HandDesigned):
  """Gradient descent, `update = -learning_rate * g`; the state is `()`.

  Args:
    learning_rate: step size, > 0.
    learnable: make `learning_rate` a trainable variable.
  """

  def __init__(self, learning_rate: float = 0.1, learnable: bool = False, name: str = "sgd"):
    super().__init__(learnable, name)
    learning_rate = _check_number("Sgd", "learning_rate", learning_rate, 0., float("inf"), False)
    self._remember_options(learning_rate=learning_rate, learnable=learnable)
    self.learning_rate = self._hyperparameter("learning_rate", learning_rate)

  def initial_state(self, params: Sequence[tf.Tensor]) -> Tuple[()]:
    base.as_list(params, "params")
    return ()

  def __call__(self, grads: Sequence[tf.Tensor],
               state: Tuple[()]) -> Tuple[List[tf.Tensor], Tuple[()]]:
    grads = base.as_list(grads)
    return [sgd_update(g, _cast(self.learning_rate, g)) for g in grads], state


class MomentumState(NamedTuple):
  accumulators: Tensors  # One per parameter.


class Momentum(_HandDesigned):
  """SGD with heavy-ball or Nesterov momentum, as `snt.optimizers.Momentum` (`momentum_update`).

  Args:
    learning_rate: step size, > 0.
    momentum: decay of the accumulated gradient, in [0, 1).
    nesterov: use Nesterov's momentum.
    learnable: make `learning_rate` and `momentum` trainable variables.
  """

  def __init__(self, learning_rate: float = 0.01, momentum: float = 0.9, nesterov: bool = False,
               learnable: bool = False, name: str = "momentum"):
    super().__init__(learnable, name)
    rule = type(self).__name__
    learning_rate = _check_number(rule, "learning_rate", learning_rate, 0., float("inf"), False)
    momentum = _check_number(rule, "momentum", momentum, 0., 1., True)
    if not isinstance(nesterov, bool):
      raise TypeError(f"{rule}: `nesterov` must be a bool, got {nesterov!r}")
    self._remember_hyperparameters(learning_rate, momentum, nesterov, learnable)
    self.nesterov = nesterov
    self.learning_rate = self._hyperparameter("learning_rate", learning_rate)
    self.momentum = self._hyperparameter("momentum", momentum)

  def _remember_hyperparameters(self, learning_rate: float, momentum: float, nesterov: bool,
                                learnable: bool) -> None:
    self._remember_options(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                           learnable=learnable)

  def initial_state(self, params: Sequence[tf.Tensor]) -> MomentumState:
    params = base.as_list(params, "params")
    return MomentumState(tuple(tf.zeros_like(p) for p in params))

  def __call__(self, grads: Sequence[tf.Tensor],
               state: MomentumState) -> Tuple[List[tf.Tensor], MomentumState]:
    grads = base.as_list(grads)
    _check_length(type(self).__name__, grads, state.accumulators)
    updates, accumulators = [], []
    for g, a in zip(grads, state.accumulators):
      update, a = momentum_update(g, a, _cast(self.learning_rate, g), _cast(self.momentum, g),
                                  self.nesterov)
      updates.append(update)
      accumulators.append(a)
    return updates, MomentumState(tuple(accumulators))


class NAG(Momentum):
  """Nesterov's accelerated gradient: `Momentum(..., nesterov=True)`.

  Args:
    learning_rate: step size, > 0.
    momentum: decay of the accumulated gradient, in [0, 1).
    learnable: make `learning_rate` and `momentum` trainable variables.
  """

  def __init__(self, learning_rate: float = 0.01, momentum: float = 0.9,
               learnable: bool = False, name: str = "nag"):
    super().__init__(learning_rate, momentum, nesterov=True, learnable=learnable, name=name)

  def _remember_hyperparameters(self, learning_rate: float, momentum: float, nesterov: bool,
                                learnable: bool) -> None:
    del nesterov  # Always True; not a constructor option of NAG.
    self._remember_options(learning_rate=learning_rate, momentum=momentum, learnable=learnable)


class RMSPropState(NamedTuple):
  mom: Tensors  # Momentum accumulators, one per parameter.
  ms: Tensors   # Mean squared gradients.
  mg: Tensors   # Mean gradients if centered, else ().


class RMSProp(_HandDesigned):
  """RMSProp, as `snt.optimizers.RMSProp` (see `rmsprop_update`).

  Args:
    learning_rate: step size, > 0.
    decay: decay of the moving averages, in [0, 1).
    momentum: momentum of the updates, in [0, 1).
    epsilon: added to the mean square before the square root, > 0.
    centered: divide by an estimate of the gradient's standard deviation instead of its root
      mean square.
    learnable: make `learning_rate`, `decay` and `momentum` trainable variables.
  """

  def __init__(self, learning_rate: float = 0.01, decay: float = 0.9, momentum: float = 0.0,
               epsilon: float = 1e-10, centered: bool = False, learnable: bool = False,
               name: str = "rmsprop"):
    super().__init__(learnable, name)
    learning_rate = _check_number("RMSProp", "learning_rate", learning_rate, 0., float("inf"),
                                  False)
    decay = _check_number("RMSProp", "decay", decay, 0., 1., True)
    momentum = _check_number("RMSProp", "momentum", momentum, 0., 1., True)
    self.epsilon = _check_number("RMSProp", "epsilon", epsilon, 0., float("inf"), False)
    if not isinstance(centered, bool):
      raise TypeError(f"RMSProp: `centered` must be a bool, got {centered!r}")
    self._remember_options(learning_rate=learning_rate, decay=decay, momentum=momentum,
                           epsilon=self.epsilon, centered=centered, learnable=learnable)
    self.centered = centered
    self.learning_rate = self._hyperparameter("learning_rate", learning_rate)
    self.decay = self._hyperparameter("decay", decay)
    self.momentum = self._hyperparameter("momentum", momentum)

  def initial_state(self, params: Sequence[tf.Tensor]) -> RMSPropState:
    params = base.as_list(params, "params")
    zeros = lambda: tuple(tf.zeros_like(p) for p in params)
    return RMSPropState(zeros(), zeros(), zeros() if self.centered else ())

  def __call__(self, grads: Sequence[tf.Tensor],
               state: RMSPropState) -> Tuple[List[tf.Tensor], RMSPropState]:
    grads = base.as_list(grads)
    _check_length("RMSProp", grads, state.ms)
    mgs = state.mg if self.centered else (None,) * len(grads)
    updates, moms, mss, new_mgs = [], [], [], []
    for g, mom, ms, mg in zip(grads, state.mom, state.ms, mgs):
      update, mom, ms, mg = rmsprop_update(
          g, mom, ms, mg, learning_rate=_cast(self.learning_rate, g), decay=_cast(self.decay, g),
          momentum=_cast(self.momentum, g), epsilon=tf.constant(self.epsilon, g.dtype))
      updates.append(update)
      moms.append(mom)
      mss.append(ms)
      new_mgs.append(mg)
    return updates, RMSPropState(tuple(moms), tuple(mss),
                                 tuple(new_mgs) if self.centered else ())


class AdamState(NamedTuple):
  step: tf.Tensor  # Float32 scalar, the number of steps taken so far.
  m: Tensors       # First moments, one per parameter.
  v: Tensors       # Second raw moments.


class Adam(_HandDesigned):
  """Adam, as `snt.optimizers.Adam` (see `adam_update`).

  Args:
    learning_rate: step size, > 0.
    beta1: decay of the first moment, in [0, 1).
    beta2: decay of the second moment, in [0, 1).
    epsilon: added to the root of the second moment, > 0.
    learnable: make `learning_rate`, `beta1` and `beta2` trainable variables.
  """

  def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
               epsilon: float = 1e-8, learnable: bool = False, name: str = "adam"):
    super().__init__(learnable, name)
    learning_rate = _check_number("Adam", "learning_rate", learning_rate, 0., float("inf"), False)
    beta1 = _check_number("Adam", "beta1", beta1, 0., 1., True)
    beta2 = _check_number("Adam", "beta2", beta2, 0., 1., True)
    self.epsilon = _check_number("Adam", "epsilon", epsilon, 0., float("inf"), False)
    self._remember_options(learning_rate=learning_rate, beta1=beta1, beta2=beta2,
                           epsilon=self.epsilon, learnable=learnable)
    self.learning_rate = self._hyperparameter("learning_rate", learning_rate)
    self.beta1 = self._hyperparameter("beta1", beta1)
    self.beta2 = self._hyperparameter("beta2", beta2)

  def initial_state(self, params: Sequence[tf.Tensor]) -> AdamState:
    params = base.as_list(params, "params")
    zeros = lambda: tuple(tf.zeros_like(p) for p in params)
    return AdamState(tf.zeros([], tf.float32), zeros(), zeros())

  def __call__(self, grads: Sequence[tf.Tensor],
               state: AdamState) -> Tuple[List[tf.Tensor], AdamState]:
    grads = base.as_list(grads)
    _check_length("Adam", grads, state.m)
    step = state.step + 1.
    updates, ms, vs = [], [], []
    for g, m, v in zip(grads, state.m, state.v):
      update, m, v = adam_update(
          g, m, v, _cast(step, g), learning_rate=_cast(self.learning_rate, g),
          beta1=_cast(self.beta1, g), beta2=_cast(self.beta2, g),
          epsilon=tf.constant(self.epsilon, g.dtype))
      updates.append(update)
      ms.append(m)
      vs.append(v)
    return updates, AdamState(step, tuple(ms), tuple(vs))
