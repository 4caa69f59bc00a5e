"""The README's learned-optimizer-on-any-model example runs and both models learn."""

import os
import re

from absl.testing import absltest
import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


class DocsLearnedOptimizerTest(absltest.TestCase):

  def test_sonnet_and_keras_examples_train(self):
    with open(README) as f:
      blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
                if "l2l.LearnedOptimizer(path)" in b]
    self.assertLen(blocks, 1)
    scope = {}
    exec(compile(blocks[0], README, "exec"), scope)  # pylint: disable=exec-used
    for name in ("sonnet_losses", "keras_losses"):
      with self.subTest(model=name):
        losses = np.array(scope[name])
        self.assertAlmostEqual(losses[0], np.log(10.), delta=0.3)
        self.assertLess(losses[-10:].mean(), 0.2 * losses[0])


if __name__ == "__main__":
  absltest.main()
