"""l2l.versatile.suite_evaluation: the metrics against hand computations, the protocol on the
smoke suite."""

import json
import math
import os
import tempfile

from absl.testing import absltest
import numpy as np

import l2l
from l2l import evaluation
from l2l.versatile import suite_evaluation
from l2l.versatile.suite_training import final_loss


class MetricsTest(absltest.TestCase):

  def test_final_loss_is_the_mean_of_the_last_five_percent(self):
    losses = np.arange(101.)[None]  # Steps 0..100: the last 5 are 96..100.
    self.assertEqual(final_loss(losses)[0], 98.)
    self.assertEqual(final_loss(np.array([[3., 2.]]))[0], 2.)  # At least one step.

  def test_smoothed_matches_a_loop(self):
    curve = np.random.default_rng(0).uniform(size=41)
    got = suite_evaluation.smoothed(curve, horizon=40)  # Window round(41 * 0.05) = 2.
    expected = [np.mean(curve[max(0, t - 1):t + 1]) for t in range(41)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # At the horizon, the smoothed curve is the final loss of that run.
    self.assertAlmostEqual(got[40], final_loss(curve[None])[0])

  def test_speedup(self):
    # 1 - t / 200, smoothed over the last round(101 * 0.05) = 5 steps: 1 - (t - 2) / 200,
    # which reaches 0.5 at t = 102.
    adam = np.linspace(1., 0., 201)
    result = suite_evaluation.speedup(adam, 0.5, horizon=100)
    self.assertFalse(result["censored"])
    self.assertAlmostEqual(result["speedup"], 1.02)
    never = suite_evaluation.speedup(adam, -1., horizon=100)
    self.assertEqual(never, {"speedup": 2.0, "censored": True})

  def test_iqm(self):
    self.assertEqual(suite_evaluation.iqm([8, 1, 2, 3, 4, 5, 6, 7]), 4.5)  # mean(3, 4, 5, 6)
    self.assertEqual(suite_evaluation.iqm([1., 100.]), 50.5)
    self.assertTrue(math.isnan(suite_evaluation.iqm([])))


class ProtocolTest(absltest.TestCase):

  def test_untrained_rule_equals_adam_at_the_same_rate(self):
    # An untrained PerParameterMLP is Adam at its learning rate: against Adam tuned over a grid
    # of that one rate, on the same TEST instances, the ratio is 1 and the speedup at most 1.
    from problems.suite import suite
    task = suite("smoke")[1]
    learned = l2l.MetaOptimizer(rule={"net": "PerParameterMLP",
                                      "net_options": {"learning_rate": 0.01}})
    result = suite_evaluation.evaluate_task(learned, task.make_problem, num_steps=20,
                                            num_runs=2, tuning_runs=1, seed=0, grid=(0.01,))
    for h in (20, 40):
      row = result["horizons"][h]
      self.assertAlmostEqual(row["ratio_to_adam"], 1., delta=1e-4)
      self.assertLessEqual(row["speedup_over_adam"]["speedup"], 1.)
      self.assertEqual(row["Adam"]["learning_rate"], 0.01)
      self.assertLen(row["learned"]["loss_curve"], h + 1)

  def test_tuning_and_evaluation_use_disjoint_streams(self):
    seeds = []

    def make_problem(seed):
      seeds.append(seed)
      from problems.suite import suite
      return suite("smoke")[0].make_problem(seed)

    learned = l2l.MetaOptimizer(rule={"net": "PerParameterMLP"})
    suite_evaluation.evaluate_task(learned, make_problem, num_steps=10, num_runs=1,
                                   tuning_runs=1, seed=5, grid=(0.01, 0.1))
    tune, test = (evaluation.instance_seed(5, p) for p in (evaluation.TUNE, evaluation.TEST))
    self.assertEqual(set(seeds), {tune, test})
    self.assertEqual(seeds.count(tune), 2)  # One tuning run per grid point.

  def test_suite_outputs(self):
    learned = l2l.MetaOptimizer(rule={"net": "PerParameterMLP"})
    output = suite_evaluation.evaluate_suite(learned, "smoke", num_steps=10, num_runs=2,
                                             tuning_runs=1, tasks=["tiny_blobs_linear"],
                                             grid=(0.01, 0.1))
    self.assertEqual(list(output["tasks"]), ["tiny_blobs_linear"])
    summary = output["summary"][10]
    self.assertEqual(summary["tasks"], 1)
    row = output["tasks"]["tiny_blobs_linear"]["horizons"][10]
    self.assertEqual(summary["wins"], int(row["wins_over_adam"]))
    self.assertAlmostEqual(summary["ratio_median"], row["ratio_to_adam"])
    table = suite_evaluation.format_table(output)
    self.assertIn("tiny_blobs_linear", table)
    self.assertIn("10 steps: wins", table)
    reloaded = json.loads(suite_evaluation.to_json(output))
    self.assertIn("10", reloaded["summary"])
    path = os.path.join(tempfile.mkdtemp(), "suite.png")
    suite_evaluation.plot(output, path)
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

  def test_plot_of_extreme_ratios_from_json(self):
    # A loss that underflows to 0 (ratio 0) or an Adam loss of 0 (ratio inf) still plots, from
    # the JSON file's string keys too.
    rows = {str(h): {"ratio_to_adam": r} for h, r in ((10, 0.), (20, math.inf))}
    output = json.loads(json.dumps({"suite": "x", "tasks": {"t": {"horizons": rows}}}))
    path = os.path.join(tempfile.mkdtemp(), "extreme.png")
    suite_evaluation.plot(output, path)
    self.assertGreater(os.path.getsize(path), 1000)

  def test_bad_arguments(self):
    learned = l2l.MetaOptimizer(rule={"net": "PerParameterMLP"})
    with self.assertRaisesRegex(ValueError, "unknown suite 'nope'"):
      suite_evaluation.evaluate_suite(learned, "nope")
    with self.assertRaisesRegex(ValueError, r"unknown tasks \['x'\]"):
      suite_evaluation.evaluate_suite(learned, "smoke", tasks=["x"])
    with self.assertRaisesRegex(ValueError, "unknown baseline 'Adagrad'"):
      suite_evaluation.evaluate_suite(learned, "smoke", baselines=("Adam", "Adagrad"))
    with self.assertRaisesRegex(ValueError, "must include Adam"):
      suite_evaluation.evaluate_suite(learned, "smoke", baselines=("SGD",))


if __name__ == "__main__":
  absltest.main()
