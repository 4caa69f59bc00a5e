"""maml_step / fomaml_step / reptile_step: ivy's semantics against ivy 0.0.9.16's outputs, and
l2l's per_task form against NumPy closed forms on linear least squares."""

import json
import os

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
                                variables(), 2, lr, per_task=True)
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
    kwargs = dict(return_inner_v="all", average_across_steps=True, inner_v=["w"], per_task=True)
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
                                      outer_cost, variables(), 0, 0.1, per_task=True)
    expected = [ls(theta0(), batch["xq"][t], batch["yq"][t]) for t in range(NUM_TASKS)]
    self.assertAllClose(cost_value, np.mean([e[0] for e in expected]), rtol=1e-12)
    self.assertAllClose(as_theta(grads), np.mean([e[1] for e in expected], axis=0), rtol=1e-12)

  def test_average_across_steps(self):
    batch, lr = make_batch(), 0.1
    cost_value, _ = l2l.maml_step(tf.nest.map_structure(tf.constant, batch), inner_cost,
                                  outer_cost, variables(), 1, lr, average_across_steps=True,
                                  per_task=True)
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
                                    keep_outer_v=False, return_inner_v="first", per_task=True)
    self.assertEqual(list(grads), ["b"])
    self.assertAllEqual(first["w"], variables()["w"][None])  # w is not adapted.
    self.assertNotAllClose(first["b"], variables()["b"][None])
    self.assertEqual(first["b"].shape, [1, 1])

  def test_learnable_learning_rate_with_stop_gradients_false(self):
    batch = make_batch()
    lr = tf.Variable(0.1, dtype=tf.float64)
    with tf.GradientTape() as tape:
      cost_value, _ = l2l.maml_step(tf.nest.map_structure(tf.constant, batch), inner_cost,
                                    outer_cost, variables(), 1, lr, stop_gradients=False,
                                    per_task=True)
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
      return l2l.maml_step(batch, inner_cost, outer_cost, v, 1, 0.1)[:2]

    for seed in (0, 1):
      step(tf.nest.map_structure(tf.constant, make_batch(seed)), variables())
    self.assertLen(traces, 1)


class ReptileStepTest(tf.test.TestCase):

  def test_matches_sgd_trajectories(self):
    batch, lr, steps = make_batch(), 0.05, 3
    tf_batch = {"xs": tf.constant(batch["xs"]), "ys": tf.constant(batch["ys"])}
    cost_value, grads = l2l.reptile_step(tf_batch, inner_cost, variables(), steps, lr,
                                         per_task=True)
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
    _, reptile = l2l.reptile_step(batch, inner_cost, variables(), 1, 0.3, batched=False,
                                  per_task=True)
    _, plain = l2l.maml_step(batch, inner_cost, None, variables(), 0, 0.3, per_task=True)
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
      l2l.maml_step(batch, inner_cost, outer_cost, variables(), 1, 0.1, num_tasks=3,
                    per_task=True)
    with self.assertRaisesRegex(ValueError, r"num_tasks=5 but the batch's tensors hold \['4'\]"):
      l2l.maml_step(batch, inner_cost, outer_cost, variables(), 1, 0.1, num_tasks=5,
                    batched=False)
    with self.assertRaisesRegex(ValueError, "num_tasks must be a positive integer or None"):
      l2l.fomaml_step(batch, inner_cost, outer_cost, variables(), 1, 0.1, num_tasks=0)
    with self.assertRaisesRegex(TypeError, "outer_cost_fn must be callable"):
      l2l.fomaml_step(batch, inner_cost, "mse", variables(), 1, 0.1)
    with self.assertRaisesRegex(TypeError, "inner_v must be a variable name or a list of names"):
      l2l.maml_step(batch, inner_cost, outer_cost, variables(), 1, 0.1, inner_v=[["w"]])
    with self.assertRaisesRegex(ValueError, "return_inner_v must be one of"):
      l2l.maml_step(batch, inner_cost, outer_cost, variables(), 1, 0.1, return_inner_v="last")
    with self.assertRaisesRegex(ValueError, "inner_learning_rate must be a positive number"):
      l2l.reptile_step(batch, inner_cost, variables(), 1, 0.)


REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ivy_reference",
                         "reference.json")


def grid_cost(batch, v):
  """TensorFlow twin of tests/ivy_reference/make_reference.py's `cost`."""
  xw = tf.reduce_sum(batch["x"] * v["w"][:, None, :], axis=-1)
  pred = v["s"][0] * tf.tanh(xw + v["b"]) + v["s"][1] * xw
  return tf.reduce_mean(tf.square(pred - batch["y"]))


def grid_outer_cost(batch, v):
  return grid_cost(batch, v) + 0.1 * tf.reduce_mean(tf.square(v["w"]))


GRID_SUBSETS = [(None, True, None, True), (["w"], True, None, True), (["w"], False, None, True),
                (None, True, ["w", "s"], True), (None, True, ["b"], False),
                (["b", "s"], True, ["w", "b"], False)]


def run_grid_case(case):
  """l2l on one case of the ivy reference grid."""
  half = len(case["batch"]["x"][0]) // 2
  batch = {k: tf.constant(a, tf.float64) for k, a in case["batch"].items()}
  variables = {k: tf.constant(a, tf.float64) for k, a in case["variables"].items()}
  kwargs = dict(batched=case["batched"], return_inner_v=case["return_inner_v"],
                stop_gradients=case["stop_gradients"],
                num_tasks=case["num_tasks"] if case["pass_num_tasks"] else None)
  if case["method"] == "reptile":
    return l2l.reptile_step(batch, grid_cost, variables, case["steps"], case["lr"], **kwargs)
  inner_v, keep_inner_v, outer_v, keep_outer_v = GRID_SUBSETS[case["subset"]]
  kwargs.update(average_across_steps=case["average_across_steps"], inner_v=inner_v,
                keep_inner_v=keep_inner_v, outer_v=outer_v, keep_outer_v=keep_outer_v)
  if case["batch_fns"]:
    kwargs.update(inner_batch_fn=lambda b: {k: t[:, :half] for k, t in b.items()},
                  outer_batch_fn=lambda b: {k: t[:, half:] for k, t in b.items()})
  outer = {"given": grid_cost, "none": None, "other": grid_outer_cost}[case["outer_cost"]]
  step = l2l.maml_step if case["method"] == "maml" else l2l.fomaml_step
  return step(batch, grid_cost, outer, variables, case["steps"], case["lr"], **kwargs)


def grid_differences(case, result):
  """`{output: largest relative difference}` of l2l's `result` against ivy's stored outputs."""
  rel = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))
                                  / (np.abs(np.asarray(b)) + 1e-12), initial=0.))
  if len(result) != case["length"]:
    raise AssertionError(f"l2l returned {len(result)} values, ivy {case['length']}")
  out = {"cost": rel(result[0], case["cost"])}
  if sorted(result[1]) != sorted(case["grads"]):
    raise AssertionError(f"grads for {sorted(result[1])}, ivy {sorted(case['grads'])}")
  for k, g in result[1].items():
    if list(np.shape(g)) != list(np.shape(case["grads"][k])):
      raise AssertionError(f"grads[{k}] of shape {np.shape(g)}, ivy {np.shape(case['grads'][k])}")
    out[f"grads/{k}"] = rel(g, case["grads"][k])
  if len(result) == 3:
    expected = case.get("inner_v")
    if expected is None:
      if result[2] != ():
        raise AssertionError(f"rest should be (), got {result[2]!r}")
    else:
      for k, a in expected.items():
        if list(np.shape(result[2][k])) != list(np.shape(a)):
          raise AssertionError(f"inner_v[{k}] shape {np.shape(result[2][k])}, ivy {np.shape(a)}")
        out[f"inner_v/{k}"] = rel(result[2][k], a)
  return out


class IvyAgreementTest(tf.test.TestCase):
  """l2l against ivy 0.0.9.16 (torch backend); tests/ivy_reference/make_reference.py."""

  def test_ivy_documentation_example(self):
    # ivy's maml_step docstring prints (1.40069818, {latent: [-1.13723135]}, ()).
    batch = {"x": tf.constant([1., 2.])}
    variables = {"latent": tf.Variable([[1.], [1.]])}
    cost_fn = lambda b, v: tf.reduce_mean(b["x"]) / tf.reduce_mean(v["latent"])
    cost, grads, rest = l2l.maml_step(batch, cost_fn, cost_fn, variables, 5, 0.01)
    self.assertAllClose(cost, 1.40069818, rtol=1e-6, atol=0)
    self.assertAllClose(grads["latent"], [-1.13723135], rtol=1e-6, atol=0)
    self.assertEqual(rest, ())
    # ivy's reptile_step docstring: 1.4485182 and [-139.9569855].
    cost, grads = l2l.reptile_step(batch, cost_fn, variables, 5, 0.01, num_tasks=2)
    self.assertAllClose(cost, 1.4485182, rtol=1e-6, atol=0)
    self.assertAllClose(grads["latent"], [-139.9569855], rtol=1e-6, atol=0)
    # Its second example: a batch of 3, batched=False, num_tasks=2, return_inner_v="first".
    cost, grads, firsts = l2l.reptile_step(
        {"x": tf.constant([1., 2., 3.])}, cost_fn, {"latent": tf.Variable([1., 2.])}, 4, 0.025,
        batched=False, num_tasks=2, return_inner_v="first")
    self.assertAllClose(cost, 0.9880483, rtol=1e-6, atol=0)
    self.assertAllClose(grads["latent"], [-13.01766968, -13.01766968], rtol=1e-6, atol=0)
    self.assertAllClose(firsts["latent"], [[1.02197957, 2.02197981]], rtol=1e-6, atol=0)

  def test_grid_against_ivy(self):
    with open(REFERENCE) as f:
      reference = json.load(f)
    self.assertEqual(reference["ivy"], "0.0.9.16")
    self.assertLen(reference["cases"], 168)
    worst = 0.
    for case in reference["cases"]:
      differences = grid_differences(case, run_grid_case(case))
      worst = max(worst, max(differences.values()))
      for output, difference in differences.items():
        self.assertLess(difference, 1e-9, f"{output} in {case}")  # float64 on both sides.
    self.assertLess(worst, 1e-9)


if __name__ == "__main__":
  absltest.main()
