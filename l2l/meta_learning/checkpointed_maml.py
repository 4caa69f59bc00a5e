"""MAML with a checkpointed inner loop: many inner steps at the memory of a few.

Backpropagating through K inner steps keeps every step's activations: memory grows with K.
Here the inner loop runs in segments of `segment_length` steps, each recomputed in the backward
pass (`recompute.checkpointed`), so memory grows with the segment length (plus one copy of the
adapted parameters per segment) for the same meta-gradient, at the cost of a second forward.

    maml = l2l.CheckpointedMAML(model, inner_lr=0.01, inner_steps=100, segment_length=10)
    with tf.GradientTape() as tape:
      learner = maml.clone().adapt_on(mse, x_support, y_support)
      meta_loss = mse(learner(x_query), y_query)
    grads = tape.gradient(meta_loss, maml.trainable_variables)   # as l2l.MAML's

`adapt` is the same for explicit parameter mappings (`l2l.adapt` with `segment_length`).
The saving is realised under `tf.function` (see `recompute`).
"""

import copy
from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf

from l2l import checks
from l2l.meta_learning import functional
from l2l.meta_learning import maml as maml_lib
from l2l import recompute
from l2l import unroll as unroll_lib
from nets import base as nets_base


def adapt(model: tf.Module, params: functional.Params,
          build_loss: Callable[[maml_lib.Forward], tf.Tensor], lr: maml_lib.LearningRate,
          inner_steps: int, segment_length: int, first_order: bool = False,
          adapt_names: Optional[Sequence[str]] = None,
          allow_unused: bool = False) -> Dict[str, tf.Tensor]:
  """`l2l.adapt` (K steps of theta - lr * grad) with the inner loop checkpointed.

  Args:
    segment_length: inner steps per recomputed segment (>= 1).
    (the rest as `l2l.adapt`.)

  Returns:
    The adapted parameters, equal to `l2l.adapt`'s; gradients reach `params`, tensor learning
    rates passed as variables, and the module's variables, as they do there.
  """
  maml_lib.check_steps(inner_steps)
  checks.positive_int("segment_length", segment_length)
  params = dict(params)
  names = maml_lib.check_names(adapt_names, params)
  for length in unroll_lib.segment_lengths(inner_steps, segment_length) if inner_steps else []:

    def segment(flat, length=length, start=params):
      current = dict(start)
      current.update(zip(names, flat))
      current = maml_lib.adapt(model, current, build_loss, lr, length, first_order, names,
                               allow_unused)
      return [current[n] for n in names]

    adapted = recompute.checkpointed(segment, [params[n] for n in names])
    params = dict(params)
    params.update(zip(names, adapted))
  return params


class CheckpointedLearner(maml_lib.Learner):
  """A `Learner` whose `adapt` runs its inner steps in recomputed segments."""

  def adapt(self, support_loss: Callable[[maml_lib.Forward], tf.Tensor],
            steps: Optional[int] = None) -> "CheckpointedLearner":
    maml = self.maml
    steps = maml.inner_steps if steps is None else maml_lib.check_steps(steps, "steps")
    names = maml.adapt_names
    for length in unroll_lib.segment_lengths(steps, maml.segment_length) if steps else []:
      # No inner optimizer: no rule state (None, which tf.nest would treat as a leaf).
      start_params, start_state = dict(self.params), (
          () if self._rule_state is None else self._rule_state)

      def segment(flat, length=length, start_params=start_params, start_state=start_state):
        inner = copy.copy(self)
        inner.params = dict(start_params)
        inner.params.update(zip(names, flat[:len(names)]))
        if self._rule_state is not None:
          inner._rule_state = tf.nest.pack_sequence_as(start_state, flat[len(names):])
        maml_lib.Learner.adapt(inner, support_loss, length)
        return [inner.params[n] for n in names] + tf.nest.flatten(
            () if inner._rule_state is None else inner._rule_state)

      outputs = recompute.checkpointed(
          segment, [self.params[n] for n in names] + tf.nest.flatten(start_state))
      self.params = dict(self.params)
      self.params.update(zip(names, outputs[:len(names)]))
      if self._rule_state is not None:
        self._rule_state = tf.nest.pack_sequence_as(start_state, outputs[len(names):])
    return self


class CheckpointedMAML(maml_lib.MAML):
  """`l2l.MAML` whose inner loop is checkpointed every `segment_length` steps.

  Args:
    module: a built Sonnet module; its variables are the meta-parameters.
    segment_length: inner steps per recomputed segment.
    (the rest as `l2l.MAML`.)
  """

  def __init__(self, module: tf.Module, inner_lr: float = 0.01, inner_steps: int = 1,
               segment_length: int = 10, first_order: bool = False,
               adapt_names: Optional[Sequence[str]] = None, allow_unused: bool = False,
               inner_optimizer: Optional[nets_base.UpdateRule] = None,
               name: Optional[str] = None):
    super().__init__(module, inner_lr, inner_steps, first_order, adapt_names, allow_unused,
                     inner_optimizer, name=name)
    self.segment_length = checks.positive_int("segment_length", segment_length)

  def clone(self) -> CheckpointedLearner:
    return CheckpointedLearner(self)


__all__ = ["adapt", "CheckpointedLearner", "CheckpointedMAML"]
