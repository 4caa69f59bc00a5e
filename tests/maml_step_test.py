"""maml_step / fomaml_step / reptile_step against NumPy closed forms on linear least squares."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l

NUM_TASKS, N, D = 4, 5, 3


def make_batch(seed=0):
  rng = np.random.default_rng(seed)
  return {"xs": rng.normal(size=(NUM_TASKS, N, D)), "ys": rng.normal(size=(NUM_TASKS, N, 1)),
          "xq": rng.normal(size=(NUM_TASKS, N, D)), "yq": rng.normal(size=(NUM_TASKS, N, 1))}


def cost(x, y, v):
  return tf.reduce_mean(tf.square(x @ v["w"] + v["b"] - y))


inner_cost = lambda b, v: cost(b["xs"], b["ys"], v)
outer_cost = lambda b, v: cost(b["xq"], b["yq"], v)


def variables():
  return {"w": tf.constant([[0.5], [-0.3], [0.2]], tf.float64),
          "b": tf.constant([0.1], tf.float64)}


def theta0():
  return np.array([0.5, -0.3, 0.2, 0.1])


def ls(theta, x, y):
  xt = np.concatenate([x, np.ones([len(x), 1])], axis=1)
  r = xt @ theta - y.ravel()
  return np.mean(r ** 2), 2. / len(x) * xt.T @ r, 2. / len(x) * xt.T @ xt


def as_theta(grads):
  return np.concatenate([grads["w"].numpy().ravel(), grads["b"].numpy()])


class MamlStepTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((l2l.maml_step, False), (l2l.fomaml_step, True))
  def test_two_steps_match_closed_form(self, step_fn, first_order):
    batch, lr = make_batch(), 0.1
    cost_value, grads = step_fn(tf.nest.map_structure(tf.constant, batch), inner_cost, outer_cost,
                                variables(), 2, lr)
    expected_cost, expected_grad = 0., np.zeros(4)
    for t in range(NUM_TASKS):
      theta, jac = theta0(), np.eye(4)
      for _ in range(2):
        _, g, h = ls(theta, batch["xs"][t], batch["ys"][t])
        jac = (np.eye(4) - lr * h) @ jac
        theta = theta - lr * g
      c, g_q, _ = ls(theta, batch["xq"][t], batch["yq"][t])
      expected_cost += c / NUM_TASKS
      expected_grad += (g_q if first_order else jac.T @ g_q) / NUM_TASKS
    self.assertAllClose(cost_value, expected_cost, rtol=1e-10, atol=0)
    self.assertAllClose(as_theta(grads), expected_grad, rtol=1e-10, atol=0)

  @parameterized.parameters(l2l.maml_step, l2l.fomaml_step)
  def test_batched_and_loop_agree(self, step_fn):
    batch = tf.nest.map_structure(tf.constant, make_batch(1))
    kwargs = dict(return_inner_v="all", average_across_steps=True, inner_v=["w"])
    batched = step_fn(batch, inner_cost, outer_cost, variables(), 3, 0.05, batched=True, **kwargs)
    looped = step_fn(batch, inner_cost, outer_cost, variables(), 3, 0.05, batched=False, **kwargs)
    self.assertAllClose(batched[0], looped[0], rtol=1e-12)
    for k in ("w", "b"):
      self.assertAllClose(batched[1][k], looped[1][k], rtol=1e-10)
      self.assertAllClose(batched[2][k], looped[2][k], rtol=1e-12)
    self.assertEqual(batched[2]["w"].shape, [NUM_TASKS, D, 1])

  def test_zero_steps_is_the_plain_gradient(self):
    batch = make_batch()
    cost_value, grads = l2l.maml_step(tf.nest.map_structure(tf.constant, batch), inner_cost,
                                      outer_cost, variables(), 0, 0.1)
    expected = [ls(theta0(), batch["xq"][t], batch["yq"][t]) for t in range(NUM_TASKS)]
    self.assertAllClose(cost_value, np.mean([e[0] for e in expected]), rtol=1e-12)
    self.assertAllClose(as_theta(grads), np.mean([e[1] for e in expected], axis=0), rtol=1e-12)

  def test_average_across_steps(self):
    batch, lr = make_batch(), 0.1
    cost_value, _ = l2l.maml_step(tf.nest.map_structure(tf.constant, batch), inner_cost,
                                  outer_cost, variables(), 1, lr, average_across_steps=True)
    expected = 0.
    for t in range(NUM_TASKS):
      c0, _, _ = ls(theta0(), batch["xq"][t], batch["yq"][t])
      theta1 = theta0() - lr * ls(theta0(), batch["xs"][t], batch["ys"][t])[1]
      c1, _, _ = ls(theta1, batch["xq"][t], batch["yq"][t])
      expected += (c0 + c1) / 2 / NUM_TASKS
    self.assertAllClose(cost_value, expected, rtol=1e-12)

  def test_inner_and_outer_subsets(self):
    batch = tf.nest.map_structure(tf.constant, make_batch())
    _, grads, first = l2l.maml_step(batch, inner_cost, outer_cost, variables(), 2, 0.1,
                                    inner_v=["w"], keep_inner_v=False, outer_v=["w"],
                                    keep_outer_v=False, return_inner_v="first")
    self.assertEqual(list(grads), ["b"])
    self.assertAllEqual(first["w"], variables()["w"][None])  # w is not adapted.
    self.assertNotAllClose(first["b"], variables()["b"][None])
    self.assertEqual(first["b"].shape, [1, 1])

  def test_learnable_learning_rate_with_stop_gradients_false(self):
    batch = make_batch()
    lr = tf.Variable(0.1, dtype=tf.float64)
    with tf.GradientTape() as tape:
      cost_value, _ = l2l.maml_step(tf.nest.map_structure(tf.constant, batch), inner_cost,
                                    outer_cost, variables(), 1, lr, stop_gradients=False)
    expected = 0.
    for t in range(NUM_TASKS):
      _, g_s, _ = ls(theta0(), batch["xs"][t], batch["ys"][t])
      _, g_q, _ = ls(theta0() - 0.1 * g_s, batch["xq"][t], batch["yq"][t])
      expected += -g_s @ g_q / NUM_TASKS
    self.assertAllClose(tape.gradient(cost_value, lr), expected, rtol=1e-10)

  def test_tf_function_traces_once(self):
    traces = []

    @tf.function
    def step(batch, v):
      traces.append(1)
      return l2l.maml_step(batch, inner_cost, outer_cost, v, 1, 0.1)

    for seed in (0, 1):
      step(tf.nest.map_structure(tf.constant, make_batch(seed)), variables())
    self.assertLen(traces, 1)


class ReptileStepTest(tf.test.TestCase):

  def test_matches_sgd_trajectories(self):
    batch, lr, steps = make_batch(), 0.05, 3
    tf_batch = {"xs": tf.constant(batch["xs"]), "ys": tf.constant(batch["ys"])}
    cost_value, grads = l2l.reptile_step(tf_batch, inner_cost, variables(), steps, lr)
    finals, costs = [], []
    for t in range(NUM_TASKS):
      theta = theta0()
      for _ in range(steps):
        c, g, _ = ls(theta, batch["xs"][t], batch["ys"][t])
        costs.append(c / (steps + 1))
        theta = theta - lr * g
      costs.append(ls(theta, batch["xs"][t], batch["ys"][t])[0] / (steps + 1))
      finals.append(theta)
    expected = (theta0() - np.mean(finals, axis=0)) / (lr * steps)
    self.assertAllClose(as_theta(grads), expected, rtol=1e-10)
    self.assertAllClose(cost_value, np.sum(costs) / NUM_TASKS, rtol=1e-10)

  def test_one_step_is_the_gradient(self):
    batch = {"xs": tf.constant(make_batch()["xs"]), "ys": tf.constant(make_batch()["ys"])}
    _, reptile = l2l.reptile_step(batch, inner_cost, variables(), 1, 0.3, batched=False)
    _, plain = l2l.maml_step(batch, inner_cost, None, variables(), 0, 0.3)
    self.assertAllClose(as_theta(reptile), as_theta(plain), rtol=1e-10)


class BadInputTest(tf.test.TestCase):

  def test_errors(self):
    batch = tf.nest.map_structure(tf.constant, make_batch())
    with self.assertRaisesRegex(ValueError, "inner_grad_steps must be a non-negative integer"):
      l2l.maml_step(batch, inner_cost, outer_cost, variables(), -1, 0.1)
    with self.assertRaisesRegex(ValueError, r"inner_v names \['z'\], which are not in variables"):
      l2l.maml_step(batch, inner_cost, outer_cost, variables(), 1, 0.1, inner_v=["z"])
    with self.assertRaisesRegex(ValueError, "same, known leading \\(task\\) dimension"):
      l2l.maml_step({**batch, "yq": batch["yq"][:2]}, inner_cost, outer_cost, variables(), 1, .1)
    with self.assertRaisesRegex(ValueError, "num_tasks=3 but batch holds 4 tasks"):
      l2l.maml_step(batch, inner_cost, outer_cost, variables(), 1, 0.1, num_tasks=3)
    with self.assertRaisesRegex(ValueError, "return_inner_v must be one of"):
      l2l.maml_step(batch, inner_cost, outer_cost, variables(), 1, 0.1, return_inner_v="last")
    with self.assertRaisesRegex(ValueError, "inner_learning_rate must be a positive number"):
      l2l.reptile_step(batch, inner_cost, variables(), 1, 0.)


if __name__ == "__main__":
  absltest.main()
