"""ANIL with `anil_head_input="linear"`: its head reads signed features (no ReLU before it).

The head step is checked against a NumPy re-implementation (and its kernel form), the
meta-gradient through the frozen body against central finite differences in float64.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
from l2l.meta_learning import fewshot
from l2l.meta_learning import functional
from l2l.meta_learning import meta_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(workdir: str = "", **changes) -> fewshot.FewShotConfig:
  settings = dict(problem="sinusoid", methods=("ANIL",), shots=(5,), num_iterations=2,
                  meta_batch_size=2, eval_steps=(1,), num_eval_tasks=10, hidden=(8, 6),
                  anil_head_input="linear", anil_inner_lr=0.05, workdir=workdir)
  settings.update(changes)
  return fewshot.FewShotConfig(**settings)


def numpy_features(model: fewshot.LinearFeatureMLP, x: np.ndarray) -> np.ndarray:
  """The body's output: ReLU between its layers, none after the last."""
  layers = sorted((m for m in model.body.submodules if isinstance(m, snt.Linear)),
                  key=lambda m: m.name)
  for i, layer in enumerate(layers):
    x = x @ layer.w.numpy().astype(np.float64) + layer.b.numpy().astype(np.float64)
    if i < len(layers) - 1:
      x = np.maximum(x, 0.)
  return x


class AnilHeadInputTest(absltest.TestCase):

  def test_linear_head_input_step_is_numpy_head_step_on_signed_features(self):
    model, algorithm = fewshot.build(tiny(), "ANIL")
    self.assertIsInstance(model, fewshot.LinearFeatureMLP)
    self.assertIsInstance(algorithm, l2l.ANIL)
    head = [functional.variable_name(v) for v in model.head.trainable_variables]
    self.assertCountEqual(algorithm.adapt_names, head)  # Only the head adapts.
    rng = np.random.default_rng(0)
    xs, xq = rng.uniform(-5, 5, (5, 1)), rng.uniform(-5, 5, (40, 1))
    ys = 2 * np.sin(xs - 0.5)
    learner = algorithm.clone().adapt_on(meta_trainer.mse, tf.constant(xs, tf.float32),
                                         tf.constant(ys, tf.float32))
    got = learner(tf.constant(xq, tf.float32)).numpy()
    # NumPy: one gradient step of the support MSE on the head (w, b) over f = body(x).
    fs, fq = numpy_features(model, xs), numpy_features(model, xq)
    w, b = model.head.w.numpy().astype(np.float64), model.head.b.numpy().astype(np.float64)
    r = fs @ w + b - ys
    lr, k = 0.05, len(xs)
    w1, b1 = w - lr * 2 / k * fs.T @ r, b - lr * 2 / k * r.sum(0)
    np.testing.assert_allclose(got, fq @ w1 + b1, rtol=1e-4, atol=1e-5)
    # The same step as a kernel smoother: -lr (2 / K) sum_i (f(x).f(x_i) + 1) r_i.
    kernel = fq @ fs.T + 1
    np.testing.assert_allclose(got, fq @ w + b - lr * 2 / k * kernel @ r, rtol=1e-4, atol=1e-5)
    # Signed features: the kernel changes sign (with "relu" it never does).
    self.assertLess(fq.min(), 0.)
    self.assertLess(kernel.min(), 0.)

  def test_meta_gradient_through_frozen_body_is_finite_differences(self):
    w_init = snt.initializers.VarianceScaling(1., "fan_avg", "uniform", seed=1)
    model = fewshot.LinearFeatureMLP((6, 4), 1, w_init)
    model(tf.zeros([1, 1], tf.float64))  # float64 variables, for finite differences.
    anil = l2l.ANIL(model, model.head, inner_lr=0.1)
    rng = np.random.default_rng(1)
    xs, xq = tf.constant(rng.uniform(-5, 5, (5, 1))), tf.constant(rng.uniform(-5, 5, (9, 1)))
    ys, yq = tf.sin(xs - 0.3), tf.sin(xq - 0.3)

    def meta_loss():
      return meta_trainer.mse(anil.clone().adapt_on(meta_trainer.mse, xs, ys)(xq), yq)

    with tf.GradientTape() as tape:
      loss = meta_loss()
    grads = tape.gradient(loss, model.trainable_variables)
    eps = 1e-6
    for variable, grad in zip(model.trainable_variables, grads):
      self.assertIsNotNone(grad, variable.name)  # Body and head both get a meta-gradient.
      flat = variable.numpy().ravel()
      numeric = np.zeros_like(flat)
      for i in range(flat.size):
        for sign in (1, -1):
          moved = flat.copy()
          moved[i] += sign * eps
          variable.assign(moved.reshape(variable.shape))
          numeric[i] += sign * meta_loss().numpy() / (2 * eps)
        variable.assign(flat.reshape(variable.shape))
      np.testing.assert_allclose(grad.numpy().ravel(), numeric, rtol=1e-5, atol=1e-8,
                                 err_msg=variable.name)

  def test_relu_default_keeps_the_mlp_and_its_checkpoint_names(self):
    config = dataclasses.replace(tiny(), anil_head_input="relu")
    self.assertEqual(fewshot.FewShotConfig().anil_head_input, "relu")
    model, algorithm = fewshot.build(config, "ANIL")
    self.assertIsInstance(model, snt.nets.MLP)
    self.assertEqual(sorted(algorithm.adapt_names), ["mlp/linear_2/b", "mlp/linear_2/w"])
    # Other methods get the plain MLP whatever ANIL's head input is.
    model, _ = fewshot.build(tiny(methods=("MAML",)), "MAML")
    self.assertIsInstance(model, snt.nets.MLP)

  def test_run_scopes_the_setting_to_anil_rows(self):
    workdir = tempfile.mkdtemp()
    first = fewshot.run(tiny(workdir, methods=("MAML", "ANIL"), anil_head_input="relu"))
    # The ReLU model's checkpoint does not hold the linear-feature model: refused, not resumed.
    with self.assertRaisesRegex(ValueError, "cannot restore the checkpoint .*ANIL_5shot"):
      fewshot.run(tiny(workdir, methods=("ANIL",)))
    shutil.rmtree(os.path.join(workdir, "ANIL_5shot"))
    again = fewshot.run(tiny(workdir, methods=("ANIL",)))
    self.assertEqual(again["rows"][0], first["rows"][0])  # MAML's row kept.
    self.assertNotEqual(again["rows"][1]["loss@1"], first["rows"][1]["loss@1"])
    self.assertIn("ANIL: its head reads the last hidden layer's pre-activations", again["table"])
    self.assertNotIn("pre-activations", first["table"])
    with self.assertRaisesRegex(ValueError, r"results of \['ANIL'\] computed with other settings "
                                r"\(anil_head_input='linear', now 'relu'\)"):
      fewshot.check_workdir(tiny(workdir, methods=("MAML",), anil_head_input="relu"))

  def test_bad_head_input(self):
    with self.assertRaisesRegex(ValueError, r"anil_head_input must be one of \('relu', "
                                r"'linear'\), got 'tanh'"):
      tiny(anil_head_input="tanh").validate()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "maml.py", "--anil_head_input=tanh"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    self.assertNotEqual(out.returncode, 0)
    self.assertRegex(out.stderr, r"^maml.py: error: .*anil_head_input.*\n$")
    self.assertNotIn("Traceback", out.stderr)


if __name__ == "__main__":
  absltest.main()
