"""`MetaBatchMinimize`: learned-optimizer meta-steps on a meta-batch of problem instances,
split across the replicas of a `tf.distribute` strategy.

    trainer = MetaBatchMinimize(opt, [make_problem(seed) for seed in seeds], len_unroll=20,
                                strategy=l2l.distribute.create_strategy("mirrored", 2))
    trainer.reset()                 # a new instance for every meta-batch index
    trainer.step()                  # one unroll of each, one Adam step on the mean meta-gradient

Every process holds the truncated-unroll state of all `len(make_losses)` instances (so their
instance streams advance alike and a checkpoint of any worker is the whole state), but unrolls
only those of its replicas: replica r of R the indices [r B/R, (r+1) B/R). The meta-gradient is
the mean over the meta-batch (a mean over each replica's share, all-reduced), the same whichever
replica computes which index, so results do not depend on the number of replicas (up to the
order of the floating-point sums).
"""

from typing import Any, Optional, Sequence

import sonnet as snt
import tensorflow as tf

from l2l import capture
from l2l import meta_optimizer as meta_optimizer_lib
from l2l.distribute import strategies


class MetaBatchMinimize(tf.Module):
  """`step()`: one truncated unroll of every instance of the meta-batch and one Adam step on the
  nets' weights with the mean meta-gradient (a `tf.function`); `MetaMinimize` for a batch.

  A step whose mean meta-loss or meta-gradient is not finite is skipped on every replica (they
  all see the same all-reduced values), as in `MetaMinimize`.

  Args:
    meta_optimizer: the nets (created outside `strategy.scope()`, from the same seeds on every
      worker).
    make_losses: one problem per meta-batch index (`make_loss` callables or captured
      problems); the global meta-batch size is their number.
    len_unroll, net_assignments, second_derivatives, **meta_loss_kwargs: as `MetaLoss`.
    learning_rate, max_grad_norm: as `MetaMinimize`.
    strategy: a `MirroredStrategy` / `MultiWorkerMirroredStrategy`, or None (one replica).

  Attributes:
    meta_losses: the `MetaLoss` of every meta-batch index.
    learning_rate, skipped_steps: as `MetaMinimize`.
  """

  def __init__(self, meta_optimizer: meta_optimizer_lib.MetaOptimizer,
               make_losses: Sequence[capture.MakeLoss], len_unroll: int,
               learning_rate: float = 1e-3,
               net_assignments: Optional[meta_optimizer_lib.NetAssignments] = None,
               second_derivatives: bool = False, max_grad_norm: Optional[float] = None,
               strategy: Optional[tf.distribute.Strategy] = None, **meta_loss_kwargs: Any):
    super().__init__(name="meta_batch_minimize")
    if isinstance(make_losses, (str, bytes)) or not isinstance(make_losses, Sequence):
      raise TypeError(f"make_losses must be a list of problems (one per meta-batch index), got "
                      f"{type(make_losses).__name__}")
    self._per_replica = strategies.shard(len(make_losses), strategy, "meta-batch size")
    check_positive = meta_optimizer_lib._check_positive  # pylint: disable=protected-access
    check_positive("learning_rate", learning_rate)
    self.max_grad_norm = (None if max_grad_norm is None
                          else check_positive("max_grad_norm", max_grad_norm))
    self.strategy = strategy
    self.meta_optimizer = meta_optimizer
    # Each instance's state lives on the device of the local replica that unrolls it.
    devices = {}
    if strategy is not None:
      devices = dict(zip(strategies.replica_ids(strategy), strategy.extended.worker_devices))
    self.meta_losses = []
    for index, make_loss in enumerate(make_losses):
      with tf.device(devices.get(index // self._per_replica)):
        self.meta_losses.append(meta_optimizer.meta_loss(
            make_loss, len_unroll, net_assignments, second_derivatives, **meta_loss_kwargs))
    self.learning_rate = tf.Variable(float(learning_rate), trainable=False, name="learning_rate")
    self.optimizer = snt.optimizers.Adam(self.learning_rate)
    self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
    self._losses = tf.Variable(tf.zeros([len_unroll + 1]), trainable=False)
    self._meta_loss = tf.Variable(0.0, trainable=False)
    variables = meta_optimizer.trainable_variables
    if variables:
      with tf.init_scope():
        self.optimizer._initialize(variables)  # pylint: disable=protected-access
    self._step = tf.function(self._step_impl, autograph=False)
    self._reset = tf.function(self._reset_impl, autograph=False)

  @property
  def meta_batch_size(self) -> int:
    return len(self.meta_losses)

  def _replica_step(self, replica_id: int):
    """The mean meta-loss, meta-gradient and loss curve of one replica's share."""
    variables = self.meta_optimizer.trainable_variables
    share = self.meta_losses[replica_id * self._per_replica:
                             (replica_id + 1) * self._per_replica]
    with tf.GradientTape() as tape:
      loss = tf.add_n([meta_loss() for meta_loss in share]) / len(share)
    grads = (tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
             if variables else [])
    curve = tf.add_n([meta_loss.losses for meta_loss in share]) / len(share)
    return loss, [tf.convert_to_tensor(g) for g in grads], curve

  def _step_impl(self) -> tf.Tensor:
    variables = self.meta_optimizer.trainable_variables
    loss, grads, curve = strategies.all_reduce_mean(self.strategy, self._replica_step)
    self._losses.assign(curve)
    self._meta_loss.assign(loss)
    if variables:
      checked = [loss, *grads]
      if self.max_grad_norm is not None:
        grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm)
      meta_optimizer_lib.apply_if_finite(
          checked, lambda: self.optimizer.apply(grads, variables), self.skipped_steps)
    return loss

  def step(self) -> tf.Tensor:
    """One unroll of every instance from its stored state, one update of the nets; returns the
    mean meta-loss."""
    return self._step()

  def _reset_impl(self) -> None:
    for meta_loss in self.meta_losses:
      meta_loss._reset_impl()  # pylint: disable=protected-access

  def reset(self) -> None:
    """Draws a new problem instance for every meta-batch index and resets the rules' states."""
    self._reset()

  @property
  def last_meta_loss(self) -> tf.Tensor:
    """The mean meta-loss of the last step."""
    return tf.convert_to_tensor(self._meta_loss)

  @property
  def losses(self) -> tf.Tensor:
    """f(x_0), ..., f(x_T) of the last unroll, averaged over the meta-batch."""
    return tf.convert_to_tensor(self._losses)

  @property
  def final_loss(self) -> tf.Tensor:
    """The optimizee loss at the end of the last unroll, averaged over the meta-batch."""
    return self._losses[-1]
