"""`MetaLoss`, `MetaMinimize` and `LearnedOptimizer` against independent references.

The unroll engine is checked against NumPy in `unroll_test`; these tests check the classes that
wire it up: that `MetaLoss` passes `second_derivatives` and `segment_length` through (its
meta-gradient against float64 finite differences of a NumPy re-implementation; the recomputed
segments counted), that `MetaMinimize` hands Adam the meta-gradient itself (Adam's first moments
against an independently computed meta-gradient), and that `LearnedOptimizer.apply` carries a
learned rule's state between calls (its trajectory against `MetaLoss.run()`'s).
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
import problems
import unroll_test as reference  # The NumPy LSTM, quadratic and finite differences.

# float32 TF against float64 NumPy finite differences (eps 1e-5) through T LSTM steps (see
# unroll_test.META_GRAD_RTOL: observed <= 4e-7 of the largest entry).
META_GRAD_RTOL = 1e-4
# The same float32 ops in another order (a tf.function graph vs eager): a few ulps.
SAME_OPS_TOL = dict(rtol=1e-5, atol=1e-6)
STEPS = reference.STEPS
# unroll_test's LSTM as a net config: one layer of 3 units, N(0, 1) weights, no preprocessing.
LSTM = {"net": "CoordinateWiseDeepLSTM",
        "net_options": {"layers": [reference.HIDDEN], "preprocess_name": None,
                        "scale": reference.SCALE, "initializer": 1.0, "seed": 3}}
# A learned rule with the usual preprocessing, for the trajectory tests.
LOG_AND_SIGN_LSTM = {"net": "CoordinateWiseDeepLSTM",
                     "net_options": {"layers": [6, 6], "preprocess_name": "LogAndSign",
                                     "preprocess_options": {"k": 5}, "scale": 0.1, "seed": 7}}


def make_loss():
  """unroll_test's 3-d quadratic f(x) = 0.5 ||W x - y||^2 from x_0, as a problem."""
  x = tf.Variable(tf.constant(reference.X0, tf.float32), name="x")
  return reference.loss_fn([x])


def lstm_optimizer():
  """A MetaOptimizer holding unroll_test's LSTM (non-zero biases, as there)."""
  opt = l2l.MetaOptimizer(cw=LSTM)
  core = opt.nets["cw"].core
  core.biases[0].assign(
      0.3 * np.random.RandomState(0).randn(4 * reference.HIDDEN).astype(np.float32))
  core.out_b.assign([0.2])
  return opt, [core.weights[0], core.biases[0], core.out_w, core.out_b]


class MetaLossGradientTest(tf.test.TestCase, parameterized.TestCase):

  def assert_gradients_close(self, actual, expected):
    scale = max(np.max(np.abs(e)) for e in expected)
    for a, e in zip(actual, expected):
      self.assertAllClose(a, e, rtol=META_GRAD_RTOL, atol=META_GRAD_RTOL * scale)

  @parameterized.parameters(False, True)
  def test_meta_gradient_matches_finite_differences(self, second_derivatives):
    """With second_derivatives the exact gradient of sum_t f(x_t); without, the gradient with
    each optimizee gradient g_t frozen at its value (Andrychowicz et al. 2016, section 2.1)."""
    opt, variables = lstm_optimizer()
    meta_loss = opt.meta_loss(make_loss, STEPS, second_derivatives=second_derivatives)
    with tf.GradientTape() as tape:
      value = meta_loss()
    grads = tape.gradient(value, variables)
    weights = [v.numpy().astype(np.float64) for v in variables]
    total, _, frozen = reference.meta_loss_np(weights, STEPS, reference.SCALE, reference.HIDDEN)
    self.assertAllClose(value, total, rtol=1e-5)
    expected = reference.numerical_gradient(
        lambda w: reference.meta_loss_np(w, STEPS, reference.SCALE, reference.HIDDEN,
                                         frozen_grads=None if second_derivatives else frozen)[0],
        weights)
    self.assert_gradients_close(grads, expected)

  def test_the_two_references_differ(self):
    """The test above tells the two settings apart: their references differ by far more than
    its tolerance on this non-diagonal quadratic."""
    _, variables = lstm_optimizer()
    weights = [v.numpy().astype(np.float64) for v in variables]
    _, _, frozen = reference.meta_loss_np(weights, STEPS, reference.SCALE, reference.HIDDEN)
    full, first_order = [np.concatenate([np.ravel(g) for g in reference.numerical_gradient(
        lambda w: reference.meta_loss_np(w, STEPS, reference.SCALE, reference.HIDDEN,
                                         frozen_grads=f)[0], weights)]) for f in (None, frozen)]
    self.assertGreater(np.linalg.norm(full - first_order) / np.linalg.norm(full), 0.1)


class CountingProblem:
  """`make_loss` of `problems.quadratic` that counts its calls (each optimizee step, forward or
  recomputed, evaluates the loss once)."""

  def __init__(self, seed):
    self.calls = 0
    self._make_loss = problems.quadratic(batch_size=2, num_dims=3, seed=seed)

  def __call__(self):
    self.calls += 1
    return self._make_loss()


class CheckpointedMetaLossTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((None, 6, 0), (2, 6, 6), (4, 6, 6), (6, 6, 6), (4, 9, 9))
  def test_segments_are_recomputed_in_the_backward_pass(self, segment_length, len_unroll,
                                                        recomputed):
    """With segment_length, the backward pass runs every step of every segment again (the
    price of memory that grows with the segment, not with len_unroll); without, none."""
    problem = CountingProblem(seed=1)
    opt = l2l.MetaOptimizer(cw=LOG_AND_SIGN_LSTM)
    # The problem's Python code counts its runs: on TensorFlow's ops ("graph"), every step runs
    # it eagerly; one XLA call would be traced once.
    meta_loss = opt.meta_loss(problem, len_unroll, segment_length=segment_length,
                              compile_loss="graph")
    self.assertEqual(meta_loss.segment_length, segment_length)
    problem.calls = 0
    with tf.GradientTape() as tape:
      value = meta_loss()
    self.assertEqual(problem.calls, len_unroll + 1)  # Every step's loss and the final one.
    problem.calls = 0
    grads = tape.gradient(value, opt.trainable_variables)
    self.assertEqual(problem.calls, recomputed)
    self.assertTrue(all(np.all(np.isfinite(g)) for g in grads))

  def test_meta_minimize_passes_segment_length_on(self):
    problem = CountingProblem(seed=1)
    trainer = l2l.MetaOptimizer(cw=LOG_AND_SIGN_LSTM).meta_minimize(
        problem, 6, 1e-3, segment_length=3, compile_loss="graph")
    self.assertEqual(trainer.meta_loss.segment_length, 3)
    with tf.GradientTape() as tape:
      value = trainer.meta_loss()
    problem.calls = 0
    tape.gradient(value, trainer.meta_optimizer.trainable_variables)
    self.assertEqual(problem.calls, 6)


class MetaMinimizeAdamTest(tf.test.TestCase, parameterized.TestCase):
  """Adam's state after one step holds the meta-gradient itself: m = (1 - b1) g and
  v = (1 - b2) g^2 (Kingma & Ba 2015, algorithm 1), g clipped to `max_grad_norm` if given.

  Adam's step (m_hat / sqrt(v_hat)) does not change when g is scaled, so a scaled
  meta-gradient is only visible in the moments (and in any other meta-optimizer)."""

  def meta_gradient(self, seed, len_unroll):
    """The meta-gradient of a fresh MetaLoss on the same first instance, by `tf.GradientTape`
    (itself checked against finite differences above)."""
    opt, _ = lstm_optimizer()
    meta_loss = opt.meta_loss(problems.quadratic(batch_size=2, num_dims=3, seed=seed),
                              len_unroll)
    with tf.GradientTape() as tape:
      value = meta_loss()
    return value, [g.numpy() for g in tape.gradient(value, opt.trainable_variables)]

  @parameterized.parameters(None, 0.1, 1e6)
  def test_first_moments_are_the_meta_gradient(self, max_grad_norm):
    value, grads = self.meta_gradient(seed=2, len_unroll=4)
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    self.assertGreater(norm, 1e-3)
    if max_grad_norm is not None:
      grads = [g * min(1., max_grad_norm / norm) for g in grads]
    opt, _ = lstm_optimizer()
    before = [v.numpy() for v in opt.trainable_variables]
    trainer = opt.meta_minimize(problems.quadratic(batch_size=2, num_dims=3, seed=2), 4,
                                learning_rate=1e-2, max_grad_norm=max_grad_norm)
    self.assertAllClose(trainer.step(), value, **SAME_OPS_TOL)
    adam = trainer.optimizer
    self.assertEqual(int(adam.step.numpy()), 1)
    scale = max(np.max(np.abs(g)) for g in grads)
    for g, m, v, w0, w1 in zip(grads, adam.m, adam.v, before, opt.trainable_variables):
      self.assertAllClose(m, 0.1 * g, rtol=1e-4, atol=1e-5 * 0.1 * scale)
      self.assertAllClose(v, 0.001 * g * g, rtol=1e-4, atol=1e-5 * 0.001 * scale ** 2)
      # The first step: -lr m_hat / (sqrt(v_hat) + eps) = -lr g / (|g| + eps).
      self.assertAllClose(w1, w0 - 1e-2 * g / (np.abs(g) + 1e-8), rtol=1e-4, atol=1e-6)


class LearnedOptimizerTrajectoryTest(tf.test.TestCase, parameterized.TestCase):
  """`LearnedOptimizer.apply` on a model takes the steps `MetaLoss` takes in an unroll: the rule's
  state (an LSTM's memory) carries from one call to the next."""

  def apply_trajectory(self, rule, steps, compiled, reset_state=False):
    x = tf.Variable(tf.constant(reference.X0, tf.float32), name="x")
    optimizer = l2l.LearnedOptimizer(rule)

    def step():
      with tf.GradientTape() as tape:
        loss = reference.loss_fn([x])
      optimizer.apply(tape.gradient(loss, [x]), [x])
      return loss

    step = tf.function(step) if compiled else step
    losses = []
    for _ in range(steps):
      losses.append(float(step()))
      if reset_state:  # What a rule without memory across calls would do.
        for state in optimizer.states:
          tf.nest.map_structure(lambda v: v.assign(tf.zeros_like(v)), state)
    losses.append(float(reference.loss_fn([x])))
    return np.array(losses), x.numpy()

  @parameterized.parameters(False, True)
  def test_apply_reproduces_meta_loss_run(self, compiled):
    opt = l2l.MetaOptimizer(cw=LOG_AND_SIGN_LSTM)
    meta_loss = opt.meta_loss(make_loss, 4)
    expected = []
    for unroll in range(3):  # Three truncated unrolls of 4 steps: f(x_0), ..., f(x_12).
      meta_loss.run()
      expected.append(meta_loss.losses.numpy()[0 if unroll == 0 else 1:])
    expected = np.concatenate(expected)
    losses, x = self.apply_trajectory(opt, 12, compiled)
    self.assertAllClose(losses, expected, **SAME_OPS_TOL)
    self.assertAllClose(x, meta_loss.params["x"], **SAME_OPS_TOL)
    # The memory matters: the same rule restarted at every call goes elsewhere.
    forgetful, _ = self.apply_trajectory(opt, 12, compiled, reset_state=True)
    self.assertGreater(np.max(np.abs(forgetful - expected) / np.abs(expected)), 1e-2)

  def test_apply_matches_the_numpy_lstm(self):
    """Five calls of `apply` against unroll_test's NumPy LSTM, the state carried by hand."""
    opt, variables = lstm_optimizer()
    losses, _ = self.apply_trajectory(opt, STEPS, compiled=False)
    weights = [v.numpy().astype(np.float64) for v in variables]
    _, expected, _ = reference.meta_loss_np(weights, STEPS, reference.SCALE, reference.HIDDEN)
    self.assertAllClose(losses, expected, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  tf.test.main()
