"""bench/anil_one_step.py: signed per-coordinate head rates turn non-negative features' one-step
kernel into the sinusoids' own (closed form), and fitted rates find it."""

from absl.testing import absltest
import numpy as np

from bench import anil_one_step


class AnilOneStepTest(absltest.TestCase):

  def test_signed_rates_on_shifted_features_are_the_exact_step(self):
    # (1 + s)(1 + s') + (1 - s)(1 - s') = 2 s s' + 2: rates lr (1/2, 1/2, 1/2, 1/2, -2) on
    # [1 +- sin, 1 +- cos, 1] give the kernel lr (sin sin' + cos cos'), the exact features'.
    xs, ys, xq, _ = anil_one_step.sample(shots=5, tasks=50, seed=3)
    lr = 0.7
    exact = anil_one_step.one_step(
        anil_one_step.features(xs, "exact"), ys, anil_one_step.features(xq, "exact"),
        np.zeros(2), lr)
    shifted = anil_one_step.one_step(
        anil_one_step.features(xs, "shifted"), ys, anil_one_step.features(xq, "shifted"),
        np.zeros(5), lr * np.array([0.5, 0.5, 0.5, 0.5, -2.]))
    np.testing.assert_allclose(shifted, exact, rtol=1e-12, atol=1e-12)
    features = anil_one_step.features(xq, "shifted")
    self.assertGreaterEqual(features.min(), 0.)  # Non-negative: a ReLU layer's outputs can be.

  def test_fitted_rates_reach_the_exact_features_one_step(self):
    exact, _ = anil_one_step.best_one_step(10, "exact", 400, seed=1)
    scalar, _ = anil_one_step.best_one_step(10, "shifted", 400, seed=1)
    fitted, rates = anil_one_step.per_coordinate_step(10, "shifted", 400, seed=1)
    self.assertLess(fitted, 1.1 * exact)  # Scored on tasks the rates were not fitted on.
    self.assertGreater(scalar, 3 * fitted)  # One step size: a positive kernel offset.
    self.assertLess(rates[-1], 0)  # The bias's rate is negative.

  def test_bad_kind(self):
    with self.assertRaisesRegex(ValueError, "kind must be 'exact', 'relu' or 'shifted'"):
      anil_one_step.features(np.zeros(3), "tanh")


if __name__ == "__main__":
  absltest.main()
