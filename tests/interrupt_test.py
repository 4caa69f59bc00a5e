"""SIGINT / SIGTERM during train.py: the current epoch is finished and checkpointed, the exit
status is 130 / 143, and the same command resumes to the uninterrupted run's end state."""

import os
import re
import signal
import subprocess
import sys
import tempfile

from absl.testing import absltest
import tensorflow as tf

from l2l import interrupts
from l2l import training
import resume_test

REPO = resume_test.REPO
RUN = resume_test.IMPROVING  # 8 epochs of 2 unrolls; every validation improves.
# train.py, signalling itself from inside meta-step `at` (1-based), i.e. while an unroll of
# epoch (at + 1) // 2 is running: the signal arrives mid-epoch, at a fixed point.
SIGNAL_DRIVER = """
import os, runpy, signal, sys
from l2l import meta_optimizer
sig, at = getattr(signal, sys.argv[1]), int(sys.argv[2])
step, calls = meta_optimizer.MetaMinimize.step, []
def step_and_signal(self):
  calls.append(1)
  if len(calls) == at:
    os.kill(os.getpid(), sig)
  return step(self)
meta_optimizer.MetaMinimize.step = step_and_signal
sys.argv = ["train.py"] + sys.argv[3:]
runpy.run_path("train.py", run_name="__main__")
"""


class InterruptTest(resume_test.ResumeTestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.full = os.path.join(cls.tmp, "full")
    summary = training.meta_train(training.TrainConfig(save_path=cls.full, **RUN))
    assert summary["best_epoch"] == 8, summary  # The premise: the best one comes last.

  def run_train(self, path, *prefix):
    flags = ["--problem=quadratic"] + [f"--{k}={v}" for k, v in RUN.items() if k != "problem"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *prefix, *flags, f"--save_path={path}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)

  def interrupt_and_resume(self, name, exit_code):
    path = os.path.join(self.tmp, name)
    # Meta-step 9 is the first unroll of epoch 5, which is no checkpoint epoch (period 2).
    stopped = self.run_train(path, "-c", SIGNAL_DRIVER, name, "9")
    self.assertEqual(stopped.returncode, exit_code, stopped.stderr[-2000:])
    self.assertNotIn("Traceback", stopped.stderr)
    self.assertRegex(stopped.stderr, rf"{name}: finishing the current epoch")
    self.assertRegex(stopped.stderr, rf"{name}: stopped after epoch 5/8; training state saved "
                     r"in \S+; run the same command to resume")
    self.assertRegex(stopped.stderr, r"epoch 5/8  meta-loss")  # Epoch 5 was finished ...
    self.assertNotRegex(stopped.stderr, r"epoch 6/8")  # ... and nothing after it.
    state = os.path.join(path, training.TRAIN_STATE)
    self.assertEqual(os.path.basename(tf.train.latest_checkpoint(state)), "ckpt-5")
    resumed = self.run_train(path, "train.py")
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
    match = re.search(r"resuming from checkpoint \S+ at epoch (\d+)/8 \((\d+) meta-steps done\)",
                      resumed.stderr)
    self.assertIsNotNone(match, resumed.stderr[-2000:])
    self.assertEqual((int(match.group(1)), int(match.group(2))), (5, 10))  # No epoch lost.
    self.assertNotRegex(resumed.stderr, r"epoch 5/8  meta-loss")  # None done twice.
    self.assertRegex(resumed.stderr, r"done in \d+s: 16 meta-steps")
    self.assert_same_run(path, self.full, 8)

  def test_sigint_mid_epoch_then_same_command_resumes(self):
    self.interrupt_and_resume("SIGINT", 130)

  def test_sigterm_mid_epoch_then_same_command_resumes(self):
    self.interrupt_and_resume("SIGTERM", 143)


class StopOnSignalTest(absltest.TestCase):

  def test_flag_then_second_signal_uses_the_previous_handler(self):
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    self.addCleanup(signal.signal, signal.SIGINT, before)
    with interrupts.StopOnSignal("the test") as stop:
      stop.raise_if_signalled("never")  # No signal yet: nothing happens.
      os.kill(os.getpid(), signal.SIGINT)
      self.assertEqual(stop.signal, "SIGINT")
      with self.assertRaises(interrupts.Interrupted) as raised:
        stop.raise_if_signalled("stopped")
      self.assertEqual(str(raised.exception), "SIGINT: stopped")
      self.assertEqual(raised.exception.exit_code, 130)
      # The second Ctrl-C is Python's default: KeyboardInterrupt at once.
      with self.assertRaises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)
    self.assertEqual(interrupts.Interrupted("x", "SIGTERM").exit_code, 143)


if __name__ == "__main__":
  absltest.main()
