"""docs/maml.md's Python examples run as written (until they move into the README)."""

import os
import re

from absl.testing import absltest

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "maml.md")


def python_blocks():
  with open(DOC) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


class DocsMamlTest(absltest.TestCase):

  def test_examples_run_and_meta_training_helps(self):
    blocks = python_blocks()
    self.assertLen(blocks, 2)
    first = {}
    exec(compile(blocks[0], DOC, "exec"), first)  # pylint: disable=exec-used
    self.assertLess(first["after"], first["before"])
    second = {}
    exec(compile(blocks[1], DOC, "exec"), second)  # pylint: disable=exec-used
    self.assertNotEqual(float(second["lr_grad"]), 0.)


if __name__ == "__main__":
  absltest.main()
