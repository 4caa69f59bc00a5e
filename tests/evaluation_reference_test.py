"""`l2l.evaluation` against NumPy re-runs: which instance stream tunes and which one scores a
baseline, the learning rate tuning picks, and the standard error evaluate.py reports."""

import math
import types
from unittest import mock

import numpy as np
import tensorflow as tf

import l2l
import problems
from l2l import configs
from l2l import evaluation

# float32 TF against float64 NumPy over a few SGD steps: float32 rounding only.
NUMPY_RTOL = 1e-4
GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 3.0)  # 3.0 diverges on these quadratics.
EPOCHS, STEPS, SEED = 3, 8, 5


class RecordingProblem:
  """`make_problem` of small quadratics that records the seeds it is called with."""

  def __init__(self):
    self.seeds = []

  def __call__(self, seed):
    self.seeds.append(seed)
    return problems.quadratic(batch_size=3, num_dims=4, seed=seed)


def numpy_instances(seed, count):
  """The instances `run_optimizer` runs for a stream: the MetaLoss draws the first one when it
  is built, then each epoch's reset draws the next, so these are draws 2..count+1."""
  problem = l2l.Problem(problems.quadratic(batch_size=3, num_dims=4, seed=seed))
  draws = [problem.initial_values() for _ in range(count + 1)][1:]
  return [tuple(t.numpy().astype(np.float64) for t in (*params, *constants))
          for params, constants in draws]


def sgd_final_losses_np(instances, learning_rate, steps):
  """Gradient descent on mean_b ||W_b x_b - y_b||^2 of each instance; the final losses."""
  finals = []
  with np.errstate(over="ignore", invalid="ignore"):
    for x, w, y in instances:
      for _ in range(steps):
        residual = np.einsum("bij,bj->bi", w, x) - y
        x = x - learning_rate * 2 * np.einsum("bij,bi->bj", w, residual) / len(x)
      residual = np.einsum("bij,bj->bi", w, x) - y
      finals.append(np.mean(np.sum(residual ** 2, axis=1)))
  return np.array(finals)


def log10_mean_np(finals):
  mean = np.mean(finals)
  return math.log10(mean) if np.isfinite(mean) else float("inf")


class TuningTest(tf.test.TestCase):

  def test_tunes_on_the_tune_stream_only(self):
    make_problem = RecordingProblem()
    evaluation.tune_learning_rate("SGD", make_problem, EPOCHS, STEPS, SEED, GRID)
    tune = evaluation.instance_seed(SEED, evaluation.TUNE)
    self.assertEqual(make_problem.seeds, [tune] * len(GRID))
    others = {evaluation.instance_seed(SEED, p)
              for p in (evaluation.TRAIN, evaluation.VALIDATION, evaluation.TEST)}
    self.assertNotIn(tune, others)

  def test_chosen_rate_matches_a_numpy_rerun_on_the_tune_instances(self):
    result = evaluation.tune_learning_rate("SGD", RecordingProblem(), EPOCHS, STEPS, SEED, GRID)
    instances = numpy_instances(evaluation.instance_seed(SEED, evaluation.TUNE), EPOCHS)
    expected = {lr: log10_mean_np(sgd_final_losses_np(instances, lr, STEPS)) for lr in GRID}
    self.assertEqual(set(result["grid"]), set(GRID))
    for lr in GRID:
      if math.isfinite(expected[lr]):
        self.assertAllClose(result["grid"][lr], expected[lr], rtol=NUMPY_RTOL, msg=str(lr))
      else:
        self.assertEqual(result["grid"][lr], float("inf"), msg=str(lr))
    self.assertEqual(result["learning_rate"], min(GRID, key=lambda lr: expected[lr]))
    # Not the edge of the grid: a rate on either side scores worse.
    self.assertNotIn(result["learning_rate"], (GRID[0], GRID[-1]))

  def test_evaluate_tunes_on_tune_and_scores_on_test(self):
    make_problem = RecordingProblem()
    named = types.SimpleNamespace(make_problem=make_problem, net_assignments=None)
    with mock.patch.object(configs, "get_config", lambda *a, **k: named):
      output = evaluation.evaluate("quadratic", ["SGD"], num_epochs=EPOCHS, num_steps=STEPS,
                                   seed=SEED, tuning_epochs=2, grid=GRID)
    tune = evaluation.instance_seed(SEED, evaluation.TUNE)
    test = evaluation.instance_seed(SEED, evaluation.TEST)
    self.assertEqual(make_problem.seeds, [tune] * len(GRID) + [test])
    row = output["results"]["SGD"]
    finals = sgd_final_losses_np(numpy_instances(test, EPOCHS), row["learning_rate"], STEPS)
    self.assertAllClose(row["final_loss_mean"], np.mean(finals), rtol=NUMPY_RTOL)
    self.assertAllClose(row["log10_standard_error"],
                        np.std(finals, ddof=1) / math.sqrt(EPOCHS) / (np.mean(finals)
                                                                      * math.log(10)),
                        rtol=1e-3)


class StandardErrorTest(tf.test.TestCase):

  def test_log10_standard_error_by_the_delta_method(self):
    """se(log10 m) = se(m) / (m ln 10), se(m) = s / sqrt(n), s the sample deviation."""
    finals = np.array([1., 2., 3., 4.])
    curves = evaluation.Curves(np.stack([np.full(4, 9.), np.zeros(4), finals], axis=1))
    s = math.sqrt(((1.5 ** 2 + 0.5 ** 2) * 2) / 3)  # 1.2910: mean 2.5, ddof 1.
    self.assertAllClose(curves.log10_standard_error, s / 2 / (2.5 * math.log(10)), rtol=1e-12)
    self.assertAllClose(curves.log10_standard_error, 0.112134, rtol=1e-5)

  def test_standard_error_shrinks_as_one_over_sqrt_n(self):
    finals = np.random.RandomState(0).lognormal(size=10)
    one = evaluation.Curves(finals[:, None]).log10_standard_error
    four = evaluation.Curves(np.tile(finals, 4)[:, None]).log10_standard_error
    # Four copies: 4 times the instances (se / 2), and ddof 1 over 39 instead of 9 terms.
    self.assertAllClose(one / four, 2 * math.sqrt(39 / 36), rtol=1e-10)

  def test_result_row_and_table_report_it(self):
    curves = evaluation.Curves(np.array([[5., 1.], [5., 2.], [5., 3.], [5., 4.]]))
    row = evaluation.result_row(curves, 0.1)
    self.assertAllClose(row["log10_standard_error"], 0.112134, rtol=1e-5)
    self.assertAllClose(row["log10_final_loss_mean"], math.log10(2.5))
    self.assertEqual(row["loss_curve"], [5., 2.5])
    table = evaluation.format_table({"SGD": row})
    self.assertRegex(table.splitlines()[1], r"^SGD\s+0\.1\s+2\.5\s+0\.3979\s+0\.1121$")

  def test_fewer_than_two_or_non_finite_instances(self):
    self.assertEqual(evaluation.Curves(np.ones([1, 2])).log10_standard_error, float("inf"))
    self.assertEqual(evaluation.Curves(np.array([[1.], [np.nan]])).log10_standard_error,
                     float("inf"))


if __name__ == "__main__":
  tf.test.main()
