"""The fused CPU kernels run only on CPU tensors; with accelerators, other tensors take the
reference ops (no host round-trip per step). No GPU here: `tf.config.list_logical_devices` is
made to report one, and the choice of path is read from the traced graph's op types (under
`tf.device("/GPU:0")` the graph records the request; soft placement runs it on the CPU).
"""

from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

import nets
from nets import lstm
from nets import mlp_rule_fused

_real_list_logical_devices = tf.config.list_logical_devices


def _with_fake_gpu(device_type=None):
  if device_type == "GPU":
    return [tf.config.LogicalDevice("/device:GPU:0", "GPU")]
  return _real_list_logical_devices(device_type)


def _fake_gpu():
  return mock.patch.object(tf.config, "list_logical_devices", side_effect=_with_fake_gpu)


def _op_types(rule, params, device):
  """The op types of one traced step of `rule`, every input made under `device` (None: none),
  and the step's updates."""
  state = nets.initial_state_of(rule, params, 10)

  @tf.function(autograph=False)
  def step(grads, state):
    if device is None:
      return nets.call_rule(rule, grads, state, params=params)
    with tf.device(device):
      grads = [tf.identity(g) for g in grads]
      state = tf.nest.map_structure(tf.identity, state)
      placed = [tf.identity(p) for p in params]
      return nets.call_rule(rule, grads, state, params=placed)

  grads = [0.1 * p + 0.01 for p in params]
  concrete = step.get_concrete_function(grads, state)
  types = {op.type for op in concrete.graph.get_operations()}
  for f in concrete.graph._functions.values():  # pylint: disable=protected-access
    types |= {op.type for op in f.graph.get_operations()} if hasattr(f, "graph") else set()
  updates, _ = step(grads, state)
  return types, updates


PARAMS = [tf.random.stateless_normal([5, 4], [0, 1]), tf.random.stateless_normal([4], [2, 3])]
# Rule, the op its fused path runs.
RULES = {
    "coordinatewise_lstm": (lambda: nets.CoordinateWiseDeepLSTM(
        layers=(8, 8), preprocess_name="LogAndSign", preprocess_options={"k": 5}, seed=0),
                            "L2lCwLstm", lstm.lstm_kernels),
    "standard_lstm_core": (lambda: nets.StandardDeepLSTM(4, layers=(8,), seed=0), "L2lLstmGates",
                           lstm.lstm_kernels),
    "per_parameter_mlp": (lambda: nets.PerParameterMLP(seed=0), "L2lMlpRuleStep",
                          mlp_rule_fused.mlp_rule_kernels),
}


class DevicePlacementTest(tf.test.TestCase, parameterized.TestCase):

  def test_placed_on_cpu(self):
    cpu = tf.constant(1.)
    self.assertTrue(lstm.placed_on_cpu([cpu]))  # No accelerator: always.
    with _fake_gpu():
      self.assertTrue(lstm.placed_on_cpu([cpu]))  # An eager tensor on the CPU.
      graph = tf.Graph()
      with graph.as_default():
        unplaced = tf.constant(1.)
        with tf.device("/CPU:0"):
          on_cpu = tf.constant(1.)
        with tf.device("/GPU:0"):
          on_gpu = tf.constant(1.)
      self.assertFalse(lstm.placed_on_cpu([unplaced]))
      self.assertTrue(lstm.placed_on_cpu([on_cpu]))
      self.assertFalse(lstm.placed_on_cpu([on_gpu]))
      self.assertFalse(lstm.placed_on_cpu([on_cpu, on_gpu]))

  @parameterized.named_parameters(*[(name, name) for name in RULES])
  def test_fused_path_only_for_cpu_tensors(self, name):
    make_rule, fused_op, load_kernels = RULES[name]
    if load_kernels() is None:
      self.skipTest("fused kernels unavailable")
    rule = make_rule()
    if name == "standard_lstm_core":
      params = [PARAMS[1]]  # One small vector (StandardDeepLSTM: one tensor per rule).
    else:
      params = PARAMS
    cases = {}
    cases["no_accelerator"] = _op_types(rule, params, None)
    with _fake_gpu():
      cases["gpu_cpu_tensors"] = _op_types(rule, params, "/CPU:0")
      cases["gpu_gpu_tensors"] = _op_types(rule, params, "/GPU:0")
      cases["gpu_unplaced"] = _op_types(rule, params, None)
    self.assertIn(fused_op, cases["no_accelerator"][0])
    self.assertIn(fused_op, cases["gpu_cpu_tensors"][0])
    self.assertNotIn(fused_op, cases["gpu_gpu_tensors"][0])
    self.assertNotIn(fused_op, cases["gpu_unplaced"][0])
    # Both paths compute the same step.
    for case in ("gpu_gpu_tensors", "gpu_unplaced"):
      for fused, reference in zip(cases["no_accelerator"][1], cases[case][1]):
        self.assertAllClose(fused, reference, rtol=1e-5, atol=1e-6, msg=case)


if __name__ == "__main__":
  tf.test.main()
