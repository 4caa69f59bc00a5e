"""MetaTrainer (cross-checked against maml_step / reptile_step), fewshot.run and maml.py."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
import problems
from l2l import fewshot
from l2l import functional
from l2l import meta_trainer

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

  @parameterized.parameters(("MAML", False), ("FOMAML", True))
  def test_meta_step_applies_the_maml_step_gradient(self, _, first_order):
    tasks = problems.SinusoidTaskSampler(k_support=5, k_query=5, seed=1).sample(4)
    model = built_mlp()
    before = functional.values(functional.named_parameters(model))
    inner, outer = functional_costs(model)
    step_fn = l2l.fomaml_step if first_order else l2l.maml_step
    _, expected = step_fn(tf.nest.map_structure(tf.constant, tasks), inner, outer, before, 2,
                          0.05)
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
                                   0.05)
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
                          callback=lambda i, loss, h: calls.append(i))
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


class Float64ReferenceTest(tf.test.TestCase, parameterized.TestCase):
  """What `MetaTrainer` applies and evaluates, in float64, against NumPy references."""

  @parameterized.product(first_order=(True, False), batched=(True, False))
  def test_meta_step_matches_closed_form(self, first_order, batched):
    # K = 7 support and 4 query points, 3 inner steps, linear least squares. FOMAML's meta-
    # gradient is the query gradient at each task's adapted theta'_t (not at theta, not the
    # support gradient), MAML's is J_t^T times it, J_t = prod_k (I - lr H_s); both task-averaged.
    num_tasks, k, d, lr, steps = 3, 7, 2, 0.1, 3
    tasks = random_tasks(0, num_tasks, k, 4, d)
    model = snt.Linear(1, name="linear")
    model(tf.zeros([1, d], tf.float64))
    theta = np.array([0.5, -0.3, 0.2])
    model.w.assign(theta[:d, None])
    model.b.assign(theta[d:])
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


class FewShotRunTest(absltest.TestCase):

  def test_digits_run_writes_results_and_resumes(self):
    workdir = tempfile.mkdtemp()
    config = fewshot.FewShotConfig(problem="digits", methods=("MAML", "Pretrained"), shots=(1,),
                                   num_iterations=4, meta_batch_size=2, inner_lr=0.5,
                                   inner_steps=1, eval_steps=(0, 1), num_eval_tasks=20,
                                   k_query=3, hidden=(16,), workdir=workdir, checkpoint_every=2)
    first = fewshot.run(config)
    self.assertIn("| MAML |", first["table"])
    with open(os.path.join(workdir, "results.json")) as f:
      rows = json.load(f)["rows"]
    self.assertLen(rows, 2)
    for row in rows:
      self.assertBetween(row["accuracy@1"], 0., 1.)
    # Untrained on the held-out classes' label order, 0 steps is chance level (1/5) or so.
    self.assertLess(rows[0]["accuracy@0"], 0.5)
    # A second run with more iterations resumes at iteration 4 and trains 2 more.
    config.num_iterations = 6
    second = fewshot.run(config)
    self.assertEqual(second["rows"][0]["final_meta_loss"] is not None, True)
    self.assertTrue(os.path.exists(os.path.join(workdir, "MAML_1shot", "ckpt-6.index")))

  def test_bad_config(self):
    with self.assertRaisesRegex(ValueError, "unknown methods"):
      fewshot.FewShotConfig(methods=("MAMLX",)).validate()
    with self.assertRaisesRegex(ValueError, "unknown problem"):
      fewshot.FewShotConfig(problem="omniglot").validate()

  def test_script_rejects_bad_flags(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "maml.py", "--methods=Nope"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("unknown methods", out.stderr)
    self.assertNotIn("Traceback", out.stderr)


if __name__ == "__main__":
  absltest.main()
