"""MAML, first-order MAML, Meta-SGD and ANIL against analytic and finite-difference references.

The linear least-squares model has closed forms in NumPy (float64): with X~ = [X, 1],
L(theta) = mean((X~ theta - y)^2), grad L = 2/n X~^T (X~ theta - y), Hessian H = 2/n X~^T X~, so
one inner step theta' = theta - a grad L_s(theta) has the meta-gradients

    MAML:      (I - a H_s) grad L_q(theta')
    FOMAML:    grad L_q(theta')
    Meta-SGD:  d/da L_q(theta - a o g_s) = -g_s o grad L_q(theta')

A tanh MLP checks second-order MAML with two inner steps against central finite differences.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
import nets
import finite_differences
from l2l.meta_learning import functional
from l2l.meta_learning import maml


def mse(prediction, target):
  return tf.reduce_mean(tf.square(prediction - target))


def linear_data(seed=0, n=6, d=3):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=shape) for shape in ((n, d), (n, 1), (n, d), (n, 1))]


def built_linear(d=3, seed=0):
  model = snt.Linear(1, w_init=snt.initializers.RandomNormal(seed=seed), name="linear")
  model(tf.zeros([1, d], tf.float64))
  model.b.assign([0.3])
  return model


def theta_of(model):
  return np.concatenate([model.w.numpy().ravel(), model.b.numpy()])


def ls_grad(theta, x, y):
  xt = np.concatenate([x, np.ones([len(x), 1])], axis=1)
  return 2. / len(x) * xt.T @ (xt @ theta - y.ravel()), 2. / len(x) * xt.T @ xt


def split(theta_grad, model):
  """(d+1,) -> {name: grad} in the model's layout."""
  d = model.w.shape[0]
  return {"linear/w": theta_grad[:d].reshape(d, 1), "linear/b": theta_grad[d:]}


class MAMLLinearTest(tf.test.TestCase, parameterized.TestCase):

  def meta_grads(self, algorithm):
    xs, ys, xq, yq = map(tf.constant, linear_data())
    with tf.GradientTape() as tape:
      learner = algorithm.clone().adapt_on(mse, xs, ys)
      loss = mse(learner(xq), yq)
    return dict(zip([v.name for v in algorithm.trainable_variables],
                    tape.gradient(loss, algorithm.trainable_variables)))

  @parameterized.parameters(False, True)
  def test_one_step_matches_closed_form(self, first_order):
    model = built_linear()
    lr = 0.1
    grads = self.meta_grads(l2l.MAML(model, inner_lr=lr, inner_steps=1, first_order=first_order))
    xs, ys, xq, yq = linear_data()
    theta = theta_of(model)
    g_s, h_s = ls_grad(theta, xs, ys)
    g_q, _ = ls_grad(theta - lr * g_s, xq, yq)
    expected = g_q if first_order else (np.eye(len(theta)) - lr * h_s) @ g_q
    expected = split(expected, model)
    self.assertAllClose(grads["linear/w:0"], expected["linear/w"], rtol=1e-10, atol=0)
    self.assertAllClose(grads["linear/b:0"], expected["linear/b"], rtol=1e-10, atol=0)

  def test_zero_inner_steps_is_the_plain_gradient(self):
    model = built_linear()
    grads = self.meta_grads(l2l.MAML(model, inner_lr=0.1, inner_steps=0))
    _, _, xq, yq = linear_data()
    expected = split(ls_grad(theta_of(model), xq, yq)[0], model)
    self.assertAllClose(grads["linear/w:0"], expected["linear/w"], rtol=1e-12)
    self.assertAllClose(grads["linear/b:0"], expected["linear/b"], rtol=1e-12)

  def test_meta_sgd_learning_rates_get_their_gradient(self):
    model = built_linear()
    algorithm = l2l.MetaSGD(model, inner_lr=0.1)
    # Different rates per coordinate, so the test sees them used coordinate by coordinate.
    algorithm.lrs[algorithm.adapt_names.index("linear/w")].assign([[0.05], [0.1], [0.2]])
    grads = self.meta_grads(algorithm)
    xs, ys, xq, yq = linear_data()
    theta = theta_of(model)
    alpha = np.array([0.05, 0.1, 0.2, 0.1])
    g_s, h_s = ls_grad(theta, xs, ys)
    g_q, _ = ls_grad(theta - alpha * g_s, xq, yq)
    lr_grads = split(-g_s * g_q, model)
    # d theta' / d theta = I - diag(alpha) H_s; its transpose is I - H_s diag(alpha).
    theta_grads = split((np.eye(4) - h_s * alpha[None, :]) @ g_q, model)
    names = algorithm.adapt_names
    for i, name in enumerate(names):
      self.assertAllClose(grads[f"meta_sgd/lr_{i}:0"], lr_grads[name], rtol=1e-10, atol=0)
      self.assertAllClose(grads[name + ":0"], theta_grads[name], rtol=1e-10, atol=0)

  def test_learnable_inner_optimizer_gets_its_gradient(self):
    model = built_linear()
    rule = nets.Sgd(learning_rate=0.1, learnable=True)
    grads = self.meta_grads(l2l.MAML(model, inner_steps=1, inner_optimizer=rule))
    xs, ys, xq, yq = linear_data()
    theta = theta_of(model)
    g_s, _ = ls_grad(theta, xs, ys)
    g_q, _ = ls_grad(theta - 0.1 * g_s, xq, yq)
    # float32 rule variable: d L_q / d lr = -g_s . g_q.
    self.assertAllClose(grads["sgd/learning_rate:0"], -g_s @ g_q, rtol=1e-5)

  def test_inner_adam_rule_is_finite_at_zero_gradients(self):
    # A zero support loss: every inner gradient is exactly 0; Adam's sqrt must not give NaN.
    model = built_linear()
    model.w.assign(tf.zeros([3, 1], tf.float64))
    model.b.assign(tf.zeros([1], tf.float64))
    algorithm = l2l.MAML(model, inner_steps=2, inner_optimizer=nets.Adam(0.1))
    xs, _, xq, yq = map(tf.constant, linear_data())
    with tf.GradientTape() as tape:
      learner = algorithm.clone().adapt_on(mse, xs, tf.zeros([6, 1], tf.float64))
      loss = mse(learner(xq), yq)
    grads = tape.gradient(loss, model.trainable_variables)
    self.assertAllEqual(learner.params["linear/w"], np.zeros([3, 1]))
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g.numpy())), msg=str(g))

  def test_adapt_is_chainable_and_counts_steps(self):
    model = built_linear()
    xs, ys, _, _ = map(tf.constant, linear_data())
    algorithm = l2l.MAML(model, inner_lr=0.1, inner_steps=1)
    two = algorithm.clone().adapt_on(mse, xs, ys).adapt_on(mse, xs, ys)
    also_two = algorithm.clone().adapt_on(mse, xs, ys, steps=2)
    theta = theta_of(model)
    for _ in range(2):
      theta = theta - 0.1 * ls_grad(theta, xs.numpy(), ys.numpy())[0]
    self.assertAllClose(two.params["linear/b"], theta[3:], rtol=1e-12)
    self.assertAllClose(also_two.params["linear/b"], theta[3:], rtol=1e-12)
    self.assertAllClose(theta_of(model)[3:], [0.3])  # The module itself never moves.


class MAMLFiniteDifferenceTest(tf.test.TestCase):

  def test_second_order_two_steps_matches_finite_differences(self):
    rng = np.random.default_rng(4)
    model = snt.nets.MLP([4, 1], activation=tf.tanh, name="mlp",
                         w_init=snt.initializers.RandomNormal(seed=1))
    model(tf.zeros([1, 2], tf.float64))
    xs, ys = tf.constant(rng.normal(size=(5, 2))), tf.constant(rng.normal(size=(5, 1)))
    xq, yq = tf.constant(rng.normal(size=(5, 2))), tf.constant(rng.normal(size=(5, 1)))
    algorithm = l2l.MAML(model, inner_lr=0.3, inner_steps=2)

    def meta_loss():
      return mse(algorithm.clone().adapt_on(mse, xs, ys)(xq), yq)

    with tf.GradientTape() as tape:
      loss = meta_loss()
    grads = tape.gradient(loss, model.trainable_variables)
    numeric = finite_differences.central_differences(meta_loss, model.trainable_variables,
                                                     eps=1e-6)
    for var, grad, expected in zip(model.trainable_variables, grads, numeric):
      self.assertAllClose(grad, expected, rtol=1e-6, atol=1e-9, msg=var.name)
    # The Hessian terms matter here: first-order differs from the finite differences.
    with tf.GradientTape() as tape:
      fo = mse(l2l.MAML(model, 0.3, 2, first_order=True).clone().adapt_on(mse, xs, ys)(xq), yq)
    fo_grads = tape.gradient(fo, model.trainable_variables)
    self.assertGreater(max(np.abs(a - b).max() for a, b in zip(fo_grads, grads)), 1e-3)


class ANILTest(tf.test.TestCase):

  def test_body_unchanged_head_adapted(self):
    model = snt.nets.MLP([4, 1], activation=tf.tanh, name="mlp")
    model(tf.zeros([1, 2]))
    body, head = model.submodules
    algorithm = l2l.ANIL(model, head, inner_lr=0.1, inner_steps=3)
    self.assertEqual(algorithm.adapt_names, ["mlp/linear_1/b", "mlp/linear_1/w"])
    x, y = tf.random.stateless_normal([8, 2], [0, 1]), tf.random.stateless_normal([8, 1], [0, 2])
    learner = algorithm.clone().adapt_on(mse, x, y)
    self.assertIs(learner.params["mlp/linear_0/w"], body.w)
    self.assertIs(learner.params["mlp/linear_0/b"], body.b)
    self.assertNotAllClose(learner.params["mlp/linear_1/w"], head.w)
    # The adapted head is exactly three SGD steps on the head alone, the body frozen.
    features = tf.tanh(body(x))
    w, b = head.w.numpy(), head.b.numpy()
    f = features.numpy()
    for _ in range(3):
      r = f @ w + b - y.numpy()
      w, b = w - 0.1 * 2. / 8 * f.T @ r, b - 0.1 * 2. / 8 * r.sum(0)
    self.assertAllClose(learner.params["mlp/linear_1/w"], w, rtol=1e-5)
    self.assertAllClose(learner.params["mlp/linear_1/b"], b, rtol=1e-5)

  def test_head_names(self):
    model = snt.nets.MLP([4, 1], name="mlp")
    model(tf.zeros([1, 2]))
    self.assertEqual(maml.head_names(model, model.submodules[1]),
                     ["mlp/linear_1/b", "mlp/linear_1/w"])


class BadInputTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.model = snt.nets.MLP([4, 1], name="mlp")
    self.model(tf.zeros([1, 2]))

  def test_adapt_name_not_a_parameter(self):
    with self.assertRaisesRegex(ValueError, r"adapt_names names \['mlp/linear_9/w'\], which are "
                                "not parameters"):
      l2l.MAML(self.model, adapt_names=["mlp/linear_9/w"])
    with self.assertRaisesRegex(TypeError, "adapt_names must be a list"):
      l2l.MAML(self.model, adapt_names="mlp/linear_0/w")

  def test_head_not_a_submodule(self):
    other = snt.Linear(1, name="other")
    other(tf.zeros([1, 4]))
    with self.assertRaisesRegex(ValueError, "head 'other' is not a submodule of module 'mlp'"):
      l2l.ANIL(self.model, other)

  def test_negative_inner_steps(self):
    with self.assertRaisesRegex(ValueError, "inner_steps must be a non-negative integer, got -1"):
      l2l.MAML(self.model, inner_steps=-1)
    with self.assertRaisesRegex(ValueError, "steps must be a non-negative integer, got -2"):
      l2l.MAML(self.model).clone().adapt_on(mse, tf.ones([3, 2]), tf.ones([3, 1]), steps=-2)
    with self.assertRaisesRegex(ValueError, "inner_steps must be a non-negative integer"):
      maml.adapt(self.model, functional.named_parameters(self.model), lambda f: 0., 0.1, -1)

  def test_bad_learning_rate(self):
    with self.assertRaisesRegex(ValueError, "inner_lr must be a positive number, got 0"):
      l2l.MAML(self.model, inner_lr=0)

  def test_support_x_y_mismatch(self):
    with self.assertRaisesRegex(ValueError, "x and y must hold the same number of examples"):
      l2l.MAML(self.model).clone().adapt_on(mse, tf.ones([3, 2]), tf.ones([4, 1]))

  def test_unused_parameter(self):
    constant_loss = lambda f: tf.constant(1.)  # Uses no parameter.
    with self.assertRaisesRegex(ValueError, r"do not affect the inner loss.*allow_unused=True"):
      l2l.MAML(self.model).clone().adapt(constant_loss)
    learner = l2l.MAML(self.model, allow_unused=True).clone().adapt(constant_loss)
    self.assertAllEqual(learner.params["mlp/linear_0/w"], self.model.submodules[0].w)

if __name__ == "__main__":
  absltest.main()
