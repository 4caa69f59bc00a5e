"""`MetaOptimizer`, `MetaLoss` and `MetaMinimize`: assignments, truncated unrolls, training,
save / load, and errors."""

import json
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import l2l
import problems

# float32 engine against float64 NumPy over a few steps: float32 rounding only.
NUMPY_TOL = dict(rtol=1e-5, atol=1e-6)
# The same float32 ops in a different order (one long unroll vs two short ones, or one graph
# vs another): a few ulps.
SAME_OPS_TOL = dict(rtol=1e-6, atol=1e-7)


def sgd(learning_rate):
  return {"net": "Sgd", "net_options": {"learning_rate": learning_rate}}


def adam(learning_rate):
  return {"net": "Adam", "net_options": {"learning_rate": learning_rate}}


def lstm(layers=(3,), seed=None):
  return {"net": "CoordinateWiseDeepLSTM",
          "net_options": {"layers": list(layers), "preprocess_name": "LogAndSign",
                          "preprocess_options": {"k": 5}, "scale": 0.1, "seed": seed}}


def small_quadratic(seed):
  return problems.quadratic(batch_size=4, num_dims=3, seed=seed)


def numpy_adam(grad_fn, x, learning_rate, steps, beta1=0.9, beta2=0.999, epsilon=1e-8):
  """Adam (Kingma & Ba 2015, algorithm 1) from x; returns x_0..x_steps."""
  m = v = 0.
  xs = [x]
  for t in range(1, steps + 1):
    g = grad_fn(xs[-1])
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    xs.append(xs[-1] - learning_rate * m_hat / (np.sqrt(v_hat) + epsilon))
  return xs


class NetAssignmentsTest(tf.test.TestCase, parameterized.TestCase):

  def test_each_group_is_updated_by_its_own_net(self):
    """f = x_0^2 + x_1^2 from (1, 1): SGD gives x_i,t = (1 - 2 lr_i)^t."""
    opt = l2l.MetaOptimizer(slow=sgd(0.1), fast=sgd(0.3))
    meta_loss = opt.meta_loss(problems.simple_multi_optimizer(num_dims=2), 5,
                              net_assignments=[("slow", ["x_0"]), ("fast", ["x_1"])])
    self.assertEqual(meta_loss.assignments, [("slow", ["x_0"]), ("fast", ["x_1"])])
    meta_loss.run()
    t = np.arange(6)
    x0, x1 = 0.8 ** t, 0.4 ** t
    self.assertAllClose(meta_loss.params["x_0"], x0[-1], **NUMPY_TOL)
    self.assertAllClose(meta_loss.params["x_1"], x1[-1], **NUMPY_TOL)
    self.assertAllClose(meta_loss.losses, x0 ** 2 + x1 ** 2, **NUMPY_TOL)
    self.assertAllClose(meta_loss.last_meta_loss, np.sum((x0 ** 2 + x1 ** 2)[1:]), **NUMPY_TOL)

  def test_adam_and_sgd_groups(self):
    opt = l2l.MetaOptimizer(sgd=sgd(0.1), adam=adam(0.2))
    meta_loss = opt.meta_loss(problems.simple_multi_optimizer(num_dims=3), 6,
                              net_assignments=[("adam", ["x_1"]), ("sgd", ["x_0", "x_2"])])
    meta_loss.run()
    sgd_x = 0.8 ** 6
    adam_x = numpy_adam(lambda x: 2 * x, 1.0, 0.2, 6)[-1]
    self.assertAllClose([meta_loss.params[n] for n in ("x_0", "x_1", "x_2")],
                        [sgd_x, adam_x, sgd_x], **NUMPY_TOL)

  def test_a_single_net_updates_everything_by_default(self):
    opt = l2l.MetaOptimizer(only=sgd(0.1))
    meta_loss = opt.meta_loss(problems.simple_multi_optimizer(num_dims=2), 3)
    self.assertEqual(meta_loss.assignments, [("only", ["x_0", "x_1"])])
    meta_loss.run()
    self.assertAllClose(list(meta_loss.params.values()), [0.8 ** 3] * 2, **NUMPY_TOL)

  @parameterized.named_parameters(
      ("unknown_net", [("a", ["x_0"]), ("c", ["x_1"])],
       r"unknown net 'c'; nets are \['a', 'b'\]"),
      ("unknown_variable", [("a", ["x_0"]), ("b", ["x_1", "x_9"])],
       r"unknown variable 'x_9' \(net 'b'\); the problem's variables are \['x_0', 'x_1'\]"),
      ("repeated_variable", [("a", ["x_0", "x_1"]), ("b", ["x_0"])],
       "assigns variable 'x_0' twice \\(nets 'a' and 'b'\\)"),
      ("repeated_in_one_net", [("a", ["x_0", "x_0"]), ("b", ["x_1"])],
       "assigns variable 'x_0' twice"),
      ("missing_variable", [("a", ["x_0"])], r"leaves variables \['x_1'\] without a net"),
      ("no_assignments", None, r"net_assignments is required .*\['a', 'b'\]"),
      ("not_a_pair", [("a", "x_0"), ("b", ["x_1"])],
       r"entries must be \(netid, \[variable names\]\), got \('a', 'x_0'\)"),
  )
  def test_bad_assignments(self, assignments, message):
    opt = l2l.MetaOptimizer(a=sgd(0.1), b=sgd(0.2))
    with self.assertRaisesRegex(ValueError, message):
      opt.meta_loss(problems.simple_multi_optimizer(num_dims=2), 3, net_assignments=assignments)

  def test_resolve_assignments_gives_indices(self):
    self.assertEqual(
        l2l.resolve_assignments(["a", "b"], ["u", "v", "w"], [("b", ["w", "u"]), ("a", ["v"])]),
        [("b", [2, 0]), ("a", [1])])


class MetaLossTest(tf.test.TestCase):

  def test_truncated_unrolls_continue_the_trajectory(self):
    """Two unrolls of 5 steps equal one of 10: params and Adam's state carry over."""
    opt = l2l.MetaOptimizer(adam=adam(0.05))
    short = opt.meta_loss(small_quadratic(seed=3), 5)
    long = opt.meta_loss(small_quadratic(seed=3), 10)
    short.run()
    first_losses = short.losses.numpy()
    self.assertEqual(short.num_unrolls, 1)
    short.run()
    self.assertEqual(short.num_unrolls, 2)
    long.run()
    self.assertAllClose(np.concatenate([first_losses, short.losses.numpy()[1:]]), long.losses,
                        **SAME_OPS_TOL)
    self.assertAllClose(short.params["x"], long.params["x"], **SAME_OPS_TOL)
    # This needs Adam's step counter and moments to carry over: a restarted Adam's first update
    # is -lr * sign(g), far from its sixth.

  def test_sgd_truncated_unrolls_match_numpy(self):
    make_loss = small_quadratic(seed=4)
    meta_loss = l2l.MetaOptimizer(sgd=sgd(0.05)).meta_loss(make_loss, 5)
    # The first instance of the same seed, drawn independently.
    (x,), (w, y) = l2l.Problem(small_quadratic(seed=4)).initial_values()
    x, w, y = [t.numpy().astype(np.float64) for t in (x, w, y)]

    def loss_and_grad(x):
      residual = np.einsum("bij,bj->bi", w, x) - y
      return (np.mean(np.sum(residual ** 2, axis=1)),
              2 * np.einsum("bij,bi->bj", w, residual) / len(x))
    losses = []
    for _ in range(10):
      loss, grad = loss_and_grad(x)
      losses.append(loss)
      x = x - 0.05 * grad
    losses.append(loss_and_grad(x)[0])
    meta_loss.run()
    self.assertAllClose(meta_loss.losses, losses[:6], **NUMPY_TOL)
    meta_loss.run()
    self.assertAllClose(meta_loss.losses, losses[5:], **NUMPY_TOL)
    self.assertAllClose(meta_loss.params["x"], x, **NUMPY_TOL)

  def test_reset_draws_a_new_instance_and_fresh_states(self):
    opt = l2l.MetaOptimizer(adam=adam(0.05))
    meta_loss = opt.meta_loss(small_quadratic(seed=5), 5)
    initial_x = meta_loss.params["x"].numpy()
    meta_loss.run()
    first_losses = meta_loss.losses.numpy()
    meta_loss.run()
    meta_loss.reset()
    self.assertEqual(meta_loss.num_unrolls, 0)
    # The second instance of the seed's stream, not the first one nor the continued one.
    second_instance = l2l.Problem(small_quadratic(seed=5))
    second_instance.initial_values()
    (expected_x,), _ = second_instance.initial_values()
    self.assertAllEqual(meta_loss.params["x"], expected_x)
    self.assertNotAllClose(meta_loss.params["x"], initial_x)
    meta_loss.run()
    self.assertEqual(meta_loss.num_unrolls, 1)
    self.assertNotAllClose(meta_loss.losses[0], first_losses[0])
    # Adam restarted: the same instance run by a fresh MetaLoss gives the same trajectory.
    reference = opt.meta_loss(small_quadratic(seed=5), 5)
    reference.reset()
    reference.run()
    self.assertAllClose(meta_loss.losses, reference.losses, **SAME_OPS_TOL)

  def test_meta_loss_is_differentiable_in_the_nets(self):
    opt = l2l.MetaOptimizer(cw=lstm(seed=0))
    meta_loss = opt.meta_loss(small_quadratic(seed=0), 3)
    with tf.GradientTape() as tape:
      value = meta_loss()
    grads = tape.gradient(value, opt.trainable_variables)
    self.assertLen(grads, len(opt.trainable_variables))
    self.assertGreater(len(grads), 0)
    for variable, grad in zip(opt.trainable_variables, grads):
      self.assertIsNotNone(grad, msg=variable.name)
      self.assertTrue(np.all(np.isfinite(grad)), msg=variable.name)
    self.assertGreater(sum(float(tf.reduce_sum(tf.abs(g))) for g in grads), 0.)
    self.assertAllClose(value, meta_loss.last_meta_loss)

  def test_run_does_not_retrace(self):
    meta_loss = l2l.MetaOptimizer(adam=adam(0.05)).meta_loss(small_quadratic(seed=0), 3)
    for _ in range(3):
      meta_loss.run()
      meta_loss.reset()
    self.assertEqual(meta_loss._run.experimental_get_tracing_count(), 1)
    self.assertEqual(meta_loss._reset.experimental_get_tracing_count(), 1)

  def test_bad_arguments(self):
    opt = l2l.MetaOptimizer(sgd=sgd(0.1))
    for len_unroll in (0, -1, 2.5, "5"):
      with self.assertRaisesRegex(ValueError,
                                  f"len_unroll must be a positive integer, got {len_unroll!r}"):
        opt.meta_loss(problems.simple(), len_unroll)
      with self.assertRaisesRegex(ValueError, "len_unroll must be a positive integer"):
        opt.meta_minimize(problems.simple(), len_unroll)
    with self.assertRaisesRegex(ValueError, "objective must be one of .*got 'mean'"):
      opt.meta_loss(problems.simple(), 3, objective="mean")
    with self.assertRaisesRegex(TypeError, "make_loss must be a callable"):
      opt.meta_loss("simple", 3)


class MetaMinimizeTest(tf.test.TestCase):

  def test_training_lowers_the_meta_loss_of_a_fixed_instance(self):
    opt = l2l.MetaOptimizer(cw=lstm(layers=(5,), seed=0))

    def evaluate():
      # A new MetaLoss of the same seed: always the same held-out instance, from step 0.
      return float(opt.meta_loss(problems.quadratic(batch_size=8, num_dims=3, seed=123),
                                 20).run())
    before = evaluate()
    trainer = opt.meta_minimize(problems.quadratic(batch_size=8, num_dims=3, seed=1), 10,
                                learning_rate=0.01)
    for step in range(30):
      if step % 3 == 0:
        trainer.reset()
      trainer.step()
    after = evaluate()
    # Observed: 70.8 -> 39.3. Ask for a 20% decrease.
    self.assertLess(after, 0.8 * before)

  def test_step_does_not_retrace(self):
    opt = l2l.MetaOptimizer(cw=lstm(seed=0))
    trainer = opt.meta_minimize(small_quadratic(seed=0), 3, learning_rate=0.01)
    trainer.step()
    # The first call may trace twice: Adam creates its slots on the first trace.
    count = trainer._step.experimental_get_tracing_count()
    self.assertLessEqual(count, 2)
    for _ in range(3):
      trainer.step()
      trainer.reset()
    self.assertEqual(trainer._step.experimental_get_tracing_count(), count)

  def test_step_updates_the_nets_and_returns_the_meta_loss(self):
    opt = l2l.MetaOptimizer(cw=lstm(seed=0))
    before = [v.numpy() for v in opt.trainable_variables]
    trainer = opt.meta_minimize(small_quadratic(seed=0), 3, learning_rate=0.01)
    value = trainer.step()
    self.assertAllClose(value, trainer.last_meta_loss)
    self.assertAllClose(value, np.sum(trainer.losses.numpy()[1:]), **SAME_OPS_TOL)
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, opt.trainable_variables)]
    self.assertTrue(all(changed), msg=f"unchanged: {changed}")

  def test_learnable_sgd_learns_its_learning_rate(self):
    """On f = x^2 from 1 the meta-loss sum_t (1 - 2 lr)^(2t) falls as lr grows towards 0.5."""
    opt = l2l.MetaOptimizer(sgd={"net": "Sgd",
                                 "net_options": {"learning_rate": 0.1, "learnable": True}})
    trainer = opt.meta_minimize(problems.simple(), 2, learning_rate=0.01)
    value = trainer.step()
    self.assertAllClose(value, 0.8 ** 2 + 0.8 ** 4, **NUMPY_TOL)
    self.assertAllClose(trainer.params["x"], 0.8 ** 2, **NUMPY_TOL)
    # Adam's first step moves the variable by the learning rate against the gradient's sign.
    self.assertAllClose(opt.nets["sgd"].learning_rate, 0.11, **NUMPY_TOL)

  def test_checkpointed_meta_minimize_takes_the_same_steps(self):
    """segment_length changes memory, not the nets' training (two Adam steps; the unroll
    tests cover second derivatives)."""
    for second_derivatives in (False,):
      weights = []
      for segment_length in (None, 2):
        opt = l2l.MetaOptimizer(cw=lstm(seed=0))
        trainer = opt.meta_minimize(small_quadratic(seed=0), 5, learning_rate=0.01,
                                    second_derivatives=second_derivatives,
                                    segment_length=segment_length)
        self.assertEqual(trainer.meta_loss.segment_length, segment_length)
        trainer.step()
        trainer.step()
        weights.append([v.numpy() for v in opt.trainable_variables])
      for a, b in zip(*weights):
        # Adam's steps are lr * m / sqrt(v): the same gradients up to float32 summation order
        # give the same weights to ~1e-6 of the step (observed equal to 1e-8).
        self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
    with self.assertRaisesRegex(ValueError, "segment_length must be a positive integer"):
      opt.meta_loss(small_quadratic(seed=0), 5, segment_length=0)

  def test_bad_learning_rate(self):
    opt = l2l.MetaOptimizer(sgd=sgd(0.1))
    for learning_rate in (0., -1e-3, float("nan")):
      with self.assertRaisesRegex(ValueError,
                                  f"learning_rate must be a positive number, got {learning_rate!r}"):
        opt.meta_minimize(problems.simple(), 3, learning_rate=learning_rate)


class SaveLoadTest(tf.test.TestCase):

  def tempdir(self):
    directory = tempfile.TemporaryDirectory()
    self.addCleanup(directory.cleanup)
    return directory.name

  def _trained(self, layers=(3,)):
    opt = l2l.MetaOptimizer(cw=lstm(layers=layers), adam=adam(0.05))
    trainer = opt.meta_minimize(problems.simple_multi_optimizer(num_dims=2), 3,
                                learning_rate=0.01,
                                net_assignments=[("cw", ["x_0"]), ("adam", ["x_1"])])
    for _ in range(2):
      trainer.step()
    return opt

  def _trajectory(self, opt):
    meta_loss = opt.meta_loss(small_quadratic(seed=11), 8,
                              net_assignments=[("cw", ["x"]), ("adam", [])])
    meta_loss.run()
    return meta_loss.losses.numpy(), meta_loss.params["x"].numpy()

  def test_save_then_load_reproduces_the_trajectory(self):
    path = self.tempdir()
    opt = self._trained()
    opt.save(path)
    loaded = l2l.MetaOptimizer.load(path)
    self.assertEqual(loaded.net_configs, opt.net_configs)
    losses, x = self._trajectory(opt)
    loaded_losses, loaded_x = self._trajectory(loaded)
    self.assertAllEqual(loaded_losses, losses)
    self.assertAllEqual(loaded_x, x)
    # Not a coincidence of the initialization: a net built from the same config differs.
    fresh_losses, _ = self._trajectory(l2l.MetaOptimizer(**opt.net_configs))
    self.assertNotAllClose(fresh_losses, losses)

  def test_restore_into_an_existing_optimizer(self):
    path = self.tempdir()
    opt = self._trained()
    opt.save(path)
    other = l2l.MetaOptimizer(**opt.net_configs)
    other.restore(path)
    for a, b in zip(opt.variables, other.variables):
      self.assertAllEqual(a, b)

  def assert_one_line_error(self, path, message, load=l2l.MetaOptimizer.load):
    with self.assertRaisesRegex(ValueError, message) as raised:
      load(path)
    text = str(raised.exception)
    self.assertIn(path, text)
    self.assertNotIn("\n", text)

  def test_load_missing_directory(self):
    path = os.path.join(self.tempdir(), "missing")
    self.assert_one_line_error(path, "no saved optimizer at")

  def test_load_without_weights(self):
    path = self.tempdir()
    with open(os.path.join(path, "config.json"), "w") as f:
      json.dump({"cw": lstm()}, f)
    self.assert_one_line_error(path, r"no saved optimizer at .*nets\.index")

  def test_load_corrupt_config(self):
    path = self.tempdir()
    self._trained().save(path)
    config = os.path.join(path, "config.json")
    with open(config, "w") as f:
      f.write('{"cw": {"net": ')
    self.assert_one_line_error(path, "corrupt optimizer config")
    with open(config, "w") as f:
      f.write('[1, 2]')
    self.assert_one_line_error(path, "corrupt optimizer config .*expected a JSON object")

  def test_load_differently_shaped_net(self):
    path = self.tempdir()
    opt = self._trained(layers=(3,))
    opt.save(path)
    configs = opt.net_configs
    configs["cw"]["net_options"]["layers"] = [4]
    with open(os.path.join(path, "config.json"), "w") as f:
      json.dump(configs, f)
    self.assert_one_line_error(path, "saved optimizer at .* does not match these nets")

  def test_restore_differently_shaped_net(self):
    path = self.tempdir()
    self._trained(layers=(3,)).save(path)
    other = l2l.MetaOptimizer(cw=lstm(layers=(4,)), adam=adam(0.05))
    self.assert_one_line_error(path, "does not match these nets", load=other.restore)


class MetaOptimizerConstructionTest(tf.test.TestCase):

  def test_no_configs(self):
    with self.assertRaisesRegex(ValueError, "MetaOptimizer needs at least one net config"):
      l2l.MetaOptimizer()

  def test_unknown_net(self):
    with self.assertRaisesRegex(ValueError, r"unknown net 'Lstm'; expected one of \[.*'Sgd'"):
      l2l.MetaOptimizer(cw={"net": "Lstm"})

  def test_bad_config(self):
    with self.assertRaisesRegex(ValueError, "net config must have keys 'net'"):
      l2l.MetaOptimizer(cw={"options": {}})
    with self.assertRaisesRegex(TypeError, "net config must be a dict"):
      l2l.MetaOptimizer(cw="Sgd")
    with self.assertRaisesRegex(TypeError, "bad net_options for net 'Sgd'.*'lr'"):
      l2l.MetaOptimizer(cw={"net": "Sgd", "net_options": {"lr": 0.1}})

  def test_net_configs_round_trip(self):
    opt = l2l.MetaOptimizer(cw=lstm(seed=1), sgd=sgd(0.5))
    self.assertEqual(opt.net_configs["sgd"],
                     {"net": "Sgd", "net_options": {"learning_rate": 0.5, "learnable": False}})
    rebuilt = l2l.MetaOptimizer(**json.loads(json.dumps(opt.net_configs)))
    self.assertEqual(rebuilt.net_configs, opt.net_configs)


if __name__ == "__main__":
  tf.test.main()
