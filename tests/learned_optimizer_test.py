"""LearnedOptimizer: rules of `nets` as snt.optimizers-like optimizers on any model."""

import tempfile

from absl.testing import parameterized
import numpy as np
import sonnet as snt
import tensorflow as tf

import l2l
import nets
import problems
from problems import datasets

LSTM = {"net": "CoordinateWiseDeepLSTM",
        "net_options": {"layers": [20, 20], "preprocess_name": "LogAndSign",
                        "preprocess_options": {"k": 5}, "scale": 0.1, "seed": 0}}


def _model(seed=0):
  tf.random.set_seed(seed)
  model = snt.nets.MLP([8, 3], activation=tf.nn.relu)
  model(tf.zeros([1, 5]))
  return model


X = tf.random.stateless_normal([16, 5], [1, 2])
Y = tf.random.stateless_normal([16, 3], [3, 4])


def _train(model, optimizer, steps):
  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(model(X) - Y))
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return loss
  return [float(step()) for _ in range(steps)]


class LearnedOptimizerTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("sgd", nets.Sgd(0.1), snt.optimizers.SGD(0.1)),
      ("momentum", nets.Momentum(0.05, momentum=0.9), snt.optimizers.Momentum(0.05, 0.9)),
      ("adam", nets.Adam(0.01), snt.optimizers.Adam(0.01)),
  )
  def test_hand_designed_rules_match_snt_optimizers(self, rule, reference):
    ours, theirs = _model(), _model()
    optimizer = l2l.LearnedOptimizer(rule)
    for step in range(10):
      _train(ours, optimizer, 1)
      _train(theirs, reference, 1)
      for a, b in zip(ours.trainable_variables, theirs.trainable_variables):
        self.assertAllClose(a, b, rtol=1e-6, atol=1e-7, msg=f"step {step}, {a.name}")

  def test_trained_optimizer_trains_an_unseen_model(self):
    # Meta-train for a few seconds on small quadratics, save, and load by path.
    opt = l2l.MetaOptimizer(cw=LSTM)
    trainer = opt.meta_minimize(problems.quadratic(batch_size=8, num_dims=5, seed=0), 10,
                                learning_rate=1e-2, objective="log")
    for _ in range(10):
      trainer.reset()
      for _ in range(5):
        trainer.step()
    with tempfile.TemporaryDirectory() as path:
      opt.save(path)
      trained = l2l.LearnedOptimizer(path)
    untrained = l2l.LearnedOptimizer(l2l.MetaOptimizer(cw=LSTM))
    # A ReLU classifier on the digits: a model and a loss meta-training never saw.
    data = datasets.load_digits("train")
    x, y = tf.constant(data.images[:256]), tf.constant(data.labels[:256])

    def run(optimizer):
      tf.random.set_seed(1)
      model = snt.nets.MLP([32, 10], activation=tf.nn.relu)

      @tf.function
      def step():
        with tf.GradientTape() as tape:
          loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x)))
        optimizer.apply(tape.gradient(loss, model.trainable_variables),
                        model.trainable_variables)
        return loss
      return np.array([float(step()) for _ in range(100)])

    losses, baseline = run(trained), run(untrained)
    self.assertAllClose(losses[0], np.log(10.), rtol=0.05)
    self.assertLess(losses[-10:].mean(), 0.1 * losses[0])  # Measured: about 0.01.
    self.assertLess(losses[-10:].mean(), 0.2 * baseline[-10:].mean())  # Meta-training helped.

  def test_several_nets_need_assignments(self):
    model = _model()
    variables = model.trainable_variables
    grads = [tf.ones_like(v) for v in variables]
    both = {"sgd": nets.Sgd(0.5), "adam": nets.Adam(0.01)}
    with self.assertRaisesRegex(ValueError, "net_assignments is required"):
      l2l.LearnedOptimizer(both).apply(grads, variables)
    names = [l2l.learned_optimizer.variable_name(v) for v in variables]
    self.assertEqual(names[0], "mlp/linear_0/b")
    by_rank = l2l.LearnedOptimizer(both, lambda v: "sgd" if v.shape.rank == 1 else "adam")
    by_name = l2l.LearnedOptimizer(
        both, [("sgd", [n for n in names if n.endswith("/b")]),
               ("adam", [n for n in names if n.endswith("/w")])])
    for optimizer in (by_rank, by_name):
      before = [v.numpy() for v in variables]
      optimizer.apply(grads, variables)
      for v, b in zip(variables, before):
        # Sgd steps by -0.5 g; Adam's first step is -lr * sign(g).
        expected = -0.5 if v.shape.rank == 1 else -0.01
        self.assertAllClose(v.numpy() - b, np.full(b.shape, expected), atol=1e-6, msg=v.name)
    with self.assertRaisesRegex(ValueError, "leaves variables .* without a net"):
      l2l.LearnedOptimizer(both, [("sgd", names[:1])]).apply(grads, variables)

  def test_none_gradient_leaves_the_variable(self):
    a, b = tf.Variable([1., 2.]), tf.Variable(3.)
    optimizer = l2l.LearnedOptimizer(nets.Sgd(0.5))
    optimizer.apply([tf.constant([1., 1.]), None], [a, b])
    self.assertAllClose(a, [0.5, 1.5])
    self.assertAllClose(b, 3.)

  def test_none_gradient_leaves_the_variable_under_a_rule_with_memory(self):
    """Under momentum a zero gradient still moves a variable (v <- 0.9 v + 0); None does not."""
    a, b = tf.Variable([1., 2.]), tf.Variable(3.)
    optimizer = l2l.LearnedOptimizer(nets.Momentum(0.5, momentum=0.9))
    optimizer.apply([tf.constant([1., 1.]), tf.constant(1.)], [a, b])
    self.assertAllClose(b, 2.5)
    optimizer.apply([tf.constant([1., 1.]), None], [a, b])
    self.assertAllClose(b, 2.5)
    self.assertAllClose(a, [1. - 0.5 - 0.5 * 1.9, 2. - 0.5 - 0.5 * 1.9])  # v = 0.9 * 1 + 1.

  def test_variables_must_stay_the_same(self):
    a, b = tf.Variable(1.), tf.Variable(2.)
    optimizer = l2l.LearnedOptimizer(nets.Sgd(0.5))
    optimizer.apply([tf.constant(1.)], [a])
    with self.assertRaisesRegex(ValueError, "differ from the 1 of the first call"):
      optimizer.apply([tf.constant(1.)], [b])
    with self.assertRaisesRegex(ValueError, "2 gradients for 1 parameters"):
      optimizer.apply([tf.constant(1.), tf.constant(1.)], [a])

  def test_state_checkpoints(self):
    first, second = _model(), _model()
    opt1 = l2l.LearnedOptimizer(nets.Adam(0.01))
    _train(first, opt1, 3)
    with tempfile.TemporaryDirectory() as d:
      prefix = tf.train.Checkpoint(model=first, opt=opt1).write(d + "/ckpt")
      opt2 = l2l.LearnedOptimizer(nets.Adam(0.01))
      tf.train.Checkpoint(model=second, opt=opt2).read(prefix)
      expected = _train(first, opt1, 3)
      self.assertAllClose(_train(second, opt2, 3), expected, rtol=1e-6)

  def test_bad_rule(self):
    with self.assertRaisesRegex(TypeError, "rule must be a saved optimizer directory"):
      l2l.LearnedOptimizer(snt.optimizers.Adam())
    with self.assertRaisesRegex(ValueError, "no saved optimizer at"):
      l2l.LearnedOptimizer("/nonexistent/optimizer")


if __name__ == "__main__":
  tf.test.main()
