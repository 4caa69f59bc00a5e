"""The README's Python examples run as written (with the same numbers)."""

import os
import re

from absl.testing import absltest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
  with open(README) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


class ReadmeTest(absltest.TestCase):

  def test_examples_run(self):
    blocks = python_blocks()
    self.assertGreaterEqual(len(blocks), 2)
    for block in blocks:
      with self.subTest(block=block.splitlines()[0]):
        namespace = {}
        exec(compile(block, README, "exec"), namespace)  # pylint: disable=exec-used

  def test_custom_problem_example_learns(self):
    namespace = {}
    exec(compile(python_blocks()[0], README, "exec"), namespace)  # pylint: disable=exec-used
    self.assertEqual(namespace["trainer"].meta_loss.param_names, ["logreg/w", "logreg/b"])
    # Meta-training lowered the meta-loss of the problem it trained on.
    learned = namespace["learned"]
    self.assertLess(learned.final_loss_mean, learned.losses[:, 0].mean())


if __name__ == "__main__":
  absltest.main()
