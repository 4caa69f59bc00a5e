"""bench/kernel_speed.py: the fused ops' chain runs and reports parseable per-coordinate times."""

import contextlib
import io

from absl.testing import absltest

from bench import kernel_speed
from bench import speed
import cli_errors


class KernelSpeedTest(absltest.TestCase):

  def test_prints_one_parseable_line_per_rows_setting(self):
    from nets import lstm  # pylint: disable=g-import-not-at-top
    if lstm.lstm_kernels() is None:
      self.skipTest("no kernels")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      kernel_speed.main(["--rows", "70,300", "--unroll", "2", "--calls", "2"])
    lines = [speed.parse(line) for line in out.getvalue().splitlines()
             if line.startswith("case=kernel_speed")]
    self.assertEqual([line["rows"] for line in lines], ["70", "300"])
    for fields in lines:
      self.assertEqual((fields["unroll"], fields["calls"], fields["threads"]), ("2", "2", "0"))
      for name in ("forward", "forward_backward"):
        low, mid, high = (float(fields[f"{name}_ns_{k}"]) for k in ("min", "per_coord", "max"))
        self.assertGreater(low, 0)
        self.assertLessEqual(low, mid)
        self.assertLessEqual(mid, high)

  def test_bad_options_are_one_line_errors(self):
    cli_errors.assert_one_line_errors(self, kernel_speed.main, (
        (["--rows", "12,x"], "--rows must be positive integers"),
        (["--rows", "0"], "--rows must be positive integers"),
        (["--calls", "0"], "--calls must be >= 1"),
        (["--threads", "-1"], "--threads must be >= 0")))


if __name__ == "__main__":
  absltest.main()
