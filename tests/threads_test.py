"""l2l.threads: the thread settings of train.py and evaluate.py, and the fused ops under them."""

import json
import os
import subprocess
import sys

import tensorflow as tf

from l2l import threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ThreadsTest(tf.test.TestCase):

  def test_bad_values_are_refused(self):
    for bad in (-1, 1.5, True, "2"):
      with self.assertRaisesRegex(ValueError, "inter-op threads must be a non-negative int"):
        threads.use_inter_op_threads(bad)
      with self.assertRaisesRegex(ValueError, "intra-op threads must be a non-negative int"):
        threads.use_intra_op_threads(bad)

  def test_sets_the_count_in_a_fresh_process(self):
    code = ("import tensorflow as tf; from l2l import threads; threads.use_inter_op_threads(1); "
            "tf.constant(1.0) + 1.0; print(tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    self.assertEqual(out.stdout.strip().splitlines()[-1], "1")
    code = ("import tensorflow as tf; from l2l import threads; threads.use_intra_op_threads(1); "
            "tf.constant(1.0) + 1.0; print(tf.config.threading.get_intra_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    self.assertEqual(out.stdout.strip().splitlines()[-1], "1")

  def test_after_tensorflow_started_it_warns_and_changes_nothing(self):
    tf.constant(1.0) + 1.0  # TensorFlow's thread pools exist now.
    before = tf.config.threading.get_inter_op_parallelism_threads()
    with self.assertLogs(level="WARNING"):
      threads.use_inter_op_threads(before + 3)
    self.assertEqual(tf.config.threading.get_inter_op_parallelism_threads(), before)
    threads.use_inter_op_threads(0)  # 0: TensorFlow's default, nothing to do.
    before = tf.config.threading.get_intra_op_parallelism_threads()
    with self.assertLogs(level="WARNING"):
      threads.use_intra_op_threads(before + 3)
    self.assertEqual(tf.config.threading.get_intra_op_parallelism_threads(), before)


if __name__ == "__main__":
  tf.test.main()


# A first-order meta-step of the 2016 optimizer (2x20 LSTM) on 1,536 coordinates (enough rows
# for the fused ops to split them over two threads), printed as JSON: meta-loss, trajectory and
# meta-gradient, with the fused ops and with the reference TF ops.
_META_STEP = """
import json, sys
import numpy as np
import tensorflow as tf
from l2l import threads
threads.use_inter_op_threads(int(sys.argv[1]))
threads.use_intra_op_threads(int(sys.argv[2]))
from nets import lstm
rng = np.random.RandomState(0)
w = rng.rand(128, 12, 12).astype(np.float32)
y = rng.rand(128, 12).astype(np.float32)
x0 = rng.randn(128 * 12).astype(np.float32) * 0.01
def make_loss():
  x = tf.Variable(x0, name="x")
  r = tf.linalg.matvec(tf.constant(w), tf.reshape(x, [128, 12])) - y
  return tf.reduce_mean(tf.reduce_sum(r ** 2, 1))
out = {"threads": [tf.config.threading.get_inter_op_parallelism_threads(),
                   tf.config.threading.get_intra_op_parallelism_threads()],
       "attrs": lstm.kernel_threads()}
sys.path.insert(0, "tests")
from fast_lstm_test import meta_step  # The same unroll as its reference-path test.
for fast in (True, False):
  loss, losses, grads = meta_step(make_loss, (20, 20), 0.01, 8, fast)
  out[str(fast)] = [float(loss), losses.tolist(), [g.ravel().tolist() for g in grads]]
print(json.dumps(out))
"""


class ThreadSettingsResultsTest(tf.test.TestCase):
  """The fused ops give the same meta-step whatever the thread settings (their rows are split
  into fixed parts whose sums are added in a fixed order), equal to the reference TF ops."""

  def run_meta_step(self, inter_op, intra_op):
    out = subprocess.run([sys.executable, "-c", _META_STEP, str(inter_op), str(intra_op)],
                         cwd=REPO, capture_output=True, text=True, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return json.loads(out.stdout.strip().splitlines()[-1])

  def test_one_intra_op_thread_changes_no_result(self):
    default = self.run_meta_step(0, 0)
    single_intra = self.run_meta_step(0, 1)
    single = self.run_meta_step(1, 1)
    self.assertEqual(single_intra["threads"], [0, 1])
    self.assertEqual(single["threads"], [1, 1])
    # With one intra-op thread the fused ops still take helpers from the inter-op pool.
    self.assertTrue(single_intra["attrs"]["inter_op_helpers"])
    self.assertEqual(single_intra["attrs"]["inter_op_threads"], len(os.sched_getaffinity(0)))
    self.assertFalse(single["attrs"]["inter_op_helpers"])
    for other in (single_intra, single):
      self.assertEqual(default["True"], other["True"])  # Bit for bit.
    fused, reference = default["True"], default["False"]
    self.assertAllClose(fused[0], reference[0], rtol=1e-5)
    self.assertAllClose(fused[1], reference[1], rtol=1e-5)
    for a, b in zip(fused[2], reference[2]):
      self.assertAllClose(a, b, atol=1e-5 * max(abs(v) for v in b))
