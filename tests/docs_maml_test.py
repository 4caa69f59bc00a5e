"""The README's MAML section: its Python examples run as written and do what they claim.

tests/readme_test.py runs every README block; this test finds the MAML section's blocks by its
heading and checks their results (meta-training lowers the held-out loss, a learnable inner
learning rate gets a gradient).
"""

import contextlib
import io
import os
import re

from absl.testing import absltest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
HEADING = "## Meta-learning initializations"


def section_blocks():
  with open(README) as f:
    text = f.read()
  start = text.index(HEADING)
  end = text.find("\n## ", start + len(HEADING))
  section = text[start:] if end < 0 else text[start:end]
  return re.findall(r"```python\n(.*?)```", section, flags=re.S)


class DocsMamlTest(absltest.TestCase):

  def test_examples_run_and_meta_training_helps(self):
    blocks = section_blocks()
    self.assertLen(blocks, 4)
    # Found by content, so that a new example does not shift them (readme_test checks the
    # rule_optimizer one).
    block = lambda marker: compile([b for b in blocks if marker in b][0], README, "exec")
    first = {}
    with contextlib.redirect_stdout(io.StringIO()):
      exec(block("trainer.fit(num_iterations=300"), first)  # pylint: disable=exec-used
    self.assertLess(first["after"], first["before"])
    second = {}
    exec(block("lr_grad = tape.gradient"), second)  # pylint: disable=exec-used
    self.assertNotEqual(float(second["lr_grad"]), 0.)
    # ivy's own documentation example of maml_step: what ivy 0.0.9.16 prints.
    third = {}
    with contextlib.redirect_stdout(io.StringIO()):
      exec(block("l2l.maml_step(batch"), third)  # pylint: disable=exec-used
    self.assertAlmostEqual(float(third["cost"]), 1.40069818, places=5)
    self.assertAlmostEqual(float(third["grads"]["latent"].numpy().ravel()[0]), -1.13723135,
                           places=5)
    self.assertEqual(third["rest"], ())


if __name__ == "__main__":
  absltest.main()
