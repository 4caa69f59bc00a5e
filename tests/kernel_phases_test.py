"""bench/kernel_phases.py: builds, runs the kernels' parts outside TensorFlow, and reports them."""

import contextlib
import io
import os
import shutil

from absl.testing import absltest

from bench import kernel_phases
from bench import speed
import cli_errors

PARTS = ("forward_matmul", "forward_gates", "backward_gates", "backward_weight_gradients",
         "backward_input_gradients")


class KernelPhasesTest(absltest.TestCase):

  def test_reports_every_part_and_case(self):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
      self.skipTest("no C++ compiler")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      kernel_phases.main(["--rows", "300", "--cache_rows", "70", "--repeats", "1"])
    lines = [speed.parse(line) for line in out.getvalue().splitlines() if "=" in line]
    parts = {fields["part"]: float(fields["ns_per_row"]) for fields in lines if "part" in fields}
    self.assertEqual(set(parts), set(PARTS))
    self.assertTrue(all(v > 0 for v in parts.values()), parts)
    cases = {fields["case"]: fields for fields in lines if "case" in fields}
    self.assertEqual(set(cases), {"in_cache", "through_memory", "memory_only"})
    self.assertEqual((cases["in_cache"]["rows"], cases["through_memory"]["rows"]), ("70", "300"))
    for name in ("in_cache", "through_memory"):
      self.assertGreater(float(cases[name]["forward_ns_per_row"]), 0)
      self.assertGreater(float(cases[name]["backward_ns_per_row"]), 0)
    self.assertGreater(float(cases["memory_only"]["backward_ns_per_row"]), 0)

  def test_bad_options_are_one_line_errors(self):
    cli_errors.assert_one_line_errors(self, kernel_phases.main, (
        (["--rows", "0"], "--rows must be >= 1"),
        (["--repeats", "0"], "--repeats must be >= 1")))


if __name__ == "__main__":
  absltest.main()
