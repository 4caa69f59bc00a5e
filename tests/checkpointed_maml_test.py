"""`CheckpointedMAML` and `checkpointed_maml.adapt`: the same meta-gradient as plain MAML."""

from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
from l2l.meta_learning import checkpointed_maml
import nets

# The same float32 ops run twice (forward, then recomputed in the backward pass) and summed in
# another order: observed <= 5e-7 of the largest meta-gradient entry (eagerly and under
# tf.function). The Adam inner optimizer is compared eagerly only: under tf.function its
# m / sqrt(v) on near-zero gradients amplifies graph-vs-eager rounding to ~1e-5 even for two
# plain (not checkpointed) runs, which would say nothing about checkpointing.
TOL = 1e-5


def _task(seed):
  rng = np.random.RandomState(seed)
  x = rng.uniform(-3, 3, [10, 1]).astype(np.float32)
  xq = rng.uniform(-3, 3, [10, 1]).astype(np.float32)
  return x, np.sin(x), xq, np.sin(xq)


def mse(predictions, targets):
  return tf.reduce_mean(tf.square(predictions - targets))


def _model():
  model = snt.nets.MLP([16, 1], activation=tf.tanh, name="mlp",
                       w_init=snt.initializers.VarianceScaling(1., "fan_avg", "uniform", seed=0))
  model(tf.zeros([1, 1]))
  return model


class CheckpointedMAMLTest(tf.test.TestCase, parameterized.TestCase):

  def assert_same_gradients(self, actual, expected):
    scale = max(np.max(np.abs(g)) for g in expected)
    self.assertGreater(scale, 1e-3)
    for a, e in zip(actual, expected):
      self.assertAllClose(a, e, rtol=TOL, atol=TOL * scale)

  def _meta_gradient(self, algorithm, compiled):
    x, y, xq, yq = _task(0)

    def run():
      with tf.GradientTape() as tape:
        learner = algorithm.clone().adapt_on(mse, x, y)
        loss = mse(learner(xq), yq)
      return loss, tape.gradient(loss, algorithm.trainable_variables)

    return tf.function(run, autograph=False)() if compiled else run()

  @parameterized.parameters((7, 3, False, False), (7, 3, False, True), (6, 2, True, False),
                            (5, 5, False, False), (5, 1, False, False))
  def test_same_meta_gradient_as_maml(self, steps, segment_length, first_order, compiled):
    model = _model()
    plain = self._meta_gradient(l2l.MAML(model, 0.1, steps, first_order=first_order), compiled)
    checkpointed = self._meta_gradient(
        l2l.CheckpointedMAML(model, 0.1, steps, segment_length, first_order=first_order),
        compiled)
    self.assertAllClose(checkpointed[0], plain[0], rtol=TOL)
    self.assert_same_gradients(checkpointed[1], plain[1])

  def test_inner_optimizer_with_learnable_hyperparameters(self, compiled=False):
    """Adam's moments and step count cross segments; its learnable rates get gradients."""
    model = _model()
    rule = nets.Adam(0.01, learnable=True)
    plain = self._meta_gradient(l2l.MAML(model, 0.1, 7, inner_optimizer=rule), compiled)
    algorithm = l2l.CheckpointedMAML(model, 0.1, 7, 3, inner_optimizer=rule)
    checkpointed = self._meta_gradient(algorithm, compiled)
    self.assertLen(checkpointed[1], len(model.trainable_variables) + len(rule.trainable_variables))
    self.assert_same_gradients(checkpointed[1], plain[1])

  def test_functional_adapt(self):
    model = _model()
    x, y, xq, yq = _task(1)
    params = l2l.functional.named_parameters(model)
    lr = tf.Variable(0.05)
    build_loss = lambda f: mse(f(x), y)
    results = []
    for adapt in (lambda: l2l.adapt(model, params, build_loss, lr, 8),
                  lambda: checkpointed_maml.adapt(model, params, build_loss, lr, 8, 3)):
      with tf.GradientTape() as tape:
        adapted = adapt()
        loss = mse(l2l.functional.call(model, adapted, xq), yq)
      results.append((adapted, tape.gradient(loss, list(params.values()) + [lr])))
    for name in params:
      self.assertAllClose(results[1][0][name], results[0][0][name], rtol=TOL, atol=1e-7)
    self.assert_same_gradients(results[1][1], results[0][1])

  def test_zero_steps_return_the_parameters(self):
    model = _model()
    params = l2l.functional.values(l2l.functional.named_parameters(model))
    adapted = checkpointed_maml.adapt(model, params, lambda f: tf.reduce_sum(f(tf.ones([1, 1]))),
                                      0.1, 0, 4)
    for name in params:
      self.assertAllEqual(adapted[name], params[name])

  @parameterized.parameters(0, -1, 2.5)
  def test_bad_segment_length(self, segment_length):
    with self.assertRaisesRegex(ValueError, "segment_length must be a positive integer"):
      l2l.CheckpointedMAML(_model(), 0.1, 5, segment_length)


if __name__ == "__main__":
  tf.test.main()
