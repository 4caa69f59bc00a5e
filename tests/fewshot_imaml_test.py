"""iMAML in the few-shot tables: registered, trains and evaluates, merges into results.json."""

import dataclasses
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
from l2l.meta_learning import fewshot
from l2l.meta_learning import functional
from l2l.meta_learning import meta_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(workdir: str = "", **changes) -> fewshot.FewShotConfig:
  settings = dict(problem="sinusoid", methods=("iMAML",), shots=(5,), num_iterations=3,
                  meta_batch_size=2, meta_lr=0.01, eval_steps=(0, 5), num_eval_tasks=10,
                  hidden=(8,), imaml_inner_steps=3, imaml_cg_steps=2, workdir=workdir)
  settings.update(changes)
  return fewshot.FewShotConfig(**settings)


def read_rows(workdir: str):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)["rows"]


class FewShotIMAMLTest(parameterized.TestCase):

  def test_registered_with_the_config_settings(self):
    self.assertIn("iMAML", fewshot.METHODS)
    self.assertIn("iMAML", fewshot.FewShotConfig().method_names())
    config = tiny(inner_lr=0.02, imaml_lam=0.5, imaml_inner_steps=7, imaml_cg_steps=4,
                  imaml_damping=0.1)
    _, algorithm = fewshot.build(config, "iMAML")
    self.assertIsInstance(algorithm, l2l.IMAML)
    # The Newton solver (the default) takes full Newton steps unless told otherwise.
    self.assertEqual((algorithm.solver, algorithm.inner_lr, algorithm.inner_steps, algorithm.lam,
                      algorithm.cg_steps, algorithm.damping, algorithm.newton_cg_steps,
                      algorithm.tol), ("newton", 1.0, 7, 0.5, 4, 0.1, 10, 1e-4))
    _, algorithm = fewshot.build(dataclasses.replace(config, imaml_solver="gd"), "iMAML")
    self.assertEqual((algorithm.solver, algorithm.inner_lr), ("gd", 0.02))
    # Its own inner step size, when given.
    _, algorithm = fewshot.build(dataclasses.replace(config, imaml_inner_lr=0.3), "iMAML")
    self.assertEqual(algorithm.inner_lr, 0.3)

  def test_run_trains_and_evaluates(self):
    config = tiny()
    row, = fewshot.run(config)["rows"]
    self.assertEqual((row["method"], row["shots"]), ("iMAML", 5))
    self.assertTrue(np.isfinite(row["final_meta_loss"]))
    self.assertIn("train_seconds", row)
    # Five inner steps on the support points lower the held-out query MSE.
    self.assertLess(row["loss@5"], row["loss@0"])
    # Meta-training moved the initialization: the same held-out tasks, the same model before
    # training (built as `fewshot.run` builds it, from the config's seed).
    untrained = self.initial_model(config)
    again = self.initial_model(config)
    for a, b in zip(untrained.trainable_variables, again.trainable_variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy())  # The same weights every time.
    _, test_tasks = fewshot._samplers(config, 5, False)
    trainer = meta_trainer.MetaTrainer(untrained, snt.optimizers.Adam(0.01),
                                       meta_trainer.mse, None)
    self.assertNotAlmostEqual(trainer.evaluate(test_tasks, 0)["loss"], row["loss@0"], places=4)

  def test_imaml_iterations_train_imaml_only_for_that_many_steps(self):
    workdir = tempfile.mkdtemp()
    config = tiny(workdir, methods=("MAML", "iMAML"), num_iterations=3, imaml_iterations=2,
                  eval_steps=(1,))
    self.assertEqual((config.iterations("MAML"), config.iterations("iMAML")), (3, 2))
    results = fewshot.run(config)
    self.assertEqual([(r["method"], r["iterations"]) for r in results["rows"]],
                     [("MAML", 3), ("iMAML", 2)])
    self.assertIn("iMAML: 2 meta-iterations (the others 3)", results["table"])
    # The checkpoint records the steps done: a rerun with more iMAML steps resumes from 2.
    self.assertTrue(os.path.exists(os.path.join(workdir, "iMAML_5shot", "ckpt-2.index")))
    fewshot.run(dataclasses.replace(config, methods=("iMAML",), imaml_iterations=4))
    self.assertTrue(os.path.exists(os.path.join(workdir, "iMAML_5shot", "ckpt-4.index")))
    self.assertEqual([(r["method"], r["iterations"]) for r in read_rows(workdir)],
                     [("MAML", 3), ("iMAML", 4)])

  @parameterized.parameters(("FOMAML", "fomaml_meta_lr"), ("FOMAML+LSTM", "fomaml_lstm_meta_lr"),
                            ("ANIL", "anil_meta_lr"))
  def test_own_meta_lr_is_the_method_own_outer_learning_rate(self, method, field):
    settings = dict(methods=(method, "MAML"), num_iterations=3, eval_steps=(1,))
    plain = fewshot.run(tiny(meta_lr=0.01, **settings))
    own = fewshot.run(tiny(meta_lr=0.05, **{field: 0.01}, **settings))
    self.assertEqual(tiny(**{field: 0.01}).meta_learning_rate(method), 0.01)
    drop = lambda row: {k: v for k, v in row.items() if k != "train_seconds"}
    # The method trained with 0.01 both times: the same row; MAML with 0.01, then 0.05.
    self.assertEqual(drop(plain["rows"][0]), drop(own["rows"][0]))
    self.assertNotEqual(plain["rows"][1]["loss@1"], own["rows"][1]["loss@1"])
    self.assertIn(f"{method}: meta learning rate 0.01 (the others 0.05)", own["table"])
    with self.assertRaisesRegex(ValueError, f"{field} must be a finite positive number"):
      tiny(**{field: 0.0}).validate()

  def test_anil_inner_lr_is_anil_own_step_size_and_scopes_its_rows(self):
    config = tiny(methods=("ANIL", "MAML"), inner_lr=0.01, anil_inner_lr=0.05)
    self.assertEqual(fewshot.build(config, "ANIL")[1].inner_lr, 0.05)
    self.assertEqual(fewshot.build(config, "MAML")[1].inner_lr, 0.01)
    self.assertEqual(fewshot.build(tiny(methods=("ANIL",)), "ANIL")[1].inner_lr, 0.01)
    workdir = tempfile.mkdtemp()
    fast = dict(num_iterations=2, eval_steps=(1,))
    first = fewshot.run(tiny(workdir, methods=("MAML", "ANIL"), anil_inner_lr=0.05, **fast))
    self.assertIn("ANIL: inner learning rate 0.05 (the others 0.01)", first["table"])
    # ANIL again with another step size: its rows replaced, MAML's kept (the setting is ANIL's).
    again = fewshot.run(tiny(workdir, methods=("ANIL",), anil_inner_lr=0.02, **fast))
    self.assertEqual(again["rows"][0], first["rows"][0])
    self.assertNotEqual(again["rows"][1]["loss@1"], first["rows"][1]["loss@1"])
    # Kept ANIL rows computed with another step size: refused before training.
    with self.assertRaisesRegex(ValueError, r"results of \['ANIL'\] computed with other settings "
                                r"\(anil_inner_lr=0\.02, now 0\.05\)"):
      fewshot.check_workdir(tiny(workdir, methods=("MAML",), anil_inner_lr=0.05, **fast))
    for bad in (0.0, -1.0, float("nan")):
      with self.assertRaisesRegex(ValueError, "anil_inner_lr must be a finite positive number"):
        tiny(anil_inner_lr=bad).validate()

  def test_metasgd_anil_learns_head_rates_with_anil_settings(self):
    config = tiny(methods=("MetaSGD-ANIL",), anil_inner_lr=0.05, anil_meta_lr=0.02)
    model, algorithm = fewshot.build(config, "MetaSGD-ANIL")
    self.assertIsInstance(algorithm, l2l.MetaSGD)
    head = [functional.variable_name(v) for v in model.submodules[-1].trainable_variables]
    self.assertCountEqual(algorithm.adapt_names, head)  # Only the head adapts ...
    for rate in algorithm.lrs:  # ... each coordinate from ANIL's step size.
      np.testing.assert_array_equal(rate.numpy(), np.full(rate.shape, 0.05, np.float32))
    # Its outer learning rate is meta_lr (Meta-SGD's), not ANIL's.
    self.assertEqual(config.meta_learning_rate("MetaSGD-ANIL"), config.meta_lr)
    workdir = tempfile.mkdtemp()
    fast = dict(num_iterations=2, eval_steps=(1,))
    first = fewshot.run(tiny(workdir, methods=("MetaSGD-ANIL",), anil_inner_lr=0.05, **fast))
    self.assertIn("MetaSGD-ANIL: initial inner learning rate 0.05 (the others 0.01)",
                  first["table"])
    # ANIL's settings are its settings: kept rows computed with another step size are refused.
    with self.assertRaisesRegex(ValueError, r"results of \['MetaSGD-ANIL'\] computed with other "
                                r"settings \(anil_inner_lr=0\.05, now 0\.02\)"):
      fewshot.check_workdir(tiny(workdir, methods=("MAML",), anil_inner_lr=0.02, **fast))

  def test_rule_meta_lr_is_the_learned_rule_own_outer_learning_rate(self):
    # One meta-step: Adam's first step moves every coordinate by its learning rate times
    # |g| / (|g| + eps), so the largest move of each group is its own rate.
    config = tiny(methods=("FOMAML+LSTM",), num_iterations=1, eval_steps=(1,),
                  fomaml_lstm_meta_lr=1e-2, fomaml_lstm_rule_meta_lr=1e-4,
                  workdir=tempfile.mkdtemp())
    self.assertEqual((config.rule_meta_learning_rate("FOMAML+LSTM"),
                      config.rule_meta_learning_rate("MAML+LSTM")), (1e-4, None))
    tf.random.set_seed(config.seed)  # As fewshot.run builds it.
    model, algorithm = fewshot.build(config, "FOMAML+LSTM")
    rule = algorithm.inner_optimizer.trainable_variables
    before = [v.numpy() for v in model.trainable_variables], [v.numpy() for v in rule]
    results = fewshot.run(config)
    checkpoint = tf.train.Checkpoint(algorithm=algorithm)
    checkpoint.restore(tf.train.latest_checkpoint(
        os.path.join(config.workdir, "FOMAML+LSTM_5shot"))).expect_partial()
    after = [v.numpy() for v in model.trainable_variables], [v.numpy() for v in rule]
    largest = [max(np.abs(a - b).max() for a, b in zip(*pair)) for pair in zip(after, before)]
    np.testing.assert_allclose(largest, [1e-2, 1e-4], rtol=1e-3)
    self.assertIn("FOMAML+LSTM: meta learning rate 0.0001 for the LSTM's weights, 0.01 for the "
                  "initialization.", results["table"])
    # The second optimizer's state is in the checkpoint (a rerun resumes it).
    names = [n for n, _ in tf.train.list_variables(tf.train.latest_checkpoint(
        os.path.join(config.workdir, "FOMAML+LSTM_5shot")))]
    self.assertTrue(any(n.startswith("rule_optimizer/") for n in names))

  @staticmethod
  def initial_model(config):
    tf.random.set_seed(config.seed)  # As fewshot.run does before building each method.
    return fewshot.build(config, "iMAML")[1]

  def test_results_merge_keeps_other_methods(self):
    workdir = tempfile.mkdtemp()
    fast = dict(num_iterations=1, eval_steps=(1,))
    first = fewshot.run(tiny(workdir, methods=("MAML",), **fast))
    maml_row, = first["rows"]
    # Written before the iMAML settings existed: they count as their defaults.
    path = os.path.join(workdir, "results.json")
    with open(path) as f:
      results = json.load(f)
    for name in ("imaml_lam", "imaml_inner_lr", "imaml_inner_steps", "imaml_cg_steps",
                 "imaml_damping"):
      del results["config"][name]
    with open(path, "w") as f:
      json.dump(results, f)

    merged = fewshot.run(tiny(workdir, **fast))
    self.assertEqual([r["method"] for r in merged["rows"]], ["MAML", "iMAML"])
    self.assertEqual(merged["rows"][0], maml_row)
    self.assertEqual(read_rows(workdir), merged["rows"])
    self.assertEqual(list(merged["config"]["methods"]), ["MAML", "iMAML"])
    self.assertIn("| MAML |", merged["table"])
    self.assertIn("| iMAML |", merged["table"])

    # iMAML again with its own settings changed: its row is replaced, MAML's kept.
    again = fewshot.run(tiny(workdir, imaml_lam=2.0, imaml_inner_lr=0.02, **fast))
    self.assertEqual([r["method"] for r in read_rows(workdir)], ["MAML", "iMAML"])
    self.assertEqual(again["rows"][0], maml_row)
    self.assertNotEqual(again["rows"][1], merged["rows"][1])

    # Settings the kept MAML rows depend on: refused before training.
    with self.assertRaisesRegex(ValueError, r"results of \['MAML'\] computed with other "
                                r"settings \(inner_lr=0\.01, now 0\.02\)"):
      fewshot.run(tiny(workdir, inner_lr=0.02, **fast))
    self.assertEqual(read_rows(workdir), again["rows"])

  def test_run_seeds_table_has_the_merged_methods(self):
    workdir = tempfile.mkdtemp()
    config = tiny(workdir, methods=("MAML",), num_iterations=1, eval_steps=(1,))
    fewshot.run_seeds(config, [0])
    results = fewshot.run_seeds(dataclasses.replace(config, methods=("iMAML",)), [0])
    lines = [l.split(" |")[0] for l in results["table"].splitlines() if l.startswith("| ")]
    self.assertEqual(lines[1:], ["| MAML", "| iMAML"])
    with open(os.path.join(workdir, "results_seeds.json")) as f:
      self.assertIn("| MAML |", json.load(f)["table"])
    # seed_0 holds seed 0's rows: a run writing seed 5's there is refused.
    with self.assertRaisesRegex(ValueError, "seed=0, now 5"):
      fewshot.check_workdir(dataclasses.replace(config, workdir=os.path.join(workdir, "seed_0"),
                                                methods=("iMAML",), seed=5))

  @parameterized.parameters(("imaml_lam", 0.0, "imaml_lam must be a finite positive number"),
                            ("imaml_lam", -1.0, "imaml_lam must be a finite positive"),
                            ("imaml_lam", float("inf"), "imaml_lam must be a finite positive"),
                            ("imaml_damping", -0.1, "imaml_damping must be a finite non-negative"),
                            ("imaml_inner_lr", 0.0, "imaml_inner_lr must be a finite positive"),
                            ("imaml_cg_steps", 0, "imaml_cg_steps must be a positive integer"),
                            ("imaml_inner_steps", 0, "imaml_inner_steps must be a positive"),
                            ("imaml_inner_steps", 2.5, "imaml_inner_steps must be a positive"),
                            ("imaml_iterations", 0, "imaml_iterations must be a positive integer"),
                            ("imaml_iterations", 2.0, "imaml_iterations must be a positive"))
  def test_bad_settings(self, name, value, message):
    with self.assertRaisesRegex(ValueError, message):
      tiny(**{name: value}).validate()

  @parameterized.parameters(("--imaml_lam=0", "imaml_lam"),
                            ("--anil_inner_lr=0", "anil_inner_lr"),
                            ("--fomaml_lstm_meta_lr=-1", "fomaml_lstm_meta_lr"),
                            ("--anil_meta_lr=0", "anil_meta_lr"),
                            ("--fomaml_lstm_rule_meta_lr=-1", "fomaml_lstm_rule_meta_lr"),
                            ("--maml_lstm_rule_meta_lr=0", "maml_lstm_rule_meta_lr"))
  def test_script_rejects_bad_method_flags(self, flag, name):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "maml.py", flag], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    self.assertNotEqual(out.returncode, 0)
    self.assertRegex(out.stderr, f"maml.py: error: {name} must be a finite positive number, "
                     r"got -?\d\.0\n$")
    self.assertNotIn("Traceback", out.stderr)


if __name__ == "__main__":
  absltest.main()
