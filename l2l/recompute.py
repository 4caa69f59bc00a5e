"""Gradient checkpointing: run a segment of computation, recompute it in the backward pass.

    outputs = recompute.checkpointed(segment, inputs)

`segment(inputs) -> outputs` maps a list of tensors to a list of tensors. The forward keeps only
`inputs` and `outputs` for the backward pass; the backward pass runs `segment` again under a
fresh tape and backpropagates through that copy. A T-step unroll cut into segments of S steps
then holds T / S segment boundaries plus one segment's intermediates (Chen et al. 2016,
"Training deep nets with sublinear memory cost"), at the cost of one more forward pass.

Differences from `tf.recompute_grad`: integer inputs and outputs (step counters) pass through
without gradients; `segment` may compute gradients itself (an optimizee gradient inside an
unroll), which `tf.recompute_grad` forbids by stopping every tape while the segment runs.

Gradients flow to the float `inputs` and to the trainable variables `segment` reads, not to
other tensors it closes over (pass those as inputs). The memory saving is realised under
`tf.function`, where the forward's intermediates are freed once nothing downstream reads them;
eagerly, an enclosing `tf.GradientTape` also records the segment's own operations when they
depend on a watched variable, and keeps them.
"""

from typing import Callable, List, Optional, Sequence

import tensorflow as tf

Segment = Callable[[List[tf.Tensor]], Sequence[tf.Tensor]]


def _differentiable(tensor: tf.Tensor) -> bool:
  return tensor.dtype.is_floating or tensor.dtype.is_complex


def _after(tensor: tf.Tensor, upstream: Sequence[Optional[tf.Tensor]]) -> tf.Tensor:
  """`tensor` with a data dependency on the upstream gradient, so that the executor does not
  run the recomputation early (during the forward pass), which would keep every segment's
  intermediates alive at once. Adds 0 (NaN if an upstream gradient is NaN), as
  `tf.recompute_grad` does; `e == e` cannot be constant-folded away."""
  grads = [g for g in upstream if g is not None]
  if not grads or tf.executing_eagerly() or not _differentiable(tensor):
    return tensor
  # Every upstream gradient: the one of a segment's losses is ready at once, the ones of its
  # final state only after the next segment's backward pass.
  probe = tf.add_n([tf.cast(tf.reduce_max(tf.reshape(g, [-1])[:1]), tf.float32) for g in grads])
  zero = tf.where(tf.equal(probe, probe), 0., float("nan"))
  return tensor + tf.cast(zero, tensor.dtype)


def checkpointed(segment: Segment, inputs: Sequence[tf.Tensor]) -> List[tf.Tensor]:
  """`segment(inputs)`, differentiable by recomputation (see the module docstring).

  Args:
    segment: a function of a list of tensors returning a list (or tuple) of tensors; it must
      give the same outputs when run again on the same inputs (no fresh randomness).
    inputs: the tensors the segment's outputs depend on differentiably.

  Returns:
    The segment's outputs.
  """
  inputs = [tf.convert_to_tensor(x) for x in inputs]

  @tf.custom_gradient
  def run(*args):
    outputs = [tf.convert_to_tensor(y) for y in segment([tf.stop_gradient(a) for a in args])]

    def grad(*upstream, variables=None):
      variables = list(variables or [])
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        again = [_after(tf.identity(a), upstream) for a in args]
        sources = [a for a in again if _differentiable(a)]
        tape.watch(sources)
        tape.watch(variables)
        recomputed = list(segment(again))
      targets, output_grads = [], []
      for y, dy in zip(recomputed, upstream):
        if _differentiable(y):
          targets.append(y)
          output_grads.append(tf.zeros_like(y) if dy is None else dy)
      grads = tape.gradient(targets, sources + variables, output_gradients=output_grads,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
      grads_iter = iter(grads[:len(sources)])
      input_grads = [next(grads_iter) if _differentiable(a) else None for a in args]
      if variables:
        return input_grads, grads[len(sources):]
      return input_grads

    return outputs, grad

  return list(run(*inputs))
