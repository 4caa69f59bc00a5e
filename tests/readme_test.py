"""The README's Python examples run as written, print what they say they print, and do what the
text around them claims (the optimizer learns, the models train, the gradients are finite).

Every block runs once (in `setUpClass`); the tests then check its namespace and its output.
Blocks are found by their content, not their position, so that new examples do not shift them.
"""

import contextlib
import io
import os
import re
import traceback

from absl.testing import absltest
import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
  with open(README) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


class Run:
  """One block's namespace, standard output and error (a traceback, or None)."""

  def __init__(self, block):
    self.block = block
    self.namespace = {}
    out = io.StringIO()
    try:
      with contextlib.redirect_stdout(out):
        exec(compile(block, README, "exec"), self.namespace)  # pylint: disable=exec-used
      self.error = None
    except Exception:  # pylint: disable=broad-except
      self.error = traceback.format_exc()
    self.output = out.getvalue()


class ReadmeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.runs = [Run(block) for block in python_blocks()]

  def block(self, marker):
    """The run of the one block containing `marker`."""
    runs = [run for run in self.runs if marker in run.block]
    self.assertLen(runs, 1, f"README blocks containing {marker!r}")
    self.assertIsNone(runs[0].error, runs[0].error)
    return runs[0]

  def test_every_example_runs(self):
    self.assertGreaterEqual(len(self.runs), 4)
    for run in self.runs:
      with self.subTest(block=run.block.splitlines()[0]):
        self.assertIsNone(run.error, run.error)

  def test_rule_optimizer_example(self):
    run = self.block("rule_optimizer=snt.optimizers.Adam(1e-4)")
    # Each group moved by its own optimizer's first Adam step (its learning rate, up to eps).
    self.assertIn("largest change: step sizes 1.0e-04, initialization 1.0e-03\n", run.output)

  def test_pretrained_example(self):
    run = self.block("l2l.pretrained(), num_steps=300")
    losses = run.namespace["losses"]
    self.assertIn(f"pretrained: loss {losses[0]:.3f} -> {losses[-1]:.4f}\n", run.output)
    # The shipped optimizer trains a model it never saw, with no meta-training: the digits'
    # cross-entropy (ln 10 = 2.3 at the start) falls at least twenty-fold in 300 steps.
    self.assertLess(losses[-1], losses[0] / 20)

  def test_keras_pretrained_example(self):
    run = self.block("l2l.keras.Optimizer(l2l.pretrained()")
    losses = run.namespace["history"].history["loss"]
    self.assertIn(f"keras: loss {losses[0]:.3f} -> {losses[-1]:.3f}\n", run.output)
    self.assertLess(losses[-1], losses[0] / 3)  # model.fit with the shipped optimizer trains.
    self.assertIsInstance(run.namespace["model"].optimizer, run.namespace["l2l"].keras.Optimizer)

  def test_custom_problem_example(self):
    run = self.block('name="logreg"')
    trainer, learned, adam = (run.namespace[k] for k in ("trainer", "learned", "adam"))
    # The comment after the print: "# ['logreg/w', 'logreg/b']".
    self.assertIn("variables: ['logreg/w', 'logreg/b']\n", run.output)
    self.assertEqual(trainer.meta_loss.param_names, ["logreg/w", "logreg/b"])
    # The printed numbers are the evaluations' (5 held-out instances of 20 steps each).
    match = re.search(r"final loss, learned: (\S+)  Adam\(0\.1\): (\S+)", run.output)
    self.assertIsNotNone(match, run.output)
    self.assertEqual(float(match.group(1)), learned.final_loss_mean)
    self.assertEqual(float(match.group(2)), adam.final_loss_mean)
    self.assertEqual(learned.losses.shape, (5, 21))
    # The saved, reloaded optimizer learned: it lowers the held-out loss (ln 2 = 0.693 at the
    # start: logistic regression from near-zero weights) five-fold (observed 0.040 in 20 steps).
    self.assertLess(learned.final_loss_mean, 0.2 * learned.losses[:, 0].mean())

  def test_several_nets_example(self):
    run = self.block("net_assignments=[(\"cw\", [\"x_0\"]), (\"adam\", [\"x_1\"])]")
    self.assertEqual(run.namespace["trainer"].meta_loss.assignments,
                     [("cw", ["x_0"]), ("adam", ["x_1"])])
    printed = [float(v) for v in re.findall(r"[-+\d.e]+", run.output.strip())]
    self.assertLen(printed, 5)  # The five meta-losses.
    self.assertTrue(np.all(np.isfinite(printed)), printed)

  def test_unseen_models_example(self):
    """"trains a Sonnet model and a Keras 3 model it never saw": both losses fall 20-fold in 100
    steps (observed 2.44 -> 0.004 and 2.34 -> 0.004)."""
    run = self.block("keras_optimizer = l2l.LearnedOptimizer(path)")
    for name, losses in (("Sonnet", run.namespace["sonnet_losses"]),
                         ("Keras", run.namespace["keras_losses"])):
      self.assertLen(losses, 100)
      self.assertLess(losses[-1], 0.05 * losses[0], name)
      self.assertIn(f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}\n", run.output)

  def test_long_horizons_example(self):
    run = self.block("segment_length=25")
    for grad in run.namespace["grads"]:
      self.assertIsNotNone(grad)
      self.assertTrue(np.all(np.isfinite(grad)))
    self.assertGreater(sum(float(np.abs(g).sum()) for g in run.namespace["grads"]), 0.)
    self.assertEqual(int(run.namespace["trainer"].skipped_steps.numpy()), 0)
    self.assertEqual(int(run.namespace["pes"].skipped_steps.numpy()), 0)
    self.assertTrue(np.isfinite(float(run.namespace["pes"].last_meta_loss)))


def l2l_names():
  """Every dotted `l2l.xxx` path in the README's code blocks and inline code."""
  with open(README) as f:
    text = f.read()
  chunks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
  chunks += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
  return sorted({m.group(0) for chunk in chunks
                 for m in re.finditer(r"(?<![\w./-])l2l(?:\.[A-Za-z_]\w*)+(?![\w-])", chunk)})


class ReadmeNamesTest(absltest.TestCase):
  """Every `l2l.xxx` name the README uses resolves after `import l2l` (attribute by attribute;
  `l2l.threads.use_inter_op_threads(1)` used to raise AttributeError)."""

  def test_every_l2l_name_resolves_after_import_l2l(self):
    import l2l  # pylint: disable=g-import-not-at-top
    names = l2l_names()
    self.assertGreaterEqual(len(names), 20)  # The scan finds the README's names at all.
    self.assertIn("l2l.threads.use_intra_op_threads", names)
    for name in names:
      with self.subTest(name=name):
        value = l2l
        for attribute in name.split(".")[1:]:
          self.assertTrue(hasattr(value, attribute), f"{name}: no attribute {attribute!r}")
          value = getattr(value, attribute)

  def test_unknown_names_still_raise_attribute_error(self):
    import l2l  # pylint: disable=g-import-not-at-top
    with self.assertRaisesRegex(AttributeError, "no attribute 'no_such_name'"):
      l2l.no_such_name  # pylint: disable=pointless-statement
    self.assertEqual(sorted(set(l2l.__all__) - set(dir(l2l))), [])
    for name in l2l.__all__:
      self.assertIsNotNone(getattr(l2l, name), name)


if __name__ == "__main__":
  absltest.main()
