"""`bench/meta_throughput.py` (the suite's `meta_throughput` extra): it runs through
`python -m bench` at tiny sizes and prints consistent fields; its defaults are train.py's; bad
options fail with one line. No timing is asserted."""

import contextlib
import io
import math
from unittest import mock

from absl.testing import absltest

from bench import __main__ as suite
from bench import meta_throughput
from bench import speed
import cli_errors


class MetaThroughputSuiteTest(absltest.TestCase):

  def test_the_suite_launches_it_and_its_lines_parse(self):
    """`python -m bench --extras meta_throughput` (in-process suite, the case in its own process as
    every extra), with tiny sizes added to the suite's options: one line per rule x gradient."""
    module, options = suite.EXTRAS["meta_throughput"]
    tiny = lambda a: options(a) + ["--warmup", "1", "--len_unroll", "2", "--particles", "1"]
    out = io.StringIO()
    with mock.patch.dict(suite.EXTRAS, {"meta_throughput": (module, tiny)}), \
        contextlib.redirect_stdout(out):
      status = suite.main(["--extras", "meta_throughput", "--cases", "meta_throughput",
                           "--throughput_steps", "2", "--throughput_repeats", "1"])
    text = out.getvalue()
    self.assertEqual(status, 0, text)
    lines = [speed.parse(l) for l in text.splitlines() if l.startswith("case=meta_throughput")]
    self.assertEqual(sorted((f["rule"], f["gradient"]) for f in lines),
                     [("lstm", "backprop"), ("lstm", "pes"), ("mlp_rule", "backprop"),
                      ("mlp_rule", "pes")])
    # digits_mlp_tanh_32: 64 -> 32 -> 10 with biases.
    params = 64 * 32 + 32 + 32 * 10 + 10
    for f in lines:
      self.assertEqual(int(f["params"]), params)
      self.assertEqual(f["task"], "digits_mlp_tanh_32")
      self.assertEqual((int(f["len_unroll"]), int(f["steps"]), int(f["repeats"])), (2, 2, 1))
      pes = f["gradient"] == "pes"
      self.assertEqual(int(f["particles"]), 1 if pes else 0)
      per_step = 2 * 2 * 1 if pes else 2  # 2 particles (1 pair) x 2 steps, or one trajectory.
      self.assertEqual(int(f["optimizee_steps_per_meta_step"]), per_step)
      ms, rate = float(f["ms_per_meta_step"]), float(f["optimizee_steps_per_s"])
      self.assertGreater(ms, 0.)
      self.assertGreater(rate, 0.)
      # One repeat: the rate is the step count over the median step's seconds (both rounded).
      self.assertTrue(math.isclose(rate, 1e3 * per_step / ms, rel_tol=0.01), f)
      self.assertLessEqual(float(f["ms_per_meta_step_min"]), ms)
      self.assertGreaterEqual(float(f["ms_per_meta_step_max"]), ms)
      self.assertEqual(f["traces"], "1")
      self.assertEqual((f["inter_op_threads"], f["intra_op_threads"]), ("0", "1"))
      self.assertGreaterEqual(int(f["cpus_allowed"]), 1)
      self.assertEqual(f["cpu_model"], speed.parse(suite.machine_line())["cpu_model"])
    self.assertIn("summary suite cases=4 skipped=0 failed=0 checks_failed=none", text)


class MetaThroughputOptionsTest(absltest.TestCase):

  def test_defaults_are_train_py_defaults(self):
    from l2l import options  # pylint: disable=g-import-not-at-top
    from l2l.versatile import suite_training  # pylint: disable=g-import-not-at-top
    train, suite_config = options.TrainConfig(), suite_training.SuiteTrainConfig()
    settings = meta_throughput.default_settings()
    self.assertEqual(settings["lstm", "pes"],
                     (train.unroll_length, train.pes_particles, train.num_steps))
    self.assertEqual(settings["lstm", "backprop"], (train.unroll_length, 0, train.num_steps))
    self.assertEqual(settings["mlp_rule", "pes"], (suite_config.unroll_length,
                                                   suite_config.pes_particles,
                                                   suite_config.num_steps))
    self.assertEqual(settings["mlp_rule", "backprop"][:2], (train.unroll_length, 0))

  def test_find_task(self):
    self.assertEqual(meta_throughput.find_task("digits_mlp_tanh_32").name, "digits_mlp_tanh_32")
    with self.assertRaisesRegex(ValueError, r"--task: no task 'nope' in problems.SUITES"):
      meta_throughput.find_task("nope")

  def test_bad_options_fail_with_one_line(self):
    cli_errors.assert_one_line_errors(self, meta_throughput.main, (
        (["--rules", "lstm,adam"], "--rules: expected some of"),
        (["--gradients", ""], "--gradients: expected some of"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--particles", "-1"], "--particles must be >= 0, got -1")))


if __name__ == "__main__":
  absltest.main()
