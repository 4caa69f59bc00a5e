"""The benchmark suite's own logic (`python -m bench`): options, case selection, parsing of the
cases' lines, summaries, memory fields and skipped cases. No timing is asserted and no case is
run (except a missing module, to see a failure reported)."""

import contextlib
import os
import shutil
import tempfile
import io
import types
from unittest import mock

from absl.testing import absltest

from bench import __main__ as suite
from bench import rss
from bench import speed

# Case lines as the cases print them (values from a real run).
L2L = ("case=l2l config=quadratic ms_per_meta_step=25.00 first_meta_loss=69.7549515 "
       "last_meta_loss=65.6502151 achieved_gflops=30.00 first_step_s=2.84 own_cores=0.99 "
       "other_cores=0.05 rss_base_mib=597.5 peak_rss_mib=703.6 rss_warm_mib=700.1 "
       "step_peak_rss_mib=704.0 meta_step_mib=3.9 rss_growth_kib_per_step=0.0")
TF = ("case=tf config=quadratic ms_per_meta_step=50.00 first_meta_loss=69.7549591 "
      "achieved_gflops=15.00 other_cores=0.04 peak_rss_mib=656.7")
TORCH = ("case=torch+compile config=quadratic ms_per_meta_step=40.00 first_meta_loss=69.7549438 "
         "achieved_gflops=18.75 other_cores=0.02")


def run_main(argv):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    status = suite.main(argv)
  return status, out.getvalue()


class MachineLineTest(absltest.TestCase):

  def test_machine_line_names_the_cpu(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    path = os.path.join(directory, "cpuinfo")
    with open(path, "w") as f:
      f.write("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse2 avx2 fma "
              "avx512f avx512_bf16\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B14\n")
    fields = speed.parse(suite.machine_line(path))
    self.assertEqual(fields["case"], "machine")
    self.assertEqual(fields["cpu_model"], "AMD_EPYC_9B14")
    self.assertEqual(fields["simd"], "avx512f+avx512_bf16+avx2+fma")
    self.assertEqual(int(fields["cpus"]), os.cpu_count())
    missing = speed.parse(suite.machine_line(os.path.join(path, "nothing")))
    self.assertEqual((missing["cpu_model"], missing["simd"]), ("unknown", "none"))


class SelectTest(absltest.TestCase):

  def select(self, argv):
    return suite.select(suite.build_parser().parse_args(argv))

  def test_default_is_every_case_and_extra(self):
    cases, configs, extras = self.select([])
    self.assertEqual(cases, list(speed.DEFAULT_CASES))
    self.assertEqual(configs, ["quadratic", "mlp"])
    self.assertEqual(extras, ["apply_1m", "maml_sinusoid", "leak", "meta_throughput"])

  def test_named_cases_only(self):
    self.assertEqual(self.select(["--cases", "l2l,tf+xla", "--configs", "mlp"]),
                     (["l2l", "tf+xla"], ["mlp"], []))
    self.assertEqual(self.select(["--cases", "leak,apply_1m"]), ([], ["quadratic", "mlp"],
                                                                 ["leak", "apply_1m"]))

  def test_extras_option_replaces_the_extras_of_cases(self):
    self.assertEqual(self.select(["--extras", "none"])[2], [])
    self.assertEqual(self.select(["--cases", "l2l,leak", "--extras", "maml_sinusoid"]),
                     (["l2l"], ["quadratic", "mlp"], ["maml_sinusoid"]))
    self.assertEqual(self.select(["--cases", "l2l", "--extras", "all"])[2],
                     list(suite.EXTRAS))

  def test_unknown_names_raise(self):
    with self.assertRaisesRegex(ValueError, r"unknown cases \['tensorflow'\]"):
      self.select(["--cases", "l2l,tensorflow"])
    with self.assertRaisesRegex(ValueError, r"unknown extras \['leaks'\]"):
      self.select(["--extras", "leaks"])
    with self.assertRaisesRegex(ValueError, r"unknown configs \['cnn'\]"):
      self.select(["--configs", "quadratic,cnn"])

  def test_meta_throughput_extra_and_its_options(self):
    self.assertEqual(self.select(["--extras", "meta_throughput"])[2], ["meta_throughput"])
    self.assertEqual(self.select(["--cases", "l2l,meta_throughput"])[::2],
                     (["l2l"], ["meta_throughput"]))
    module, options = suite.EXTRAS["meta_throughput"]
    self.assertEqual(module, "bench.meta_throughput")
    args = suite.build_parser().parse_args([])
    self.assertEqual(options(args), ["--steps", "10", "--repeats", "3"])
    args = suite.build_parser().parse_args(["--throughput_steps", "4", "--throughput_repeats",
                                            "2"])
    self.assertEqual(options(args), ["--steps", "4", "--repeats", "2"])

  def test_main_rejects_unknown_case(self):
    with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
      suite.main(["--cases", "nope"])

  def test_interpreter_options(self):
    args = suite.build_parser().parse_args(["--torch_python", "/x/python", "--repeats", "3",
                                            "--steps", "5"])
    self.assertEqual(speed.interpreter("torch+compile", args), "/x/python")
    self.assertEqual(speed.interpreter("jax", args), "/tmp/jaxenv/bin/python")
    self.assertEqual((args.repeats, args.steps), (3, 5))


class SummaryTest(absltest.TestCase):

  def test_parse(self):
    fields = speed.parse(L2L + "\nfirst_meta_loss=1e-05 (after 3 steps)")
    self.assertEqual(fields["case"], "l2l")
    self.assertEqual(fields["ms_per_meta_step"], "25.00")
    self.assertEqual(fields["first_meta_loss"], "1e-05")  # The last value of a key wins.

  def test_summary_line(self):
    by_case = {"l2l": [speed.parse(L2L)], "tf": [speed.parse(TF)],
               "torch+compile": [speed.parse(TORCH)]}
    fields = speed.parse(speed.summary_line("quadratic", by_case, peak=100.))
    self.assertEqual(fields["fastest_peer"], "torch+compile")
    self.assertEqual(fields["speedup_vs_fastest_peer"], "1.60")  # 40 / 25.
    self.assertEqual(fields["l2l_fraction_of_matmul_peak"], "0.300")
    self.assertEqual(fields["l2l_peak_rss_mib"], "703.6")
    self.assertEqual(fields["max_rel_diff_vs_peers"], "1.1e-07")
    self.assertEqual(fields["first_meta_loss_match"], "True")

  def test_summary_reports_the_thread_variants_against_the_same_peer(self):
    by_case = {"l2l": [speed.parse(L2L)], "torch+compile": [speed.parse(TORCH)],
               "l2l+intra_op1": [dict(speed.parse(L2L), case="l2l+intra_op1",
                                      ms_per_meta_step="20")],
               "l2l+inter_op1": [dict(speed.parse(L2L), case="l2l+inter_op1",
                                      ms_per_meta_step="32")]}
    fields = speed.parse(speed.summary_line("quadratic", by_case, peak=None))
    self.assertEqual(fields["fastest_peer"], "torch+compile")  # Own cases are not peers.
    self.assertEqual(fields["speedup_vs_fastest_peer"], "1.60")  # 40 / 25.
    self.assertEqual(fields["l2l_intra_op1_ms"], "20.00")
    self.assertEqual(fields["speedup_intra_op1_vs_fastest_peer"], "2.00")
    self.assertEqual(fields["l2l_inter_op1_ms"], "32.00")
    self.assertEqual(fields["speedup_inter_op1_vs_fastest_peer"], "1.25")

  def test_summary_uses_medians_and_flags_a_mismatch(self):
    runs = [dict(speed.parse(TF), ms_per_meta_step=ms) for ms in ("50", "10", "70")]
    wrong = dict(speed.parse(TORCH), first_meta_loss="70.5")
    fields = speed.parse(speed.summary_line(
        "quadratic", {"l2l": [speed.parse(L2L)], "tf": runs, "torch": [wrong]}, peak=None))
    self.assertEqual(fields["fastest_peer"], "torch")
    self.assertEqual(fields["first_meta_loss_match"], "False")
    self.assertNotIn("l2l_fraction_of_matmul_peak", fields)
    self.assertEqual(suite.failed_checks(fields), ["first_meta_loss_match"])

  def test_no_summary_without_l2l_and_no_speedup_without_peers(self):
    self.assertIsNone(speed.summary_line("mlp", {"l2l": [], "tf": [speed.parse(TF)]}, None))
    line = speed.summary_line("mlp", {"l2l": [speed.parse(L2L)]}, None)
    self.assertIn("speedup_vs_fastest_peer=n/a", line)

  def test_failed_checks(self):
    self.assertEqual(suite.failed_checks(speed.parse(
        "case=leak flat=False traced_once=True")), ["flat"])
    self.assertEqual(suite.failed_checks(speed.parse(
        "case=leak flat=True traced_once=False")), ["traced_once"])
    self.assertEqual(suite.failed_checks(speed.parse(
        "case=leak flat=True traced_once=True first_meta_loss_match=False")),
                     ["first_meta_loss_match"])
    self.assertEqual(suite.failed_checks(speed.parse("case=apply_1m ratio_vs_adam=3")), [])


class SkipAndFailTest(absltest.TestCase):

  def test_missing_interpreter_is_skipped_with_a_note(self):
    status, out = run_main(["--cases", "tf,torch", "--configs", "quadratic", "--extras", "none",
                            "--tf_python", "/nonexistent/python", "--torch_python",
                            "/nonexistent/python", "--no_matmul_peak"])
    self.assertEqual(status, 0)
    self.assertIn("case=tf config=quadratic skipped=1 note=no_interpreter_at_/nonexistent/python",
                  out)
    self.assertIn("case=torch config=quadratic skipped=1", out)
    self.assertIn("summary suite cases=2 skipped=2 failed=0 checks_failed=none", out)

  def test_failing_extra_is_reported(self):
    args = types.SimpleNamespace(timeout=60)
    with mock.patch.dict(suite.EXTRAS, {"bogus": ("bench.no_such_case", lambda a: [])}):
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        results = suite.run_extra("bogus", args)
    self.assertEqual(results[0]["failed"], "1")
    self.assertIn("case=bogus failed=1 note=", out.getvalue())


class MemoryTest(absltest.TestCase):

  def test_memory_fields(self):
    fields = rss.memory_fields(base=100., after_warmup=150., end=151., steps=4, step_peak=180.,
                               peak=200.)
    self.assertEqual(fields, {"rss_base_mib": "100.0", "peak_rss_mib": "200.0",
                              "rss_warm_mib": "150.0", "step_peak_rss_mib": "180.0",
                              "meta_step_mib": "30.0", "rss_growth_kib_per_step": "256.0"})
    self.assertNotIn("meta_step_mib", rss.memory_fields(1., 1., 1., 1, None, 1.))
    # Memory returned below the warm level: no negative need.
    self.assertEqual(rss.memory_fields(1., 150., 140., 1, 149.9, 200.)["meta_step_mib"], "0.0")

  def test_with_memory_wraps_the_timing_loop(self):
    """The marks are taken where the docstring says: base before the first step, warm after the
    untimed ones, end after the timed ones (a fake /proc: resident memory 100 MiB + 10 per
    step), and the high-water mark is reset after the warm-up."""
    calls, steps_run = [], [0]

    def benchmark(args, step_fn, tag):  # The peers' loop: 1 + (warmup - 1) + steps calls.
      for _ in range(max(1, args.warmup) + args.steps):
        step_fn()
      calls.append(tag)

    def step_fn():
      steps_run[0] += 1
      return 1.0

    out = io.StringIO()
    with mock.patch.object(rss, "current_mib", lambda: 100. + 10. * steps_run[0]), \
        mock.patch.object(rss, "peak_mib", lambda: 500.), \
        mock.patch.object(rss, "reset_high_water", lambda: True), \
        mock.patch.object(rss, "high_water_mib", lambda: 160.), \
        contextlib.redirect_stdout(out):
      rss.with_memory(benchmark, types.SimpleNamespace(warmup=2, steps=3), step_fn, "fake")
    self.assertEqual(calls, ["fake"])
    self.assertEqual(steps_run[0], 5)
    fields = speed.parse(out.getvalue())
    # base: before step 1 (100); warm: after the 2 untimed steps (120); end: after 5 (150).
    self.assertEqual(fields, {"rss_base_mib": "100.0", "peak_rss_mib": "500.0",
                              "rss_warm_mib": "120.0", "step_peak_rss_mib": "160.0",
                              "meta_step_mib": "40.0",
                              "rss_growth_kib_per_step": f"{30 * 1024 / 3:.1f}"})

  def test_without_a_resettable_high_water_mark(self):
    out = io.StringIO()
    with mock.patch.object(rss, "reset_high_water", lambda: False), \
        contextlib.redirect_stdout(out):
      rss.with_memory(lambda args, step_fn, tag: [step_fn() for _ in range(3)],
                      types.SimpleNamespace(warmup=1, steps=2), lambda: 1.0, "fake")
    fields = speed.parse(out.getvalue())
    self.assertNotIn("step_peak_rss_mib", fields)
    self.assertNotIn("meta_step_mib", fields)

  def test_proc_readings(self):
    """The /proc readers use the same unit (MiB): the resident size now is at most the peak."""
    current, peak = rss.current_mib(), rss.peak_mib()
    self.assertGreater(current, 1.)
    self.assertLessEqual(current, peak + 1.)


if __name__ == "__main__":
  absltest.main()
