"""The README's MAML section: its Python examples run as written and do what they claim.

tests/readme_test.py runs every README block; this test finds the MAML section's blocks by its
heading and checks their results (meta-training lowers the held-out loss, a learnable inner
learning rate gets a gradient).
"""

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
    self.assertLen(blocks, 2)
    first = {}
    exec(compile(blocks[0], README, "exec"), first)  # pylint: disable=exec-used
    self.assertLess(first["after"], first["before"])
    second = {}
    exec(compile(blocks[1], README, "exec"), second)  # pylint: disable=exec-used
    self.assertNotEqual(float(second["lr_grad"]), 0.)


if __name__ == "__main__":
  absltest.main()
