"""l2l.keras.Optimizer: l2l update rules in Keras 3 `model.compile` / `model.fit`.

References: `keras.optimizers.Adam` for `nets.Adam` (step by step, to float32 round-off); an
uninterrupted run for save / load / checkpoint (bit for bit, a fresh process for `.keras`).
"""

import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import l2l
import nets
import problems
from problems import datasets

# Keras Adam adds epsilon to sqrt(v), nets.Adam to sqrt(v / (1 - beta2^t)): the same update
# when epsilon is negligible, so both use a tiny one and must agree to float32 round-off.
EPSILON = 1e-12
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LSTM = {"net": "CoordinateWiseDeepLSTM",
        "net_options": {"layers": [20, 20], "preprocess_name": "LogAndSign",
                        "preprocess_options": {"k": 5}, "scale": 0.1, "seed": 0}}


def _data(n=128):
  data = datasets.load_digits("train")
  images = data.images[:n]
  # Integer tokens for the Embedding: each image row's ink, quantized to 0..8.
  tokens = np.round(images.reshape(n, 8, 8).mean(-1) * 8).astype("int32")
  return images, tokens, data.labels[:n].astype("int32")


IMAGES, TOKENS, LABELS = _data()


def dense_model(seed=0):
  keras.utils.set_random_seed(seed)
  # Fixed names: variable paths ("digits/hidden/kernel") are the same in every model built.
  return keras.Sequential([keras.Input((64,)),
                           keras.layers.Dense(32, activation="relu", name="hidden"),
                           keras.layers.Dense(10, name="logits")], name="digits")


def conv_embedding_model(seed=0):
  """A Conv2D over the image and an Embedding of its row tokens, concatenated."""
  keras.utils.set_random_seed(seed)
  image, tokens = keras.Input((64,)), keras.Input((8,), dtype="int32")
  x = keras.layers.Reshape((8, 8, 1))(image)
  x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(x))
  e = keras.layers.Flatten()(keras.layers.Embedding(9, 3)(tokens))
  out = keras.layers.Dense(10)(keras.layers.Concatenate()([x, e]))
  return keras.Model([image, tokens], out)


MODELS = {"dense": (dense_model, lambda: IMAGES),
          "conv_embedding": (conv_embedding_model, lambda: [IMAGES, TOKENS])}


class DenseAdam(keras.optimizers.Adam):
  """`keras.optimizers.Adam` given dense gradients: the reference for the Embedding model.

  Keras Adam squares an `IndexedSlices` gradient slice by slice, so for a token repeated in a
  batch its second moment adds the squares of the repeats rather than the square of their sum;
  l2l.keras.Optimizer densifies (after clipping, as here) and takes the dense Adam step.
  """

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    super()._backend_update_step([tf.convert_to_tensor(g) for g in grads], trainable_variables,
                                 learning_rate)


class _RecordWeights(keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.weights = []

  def on_train_batch_end(self, batch, logs=None):
    self.weights.append([w.copy() for w in self.model.get_weights()])


def _fit(model_name, optimizer, epochs=2, batch_size=32, callbacks=(), **compile_kwargs):
  make_model, inputs = MODELS[model_name]
  model = make_model()
  model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
      from_logits=True), **compile_kwargs)
  history = model.fit(inputs(), LABELS, batch_size=batch_size, epochs=epochs, shuffle=False,
                      verbose=0, callbacks=list(callbacks))
  return model, history.history["loss"]


def _loss(model, model_name="dense"):
  logits = model(MODELS[model_name][1]())
  return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(LABELS, logits)))


_TRAINED = {}


def trained_lstm_path():
  """A CoordinateWiseDeepLSTM meta-trained for a few seconds on quadratics, saved as train.py
  does (`MetaOptimizer.save`); trained once per test process."""
  if "path" not in _TRAINED:
    opt = l2l.MetaOptimizer(cw=LSTM)
    trainer = opt.meta_minimize(problems.quadratic(batch_size=8, num_dims=5, seed=0), 10,
                                learning_rate=1e-2, objective="log")
    for _ in range(6):
      trainer.reset()
      for _ in range(5):
        trainer.step()
    _TRAINED["dir"] = tempfile.TemporaryDirectory()
    _TRAINED["path"] = os.path.join(_TRAINED["dir"].name, "lstm")
    opt.save(_TRAINED["path"])
  return _TRAINED["path"]


def make_rule(kind):
  if kind == "adam":
    return nets.Adam(1e-3, epsilon=EPSILON)
  if kind == "lstm":
    return trained_lstm_path()
  if kind == "mlp":
    return nets.PerParameterMLP(seed=0)
  raise ValueError(kind)


class AdamMatchesKerasTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("dense", "conv_embedding")
  def test_matches_keras_adam_step_by_step(self, model_name):
    ours, theirs = _RecordWeights(), _RecordWeights()
    _, our_losses = _fit(model_name, l2l.keras.Optimizer(nets.Adam(1e-3, epsilon=EPSILON)),
                         callbacks=[ours])
    reference = keras.optimizers.Adam if model_name == "dense" else DenseAdam
    _, their_losses = _fit(model_name, reference(1e-3, epsilon=EPSILON),
                           callbacks=[theirs])
    self.assertLen(ours.weights, 8)
    worst = 0.
    for step, (a, b) in enumerate(zip(ours.weights, theirs.weights)):
      for x, y in zip(a, b):
        worst = max(worst, float(np.abs(x - y).max()))
        self.assertAllClose(x, y, rtol=1e-5, atol=1e-6, msg=f"step {step}")
    print(f"{model_name}: max |l2l - keras Adam| over 8 steps = {worst:.3g}")
    self.assertAllClose(our_losses, their_losses, rtol=1e-5)

  @parameterized.named_parameters(
      ("clipnorm", dict(clipnorm=0.05)), ("clipvalue", dict(clipvalue=0.002)),
      ("global_clipnorm", dict(global_clipnorm=0.1)))
  def test_clipping_as_keras_adam(self, clipping):
    ours, _ = _fit("conv_embedding",
                   l2l.keras.Optimizer(nets.Adam(1e-3, epsilon=EPSILON), **clipping), epochs=1)
    theirs, _ = _fit("conv_embedding", DenseAdam(1e-3, epsilon=EPSILON, **clipping),
                     epochs=1)
    unclipped, _ = _fit("conv_embedding", DenseAdam(1e-3, epsilon=EPSILON), epochs=1)
    for x, y, z in zip(ours.get_weights(), theirs.get_weights(), unclipped.get_weights()):
      self.assertAllClose(x, y, rtol=1e-5, atol=1e-6)
    self.assertNotAllClose(ours.get_weights()[0], unclipped.get_weights()[0])  # Clipping bit.

  def test_steps_per_execution_and_learning_rate_callback(self):
    # The learning rate multiplies the rule's update: a schedule callback halving it at
    # epoch 1 matches Keras Adam with the same callback; steps_per_execution changes nothing.
    schedule = lambda epoch, lr: 1.0 if epoch == 0 else 0.5

    def run(optimizer, base, steps_per_execution):
      callback = keras.callbacks.LearningRateScheduler(lambda e, lr: base * schedule(e, lr))
      model, _ = _fit("dense", optimizer, epochs=2, callbacks=[callback],
                      steps_per_execution=steps_per_execution)
      return model.get_weights()

    ours = run(l2l.keras.Optimizer(nets.Adam(1e-3, epsilon=EPSILON)), 1.0, 3)
    theirs = run(keras.optimizers.Adam(1e-3, epsilon=EPSILON), 1e-3, 1)
    for x, y in zip(ours, theirs):
      self.assertAllClose(x, y, rtol=1e-5, atol=1e-6)

  def test_mixed_float16(self):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
      ours, our_losses = _fit("dense", l2l.keras.Optimizer(nets.Adam(1e-3, epsilon=EPSILON)))
      theirs, their_losses = _fit("dense", keras.optimizers.Adam(1e-3, epsilon=EPSILON))
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.assertIsInstance(ours.optimizer, keras.optimizers.LossScaleOptimizer)
    self.assertIsInstance(ours.optimizer.inner_optimizer, l2l.keras.Optimizer)
    self.assertEqual(ours.trainable_variables[0].dtype, "float32")
    # float16 forward passes: agreement to float16 round-off, not float32.
    self.assertAllClose(our_losses, their_losses, rtol=2e-3)
    for x, y in zip(ours.get_weights(), theirs.get_weights()):
      self.assertAllClose(x, y, rtol=1e-2, atol=1e-4)


class LearnedRulesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("lstm_dense", "lstm", "dense"), ("lstm_conv_embedding", "lstm", "conv_embedding"),
      ("mlp_dense", "mlp", "dense"), ("mlp_conv_embedding", "mlp", "conv_embedding"))
  def test_lowers_the_loss(self, rule, model_name):
    make_model = MODELS[model_name][0]
    before = _loss(make_model(), model_name)
    model, losses = _fit(model_name, l2l.keras.Optimizer(make_rule(rule), num_steps=40),
                         epochs=10)
    after = _loss(model, model_name)
    print(f"{rule} on {model_name}: loss {before:.3f} -> {after:.3f}")
    self.assertTrue(np.all(np.isfinite(losses)))
    # Measured: the trained LSTM 2.35 -> 1.40 (dense), 2.38 -> 0.09 (conv_embedding); the
    # untrained PerParameterMLP (Adam-like steps of about 1e-3) 2.35 -> 1.98, 2.38 -> 1.96.
    self.assertLess(after, 0.9 * before)

  def test_pretrained_rules(self):
    names = l2l.versatile.zoo.available()
    if not names:
      self.skipTest("no pretrained optimizer shipped")
    for name in names:
      model, _ = _fit("dense", l2l.keras.Optimizer(l2l.pretrained(name), num_steps=40), epochs=10)
      before = _loss(dense_model())
      after = _loss(model)
      print(f"pretrained {name}: loss {before:.3f} -> {after:.3f}")
      self.assertLess(after, before, msg=name)


def _save_and_continue_script(model_path, out_path, epochs):
  return textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {REPO!r})
      sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
      import keras, numpy as np
      import keras_optimizer_test as t
      model = keras.models.load_model({model_path!r})
      model.fit(t.MODELS[{{"Sequential": "dense"}}.get(type(model).__name__, "conv_embedding")][1](),
                t.LABELS, batch_size=32, epochs={epochs}, shuffle=False, verbose=0)
      np.savez({out_path!r}, *model.get_weights(), *[v.numpy() for v in model.optimizer.variables])
      """)


class SaveLoadTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("lstm_conv_embedding", "lstm", "conv_embedding"),
                                  ("mlp_dense", "mlp", "dense"))
  def test_keras_file_continues_bit_for_bit_in_a_fresh_process(self, rule, model_name):
    uninterrupted, _ = _fit(model_name, l2l.keras.Optimizer(make_rule(rule), num_steps=20),
                            epochs=5)
    first, _ = _fit(model_name, l2l.keras.Optimizer(make_rule(rule), num_steps=20), epochs=2)
    directory = tempfile.mkdtemp()
    model_path = os.path.join(directory, "m.keras")
    out_path = os.path.join(directory, "continued.npz")
    first.save(model_path)
    subprocess.run([sys.executable, "-c", _save_and_continue_script(model_path, out_path, 3)],
                   check=True, cwd=directory, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    with np.load(out_path) as continued:
      arrays = [continued[f"arr_{i}"] for i in range(len(continued.files))]
    expected = uninterrupted.get_weights() + [v.numpy() for v in uninterrupted.optimizer.variables]
    self.assertEqual(len(arrays), len(expected))
    for x, y in zip(arrays, expected):
      self.assertAllEqual(x, y)

  def test_tf_train_checkpoint_continues_bit_for_bit(self):
    uninterrupted, _ = _fit("conv_embedding", l2l.keras.Optimizer(make_rule("lstm")), epochs=4)
    first, _ = _fit("conv_embedding", l2l.keras.Optimizer(make_rule("lstm")), epochs=2)
    prefix = tf.train.Checkpoint(model=first, optimizer=first.optimizer).write(
        os.path.join(tempfile.mkdtemp(), "ckpt"))
    # A fresh model and optimizer (a differently initialized rule): everything comes back.
    model = conv_embedding_model(seed=5)
    optimizer = l2l.keras.Optimizer(l2l.MetaOptimizer(cw=LSTM))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(model=model, optimizer=optimizer).read(prefix).assert_consumed()
    model.fit([IMAGES, TOKENS], LABELS, batch_size=32, epochs=2, shuffle=False, verbose=0)
    for x, y in zip(model.get_weights(), uninterrupted.get_weights()):
      self.assertAllEqual(x, y)

  def test_config_round_trip_rebuilds_the_rule(self):
    rules = {"a": nets.PerParameterMLP(seed=1), "b": l2l.MetaOptimizer.load(
        trained_lstm_path()).nets["cw"]}
    assignments = [("a", ["digits/hidden/kernel", "digits/logits/kernel"]),
                   ("b", ["digits/hidden/bias", "digits/logits/bias"])]
    optimizer = l2l.keras.Optimizer(rules, num_steps=7, net_assignments=assignments,
                                    clipnorm=1.0)
    config = keras.optimizers.serialize(optimizer)
    restored = keras.optimizers.deserialize(config)
    self.assertIsInstance(restored, l2l.keras.Optimizer)
    self.assertEqual(restored.num_steps, 7)
    self.assertEqual(restored.clipnorm, 1.0)
    for netid, rule in rules.items():
      self.assertEqual(restored.rules[netid].config, rule.config)
      for x, y in zip(restored.rules[netid].variables, rule.variables):
        self.assertAllEqual(x, y)
    a, _ = _fit("dense", optimizer, epochs=1)
    b, _ = _fit("dense", restored, epochs=1)
    for x, y in zip(a.get_weights(), b.get_weights()):
      self.assertAllEqual(x, y)


class ErrorsTest(tf.test.TestCase):

  def test_sparse_gradients_error_names_the_variable(self):
    with self.assertRaisesRegex(ValueError, r"variable '.*embedding.*' has a sparse"):
      _fit("conv_embedding", l2l.keras.Optimizer(nets.Adam(), sparse_gradients="error"),
           epochs=1)

  def test_unsupported_dtype_names_the_variable(self):
    variable = keras.Variable(np.zeros([3]), dtype="float64", name="wide")
    optimizer = l2l.keras.Optimizer(nets.Adam())
    with self.assertRaisesRegex(ValueError, r"variable 'wide' has dtype float64"):
      optimizer.apply([tf.zeros([3], tf.float64)], [variable])

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "sparse_gradients must be one of"):
      l2l.keras.Optimizer(nets.Adam(), sparse_gradients="ignore")
    with self.assertRaisesRegex(ValueError, "num_steps must be a positive integer"):
      l2l.keras.Optimizer(nets.Adam(), num_steps=0)
    with self.assertRaisesRegex(TypeError, "rule must be"):
      l2l.keras.Optimizer(3)
    with self.assertRaisesRegex(ValueError, "function net_assignments cannot be saved"):
      l2l.keras.Optimizer({"a": nets.Adam(), "b": nets.Sgd()},
                          net_assignments=lambda v: "a").get_config()


if __name__ == "__main__":
  tf.test.main()
