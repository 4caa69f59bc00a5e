"""Repeated meta-steps, resets and optimizer applications do not retrace, nor grow memory.

The bench's `leak` case (`python -m bench --cases leak`) runs the same check for 1,000 meta-steps
of the speed comparison's problem; this is the fast version on a tiny problem.
"""

from absl.testing import absltest
import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from bench import rss
import l2l
from l2l.meta_learning import meta_trainer
import problems
from problems import tasks

LSTM = {"net": "CoordinateWiseDeepLSTM",
        "net_options": {"layers": [4, 4], "preprocess_name": "LogAndSign",
                        "preprocess_options": {"k": 5}, "scale": 0.1, "seed": 0}}
# Resident memory may move by allocator pools and caches; a leak of every step's unroll (the
# tensors, or a retraced graph per step) over 150 steps would exceed this. Generous, since other
# processes share the machine (they do not change this process's memory, only its timing).
RSS_GROWTH_BOUND_MIB = 40.


def tracing_count(function) -> int:
  return function.experimental_get_tracing_count()


class NoRetraceTest(absltest.TestCase):

  def test_meta_steps_and_resets_trace_once(self):
    trainer = l2l.MetaOptimizer(cw=LSTM).meta_minimize(
        problems.quadratic(batch_size=4, num_dims=3, seed=0), len_unroll=5)
    # pylint: disable=protected-access
    functions = {"step": trainer._step, "reset": trainer.meta_loss._reset,
                 "run": trainer.meta_loss._run}
    # pylint: enable=protected-access
    for epoch in range(4):
      trainer.reset()
      for _ in range(3):
        trainer.step()
      trainer.run()
      trainer.learning_rate.assign(1e-3 / (epoch + 1))  # A schedule does not retrace either.
    self.assertEqual({name: tracing_count(f) for name, f in functions.items()},
                     {"step": 1, "reset": 1, "run": 1})
    self.assertEqual(int(trainer.skipped_steps.numpy()), 0)

  @pytest.mark.slow
  def test_meta_steps_do_not_grow_memory(self):
    """Allocator-dependent (resident memory), so not in CI: `-m slow`, or the bench's `leak`
    case for the real check. The tracing count below is the deterministic part."""
    trainer = l2l.MetaOptimizer(cw=LSTM).meta_minimize(
        problems.quadratic(batch_size=4, num_dims=3, seed=0), len_unroll=5)
    marks = {}
    for step in range(1, 201):
      trainer.reset()
      trainer.step()
      if step in (50, 200):
        marks[step] = rss.current_mib()
    self.assertLess(marks[200] - marks[50], RSS_GROWTH_BOUND_MIB)
    self.assertEqual(tracing_count(trainer._step), 1)  # pylint: disable=protected-access

  def test_learned_optimizer_apply_traces_once(self):
    model = snt.nets.MLP([8, 2], w_init=snt.initializers.VarianceScaling(1.0, seed=0))
    x = tf.constant(np.random.RandomState(0).normal(size=(16, 3)).astype(np.float32))
    model(x)
    optimizer = l2l.LearnedOptimizer(l2l.MetaOptimizer(cw=LSTM))

    @tf.function
    def train_step():
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x)))
      optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
      return loss

    losses = [float(train_step())]
    first = tracing_count(train_step)
    losses += [float(train_step()) for _ in range(4)]
    self.assertTrue(np.all(np.isfinite(losses)))
    # The first call traces twice: the optimizer creates its state variables in it (in
    # `init_scope`), and `tf.function` traces again without variable creation. Later calls
    # never trace.
    self.assertLessEqual(first, 2)
    self.assertEqual(tracing_count(train_step), first)

  def test_maml_meta_steps_do_not_retrace(self):
    model = snt.nets.MLP([8, 1], w_init=snt.initializers.VarianceScaling(1.0, seed=0))
    model(tf.zeros([1, 1]))
    sampler = tasks.SinusoidTaskSampler(k_support=5, k_query=5, seed=0)
    trainer = meta_trainer.MetaTrainer(l2l.MAML(model, 0.01, 2), snt.optimizers.Adam(1e-3),
                                       meta_trainer.mse, sampler)
    trainer.meta_step(sampler.sample(4))
    first = tracing_count(trainer._step)  # pylint: disable=protected-access
    for _ in range(4):
      trainer.meta_step(sampler.sample(4))
    # MetaTrainer creates Adam's moments up front, so the first call traces once; later never.
    self.assertEqual(first, 1)
    self.assertEqual(tracing_count(trainer._step), 1)  # pylint: disable=protected-access


if __name__ == "__main__":
  absltest.main()
