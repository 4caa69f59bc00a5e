"""MetaTrainer (cross-checked against maml_step / reptile_step), fewshot.run and maml.py."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
import problems
from l2l import fewshot
from l2l import functional
from l2l import meta_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def built_mlp(seed=0):
  model = snt.nets.MLP([8, 1], name="mlp", w_init=snt.initializers.RandomNormal(seed=seed))
  model(tf.zeros([1, 1]))
  return model


def functional_costs(model):
  def cost(x, y, v):
    return meta_trainer.mse(functional.call(model, v, x), y)
  inner = lambda b, v: cost(b.support_x, b.support_y, v)
  outer = lambda b, v: cost(b.query_x, b.query_y, v)
  return inner, outer


class MetaTrainerTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("MAML", False), ("FOMAML", True))
  def test_meta_step_applies_the_maml_step_gradient(self, _, first_order):
    tasks = problems.SinusoidTaskSampler(k_support=5, k_query=5, seed=1).sample(4)
    model = built_mlp()
    before = functional.values(functional.named_parameters(model))
    inner, outer = functional_costs(model)
    step_fn = l2l.fomaml_step if first_order else l2l.maml_step
    _, expected = step_fn(tf.nest.map_structure(tf.constant, tasks), inner, outer, before, 2,
                          0.05)
    trainer = l2l.MetaTrainer(l2l.MAML(model, 0.05, 2, first_order=first_order),
                              snt.optimizers.SGD(1.0), meta_trainer.mse, None)
    trainer.meta_step(tasks)
    for name, var in functional.named_parameters(model).items():
      self.assertAllClose(before[name] - var, expected[name], rtol=1e-4, atol=1e-6)

  def test_reptile_step_matches_reptile_step_function(self):
    tasks = problems.SinusoidTaskSampler(k_support=5, k_query=5, seed=2).sample(3)
    model = built_mlp()
    before = functional.values(functional.named_parameters(model))
    inner, _ = functional_costs(model)
    _, expected = l2l.reptile_step(tf.nest.map_structure(tf.constant, tasks), inner, before, 3,
                                   0.05)
    trainer = l2l.MetaTrainer(l2l.Reptile(model, 0.05, 3), snt.optimizers.SGD(1.0),
                              meta_trainer.mse, None)
    trainer.meta_step(tasks)
    for name, var in functional.named_parameters(model).items():
      self.assertAllClose(before[name] - var, expected[name], rtol=1e-4, atol=1e-6)

  def test_batched_and_loop_agree(self):
    tasks = problems.SinusoidTaskSampler(k_support=5, seed=3).sample(3)
    results, initial = [], None
    for batched in (True, False):
      model = built_mlp()
      if initial is None:
        initial = [v.numpy() for v in model.trainable_variables]
      for v, value in zip(model.trainable_variables, initial):  # The same start for both.
        v.assign(value)
      trainer = l2l.MetaTrainer(l2l.MetaSGD(model, 0.05), snt.optimizers.SGD(0.1),
                                meta_trainer.mse, None, batched=batched)
      loss = trainer.meta_step(tasks)
      results.append((loss, [v.numpy() for v in trainer.maml.trainable_variables]))
    self.assertAllClose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)

  def test_evaluate_with_zero_steps_is_the_query_loss(self):
    tasks = problems.SinusoidTaskSampler(k_support=5, k_query=7, seed=4).sample(5)
    model = built_mlp()
    trainer = l2l.MetaTrainer(l2l.MAML(model), snt.optimizers.Adam(1e-3), meta_trainer.mse,
                              None)
    result = trainer.evaluate(tasks, steps=0, chunk_size=2)
    losses = [np.mean((model(tasks.query_x[i]).numpy() - tasks.query_y[i]) ** 2)
              for i in range(5)]
    self.assertAllClose(result["loss"], np.mean(losses), rtol=1e-5)
    self.assertAllClose(result["loss_stderr"], np.std(losses, ddof=1) / np.sqrt(5), rtol=1e-4)

  def test_fit_learns_and_records(self):
    sampler = problems.SinusoidTaskSampler(k_support=10, seed=5)
    held_out = problems.SinusoidTaskSampler(k_support=10, seed=6).sample(50)
    model = snt.nets.MLP([40, 40, 1], name="mlp")
    model(tf.zeros([1, 1]))
    trainer = l2l.MetaTrainer(l2l.MAML(model, 0.01), snt.optimizers.Adam(1e-3),
                              meta_trainer.mse, sampler)
    before = trainer.evaluate(held_out)["loss"]
    calls = []
    history = trainer.fit(300, 10, eval_every=150, eval_tasks=held_out,
                          callback=lambda i, loss, h: calls.append(i))
    self.assertLen(history.meta_losses, 300)
    self.assertEqual(history.eval_iterations, [150, 300])
    self.assertEqual(calls, list(range(1, 301)))
    # 300 meta-steps lower the held-out post-adaptation loss clearly (4.2 -> ~2 here).
    self.assertLess(history.eval_results[-1]["loss"], 0.75 * before)

  def test_bad_arguments(self):
    trainer = l2l.MetaTrainer(l2l.MAML(built_mlp()), snt.optimizers.Adam(1e-3),
                              meta_trainer.mse, problems.SinusoidTaskSampler())
    with self.assertRaisesRegex(ValueError, "eval_every and eval_tasks go together"):
      trainer.fit(1, 2, eval_every=1)
    with self.assertRaisesRegex(ValueError, "meta_batch_size must be a positive integer"):
      trainer.fit(1, 0)
    with self.assertRaisesRegex(TypeError, "maml must be an l2l.MAML"):
      l2l.MetaTrainer(built_mlp(), snt.optimizers.Adam(1e-3), meta_trainer.mse, None)
    with self.assertRaisesRegex(ValueError, "Reptile needs inner_steps >= 1"):
      l2l.Reptile(built_mlp(), inner_steps=0)


class FewShotRunTest(absltest.TestCase):

  def test_digits_run_writes_results_and_resumes(self):
    workdir = tempfile.mkdtemp()
    config = fewshot.FewShotConfig(problem="digits", methods=("MAML", "Pretrained"), shots=(1,),
                                   num_iterations=4, meta_batch_size=2, inner_lr=0.5,
                                   inner_steps=1, eval_steps=(0, 1), num_eval_tasks=20,
                                   k_query=3, hidden=(16,), workdir=workdir, checkpoint_every=2)
    first = fewshot.run(config)
    self.assertIn("| MAML |", first["table"])
    with open(os.path.join(workdir, "results.json")) as f:
      rows = json.load(f)["rows"]
    self.assertLen(rows, 2)
    for row in rows:
      self.assertBetween(row["accuracy@1"], 0., 1.)
    # Untrained on the held-out classes' label order, 0 steps is chance level (1/5) or so.
    self.assertLess(rows[0]["accuracy@0"], 0.5)
    # A second run with more iterations resumes at iteration 4 and trains 2 more.
    config.num_iterations = 6
    second = fewshot.run(config)
    self.assertEqual(second["rows"][0]["final_meta_loss"] is not None, True)
    self.assertTrue(os.path.exists(os.path.join(workdir, "MAML_1shot", "ckpt-6.index")))

  def test_bad_config(self):
    with self.assertRaisesRegex(ValueError, "unknown methods"):
      fewshot.FewShotConfig(methods=("MAMLX",)).validate()
    with self.assertRaisesRegex(ValueError, "unknown problem"):
      fewshot.FewShotConfig(problem="omniglot").validate()

  def test_script_rejects_bad_flags(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "maml.py", "--methods=Nope"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("unknown methods", out.stderr)
    self.assertNotIn("Traceback", out.stderr)


if __name__ == "__main__":
  absltest.main()
