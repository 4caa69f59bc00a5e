"""bench/op_profile.py: per-op-kind times read back from TensorFlow's profiler trace."""

import tempfile

import tensorflow as tf

from bench import op_profile


def profiled(f, a, calls):
  """`op_profile.op_times` of `calls` calls of the tf.function `f(a)` (traced before)."""
  f(a)
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    for _ in range(calls):
      f(a).numpy()
    tf.profiler.experimental.stop()
    return op_profile.op_times(logdir)


class OpProfileTest(tf.test.TestCase):

  def test_counts_every_op_call_of_a_profiled_function(self):
    @tf.function(autograph=False)
    def f(a):
      for _ in range(3):
        a = tf.matmul(a, a) * 0.5
      return a + 1.0

    calls = 4
    ops, executor_s = profiled(f, tf.ones([64, 64]), calls)
    matmuls = [k for k in ops if "MatMul" in k]  # MatMul, or _MklMatMul with oneDNN.
    self.assertLen(matmuls, 1)
    self.assertEqual(ops[matmuls[0]][1], 3 * calls)
    self.assertEqual(ops["Mul"][1], 3 * calls)
    self.assertEqual(ops["AddV2"][1], calls)
    self.assertNotIn("Process", ops)
    for seconds, _ in ops.values():
      self.assertGreater(seconds, 0)
    self.assertGreaterEqual(executor_s, 0)
    lines = op_profile.report(ops, executor_s, steps=calls, top=2)
    self.assertLen(lines, 4)  # The two largest, the rest, the total.
    self.assertTrue(lines[2].startswith("op=other kinds=1 "))
    # The smallest kind's calls per profiled call: AddV2's 1 (or Mul's 3 if it ran faster).
    self.assertRegex(lines[2], " calls_per_meta_step=[13] ")

  def test_an_xla_call_counts_once_with_its_parts(self):
    @tf.function(jit_compile=True)
    def compiled(a):
      return tf.reduce_sum(tf.sigmoid(tf.matmul(a, a)))

    @tf.function(autograph=False)
    def f(a):
      return compiled(a) * 2.0

    calls = 3
    ops, _ = profiled(f, tf.ones([32, 32]), calls)
    self.assertEqual(ops[op_profile._ASYNC][1], calls)  # pylint: disable=protected-access
    # The executable and its HLO ops (a dot, fusions) are inside the call, not kinds of their own.
    self.assertNotIn("ExecuteAsyncOnStream", ops)
    self.assertFalse([k for k in ops if k.startswith(("dot", "fusion"))], sorted(ops))
    self.assertEqual(ops["Mul"][1], calls)

  def test_no_trace_is_a_clear_error(self):
    with tempfile.TemporaryDirectory() as logdir:
      with self.assertRaisesRegex(ValueError, "no \\*.xplane.pb"):
        op_profile.op_times(logdir)


if __name__ == "__main__":
  tf.test.main()
