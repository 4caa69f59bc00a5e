"""l2l.meta_learning.functional: a built Sonnet module run at given parameter and buffer values."""

from absl.testing import absltest
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
from l2l.meta_learning import functional


def built_mlp(dtype=tf.float64):
  model = snt.nets.MLP([3, 2], activation=tf.tanh, name="mlp")
  model(tf.zeros([1, 4], dtype))
  return model


def numpy_mlp(params, x):
  h = np.tanh(x @ params["mlp/linear_0/w"] + params["mlp/linear_0/b"])
  return h @ params["mlp/linear_1/w"] + params["mlp/linear_1/b"]


class FunctionalCallTest(tf.test.TestCase):

  def test_named_parameters(self):
    model = built_mlp()
    named = functional.named_parameters(model)
    self.assertEqual(list(named), ["mlp/linear_0/b", "mlp/linear_0/w", "mlp/linear_1/b",
                                   "mlp/linear_1/w"])
    self.assertIs(named["mlp/linear_1/w"], model.submodules[1].w)
    self.assertEqual(functional.named_buffers(model), {})

  def test_matches_numpy_at_given_values_and_restores_variables(self):
    model = built_mlp()
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=v.shape) for k, v in functional.named_parameters(model).items()}
    x = rng.normal(size=(5, 4))
    before = [v.numpy().copy() for v in model.variables]
    out = functional.call(model, {k: tf.constant(v) for k, v in params.items()}, tf.constant(x))
    self.assertAllClose(out, numpy_mlp(params, x), rtol=1e-12)
    for v, b in zip(model.variables, before):
      self.assertAllEqual(v, b)
    self.assertIsInstance(model.submodules[0].w, tf.Variable)  # The attribute is back.

  def test_partial_mapping_keeps_other_variables(self):
    model = built_mlp()
    x = tf.ones([2, 4], tf.float64)
    zero_w = {"mlp/linear_1/w": tf.zeros([3, 2], tf.float64)}
    out = functional.call(model, zero_w, x)
    self.assertAllClose(out, tf.broadcast_to(model.submodules[1].b, [2, 2]))

  def test_differentiable_in_given_values(self):
    model = built_mlp()
    x = tf.constant(np.random.default_rng(1).normal(size=(3, 4)))
    w = tf.constant(np.random.default_rng(2).normal(size=(3, 2)))
    with tf.GradientTape() as tape:
      tape.watch(w)
      total = tf.reduce_sum(functional.call(model, {"mlp/linear_1/w": w}, x))
    grad = tape.gradient(total, w)
    # d sum(h @ w + b) / d w = sum_rows(h) broadcast over outputs.
    h = np.tanh(x.numpy() @ model.submodules[0].w.numpy() + model.submodules[0].b.numpy())
    self.assertAllClose(grad, np.repeat(h.sum(0)[:, None], 2, axis=1), rtol=1e-12)

  def test_works_in_tf_function_without_retracing(self):
    model = built_mlp(tf.float32)
    traces = []

    @tf.function
    def f(params, x):
      traces.append(1)
      return functional.call(model, params, x)

    params = functional.values(functional.named_parameters(model))
    x = tf.ones([2, 4])
    self.assertAllClose(f(params, x), model(x))
    f({k: v * 2. for k, v in params.items()}, x)
    self.assertLen(traces, 1)

  def test_batch_norm_buffers_explicit(self):
    bn = snt.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.5)
    x = tf.constant(np.random.default_rng(3).normal(size=(8, 2)), tf.float32)
    bn(x, is_training=True)  # Builds; moving averages now hold one update.
    stored = {k: v.numpy().copy() for k, v in functional.named_buffers(bn).items()}
    buffers = functional.values(functional.named_buffers(bn))
    x2 = x * 3. + 1.
    out, new = functional.call(bn, {}, x2, buffers=buffers, is_training=True)
    # The module's variables are untouched; the returned buffers hold the update.
    for k, v in functional.named_buffers(bn).items():
      self.assertAllEqual(v, stored[k])
    self.assertEqual(int(new["batch_norm/moving_mean/counter"]), 2)
    # Debiased EMA with decay 0.5 after two updates: (0.25 m1 + 0.5 m2) / 0.75.
    m1, m2 = x.numpy().mean(0), x2.numpy().mean(0)
    self.assertAllClose(new["batch_norm/moving_mean/average"][0], (.25 * m1 + .5 * m2) / .75,
                        rtol=1e-5)
    # And the stateful module does the same when run normally.
    reference = bn(x2, is_training=True)
    self.assertAllClose(out, reference, rtol=1e-5)
    self.assertAllClose(new["batch_norm/moving_mean/average"], bn.moving_mean.value, rtol=1e-6)

  def test_batch_norm_test_mode_reads_given_buffers(self):
    bn = snt.BatchNorm(create_scale=False, create_offset=False)
    bn(tf.ones([4, 2]), is_training=True)
    buffers = functional.values(functional.named_buffers(bn))
    buffers["batch_norm/moving_mean/average"] = tf.constant([[1., 2.]])
    buffers["batch_norm/moving_variance/average"] = tf.constant([[4., 1.]])
    out, _ = functional.call(bn, {}, tf.constant([[3., 3.]]), buffers=buffers,
                             is_training=False)
    self.assertAllClose(out, [[(3. - 1.) / np.sqrt(4. + 1e-5), (3. - 2.) / np.sqrt(1. + 1e-5)]],
                        rtol=1e-5)

  def test_iteryne_names(self):
    # functional_forward / named_params: the same results as call / named_parameters, also at
    # the top level of l2l, with buffers passed by keyword and forward keywords passed through.
    model = built_mlp()
    self.assertEqual(l2l.named_params(model), functional.named_parameters(model))
    rng = np.random.default_rng(4)
    params = {k: tf.constant(rng.normal(size=v.shape)) for k, v in l2l.named_params(model).items()}
    x = rng.normal(size=(3, 4))
    out = l2l.functional_forward(model, params, tf.constant(x))
    self.assertAllClose(out, numpy_mlp({k: v.numpy() for k, v in params.items()}, x),
                        rtol=1e-12)
    bn = snt.BatchNorm(create_scale=False, create_offset=False)
    bn(tf.ones([4, 2]), is_training=True)
    buffers = functional.values(functional.named_buffers(bn))
    buffers["batch_norm/moving_mean/average"] = tf.constant([[1., 2.]])
    buffers["batch_norm/moving_variance/average"] = tf.constant([[4., 1.]])
    out, new = functional.functional_forward(bn, {}, tf.constant([[3., 3.]]), buffers=buffers,
                                             is_training=False)
    self.assertAllClose(out, [[2. / np.sqrt(4. + 1e-5), 1. / np.sqrt(1. + 1e-5)]], rtol=1e-5)
    self.assertEqual(sorted(new), sorted(buffers))
    with self.assertRaisesRegex(ValueError, r"`params` names \['nope'\], which are not params"):
      functional.functional_forward(model, {"nope": tf.zeros([1])}, tf.constant(x))
    with self.assertRaisesRegex(TypeError, "expected a built Sonnet module"):
      l2l.named_params(lambda x: x)

  def test_errors(self):
    model = built_mlp()
    with self.assertRaisesRegex(ValueError, r"names \['mlp/nope'\], which are not params"):
      functional.call(model, {"mlp/nope": tf.zeros([1])}, tf.ones([1, 4], tf.float64))
    with self.assertRaisesRegex(ValueError, r"params\['mlp/linear_1/w'\]` has shape \(2, 2\)"):
      functional.call(model, {"mlp/linear_1/w": tf.zeros([2, 2], tf.float64)},
                      tf.ones([1, 4], tf.float64))
    with self.assertRaisesRegex(ValueError, "has no variables; call it once"):
      functional.named_parameters(snt.Linear(2))
    with self.assertRaisesRegex(TypeError, "must be a mapping"):
      functional.call(model, [tf.zeros([3, 2])], tf.ones([1, 4], tf.float64))
    bn = snt.BatchNorm(True, True)
    bn(tf.ones([4, 2]), is_training=True)
    with self.assertRaisesRegex(ValueError, "`buffers` lacks"):
      functional.call(bn, {}, tf.ones([4, 2]), buffers={}, is_training=True)


if __name__ == "__main__":
  absltest.main()
