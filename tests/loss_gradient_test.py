"""The XLA-compiled loss and gradient (l2l.loss_gradient) against the TensorFlow-ops path.

The two paths compute the same function with different kernels and fusion, so they agree to
float32 rounding, not bit for bit: trajectories and meta-gradients of a first-order unroll of
the 2016 LSTM are compared at TOL, elementwise, with the absolute part scaled by each array's
largest entry (observed <= 1.1e-6 of the largest entry on these problems).
"""

import json
import os
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
from l2l import loss_gradient

TOL = dict(rtol=2e-5, atol=1e-6)
LSTM = {"net": "CoordinateWiseDeepLSTM", "net_options": {"layers": (8, 8), "scale": 0.1}}


def quadratic_problem():
  rng = np.random.RandomState(1)
  w = rng.uniform(size=(16, 10, 10)).astype(np.float32)
  y = rng.uniform(size=(16, 10)).astype(np.float32)

  def make_loss():
    w_var = tf.Variable(w, trainable=False, name="w")
    y_var = tf.Variable(y, trainable=False, name="y")
    x = tf.Variable(tf.random.stateless_normal([16, 10], [2, 0]) * 0.01, name="x")
    return tf.reduce_mean(tf.reduce_sum((tf.linalg.matvec(w_var, x) - y_var) ** 2, 1))
  return make_loss


def mlp_problem():
  rng = np.random.RandomState(3)
  inputs = rng.uniform(size=(32, 20)).astype(np.float32)
  labels = rng.randint(0, 5, size=32).astype(np.int32)

  def make_loss():
    w1 = tf.Variable(tf.random.stateless_normal([20, 12], [5, 0]) * 0.1, name="w1")
    b1 = tf.Variable(tf.zeros([12]), name="b1")
    w2 = tf.Variable(tf.random.stateless_normal([12, 5], [6, 0]) * 0.1, name="w2")
    logits = tf.sigmoid(tf.constant(inputs) @ w1 + b1) @ w2
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.constant(labels), logits=logits))
  return make_loss


def random_batch_problem():
  """A loss that draws a random minibatch each call: a stateful op."""
  data = tf.constant(np.random.RandomState(0).normal(size=(64, 3)).astype(np.float32))

  def make_loss():
    x = tf.Variable(tf.ones([3]), name="x")
    batch = tf.gather(data, tf.random.uniform([8], 0, 64, tf.int32, seed=1))
    return tf.reduce_mean(tf.square(batch - x))
  return make_loss


def meta_run(make_loss, mode, steps=6, unrolls=2, **kwargs):
  """Losses, final params, meta-losses and meta-gradients of `unrolls` truncated unrolls."""
  tf.random.set_seed(0)
  optimizer = l2l.MetaOptimizer(cw=LSTM)
  meta_loss = optimizer.meta_loss(make_loss, steps, compile_loss=mode, **kwargs)
  variables = optimizer.trainable_variables
  out = []
  for _ in range(unrolls):
    with tf.GradientTape() as tape:
      value = meta_loss()
    grads = tape.gradient(value, variables)
    out.append((value.numpy(), meta_loss.losses.numpy(),
                [v.numpy() for v in meta_loss.params.values()], [g.numpy() for g in grads]))
  return meta_loss, out


class LossGradientTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # "auto"'s decisions go to a file of this test, from an empty memory.
    self.decisions = os.path.join(tempfile.mkdtemp(), "loss_gradient.json")
    for patch in (mock.patch.object(loss_gradient, "_path", lambda: self.decisions),
                  mock.patch.object(loss_gradient, "_DECISIONS", {}),
                  mock.patch.object(loss_gradient, "_loaded", [False]),
                  mock.patch.object(loss_gradient, "_COMPILED", {})):
      patch.start()
      self.addCleanup(patch.stop)

  @parameterized.named_parameters(
      ("quadratic", quadratic_problem, {}),
      ("mlp", mlp_problem, {}),
      ("while_loop", quadratic_problem, {"use_while_loop": True}),
      ("checkpointed", mlp_problem, {"segment_length": 2}))
  def test_xla_matches_graph(self, problem, kwargs):
    graph, reference = meta_run(problem(), "graph", **kwargs)
    xla, compiled = meta_run(problem(), "xla", **kwargs)
    self.assertFalse(graph.loss_gradient.use_xla)
    self.assertTrue(xla.loss_gradient.use_xla)
    for (m0, l0, p0, g0), (m1, l1, p1, g1) in zip(reference, compiled):
      np.testing.assert_allclose(m1, m0, **TOL)
      np.testing.assert_allclose(l1, l0, **TOL)
      for a, b in zip(p1 + g1, p0 + g0):
        np.testing.assert_allclose(a, b, rtol=TOL["rtol"], atol=TOL["atol"] * np.abs(b).max())

  def test_auto_keeps_stateful_losses_as_ops(self):
    meta_loss, _ = meta_run(random_batch_problem(), "auto", unrolls=1)
    self.assertFalse(meta_loss.loss_gradient.use_xla)
    self.assertIsNone(meta_loss.loss_gradient.value_and_grads_fn([]))

  def test_auto_decides_and_matches(self):
    auto, results = meta_run(quadratic_problem(), "auto")
    self.assertIsInstance(auto.loss_gradient.use_xla, bool)
    graph_us, xla_us = auto.loss_gradient.timings_us
    self.assertGreater(graph_us, 0)
    self.assertGreater(xla_us, 0)
    self.assertEqual(auto.loss_gradient.use_xla, graph_us >= loss_gradient.MIN_SPEEDUP * xla_us)
    _, reference = meta_run(quadratic_problem(), "graph")
    np.testing.assert_allclose(results[-1][0], reference[-1][0], **TOL)
    # A second problem built alike reuses the decision without measuring again.
    again, _ = meta_run(quadratic_problem(), "auto", unrolls=1)
    self.assertEqual(again.loss_gradient.timings_us, auto.loss_gradient.timings_us)

  def test_auto_decision_is_kept_for_later_processes(self):
    first, _ = meta_run(quadratic_problem(), "auto", unrolls=1)
    with open(self.decisions) as f:
      saved = json.load(f)
    self.assertLen(saved, 1)
    (key, entry), = saved.items()
    self.assertEqual(entry["xla"], first.loss_gradient.use_xla)
    # A later process (empty memory) reads the file and does not measure: flip the decision
    # there and it is obeyed.
    saved[key] = {"xla": not entry["xla"], "timings_us": [1.0, 2.0], "problem": "edited"}
    with open(self.decisions, "w") as f:
      json.dump(saved, f)
    loss_gradient._DECISIONS.clear()  # pylint: disable=protected-access
    loss_gradient._loaded[0] = False  # pylint: disable=protected-access
    later, results = meta_run(quadratic_problem(), "auto")
    self.assertEqual(later.loss_gradient.use_xla, not entry["xla"])
    self.assertEqual(later.loss_gradient.timings_us, (1.0, 2.0))
    _, reference = meta_run(quadratic_problem(), "graph")
    np.testing.assert_allclose(results[-1][0], reference[-1][0], **TOL)

  def test_unwritable_cache_keeps_the_decision_in_memory(self):
    with mock.patch.object(loss_gradient, "_path", lambda: "/proc/l2l/loss_gradient.json"):
      first, _ = meta_run(quadratic_problem(), "auto", unrolls=1)
      again, _ = meta_run(quadratic_problem(), "auto", unrolls=1)
    self.assertEqual(again.loss_gradient.timings_us, first.loss_gradient.timings_us)

  def test_identical_problems_share_the_compiled_function(self):
    def scaled(scale, captured=None):
      def make_loss():
        x = tf.Variable(tf.ones([4]), name="x")
        loss = scale * tf.reduce_sum(tf.square(x))
        return loss if captured is None else loss + tf.reduce_sum(captured * x)
      return make_loss

    optimizer = l2l.MetaOptimizer(cw=LSTM)
    build = lambda make_loss: optimizer.meta_loss(make_loss, 2, compile_loss="xla").loss_gradient
    first, same, other = build(scaled(2.0)), build(scaled(2.0)), build(scaled(3.0))
    self.assertIs(same._xla, first._xla)  # pylint: disable=protected-access
    self.assertIsNot(other._xla, first._xla)  # A different constant in the graph.
    data = tf.ones([4])  # Captured from outside: its value is not in the graph.
    self.assertIsNot(build(scaled(2.0, data))._xla,  # pylint: disable=protected-access
                     build(scaled(2.0, data))._xla)  # pylint: disable=protected-access
    params = [tf.fill([4], 0.5)]
    loss, _ = other.value_and_grads_fn([])(params)
    self.assertAllClose(loss, 3.0)

  def test_second_derivatives_use_the_tape(self):
    optimizer = l2l.MetaOptimizer(cw=LSTM)
    meta_loss = optimizer.meta_loss(quadratic_problem(), 3, second_derivatives=True,
                                    compile_loss="xla")
    self.assertFalse(meta_loss.loss_gradient.use_xla)
    self.assertIsNone(meta_loss.loss_gradient.value_and_grads_fn([]))

  def test_pes_matches(self):
    estimates = []
    for mode in ("graph", "xla"):
      tf.random.set_seed(0)
      optimizer = l2l.MetaOptimizer(cw=LSTM)
      trainer = l2l.PESMinimize(optimizer, mlp_problem(), 4, num_particles=2, seed=3,
                                compile_loss=mode)
      estimates.append([e.numpy() for e in tf.nest.flatten(trainer.estimate())])
    for a, b in zip(*estimates):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * max(np.abs(b).max(), 1e-30))

  def test_process_default(self):
    optimizer = l2l.MetaOptimizer(cw=LSTM)
    loss_gradient.set_default_mode("graph")
    try:
      meta_loss = optimizer.meta_loss(quadratic_problem(), 3)
    finally:
      loss_gradient.set_default_mode("auto")
    self.assertEqual(meta_loss.loss_gradient.mode, "graph")
    self.assertFalse(meta_loss.loss_gradient.use_xla)
    self.assertEqual(optimizer.meta_loss(quadratic_problem(), 3).loss_gradient.mode, "auto")
    with self.assertRaisesRegex(ValueError, "compile_loss must be one of"):
      loss_gradient.set_default_mode("fast")

  def test_bad_mode(self):
    optimizer = l2l.MetaOptimizer(cw=LSTM)
    with self.assertRaisesRegex(ValueError, "compile_loss must be one of"):
      optimizer.meta_loss(quadratic_problem(), 3, compile_loss="jit")

  def test_xla_that_does_not_compile(self):
    def make_loss():
      x = tf.Variable(tf.ones([3]), name="x")
      scale = tf.numpy_function(lambda: np.float32(2.0), [], tf.float32)
      return tf.reduce_sum(tf.square(x)) * tf.reshape(scale, [])
    optimizer = l2l.MetaOptimizer(cw=LSTM)
    with self.assertRaisesRegex(ValueError, "compile_loss='xla'.*do not compile with XLA"):
      optimizer.meta_loss(make_loss, 3, compile_loss="xla")
    auto = optimizer.meta_loss(make_loss, 3)
    self.assertFalse(auto.loss_gradient.use_xla)
    self.assertTrue(np.isfinite(auto.run().numpy()))


if __name__ == "__main__":
  tf.test.main()
