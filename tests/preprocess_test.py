"""LogAndSign and the LSTM nets' forward passes against NumPy references.

The references are written from the papers' formulas and the documented layouts (gate order
i, j, f, o with the forget bias added at run time; the kernel and standard nets' row layouts),
with loops where the library uses reshapes and transposes.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import nets
from nets import kernel

TOL = dict(rtol=1e-5, atol=1e-6)  # float32 TF against float64 NumPy.


def np_log_and_sign(g, k=5.0):
  """Andrychowicz et al. 2016, appendix A, piecewise: one (log, sign) pair per value."""
  g = np.asarray(g, np.float64)
  big = np.abs(g) >= np.exp(-k)
  with np.errstate(divide="ignore"):
    log = np.where(big, np.log(np.abs(g)) / k, -1.0)
  sign = np.where(big, np.sign(g), np.exp(k) * g)
  return np.stack([log, sign], axis=-1)


def sigmoid(x):
  return 1. / (1. + np.exp(-x))


def np_deep_lstm(x, state, core):
  """A NumPy deep LSTM + linear layer with `core`'s weights; gates (i, j, f, o)."""
  new_state = []
  for w, b, (h, c) in zip(core.weights, core.biases, state):
    gates = np.concatenate([x, h], axis=1) @ w.numpy() + b.numpy()
    n = h.shape[1]
    i, j, f, o = (gates[:, q * n:(q + 1) * n] for q in range(4))
    c = sigmoid(f + core.forget_bias) * c + sigmoid(i) * np.tanh(j)
    h = sigmoid(o) * np.tanh(c)
    new_state.append((h, c))
    x = h
  return x @ core.out_w.numpy() + core.out_b.numpy(), new_state


def np_zero_state(core, batch):
  return [(np.zeros([batch, n]), np.zeros([batch, n])) for n in core.layers]


def randomize(module, seed):
  """Random values for every weight, biases included, so that no term of the forward is 0."""
  rng = np.random.RandomState(seed)
  for v in module.variables:
    v.assign(0.5 * rng.randn(*v.shape))


class LogAndSignTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(5.0, 2.0)
  def test_matches_paper_formula(self, k):
    magnitudes = np.array([0., 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1., 3.,
                           1e2, 1e3])
    g = np.concatenate([magnitudes, -magnitudes[1:]])
    # Branch-free log(|g| + 1e-10) differs from the piecewise formula only right at
    # |g| = e^-k (the branch point); keep clear of it.
    g = g[np.abs(np.abs(g) - np.exp(-k)) > 1e-3 * np.exp(-k)]
    features = nets.log_and_sign(tf.constant(g.reshape(-1, 1), tf.float32), k=k)
    self.assertEqual(features.shape, [len(g), 2])
    self.assertAllClose(features, np_log_and_sign(g, k).reshape(-1, 2), **TOL)
    # Zero has features (-1, 0).
    self.assertAllEqual(features[0], [-1., 0.])

  def test_values_near_branch_point_are_continuous(self):
    k = 5.0
    g = np.exp(-k) * np.array([0.999, 1.001])
    features = nets.log_and_sign(tf.constant(g.reshape(-1, 1), tf.float32), k=k)
    self.assertAllClose(features, [[-1., 0.999], [-1., 1.]], atol=1e-3)

  def test_module_and_shapes(self):
    module = nets.LogAndSign(k=3.0)
    g = tf.random.stateless_normal([4, 3, 1], seed=[0, 1])
    self.assertEqual(module(g).shape, [4, 3, 2])
    self.assertEqual(module.output_size(7), 14)
    self.assertAllClose(module(g), np_log_and_sign(g.numpy()[..., 0], 3.0), **TOL)

  def test_bad_k(self):
    with self.assertRaisesRegex(ValueError, "`k`"):
      nets.LogAndSign(k=0.)


class CoordinateWiseForwardTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("LogAndSign", None)
  def test_no_layers_zero_initializer_gives_zero_updates(self, preprocess_name):
    net = nets.CoordinateWiseDeepLSTM(layers=(), initializer="zeros",
                                      preprocess_name=preprocess_name)
    grads = [tf.constant([[1., -2.], [0., 3e-4]]), tf.constant([5.])]
    state = net.initial_state(grads)
    self.assertEqual(state, ())
    updates, state = net(grads, state)
    for u, g in zip(updates, grads):
      self.assertAllEqual(u, tf.zeros_like(g))
    self.assertEqual(state, ())

  @parameterized.named_parameters(
      ("log_and_sign", dict(preprocess_name="LogAndSign", preprocess_options={"k": 4.0},
                            scale=0.5), 4.0),
      ("identity_forget_bias", dict(forget_bias=0.3), None),
  )
  def test_matches_numpy(self, options, k):
    net = nets.CoordinateWiseDeepLSTM(layers=(5, 3), **options)
    randomize(net, 0)
    rng = np.random.RandomState(1)
    shapes = [(2, 3), (4,)]
    state = net.initial_state([tf.zeros(s) for s in shapes])
    np_state = np_zero_state(net.core, 10)
    for _ in range(3):
      grads = [rng.randn(*s) * 10. ** rng.uniform(-6, 1, size=s) for s in shapes]
      updates, state = net([tf.constant(g, tf.float32) for g in grads], state)
      column = np.concatenate([g.reshape(-1) for g in grads])
      x = np_log_and_sign(column, k) if k else column[:, None]
      out, np_state = np_deep_lstm(x, np_state, net.core)
      out = out[:, 0] * options.get("scale", 1.0)
      self.assertAllClose(updates[0], out[:6].reshape(2, 3), **TOL)
      self.assertAllClose(updates[1], out[6:], **TOL)
    for (h, c), (np_h, np_c) in zip(state, np_state):
      self.assertAllClose(h, np_h, **TOL)
      self.assertAllClose(c, np_c, **TOL)


def np_kernel_rows(g):
  """rows[c * cout + d, a * kw + b] = g[a, b, c, d]."""
  kh, kw, cin, cout = g.shape
  rows = np.zeros([cin * cout, kh * kw], g.dtype)
  for a in range(kh):
    for b in range(kw):
      for c in range(cin):
        for d in range(cout):
          rows[c * cout + d, a * kw + b] = g[a, b, c, d]
  return rows


def np_unrows(rows, shape):
  kh, kw, cin, cout = shape
  g = np.zeros(shape, rows.dtype)
  for a in range(kh):
    for b in range(kw):
      for c in range(cin):
        for d in range(cout):
          g[a, b, c, d] = rows[c * cout + d, a * kw + b]
  return g


class KernelDeepLSTMTest(tf.test.TestCase):

  def test_rows_match_numpy(self):
    rng = np.random.RandomState(0)
    kernels = [rng.randn(3, 2, 4, 5), rng.randn(3, 2, 1, 2)]
    rows = kernel.kernel_rows([tf.constant(k) for k in kernels])
    self.assertAllEqual(rows, np.concatenate([np_kernel_rows(k) for k in kernels]))
    back = kernel.split_kernel_rows(rows, kernels)
    for b, k in zip(back, kernels):
      self.assertAllEqual(b, k)

  def test_row_features_interleave_values(self):
    rows = tf.constant([[1e-3, -2.], [0., 5e-5]])
    features = kernel.row_features(rows, nets.LogAndSign(k=5.0))
    expected = np_log_and_sign(rows.numpy(), 5.0).reshape(2, 4)  # (log, sign) per value.
    self.assertAllClose(features, expected, **TOL)

  def test_matches_numpy(self):
    net = nets.KernelDeepLSTM(layers=(4,), kernel_shape=(3, 2), preprocess_name="LogAndSign",
                              scale=0.1)
    randomize(net, 2)
    rng = np.random.RandomState(3)
    shapes = [(3, 2, 2, 3), (3, 2, 1, 4)]
    state = net.initial_state([tf.zeros(s) for s in shapes])
    self.assertEqual(state[0][0].shape, [10, 4])
    np_state = np_zero_state(net.core, 10)
    for _ in range(2):
      grads = [rng.randn(*s) * 10. ** rng.uniform(-5, 0, size=s) for s in shapes]
      updates, state = net([tf.constant(g, tf.float32) for g in grads], state)
      rows = np.concatenate([np_kernel_rows(g) for g in grads])
      x = np_log_and_sign(rows, 5.0).reshape(rows.shape[0], -1)
      out, np_state = np_deep_lstm(x, np_state, net.core)
      out = 0.1 * out
      self.assertAllClose(updates[0], np_unrows(out[:6], shapes[0]), **TOL)
      self.assertAllClose(updates[1], np_unrows(out[6:], shapes[1]), **TOL)

  def test_bad_shapes(self):
    net = nets.KernelDeepLSTM(layers=(2,), kernel_shape=(3, 3))
    with self.assertRaisesRegex(ValueError, r"`grads\[1\]` has shape \(3, 3, 2\).*\[3, 3, in_"):
      net([tf.zeros([3, 3, 1, 1]), tf.zeros([3, 3, 2])], ())
    with self.assertRaisesRegex(ValueError, r"`params\[0\]` has shape \(5, 5, 1, 1\).*\[3, 3,"):
      net.initial_state([tf.zeros([5, 5, 1, 1])])
    with self.assertRaisesRegex(ValueError, "`kernel_shape`"):
      nets.KernelDeepLSTM(kernel_shape=(3,))


class StandardDeepLSTMTest(tf.test.TestCase):

  def test_matches_numpy(self):
    net = nets.StandardDeepLSTM(output_size=7, layers=(6, 4), preprocess_name="LogAndSign",
                                scale=0.2)
    randomize(net, 4)
    self.assertEqual(net.core.weights[0].shape, [14 + 6, 24])
    rng = np.random.RandomState(5)
    shapes = [(5,), (1, 2)]
    state = net.initial_state([tf.zeros(s) for s in shapes])
    np_state = np_zero_state(net.core, 1)
    for _ in range(3):
      grads = [rng.randn(*s) * 10. ** rng.uniform(-5, 0, size=s) for s in shapes]
      updates, state = net([tf.constant(g, tf.float32) for g in grads], state)
      column = np.concatenate([g.reshape(-1) for g in grads])
      out, np_state = np_deep_lstm(np_log_and_sign(column).reshape(1, -1), np_state, net.core)
      out = 0.2 * out[0]
      self.assertAllClose(updates[0], out[:5], **TOL)
      self.assertAllClose(updates[1], out[5:].reshape(1, 2), **TOL)

  def test_size_mismatch(self):
    net = nets.StandardDeepLSTM(output_size=11, layers=(2,))
    with self.assertRaisesRegex(ValueError, "12 coordinates.*output_size=11"):
      net.initial_state([tf.zeros([12])])
    state = net.initial_state([tf.zeros([11])])
    with self.assertRaisesRegex(ValueError, "`grads` have 10 coordinates.*output_size=11"):
      net([tf.zeros([10])], state)
    with self.assertRaisesRegex(ValueError, "`output_size`"):
      nets.StandardDeepLSTM(output_size=0)


if __name__ == "__main__":
  tf.test.main()
