"""The contract every net in `nets.NETS` passes: one parameterized test case over all of them."""

import json
import os
import re
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import nets

SHAPES = ((3,), (2, 4))
KERNEL_SHAPES = ((3, 3, 2, 2), (3, 3, 1, 3))
LOG_AND_SIGN = dict(preprocess_name="LogAndSign", preprocess_options={"k": 5})


def _case(name, net, options, shapes=SHAPES, mismatched=None):
  """A net config, the parameter shapes it updates, and a config whose checkpoint it rejects."""
  return dict(testcase_name=name, config={"net": net, "net_options": options},
              shapes=shapes, mismatched=mismatched)


CASES = [
    _case("Sgd", "Sgd", {"learning_rate": 0.1},
          mismatched={"net": "Momentum", "net_options": {}}),
    _case("Momentum", "Momentum", {"learning_rate": 0.05, "momentum": 0.9},
          mismatched={"net": "Adam", "net_options": {}}),
    _case("NAG", "NAG", {"learning_rate": 0.05, "momentum": 0.9},
          mismatched={"net": "RMSProp", "net_options": {}}),
    _case("RMSProp", "RMSProp",
          {"learning_rate": 0.01, "momentum": 0.5, "centered": True},
          mismatched={"net": "Sgd", "net_options": {}}),
    _case("Adam", "Adam", {"learning_rate": 0.01},
          mismatched={"net": "Momentum", "net_options": {}}),
    _case("Adam_learnable", "Adam", {"learning_rate": 0.01, "learnable": True},
          mismatched={"net": "Sgd", "net_options": {"learnable": True}}),
    _case("CoordinateWise_LogAndSign", "CoordinateWiseDeepLSTM",
          dict(layers=(4, 4), seed=0, **LOG_AND_SIGN),
          mismatched={"net": "CoordinateWiseDeepLSTM",
                      "net_options": dict(layers=(4, 5), **LOG_AND_SIGN)}),
    _case("CoordinateWise_no_layers", "CoordinateWiseDeepLSTM", dict(layers=(), seed=0),
          mismatched={"net": "CoordinateWiseDeepLSTM",
                      "net_options": dict(layers=(), **LOG_AND_SIGN)}),
    _case("Kernel_LogAndSign", "KernelDeepLSTM",
          dict(layers=(4,), kernel_shape=(3, 3), seed=0, **LOG_AND_SIGN), shapes=KERNEL_SHAPES,
          mismatched={"net": "KernelDeepLSTM", "net_options": dict(layers=(5,), **LOG_AND_SIGN)}),
    _case("Standard", "StandardDeepLSTM", dict(output_size=11, layers=(4,), seed=0),
          mismatched={"net": "StandardDeepLSTM", "net_options": dict(output_size=11, layers=(3,))}),
    _case("Standard_LogAndSign", "StandardDeepLSTM",
          dict(output_size=11, layers=(3, 3), seed=0, **LOG_AND_SIGN),
          mismatched={"net": "StandardDeepLSTM", "net_options": dict(output_size=11, layers=(3,),
                                                                     **LOG_AND_SIGN)}),
    _case("PerParameterMLP", "PerParameterMLP", dict(hidden_sizes=(4, 4), seed=0),
          shapes=SHAPES + ((2, 3, 4), ()),
          mismatched={"net": "PerParameterMLP", "net_options": dict(hidden_sizes=(4,))}),
]

# Hyperparameters under which each hand-designed rule converges on the quadratic below.
CONVERGENCE = {
    "Sgd": {"learning_rate": 0.5},
    "Momentum": {"learning_rate": 0.1, "momentum": 0.5},
    "NAG": {"learning_rate": 0.1, "momentum": 0.5},
    "RMSProp": {"learning_rate": 0.02},
    "Adam": {"learning_rate": 0.05},
    # Untrained, the per-parameter MLP is Adam at its learning_rate.
    "PerParameterMLP": {"learning_rate": 0.05},
}
LEARNED = {"CoordinateWiseDeepLSTM", "KernelDeepLSTM", "StandardDeepLSTM", "PerParameterMLP"}


def _random(shapes, seed):
  rng = np.random.RandomState(seed)
  return [tf.constant(rng.randn(*s), tf.float32) for s in shapes]


def _run(net, params, grads_seq):
  """Updates for a sequence of gradient lists from the initial state."""
  state = nets.initial_state_of(net, params, num_steps=10)
  outputs = []
  for grads in grads_seq:
    updates, state = nets.call_rule(net, grads, state, params=params)
    outputs.append(updates)
  return outputs, state


def _with_seed(config, seed):
  options = dict(config["net_options"])
  if "seed" in options:
    options["seed"] = seed
  return {"net": config["net"], "net_options": options}


class NetContractTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = tmp.name

  def assertSameUpdates(self, a, b):
    """Bitwise equality of two `_run` outputs (lists of lists of tensors)."""
    self.assertEqual(len(a), len(b))
    for step_a, step_b in zip(a, b):
      self.assertEqual(len(step_a), len(step_b))
      for x, y in zip(step_a, step_b):
        self.assertAllEqual(x, y)

  def test_every_net_is_covered(self):
    self.assertEqual({c["config"]["net"] for c in CASES}, set(nets.NETS))
    self.assertEqual(set(CONVERGENCE) | LEARNED, set(nets.NETS))

  @parameterized.named_parameters(*CASES)
  def test_tf_function_shapes_dtypes_and_no_retrace(self, config, shapes, mismatched):
    del mismatched
    net = nets.factory(config)
    params = _random(shapes, 0)
    traces = []

    @tf.function
    def step(grads, state):
      traces.append(1)  # Runs once per trace only.
      return nets.call_rule(net, grads, state, params=params)

    state0 = nets.initial_state_of(net, params, num_steps=10)
    grads1, grads2 = _random(shapes, 1), _random(shapes, 2)
    updates1, state1 = step(grads1, state0)
    updates2, state2 = step(grads2, state1)
    self.assertLen(traces, 1)
    self.assertEqual(step.experimental_get_tracing_count(), 1)

    for updates, grads in ((updates1, grads1), (updates2, grads2)):
      self.assertIsInstance(updates, list)
      self.assertLen(updates, len(grads))
      for u, g in zip(updates, grads):
        self.assertEqual(u.shape, g.shape)
        self.assertEqual(u.dtype, g.dtype)
    for state in (state1, state2):
      tf.nest.assert_same_structure(state0, state)
      for s0, s in zip(tf.nest.flatten(state0), tf.nest.flatten(state)):
        self.assertEqual(s0.shape, s.shape)
        self.assertEqual(s0.dtype, s.dtype)

    # Graph and eager agree, and the second step used the new gradients.
    (eager1, eager2), _ = _run(net, params, [grads1, grads2])
    for a, b in zip(updates1 + updates2, eager1 + eager2):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-7)
    self.assertNotAllClose(updates1[0], updates2[0])

  @parameterized.named_parameters(*CASES)
  def test_checkpoint_round_trip(self, config, shapes, mismatched):
    del mismatched
    params = _random(shapes, 0)
    grads_seq = [_random(shapes, 1), _random(shapes, 2)]
    net = nets.factory(config)
    expected, _ = _run(net, params, grads_seq)
    path = nets.save(net, os.path.join(self.tmp, "net"))

    fresh = nets.factory(_with_seed(config, 1))
    for v in fresh.variables:  # Hand-designed nets have no seed: change their values too.
      v.assign(0.5 * v + 0.01)
    before, _ = _run(fresh, params, grads_seq)
    self.assertNotAllClose(before[0][0], expected[0][0])  # Otherwise the test proves nothing.
    nets.restore(fresh, path)
    restored, _ = _run(fresh, params, grads_seq)
    self.assertSameUpdates(restored, expected)

    from_config, _ = _run(nets.factory(dict(config, net_path=path)), params, grads_seq)
    self.assertSameUpdates(from_config, expected)

  @parameterized.named_parameters(*CASES)
  def test_config_round_trip(self, config, shapes, mismatched):
    del mismatched
    net = nets.factory(config)
    config_json = json.dumps(net.config)
    self.assertEqual(net.config["net"], config["net"])
    rebuilt = nets.factory(json.loads(config_json))
    self.assertIs(type(rebuilt), type(net))
    self.assertEqual(json.dumps(rebuilt.config), config_json)
    self.assertEqual([(v.name, v.shape, v.trainable) for v in rebuilt.variables],
                     [(v.name, v.shape, v.trainable) for v in net.variables])
    # Equivalent: with the same weights, the same updates (seeded initializers are not
    # reproducible across constructions in eager mode, so copy the weights).
    for a, b in zip(rebuilt.variables, net.variables):
      a.assign(b)
    params = _random(shapes, 0)
    grads_seq = [_random(shapes, 1)]
    self.assertSameUpdates(_run(rebuilt, params, grads_seq)[0], _run(net, params, grads_seq)[0])

  @parameterized.named_parameters(*CASES)
  def test_restore_errors(self, config, shapes, mismatched):
    del shapes
    net = nets.factory(config)
    missing = os.path.join(self.tmp, "missing")
    corrupt = os.path.join(self.tmp, "corrupt")
    with open(corrupt + ".index", "wb") as f:
      f.write(b"not a checkpoint" * 8)
    other = nets.save(nets.factory(mismatched), os.path.join(self.tmp, "other"))
    for path in (missing, corrupt, other):
      with self.assertRaisesRegex(ValueError, "^[^\n]*" + re.escape(path) + "[^\n]*$"):
        nets.restore(net, path)

  def test_unknown_net(self):
    with self.assertRaisesRegex(ValueError, "unknown net 'NoSuchNet'"):
      nets.factory({"net": "NoSuchNet", "net_options": {}})

  @parameterized.named_parameters(*[(name, name, options)
                                    for name, options in sorted(CONVERGENCE.items())])
  def test_converges_on_quadratic(self, name, options):
    # f(x) = 0.5 ||A x - b||^2 over two parameters, A with singular values in [0.8, 1.25].
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(10, 10))
    a = tf.constant(q @ np.diag(np.linspace(0.8, 1.25, 10)) @ q.T, tf.float32)
    b = tf.constant(rng.randn(10), tf.float32)

    def loss_fn(params):
      x = tf.concat([tf.reshape(p, [-1]) for p in params], axis=0)
      return 0.5 * tf.reduce_sum(tf.square(tf.linalg.matvec(a, x) - b))

    net = nets.factory({"net": name, "net_options": options})
    params = [tf.zeros([4]), tf.zeros([2, 3])]
    state = nets.initial_state_of(net, params, num_steps=100)

    @tf.function
    def step(params, state):
      with tf.GradientTape() as tape:
        tape.watch(params)
        loss = loss_fn(params)
      updates, state = nets.call_rule(net, tape.gradient(loss, params), state, params=params)
      return [p + u for p, u in zip(params, updates)], state

    initial = float(loss_fn(params))
    for _ in range(100):
      params, state = step(params, state)
    self.assertLess(float(loss_fn(params)), initial / 100)


if __name__ == "__main__":
  tf.test.main()
