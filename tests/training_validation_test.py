"""`training.meta_train` keeps the best validation score and saves the optimizer that had it,
checked against the scores it logged and an independent re-run of the saved optimizer."""

import glob
import os
import tempfile

from absl.testing import absltest
import tensorflow as tf
from tensorflow.core.util import event_pb2

import l2l
from l2l import configs
from l2l import evaluation
from l2l import training

# Validation at every epoch; with this learning rate the score is best at epoch 1 or 2 and then
# worsens (observed 0.709, 0.714, 0.729, 0.729 every other epoch), so the best is neither the
# first nor the last nor the worst.
CONFIG = dict(problem="quadratic", num_epochs=6, num_steps=10, unroll_length=5, log_period=1,
              evaluation_period=1, evaluation_epochs=2, checkpoint_period=3, seed=4,
              learning_rate=3e-3)


def validation_scores(path):
  scores = {}
  for name in sorted(glob.glob(os.path.join(path, "tensorboard", "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(name):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == "validation_log10_final_loss":
          scores[event.step] = float(tf.make_ndarray(value.tensor))
  return scores


class BestValidationTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.path = os.path.join(tempfile.mkdtemp(), "opt")
    cls.summary = training.meta_train(training.TrainConfig(save_path=cls.path, **CONFIG))
    cls.scores = validation_scores(cls.path)

  def rerun(self, optimizer):
    """log10 mean final loss of `optimizer` on the validation instances, run afresh."""
    named = configs.get_config("quadratic")
    curves = evaluation.run_optimizer(
        optimizer, named.make_problem(evaluation.instance_seed(CONFIG["seed"],
                                                               evaluation.VALIDATION)),
        CONFIG["evaluation_epochs"], CONFIG["num_steps"], named.net_assignments)
    return curves.log10_final_loss_mean

  def test_best_is_the_lowest_score(self):
    self.assertEqual(sorted(self.scores), list(range(1, 7)))
    self.assertGreater(max(self.scores.values()) - min(self.scores.values()), 1e-3)
    best_epoch = min(self.scores, key=self.scores.get)
    self.assertEqual(self.summary["best_epoch"], best_epoch)
    self.assertAlmostEqual(self.summary["best_validation_log10_loss"], self.scores[best_epoch],
                           places=5)
    self.assertNotEqual(best_epoch, CONFIG["num_epochs"])  # Not simply the last one.

  def test_saved_optimizer_has_the_best_score(self):
    saved = self.rerun(l2l.MetaOptimizer.load(self.path))
    self.assertAlmostEqual(saved, min(self.scores.values()), places=4)
    # The last validation (of the final nets) scored worse: the file holds the best optimizer,
    # not the last one.
    final_score = self.scores[CONFIG["num_epochs"]]
    self.assertGreater(final_score, saved + 1e-3)


class DivergenceTest(absltest.TestCase):
  """A meta learning rate of 1e6 blows the optimizee up: reported, never saved as the best."""

  def test_divergent_run_saves_nothing_and_says_so(self):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    config = dict(CONFIG, num_epochs=4, evaluation_period=2, learning_rate=1e6)
    with self.assertLogs(level="WARNING") as logs:
      summary = training.meta_train(training.TrainConfig(save_path=path, **config))
    text = "\n".join(logs.output)
    # The untrained optimizer's score is finite and every later one is worse (or not finite).
    untrained = summary["untrained_validation_log10_loss"]
    scores = validation_scores(path)
    self.assertEqual(sorted(scores), [2, 4])
    self.assertTrue(all(not score < untrained for score in scores.values()), (untrained, scores))
    self.assertEqual((summary["best_epoch"], summary["saved"]), (0, False))
    self.assertFalse(os.path.exists(os.path.join(path, "config.json")))
    self.assertRegex(text, r"epoch \d \(meta-step \d\): the optimizee diverged")
    self.assertRegex(text, r"validation at epoch 2: .*(not better than the untrained|not finite)")
    self.assertRegex(text, "no validation beat the untrained optimizer .*nothing saved to")
    self.assertGreater(summary["diverged_epochs"], 0)


if __name__ == "__main__":
  absltest.main()
