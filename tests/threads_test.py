"""l2l.threads: the inter-op thread setting of train.py and evaluate.py."""

import os
import subprocess
import sys

import tensorflow as tf

from l2l import threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ThreadsTest(tf.test.TestCase):

  def test_bad_values_are_refused(self):
    for bad in (-1, 1.5, True, "2"):
      with self.assertRaisesRegex(ValueError, "non-negative int"):
        threads.use_inter_op_threads(bad)

  def test_sets_the_count_in_a_fresh_process(self):
    code = ("import tensorflow as tf; from l2l import threads; threads.use_inter_op_threads(1); "
            "tf.constant(1.0) + 1.0; print(tf.config.threading.get_inter_op_parallelism_threads())")
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


if __name__ == "__main__":
  tf.test.main()
