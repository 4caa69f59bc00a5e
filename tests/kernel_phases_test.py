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

  def test_baseline_runs_both_builds_alternately_and_summarizes(self):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
      self.skipTest("no C++ compiler")
    source = os.path.join(kernel_phases.REPO, kernel_phases.KERNEL_SOURCE)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      kernel_phases.main(["--rows", "200", "--cache_rows", "64", "--repeats", "1",
                          "--baseline", source, "--rounds", "2"])
    lines = [speed.parse(line) for line in out.getvalue().splitlines() if "=" in line]
    runs = [(f["build"], f["round"]) for f in lines if "round" in f and f.get("case") == "in_cache"]
    self.assertEqual(runs, [("current", "0"), ("baseline", "0"), ("current", "1"),
                            ("baseline", "1")])
    summary = [line for line in out.getvalue().splitlines() if line.startswith("summary ")]
    # Per build: 5 parts, in_cache and through_memory (forward and backward), memory_only.
    self.assertLen(summary, 2 * (5 + 2 + 2 + 1))
    for build in ("current", "baseline"):
      line = next(l for l in summary
                  if f"build={build} case=in_cache forward_ns_per_row=" in l)
      low, high = line.split("forward_ns_per_row=")[1].split()[0].split("-")
      values = [float(f["forward_ns_per_row"]) for f in lines
                if f.get("build") == build and f.get("case") == "in_cache" and "round" in f]
      self.assertEqual((float(low), float(high)),
                       (round(min(values), 1), round(max(values), 1)))
      self.assertIn("rounds=2", line)

  def test_bad_options_are_one_line_errors(self):
    cli_errors.assert_one_line_errors(self, kernel_phases.main, (
        (["--rows", "0"], "--rows must be >= 1"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--rounds", "2"], "--rounds needs --baseline"),
        (["--baseline", "no-such-revision-or-file"], "neither a file nor a git revision")))


if __name__ == "__main__":
  absltest.main()
