"""innerloop_ctx / DifferentiableOptimizer with nets rules, against NumPy and finite differences."""

import os
import tempfile

from absl.testing import absltest
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
import nets
import finite_differences


def mse(prediction, target):
  return tf.reduce_mean(tf.square(prediction - target))


def data(seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  return [tf.constant(rng.normal(size=s).astype(dtype)) for s in ((6, 3), (6, 1), (6, 3), (6, 1))]


def built_linear(dtype=tf.float64):
  model = snt.Linear(1, w_init=snt.initializers.RandomNormal(seed=0), name="linear")
  model(tf.zeros([1, 3], dtype))
  return model


def ls_grad(theta, x, y):
  xt = np.concatenate([x, np.ones([len(x), 1])], axis=1)
  return 2. / len(x) * xt.T @ (xt @ theta - y.ravel())


def theta_of(params):
  return np.concatenate([np.ravel(params["linear/w"]), np.ravel(params["linear/b"])])


class InnerLoopTest(tf.test.TestCase):

  def meta_loss(self, model, rule, steps, track=True):
    xs, ys, xq, yq = data()
    with l2l.innerloop_ctx(model, rule, track_higher_grads=track) as (fmodel, diffopt):
      for _ in range(steps):
        diffopt.step(lambda f: mse(f(xs), ys))
      return mse(fmodel(xq), yq), fmodel

  def test_sgd_rule_equals_maml(self):
    model = built_linear()
    with tf.GradientTape(persistent=True) as tape:
      ours, _ = self.meta_loss(model, nets.Sgd(0.1), 2)
      xs, ys, xq, yq = data()
      reference = mse(l2l.MAML(model, 0.1, 2).clone().adapt_on(mse, xs, ys)(xq), yq)
    self.assertAllClose(ours, reference, rtol=1e-12)
    for a, b in zip(tape.gradient(ours, model.trainable_variables),
                    tape.gradient(reference, model.trainable_variables)):
      self.assertAllClose(a, b, rtol=1e-10)

  def test_momentum_trajectory_and_finite_differences(self):
    model = built_linear()
    rule = nets.Momentum(learning_rate=0.1, momentum=0.9)
    with tf.GradientTape() as tape:
      loss, fmodel = self.meta_loss(model, rule, 3)
    grads = tape.gradient(loss, model.trainable_variables)
    xs, ys, _, _ = (d.numpy() for d in data())
    theta = theta_of({"linear/w": model.w.numpy(), "linear/b": model.b.numpy()})
    a = np.zeros_like(theta)
    for _ in range(3):
      a = 0.9 * a + ls_grad(theta, xs, ys)
      theta = theta - 0.1 * a
    self.assertAllClose(theta_of(fmodel.params), theta, rtol=1e-12)
    numeric = finite_differences.central_differences(
        lambda: self.meta_loss(model, rule, 3)[0], model.trainable_variables, eps=1e-6)
    for grad, expected in zip(grads, numeric):
      self.assertAllClose(grad, expected, rtol=1e-6, atol=1e-9)

  def test_learnable_adam_learning_rate_gradient(self):
    model = built_linear()
    rule = nets.Adam(learning_rate=0.05, learnable=True)
    with tf.GradientTape() as tape:
      loss, _ = self.meta_loss(model, rule, 1)
    grad = tape.gradient(loss, rule.learning_rate)
    # One Adam step: update = -lr g / (|g| + eps) (bias-corrected moments of one gradient).
    xs, ys, xq, yq = (d.numpy() for d in data())
    theta = theta_of({"linear/w": model.w.numpy(), "linear/b": model.b.numpy()})
    g = ls_grad(theta, xs, ys)
    direction = -g / (np.abs(g) + 1e-8)
    expected = ls_grad(theta + 0.05 * direction, xq, yq) @ direction
    self.assertAllClose(grad, expected, rtol=1e-5)

  def test_test_time_mode_builds_no_meta_gradient(self):
    model = built_linear()
    with tf.GradientTape(persistent=True) as tape:
      tracked, _ = self.meta_loss(model, nets.Adam(0.1), 2)
      untracked, _ = self.meta_loss(model, nets.Adam(0.1), 2, track=False)
    self.assertAllClose(tracked, untracked, rtol=1e-12)
    self.assertIsNotNone(tape.gradient(tracked, model.w))
    self.assertIsNone(tape.gradient(untracked, model.w))

  def test_trained_lstm_from_saved_meta_optimizer(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    saved = l2l.MetaOptimizer(cw={"net": "CoordinateWiseDeepLSTM",
                                  "net_options": {"layers": [4], "seed": 3, "scale": 0.1}})
    for v in saved.trainable_variables:  # Distinct from a fresh net with the same seed.
      v.assign(v + 0.05)
    saved.save(path)
    rule = l2l.rule_from(path)
    model = built_linear(tf.float32)
    xs, ys, xq, yq = data(dtype=np.float32)
    with tf.GradientTape() as tape:
      with l2l.innerloop_ctx(model, rule) as (fmodel, diffopt):
        diffopt.step(lambda f: mse(f(xs), ys))
        loss = mse(fmodel(xq), yq)
    grads = tape.gradient(loss, model.trainable_variables + rule.trainable_variables)
    self.assertTrue(all(np.all(np.isfinite(g.numpy())) for g in grads))
    # The step is the saved net's own update of the support gradients.
    with tf.GradientTape() as inner:
      support = mse(model(xs), ys)
    g = inner.gradient(support, [model.b, model.w])
    updates, _ = saved.nets["cw"](g, saved.nets["cw"].initial_state(g))
    self.assertAllClose(fmodel.params["linear/w"], model.w + updates[1], rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "no saved optimizer"):
      l2l.rule_from(os.path.join(path, "missing"))


def ls_hessian(x):
  xt = np.concatenate([x, np.ones([len(x), 1])], axis=1)
  return 2. / len(x) * xt.T @ xt


def grad_theta(grads):
  """[w..., b] from gradients in (b, w) order (the module's trainable_variables order)."""
  return np.concatenate([np.ravel(grads[1]), np.ravel(grads[0])])


class HigherSignatureTest(tf.test.TestCase):
  """copy_initial_weights, override and device against closed forms on least squares."""

  def one_sgd_step(self, model, rule, **kwargs):
    xs, ys, xq, yq = data()
    with l2l.innerloop_ctx(model, rule, **kwargs) as (fmodel, diffopt):
      diffopt.step(lambda f: mse(f(xs), ys))
      return mse(fmodel(xq), yq), fmodel

  def closed_form(self, model, lr):
    """(theta_1, d loss_q / d theta_0, d loss_q / d lr) for one SGD step of size lr."""
    xs, ys, xq, yq = (d.numpy() for d in data())
    theta0 = theta_of({"linear/w": model.w.numpy(), "linear/b": model.b.numpy()})
    g_s = ls_grad(theta0, xs, ys)
    theta1 = theta0 - lr * g_s
    g_q = ls_grad(theta1, xq, yq)
    return theta1, (np.eye(4) - lr * ls_hessian(xs)) @ g_q, -g_q @ g_s

  def test_copy_initial_weights(self):
    model = built_linear()
    theta1, meta_grad, lr_grad = self.closed_form(model, 0.125)
    for copy in (False, True):
      rule = nets.Sgd(0.125, learnable=True)
      with tf.GradientTape(persistent=True) as tape:
        loss, fmodel = self.one_sgd_step(model, rule, copy_initial_weights=copy)
      self.assertAllClose(theta_of(fmodel.params), theta1, rtol=1e-12, atol=0)
      grads = tape.gradient(loss, model.trainable_variables)
      if copy:  # higher's default: nothing reaches the module's variables...
        self.assertEqual(list(grads), [None, None])
        self.assertNotIsInstance(fmodel.init_params["linear/w"], tf.Variable)
        self.assertAllEqual(fmodel.init_params["linear/w"], model.w)
      else:  # ...l2l's: the MAML meta-gradient (I - lr H_s) g_q.
        self.assertAllClose(grad_theta(grads), meta_grad, rtol=1e-10, atol=0)
      # Either way the rule's learnable step size gets -g_q . g_s.
      self.assertAllClose(tape.gradient(loss, rule.learning_rate), lr_grad, rtol=1e-5, atol=0)

  def test_override_with_a_tensor_gets_the_meta_gradient(self):
    model = built_linear()
    rule = nets.Sgd(0.125)
    lr = tf.Variable(0.3, dtype=tf.float64)
    theta1, meta_grad, lr_grad = self.closed_form(model, 0.3)
    with tf.GradientTape(persistent=True) as tape:
      loss, fmodel = self.one_sgd_step(model, rule, override={"learning_rate": lr})
    self.assertAllClose(theta_of(fmodel.params), theta1, rtol=1e-12, atol=0)
    self.assertAllClose(tape.gradient(loss, lr), lr_grad, rtol=1e-10, atol=0)
    self.assertAllClose(grad_theta(tape.gradient(loss, model.trainable_variables)), meta_grad,
                        rtol=1e-10, atol=0)
    self.assertIsInstance(rule.learning_rate, tf.Variable)  # Put back after each step.
    self.assertAllClose(rule.learning_rate, 0.125)

  def test_override_momentum_with_higher_style_lists(self):
    model = built_linear()
    xs, ys, _, _ = (d.numpy() for d in data())
    with l2l.innerloop_ctx(model, nets.Momentum(0.125, 0.9),
                           override={"learning_rate": [0.0625], "momentum": [0.5]}) as (f, opt):
      for _ in range(3):
        opt.step(lambda fm: mse(fm(tf.constant(xs)), tf.constant(ys)))
    theta = theta_of({"linear/w": model.w.numpy(), "linear/b": model.b.numpy()})
    a = np.zeros_like(theta)
    for _ in range(3):
      a = 0.5 * a + ls_grad(theta, xs, ys)
      theta = theta - 0.0625 * a
    self.assertAllClose(theta_of(f.params), theta, rtol=1e-12, atol=0)

  def test_device(self):
    model = built_linear()
    theta1, meta_grad, _ = self.closed_form(model, 0.125)
    with tf.GradientTape() as tape:
      loss, fmodel = self.one_sgd_step(model, nets.Sgd(0.125), device="/CPU:0")
    self.assertTrue(fmodel.params["linear/w"].device.endswith("CPU:0"))
    self.assertAllClose(theta_of(fmodel.params), theta1, rtol=1e-12, atol=0)
    self.assertAllClose(grad_theta(tape.gradient(loss, model.trainable_variables)), meta_grad,
                        rtol=1e-10, atol=0)

  def test_errors(self):
    model = built_linear()
    with self.assertRaisesRegex(ValueError, r"override names \['lr'\], which are not "
                                r"hyperparameters of rule 'sgd'; its hyperparameters are "
                                r"\['learning_rate'\]"):
      self.one_sgd_step(model, nets.Sgd(0.125), override={"lr": 0.125})
    with self.assertRaisesRegex(ValueError, "is a list of 2 values"):
      self.one_sgd_step(model, nets.Sgd(0.125), override={"learning_rate": [0.125, 0.2]})
    with self.assertRaisesRegex(TypeError, "override must be a mapping"):
      self.one_sgd_step(model, nets.Sgd(0.125), override=[0.125])
    with self.assertRaisesRegex(ValueError, "is not one of this machine's devices"):
      self.one_sgd_step(model, nets.Sgd(0.125), device="/GPU:7")
    with self.assertRaisesRegex(ValueError, "is not a device string"):
      self.one_sgd_step(model, nets.Sgd(0.125), device="cpu::0:x")
    with self.assertRaisesRegex(TypeError, "device must be a device string"):
      self.one_sgd_step(model, nets.Sgd(0.125), device=0)


if __name__ == "__main__":
  absltest.main()
