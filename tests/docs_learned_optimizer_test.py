"""docs/learned_optimizer.md's example runs as written (until it moves into the README)."""

import os
import re

from absl.testing import absltest
import numpy as np

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "learned_optimizer.md")


class DocsLearnedOptimizerTest(absltest.TestCase):

  def test_keras_example_trains(self):
    with open(DOC) as f:
      blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    self.assertLen(blocks, 1)
    scope = {}
    exec(compile(blocks[0], DOC, "exec"), scope)  # pylint: disable=exec-used
    losses = np.array(scope["losses"])
    self.assertAlmostEqual(losses[0], np.log(10.), delta=0.2)
    self.assertLess(losses[-10:].mean(), 0.2 * losses[0])


if __name__ == "__main__":
  absltest.main()
