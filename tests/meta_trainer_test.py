"""MetaTrainer (cross-checked against maml_step / reptile_step), fewshot.run and maml.py."""

import json
import os
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import finite_differences
import l2l
import problems
from l2l.meta_learning import fewshot
from l2l.meta_learning import functional
from l2l.meta_learning import meta_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def built_mlp(seed=0):
  model = snt.nets.MLP([8, 1], name="mlp", w_init=snt.initializers.RandomNormal(seed=seed))
  model(tf.zeros([1, 1]))
  return model


def functional_costs(model):
  def cost(x, y, v):
    return meta_trainer.mse(functional.call(model, v, x), y)
  inner = lambda b, v: cost(b.support_x, b.support_y, v)
  outer = lambda b, v: cost(b.query_x, b.query_y, v)
  return inner, outer


class MetaTrainerTest(tf.test.TestCase, parameterized.TestCase):

  def test_non_finite_meta_step_is_skipped(self):
    """A batch whose loss is NaN leaves the model and Adam untouched and is counted."""
    model = snt.Linear(1, w_init=snt.initializers.Constant(0.5))
    model(tf.zeros([1, 1]))
    sampler = problems.tasks.SinusoidTaskSampler(k_support=5, k_query=5, seed=0)
    adam = snt.optimizers.Adam(1e-2)
    trainer = meta_trainer.MetaTrainer(l2l.MAML(model, 0.01, 1), adam, meta_trainer.mse,
                                       sampler)
    good = sampler.sample(4)
    self.assertTrue(np.isfinite(trainer.meta_step(good)))
    state = lambda: [v.numpy() for v in [*model.trainable_variables, *adam.m, *adam.v,
                                         adam.step]]
    before = state()
    bad = good._replace(query_y=good.query_y + float("nan"))
    with self.assertLogs("absl", "WARNING") as logs:
      self.assertTrue(np.isnan(trainer.meta_step(bad)))
    self.assertIn("meta-step skipped: non-finite meta-loss", logs.output[0])
    self.assertEqual(trainer.skipped_steps, 1)
    self.assertIsInstance(trainer.skipped_steps, int)
    for b, a in zip(before, state()):
      self.assertAllEqual(b, a)
    trainer.meta_step(good)
    self.assertEqual(trainer.skipped_steps, 1)
    self.assertNotAllClose(before[0], model.trainable_variables[0].numpy())

  @parameterized.parameters(("MAML", False), ("FOMAML", True))
  def test_meta_step_applies_the_maml_step_gradient(self, _, first_order):
    tasks = problems.SinusoidTaskSampler(k_support=5, k_query=5, seed=1).sample(4)
    model = built_mlp()
    before = functional.values(functional.named_parameters(model))
    inner, outer = functional_costs(model)
    step_fn = l2l.fomaml_step if first_order else l2l.maml_step
    _, expected = step_fn(tf.nest.map_structure(tf.constant, tasks), inner, outer, before, 2,
                          0.05, per_task=True)
    trainer = l2l.MetaTrainer(l2l.MAML(model, 0.05, 2, first_order=first_order),
                              snt.optimizers.SGD(1.0), meta_trainer.mse, None)
    trainer.meta_step(tasks)
    for name, var in functional.named_parameters(model).items():
      self.assertAllClose(before[name] - var, expected[name], rtol=1e-4, atol=1e-6)

  def test_reptile_step_matches_reptile_step_function(self):
    tasks = problems.SinusoidTaskSampler(k_support=5, k_query=5, seed=2).sample(3)
    model = built_mlp()
    before = functional.values(functional.named_parameters(model))
    inner, _ = functional_costs(model)
    _, expected = l2l.reptile_step(tf.nest.map_structure(tf.constant, tasks), inner, before, 3,
                                   0.05, per_task=True)
    trainer = l2l.MetaTrainer(l2l.Reptile(model, 0.05, 3), snt.optimizers.SGD(1.0),
                              meta_trainer.mse, None)
    trainer.meta_step(tasks)
    for name, var in functional.named_parameters(model).items():
      self.assertAllClose(before[name] - var, expected[name], rtol=1e-4, atol=1e-6)

  def test_batched_and_loop_agree(self):
    tasks = problems.SinusoidTaskSampler(k_support=5, seed=3).sample(3)
    results, initial = [], None
    for batched in (True, False):
      model = built_mlp()
      if initial is None:
        initial = [v.numpy() for v in model.trainable_variables]
      for v, value in zip(model.trainable_variables, initial):  # The same start for both.
        v.assign(value)
      trainer = l2l.MetaTrainer(l2l.MetaSGD(model, 0.05), snt.optimizers.SGD(0.1),
                                meta_trainer.mse, None, batched=batched)
      loss = trainer.meta_step(tasks)
      results.append((loss, [v.numpy() for v in trainer.maml.trainable_variables]))
    self.assertAllClose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)

  def test_evaluate_with_zero_steps_is_the_query_loss(self):
    tasks = problems.SinusoidTaskSampler(k_support=5, k_query=7, seed=4).sample(5)
    model = built_mlp()
    trainer = l2l.MetaTrainer(l2l.MAML(model), snt.optimizers.Adam(1e-3), meta_trainer.mse,
                              None)
    result = trainer.evaluate(tasks, steps=0, chunk_size=2)
    losses = [np.mean((model(tasks.query_x[i]).numpy() - tasks.query_y[i]) ** 2)
              for i in range(5)]
    self.assertAllClose(result["loss"], np.mean(losses), rtol=1e-5)
    self.assertAllClose(result["loss_stderr"], np.std(losses, ddof=1) / np.sqrt(5), rtol=1e-4)

  def test_fit_learns_and_records(self):
    sampler = problems.SinusoidTaskSampler(k_support=10, seed=5)
    held_out = problems.SinusoidTaskSampler(k_support=10, seed=6).sample(50)
    model = snt.nets.MLP([40, 40, 1], name="mlp")
    model(tf.zeros([1, 1]))
    trainer = l2l.MetaTrainer(l2l.MAML(model, 0.01), snt.optimizers.Adam(1e-3),
                              meta_trainer.mse, sampler)
    before = trainer.evaluate(held_out)["loss"]
    calls = []
    history = trainer.fit(300, 10, eval_every=150, eval_tasks=held_out,
                          callback=lambda i, loss: calls.append(i))
    self.assertLen(history.meta_losses, 300)
    self.assertEqual(history.eval_iterations, [150, 300])
    self.assertEqual(calls, list(range(1, 301)))
    # 300 meta-steps lower the held-out post-adaptation loss clearly (4.2 -> ~2 here).
    self.assertLess(history.eval_results[-1]["loss"], 0.75 * before)

  def test_bad_arguments(self):
    trainer = l2l.MetaTrainer(l2l.MAML(built_mlp()), snt.optimizers.Adam(1e-3),
                              meta_trainer.mse, problems.SinusoidTaskSampler())
    with self.assertRaisesRegex(ValueError, "eval_every and eval_tasks go together"):
      trainer.fit(1, 2, eval_every=1)
    with self.assertRaisesRegex(ValueError, "meta_batch_size must be a positive integer"):
      trainer.fit(1, 0)
    with self.assertRaisesRegex(TypeError, "maml must be an l2l.MAML"):
      l2l.MetaTrainer(built_mlp(), snt.optimizers.Adam(1e-3), meta_trainer.mse, None)
    with self.assertRaisesRegex(ValueError, "Reptile needs inner_steps >= 1"):
      l2l.Reptile(built_mlp(), inner_steps=0)


def ls_grad(theta, x, y):
  """Linear least squares mean((x w + b - y)^2), theta = [w; b]: its gradient and Hessian."""
  xt = np.concatenate([x, np.ones([len(x), 1])], axis=1)
  return 2. / len(x) * xt.T @ (xt @ theta - y.ravel()), 2. / len(x) * xt.T @ xt


def numpy_anil_loss(p, tasks, lr, steps):
  """Mean query MSE after `steps` SGD steps on the head (w1, b1) of a tanh MLP, body fixed."""
  total = 0.
  for t in range(len(tasks.support_x)):
    features = lambda x: np.tanh(x @ p["mlp/linear_0/w"] + p["mlp/linear_0/b"])
    f_s, f_q = features(tasks.support_x[t]), features(tasks.query_x[t])
    w, b = p["mlp/linear_1/w"], p["mlp/linear_1/b"]
    for _ in range(steps):
      r = f_s @ w + b - tasks.support_y[t]
      w, b = w - lr * 2. / len(r) * f_s.T @ r, b - lr * 2. / len(r) * r.sum(0)
    total += np.mean((f_q @ w + b - tasks.query_y[t]) ** 2)
  return total / len(tasks.support_x)


def random_tasks(seed, num_tasks, k_support, k_query, d):
  rng = np.random.default_rng(seed)
  return problems.Task(*(rng.normal(size=(num_tasks, k, dim)) for k, dim in
                         ((k_support, d), (k_support, 1), (k_query, d), (k_query, 1))))


def linear_model(theta: np.ndarray) -> snt.Linear:
  """A float64 `snt.Linear(1)` over len(theta) - 1 inputs with weights theta[:-1], bias theta[-1]."""
  model = snt.Linear(1, name="linear")
  model(tf.zeros([1, len(theta) - 1], tf.float64))
  model.w.assign(theta[:-1, None])
  model.b.assign(theta[-1:])
  return model


class Float64ReferenceTest(tf.test.TestCase, parameterized.TestCase):
  """What `MetaTrainer` applies and evaluates, in float64, against NumPy references."""

  @parameterized.product(first_order=(True, False), batched=(True, False))
  def test_meta_step_matches_closed_form(self, first_order, batched):
    # K = 7 support and 4 query points, 3 inner steps, linear least squares. FOMAML's meta-
    # gradient is the query gradient at each task's adapted theta'_t (not at theta, not the
    # support gradient), MAML's is J_t^T times it, J_t = prod_k (I - lr H_s); both task-averaged.
    num_tasks, k, d, lr, steps = 3, 7, 2, 0.1, 3
    tasks = random_tasks(0, num_tasks, k, 4, d)
    theta = np.array([0.5, -0.3, 0.2])
    model = linear_model(theta)
    trainer = l2l.MetaTrainer(l2l.MAML(model, lr, steps, first_order=first_order),
                              snt.optimizers.SGD(1.0), meta_trainer.mse, None, batched=batched)
    loss = trainer.meta_step(tasks)
    expected_grad, expected_loss = np.zeros(d + 1), 0.
    for t in range(num_tasks):
      adapted, jacobian = theta, np.eye(d + 1)
      for _ in range(steps):
        g_s, h_s = ls_grad(adapted, tasks.support_x[t], tasks.support_y[t])
        adapted, jacobian = adapted - lr * g_s, (np.eye(d + 1) - lr * h_s) @ jacobian
      g_q, _ = ls_grad(adapted, tasks.query_x[t], tasks.query_y[t])
      expected_grad += (g_q if first_order else jacobian.T @ g_q) / num_tasks
      expected_loss += np.mean((tasks.query_x[t] @ adapted[:d] + adapted[d]
                                - tasks.query_y[t].ravel()) ** 2) / num_tasks
    step = theta - np.concatenate([model.w.numpy().ravel(), model.b.numpy()])
    self.assertAllClose(loss, expected_loss, rtol=1e-12, atol=0)
    self.assertAllClose(step, expected_grad, rtol=1e-10, atol=0)

  def test_rule_optimizer_steps_the_inner_rule_and_meta_optimizer_the_rest(self):
    # Meta-SGD, one inner step on linear least squares: theta'_t = theta - alpha o g_s,t.
    # Meta-gradients: theta: mean_t (I - diag(alpha) H_s,t)^T g_q,t; alpha: mean_t -g_s,t o
    # g_q,t. theta (the module) takes SGD(0.5)'s step, alpha (the rule) Adam(0.25)'s first step
    # lr g / (|g| + eps): each group by its own optimizer, neither by the other.
    num_tasks, k, d = 3, 6, 2
    tasks = random_tasks(2, num_tasks, k, 4, d)
    theta = np.array([0.4, -0.2, 0.1])
    model = linear_model(theta)
    algorithm = l2l.MetaSGD(model, inner_lr=0.05)
    alpha = np.array([0.05, 0.2, -0.1])
    lrs = algorithm.learning_rates()
    lrs["linear/w"].assign(alpha[:d, None])
    lrs["linear/b"].assign(alpha[d:])
    adam = snt.optimizers.Adam(0.25)  # Exact in float32, as 0.5.
    trainer = l2l.MetaTrainer(algorithm, snt.optimizers.SGD(0.5), meta_trainer.mse, None,
                              rule_optimizer=adam)
    trainer.meta_step(tasks)
    grad_theta, grad_alpha = np.zeros(d + 1), np.zeros(d + 1)
    for t in range(num_tasks):
      g_s, h_s = ls_grad(theta, tasks.support_x[t], tasks.support_y[t])
      g_q, _ = ls_grad(theta - alpha * g_s, tasks.query_x[t], tasks.query_y[t])
      grad_theta += (np.eye(d + 1) - np.diag(alpha) @ h_s).T @ g_q / num_tasks
      grad_alpha += -g_s * g_q / num_tasks
    new_theta = np.concatenate([model.w.numpy().ravel(), model.b.numpy()])
    new_alpha = np.concatenate([lrs["linear/w"].numpy().ravel(), lrs["linear/b"].numpy()])
    self.assertAllClose(theta - new_theta, 0.5 * grad_theta, rtol=1e-10, atol=0)
    self.assertAllClose(alpha - new_alpha,
                        0.25 * grad_alpha / (np.abs(grad_alpha) + adam.epsilon),
                        rtol=1e-10, atol=0)
    self.assertEqual(int(adam.step.numpy()), 1)
    # Adam's slots cover the step sizes only.
    self.assertEqual([m.shape for m in adam.m], [v.shape for v in algorithm.lrs])

  def test_rule_optimizer_needs_inner_rule_variables(self):
    with self.assertRaisesRegex(ValueError, "rule_optimizer is given but MAML has no "
                                "inner-rule variables"):
      l2l.MetaTrainer(l2l.MAML(built_mlp()), snt.optimizers.SGD(0.1), meta_trainer.mse, None,
                      rule_optimizer=snt.optimizers.SGD(0.1))
    with self.assertRaisesRegex(TypeError, "rule_optimizer must be a Sonnet optimizer"):
      l2l.MetaTrainer(l2l.MetaSGD(built_mlp()), snt.optimizers.SGD(0.1), meta_trainer.mse,
                      None, rule_optimizer=0.1)

  @parameterized.parameters(True, False)
  def test_anil_evaluates_the_adapted_head_and_meta_trains_the_body(self, batched):
    lr, steps = 0.3, 2
    tasks = random_tasks(1, 3, 5, 4, 2)
    model = snt.nets.MLP([4, 1], activation=tf.tanh, name="mlp",
                         w_init=snt.initializers.RandomNormal(seed=2))
    model(tf.zeros([1, 2], tf.float64))
    model.submodules[0].b.assign([0.1, -0.2, 0.3, 0.0])
    params = functional.named_parameters(model)
    before = {n: v.numpy() for n, v in params.items()}
    trainer = l2l.MetaTrainer(l2l.ANIL(model, model.submodules[1], lr, steps),
                              snt.optimizers.SGD(1.0), meta_trainer.mse, None, batched=batched)
    # Evaluation scores the query set with the adapted head on the unadapted body.
    self.assertAllClose(trainer.evaluate(tasks, steps)["loss"],
                        numpy_anil_loss(before, tasks, lr, steps), rtol=1e-12, atol=0)
    trainer.meta_step(tasks)
    eps = 1e-6
    for name, value in before.items():
      numeric = np.zeros(value.size)
      for i in range(value.size):
        shifted = []
        for sign in (1., -1.):
          p = dict(before)
          p[name] = (value.ravel() + sign * eps * np.eye(value.size)[i]).reshape(value.shape)
          shifted.append(numpy_anil_loss(p, tasks, lr, steps))
        numeric[i] = (shifted[0] - shifted[1]) / (2 * eps)
      # Every parameter, the body's included, moves by its meta-gradient (central differences).
      self.assertGreater(np.abs(numeric).max(), 1e-3, msg=name)
      self.assertAllClose((value - params[name].numpy()).ravel(), numeric, rtol=1e-6, atol=1e-9,
                          msg=name)


class BatchNormNet(snt.Module):
  """Linear -> BatchNorm -> ReLU -> Linear; BatchNorm in training mode unless told otherwise."""

  def __init__(self, decay=0.5, batch_norm=functional.BatchNorm, activation=tf.nn.relu,
               units=6):
    super().__init__(name="bn_net")
    self.activation = activation
    self.hidden = snt.Linear(units, name="hidden")
    self.bn = batch_norm(create_scale=True, create_offset=True, decay_rate=decay, name="bn")
    self.out = snt.Linear(1, name="out")

  def __call__(self, x, is_training=True):
    return self.out(self.activation(self.bn(self.hidden(x), is_training=is_training)))


def built_bn_net(decay=0.5, dtype=tf.float32, **kwargs):
  net = BatchNormNet(decay, **kwargs)
  net(tf.zeros([2, 3], dtype))  # Builds; also the statistics' first update (counter 1, mean 0, var 0).
  rng = np.random.default_rng(0)  # The same weights for every net built here.
  for v in net.trainable_variables:
    v.assign(rng.normal(size=v.shape))
  return net


def snt_ema(hidden, counter, value, decay):
  """Sonnet's ExponentialMovingAverage.update: (new hidden, new zero-debiased average)."""
  hidden = hidden - (hidden - value) * (1 - decay)
  return hidden, hidden / (1 - decay ** (counter + 1))


def bn_tasks(seed, num_tasks):
  """Regression tasks with 3-d inputs (with 1-d inputs BatchNorm makes the first layer's
  weights scale-invariant, so they would get no gradient at all)."""
  return tf.nest.map_structure(lambda a: a.astype(np.float32),
                               random_tasks(seed, num_tasks, 5, 7, 3))


class BatchNormTest(tf.test.TestCase, parameterized.TestCase):
  """A model with snt.BatchNorm through MAML: buffers threaded explicitly, never assigned
  inside a task, the task mean written back after a meta-step."""

  def test_statistics_after_a_meta_step(self):
    decay, num_tasks = 0.5, 3
    tasks = bn_tasks(7, num_tasks)
    net = built_bn_net(decay)
    buffers = functional.named_buffers(net)
    start = {k: v.numpy() for k, v in buffers.items()}
    w, b = net.hidden.w.numpy(), net.hidden.b.numpy()
    # Zero inner steps: one training-mode forward per task, on its query set, at theta.
    trainer = l2l.MetaTrainer(l2l.MAML(net, 0.1, 0), snt.optimizers.SGD(0.1), meta_trainer.mse,
                              None)
    trainer.meta_step(tasks)
    means, variances = [], []
    for t in range(num_tasks):
      a = tasks.query_x[t] @ w + b  # Pre-BatchNorm activations, [7, 6].
      means.append(snt_ema(start["bn_net/bn/moving_mean/hidden"], 1, a.mean(0), decay))
      variances.append(snt_ema(start["bn_net/bn/moving_variance/hidden"], 1, a.var(0), decay))
    for stat, per_task in (("mean", means), ("variance", variances)):
      self.assertAllClose(buffers[f"bn_net/bn/moving_{stat}/hidden"].numpy().ravel(),
                          np.mean([h for h, _ in per_task], 0).ravel(), rtol=1e-5, atol=1e-6)
      self.assertAllClose(buffers[f"bn_net/bn/moving_{stat}/average"].numpy().ravel(),
                          np.mean([avg for _, avg in per_task], 0).ravel(), rtol=1e-5,
                          atol=1e-6)
      self.assertEqual(int(buffers[f"bn_net/bn/moving_{stat}/counter"].numpy()), 2)
    # The task mean of the variances, not the variance of all query points pooled.
    pooled = np.concatenate([tasks.query_x[t] @ w + b for t in range(num_tasks)]).var(0)
    self.assertGreater(np.abs(np.mean([v for _, v in variances], 0).ravel()
                              - snt_ema(start["bn_net/bn/moving_variance/hidden"], 1, pooled,
                                        decay)[1].ravel()).max(), 1e-3)

  def test_every_forward_of_a_task_updates_its_copy(self):
    tasks = bn_tasks(8, 2)
    net = built_bn_net()
    counter = functional.named_buffers(net)["bn_net/bn/moving_mean/counter"]
    trainer = l2l.MetaTrainer(l2l.MAML(net, 0.1, 2), snt.optimizers.SGD(0.1), meta_trainer.mse,
                              None)
    trainer.evaluate(tasks, steps=3)
    self.assertEqual(int(counter.numpy()), 1)  # Evaluation leaves the module unchanged.
    learner = trainer.maml.clone().adapt_on(meta_trainer.mse, tasks.support_x[0],
                                            tasks.support_y[0])
    self.assertEqual(int(learner.buffers["bn_net/bn/moving_mean/counter"]), 3)
    self.assertEqual(int(counter.numpy()), 1)
    trainer.meta_step(tasks)
    self.assertEqual(int(counter.numpy()), 4)  # Two inner steps and the query forward.
    # A test-mode forward reads the learner's statistics (moved by its forwards), not the
    # module's.
    test_mode = learner(tasks.query_x[0], is_training=False).numpy()
    stats = {k: learner.buffers[f"bn_net/bn/moving_{k}/average"].numpy() for k in
             ("mean", "variance")}
    p = {k: v.numpy() for k, v in learner.params.items()}
    a = tasks.query_x[0] @ p["bn_net/hidden/w"] + p["bn_net/hidden/b"]
    h = (a - stats["mean"]) / np.sqrt(stats["variance"] + 1e-5)
    h = np.maximum(h * p["bn_net/bn/scale"] + p["bn_net/bn/offset"], 0.)
    self.assertAllClose(test_mode, h @ p["bn_net/out/w"] + p["bn_net/out/b"], rtol=1e-4,
                        atol=1e-5)

  def test_second_order_meta_gradient_matches_finite_differences(self):
    # float64, tanh (smooth), 2 inner steps. l2l's BatchNorm: exact second-order MAML.
    # snt.BatchNorm: tf.nn.moments' stop_gradient makes the Hessian terms wrong (and gives the
    # bias before the normalization, which the batch mean cancels, a non-zero meta-gradient).
    tasks = random_tasks(10, 2, 5, 7, 3)
    for batch_norm, exact in ((functional.BatchNorm, True), (snt.BatchNorm, False)):
      net = built_bn_net(dtype=tf.float64, batch_norm=batch_norm, activation=tf.tanh, units=3)
      maml = l2l.MAML(net, 0.1, 2)
      buffers = {k: v.numpy() for k, v in functional.named_buffers(net).items()}

      def meta_loss():
        losses = []
        for t in range(tasks.num_tasks):
          task = tasks.task(t)
          learner = maml.clone().adapt_on(meta_trainer.mse, task.support_x, task.support_y)
          losses.append(meta_trainer.mse(learner(task.query_x), task.query_y))
        return tf.add_n(losses) / len(losses)

      with tf.GradientTape() as tape:
        loss = meta_loss()
      variables = net.trainable_variables
      grads = tape.gradient(loss, variables)
      numeric = finite_differences.central_differences(meta_loss, variables)
      for name, value in buffers.items():  # Learners never assign the module's buffers.
        self.assertAllEqual(functional.named_buffers(net)[name].numpy(), value)
      by_name = {v.name: (g.numpy(), n) for v, g, n in zip(variables, grads, numeric)}
      self.assertLess(np.abs(by_name["bn_net/hidden/b:0"][1]).max(), 1e-8)  # Cancelled.
      if exact:
        for name, (g, n) in by_name.items():
          self.assertAllClose(g, n, rtol=1e-6, atol=1e-8, msg=name)
      else:
        self.assertGreater(np.abs(by_name["bn_net/hidden/b:0"][0]).max(), 1e-3)

  @parameterized.parameters(("MAML",), ("Reptile",))
  def test_batched_and_loop_agree_with_finite_meta_gradients(self, method):
    tasks = bn_tasks(9, 3)
    results = []
    for batched in (True, False):
      net = built_bn_net()
      algorithm = (l2l.Reptile(net, 0.1, 2) if method == "Reptile" else l2l.MAML(net, 0.1, 1))
      before = [v.numpy() for v in net.trainable_variables]
      trainer = l2l.MetaTrainer(algorithm, snt.optimizers.SGD(1.0), meta_trainer.mse, None,
                                batched=batched)
      loss = trainer.meta_step(tasks)
      steps = [b - v.numpy() for b, v in zip(before, net.trainable_variables)]
      results.append((loss, steps, [v.numpy() for v in functional.named_buffers(net).values()]))
      for v, step in zip(net.trainable_variables, steps):
        self.assertTrue(np.all(np.isfinite(step)), msg=v.name)
        if v.name == "bn_net/hidden/b:0":
          # Training-mode BatchNorm subtracts the batch mean: the bias before it has no effect.
          self.assertLess(np.abs(step).max(), 1e-5)
        else:  # BatchNorm's scale and offset included.
          self.assertGreater(np.abs(step).max(), 1e-3, msg=v.name)
    self.assertAllClose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1] + results[0][2], results[1][1] + results[1][2]):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)


class FitReportsTest(absltest.TestCase):
  """Skipped steps as Python ints with warnings, progress with an ETA, the callback's arity,
  diverged tasks counted by `evaluate`."""

  def trainer(self, loss_fn=meta_trainer.mse, sampler=None):
    sampler = sampler or problems.tasks.SinusoidTaskSampler(k_support=5, k_query=5, seed=0)
    return meta_trainer.MetaTrainer(l2l.MAML(built_mlp(), 0.01, 1),
                                    snt.optimizers.Adam(1e-3), loss_fn, sampler)

  def test_nan_task_data_is_counted_and_warned(self):
    sampler = problems.tasks.SinusoidTaskSampler(k_support=5, k_query=5, seed=0)
    sample = sampler.sample
    # Every other meta-batch has a NaN target.
    calls = iter(range(100))
    def nan_every_other(n):
      tasks = sample(n)
      return tasks._replace(query_y=tasks.query_y * np.nan) if next(calls) % 2 else tasks
    sampler.sample = nan_every_other
    trainer = self.trainer(sampler=sampler)
    with self.assertLogs("absl", "WARNING") as logs:
      history = trainer.fit(6, 3, log_every_seconds=None)
    self.assertEqual(history.skipped_iterations, [2, 4, 6])
    self.assertEqual(history.skipped_steps, 3)
    self.assertIsInstance(trainer.skipped_steps, int)
    self.assertEqual(trainer.skipped_steps, 3)
    self.assertLen([m for m in logs.output if "meta-step skipped" in m], 3)

  def test_nan_in_the_loss_is_counted_and_warned(self):
    nan_loss = lambda p, y: meta_trainer.mse(p, y) + tf.constant(np.nan, tf.float32)
    trainer = self.trainer(loss_fn=nan_loss)
    with self.assertLogs("absl", "WARNING") as logs:
      history = trainer.fit(2, 3, log_every_seconds=None)
    self.assertTrue(np.isnan(history.meta_losses).all())
    self.assertEqual(history.skipped_steps, 2)
    self.assertIn("non-finite meta-loss", logs.output[0])

  def test_progress_log_has_an_eta(self):
    trainer = self.trainer()
    with self.assertLogs("absl", "INFO") as logs:
      trainer.fit(3, 2, log_every_seconds=0)
    progress = [m for m in logs.output if "meta-step " in m and "ETA" in m]
    self.assertLen(progress, 3)
    self.assertRegex(progress[0], r"meta-step 1/3 .* steps/s .*elapsed \d+:\d\d:\d\d  ETA "
                     r"\d+:\d\d:\d\d  skipped 0")

  def test_callback_gets_two_or_three_arguments(self):
    trainer = self.trainer()
    two, three, star = [], [], []
    trainer.fit(2, 2, callback=lambda i, loss: two.append((i, loss)), log_every_seconds=None)
    history = trainer.fit(2, 2, callback=lambda i, loss, h: three.append(h),
                          log_every_seconds=None)
    trainer.fit(1, 2, callback=lambda *a: star.append(len(a)), log_every_seconds=None)
    self.assertEqual([i for i, _ in two], [1, 2])
    self.assertTrue(all(isinstance(l, float) for _, l in two))
    self.assertIs(three[-1], history)
    self.assertEqual(star, [3])
    with self.assertRaisesRegex(TypeError, "callback must accept"):
      trainer.fit(1, 2, callback=lambda i: None)

  def test_evaluate_counts_diverged_tasks(self):
    trainer = self.trainer()
    tasks = problems.tasks.SinusoidTaskSampler(k_support=5, k_query=7, seed=3).sample(6)
    bad = tasks._replace(support_y=tasks.support_y.copy())
    bad.support_y[[1, 4]] = np.inf
    with self.assertLogs("absl", "WARNING") as logs:
      result = trainer.evaluate(bad, 1, chunk_size=4)
    self.assertEqual(result["diverged"], 2)
    self.assertIn("2 of 6 tasks diverged", logs.output[0])
    # The mean is over the other four, each evaluated on its own.
    others = [trainer.evaluate(tasks._replace(**{f: getattr(tasks, f)[[t]] for f in
                                                tasks._fields}), 1)["loss"]
              for t in (0, 2, 3, 5)]
    self.assertAlmostEqual(result["loss"], np.mean(others), places=5)
    self.assertEqual(trainer.evaluate(tasks, 1)["diverged"], 0)

  def test_evaluate_counts_finite_blow_ups_as_diverged(self):
    # Inner lr 0.05 over 3 steps: on some tasks the query loss grows by 1e6 and more but stays
    # finite; each task is judged against its own loss before adaptation.
    tasks = problems.tasks.SinusoidTaskSampler(k_support=5, k_query=7, seed=3).sample(8)
    trainer = self.trainer()
    trainer.maml.inner_lr = 0.05
    as_tensors = tf.nest.map_structure(tf.convert_to_tensor, tasks)
    before = trainer._evaluate(as_tensors, 0)[0].numpy()
    after = trainer._evaluate(as_tensors, 3)[0].numpy()
    self.assertTrue(np.all(np.isfinite(after)))  # Nothing non-finite: the old rule saw none.
    exploded = after > meta_trainer.DIVERGED_FACTOR * before
    self.assertBetween(int(exploded.sum()), 1, 7)
    with self.assertLogs("absl", "WARNING") as logs:
      result = trainer.evaluate(tasks, 3, chunk_size=3)
    self.assertEqual(result["diverged"], int(exploded.sum()))
    self.assertIn(f"{int(exploded.sum())} of 8 tasks diverged", logs.output[0])
    self.assertAlmostEqual(result["loss"], float(after[~exploded].mean()), places=4)


class FewShotRunTest(absltest.TestCase):

  def test_digits_run_writes_results_and_resumes(self):
    workdir = tempfile.mkdtemp()
    config = fewshot.FewShotConfig(problem="digits", methods=("MAML", "Pretrained", "Prototypes"),
                                   shots=(1,), num_iterations=4, meta_batch_size=2,
                                   inner_lr=0.5, inner_steps=1, eval_steps=(0, 1),
                                   num_eval_tasks=20, k_query=3, hidden=(16,), workdir=workdir,
                                   checkpoint_every=2, finetune_steps=3)
    first = fewshot.run(config)
    self.assertIn("| MAML |", first["table"])
    self.assertIn("a new linear head fitted with 3 steps", first["table"])
    with open(os.path.join(workdir, "results.json")) as f:
      rows = {r["method"]: r for r in json.load(f)["rows"]}
    self.assertLen(rows, 3)
    for row in rows.values():
      self.assertBetween(row["accuracy@1"], 0., 1.)
    # Untrained on the held-out classes' label order, 0 steps is chance level (1/5) or so.
    self.assertLess(rows["MAML"]["accuracy@0"], 0.5)
    # The baseline's new head is fitted the same way in every column.
    self.assertEqual(rows["Pretrained"]["accuracy@0"], rows["Pretrained"]["accuracy@1"])
    test_tasks = fewshot._samplers(config, 1, False)[1]
    self.assertEqual(rows["Prototypes"]["accuracy@1"],
                     fewshot.prototype_accuracy(test_tasks).mean())
    # A second run with more iterations resumes at iteration 4 and trains 2 more; the training
    # time is the total over both runs. A fake clock (one second per reading) instead of the
    # wall clock: the first run's time is read from its checkpoint and added to.
    config.num_iterations = 6
    ticks = iter(range(1_000_000))
    with mock.patch.object(time, "perf_counter", lambda: float(next(ticks))):
      second = fewshot.run(config)
    self.assertIsNotNone(second["rows"][0]["final_meta_loss"])
    self.assertGreaterEqual(second["rows"][0]["train_seconds"],
                            rows["MAML"]["train_seconds"] + 1.)
    self.assertTrue(os.path.exists(os.path.join(workdir, "MAML_1shot", "ckpt-6.index")))
    # The count of skipped (non-finite) meta-steps is checkpointed with the rest, so a resumed
    # run reports the whole run's.
    self.assertEqual(second["rows"][0]["skipped_steps"], 0)
    names = [n for n, _ in tf.train.list_variables(os.path.join(workdir, "MAML_1shot", "ckpt-6"))]
    self.assertTrue(any(n.startswith("skipped_steps") for n in names), msg=names)

  def test_prototype_accuracy(self):
    # Task 0: query points nearest their own class mean; task 1: labels swapped.
    support_x = np.array([[[0., 0.], [0., 2.], [10., 0.]]] * 2)
    support_y = np.array([[0, 0, 1]] * 2)
    query_x = np.array([[[1., 1.], [9., 0.]]] * 2)  # Means: (0, 1) and (10, 0).
    query_y = np.array([[0, 1], [1, 0]])
    tasks = problems.Task(support_x, support_y, query_x, query_y)
    np.testing.assert_array_equal(fewshot.prototype_accuracy(tasks), [1., 0.])

  def test_run_seeds_tabulates_mean_and_std(self):
    workdir = tempfile.mkdtemp()
    config = fewshot.FewShotConfig(methods=("MAML", "Pretrained"), shots=(5,),
                                   num_iterations=2, meta_batch_size=2, eval_steps=(1,),
                                   num_eval_tasks=10, hidden=(8,), workdir=workdir)
    results = fewshot.run_seeds(config, [0, 3])
    self.assertTrue(os.path.exists(os.path.join(workdir, "seed_3", "results.json")))
    with open(os.path.join(workdir, "results_seeds.json")) as f:
      self.assertEqual(json.load(f)["seeds"], [0, 3])
    losses = [next(r for r in run["rows"] if r["method"] == "MAML")["loss@1"]
              for run in results["runs"]]
    self.assertNotEqual(losses[0], losses[1])  # Different seeds, different tasks and weights.
    line = next(l for l in results["table"].splitlines() if l.startswith("| MAML |"))
    self.assertIn(f"{np.mean(losses):.3f} ± {np.std(losses, ddof=1):.3f}", line)
    with self.assertRaisesRegex(ValueError, "seeds must be distinct"):
      fewshot.run_seeds(config, [1, 1])

  def test_bad_config(self):
    with self.assertRaisesRegex(ValueError, "unknown methods"):
      fewshot.FewShotConfig(methods=("MAMLX",)).validate()
    with self.assertRaisesRegex(ValueError, "unknown problem"):
      fewshot.FewShotConfig(problem="omniglot").validate()
    with self.assertRaisesRegex(ValueError, "Prototypes baseline is for classification"):
      fewshot.FewShotConfig(methods=("Prototypes",)).validate()
    with self.assertRaisesRegex(ValueError, "split must be one of"):
      fewshot.FewShotConfig(problem="digits", split="train").validate()
    self.assertEqual(fewshot.FewShotConfig().method_names(),
                     tuple(fewshot.METHODS) + ("Pretrained",))
    self.assertIn("Prototypes", fewshot.FewShotConfig(problem="digits").method_names())

  def test_script_rejects_bad_flags(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "maml.py", "--methods=Nope"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("unknown methods", out.stderr)
    self.assertNotIn("Traceback", out.stderr)


if __name__ == "__main__":
  absltest.main()
