"""A task suite for meta-training and evaluating versatile learned optimizers.

    for task in problems.suite("train"):
      make_loss = task.make_problem(seed)     # An instance stream: l2l.Problem(make_loss)
      ...

Four suites of small, offline problems and an optional MNIST one (issue 15; the shape of
learned_optimization's and Celo's suites, scaled to a 2-core CPU):

* "train", the meta-training distribution: 14 tasks over 5 data sets (Gaussian clusters in 8 and
  32 dimensions, two random-teacher regressions, scikit-learn's 8x8 digits) that vary width
  (16-64), depth (0-4 hidden layers), activation (sigmoid, tanh, ReLU, GELU), batch size
  (16-128), initialisation (N(0, s^2) with s from 0.01 to 1, Glorot, He) and loss (softmax
  cross-entropy, mean squared error). Every training task is randomly rescaled per coordinate
  (`problems.rescaled`, Lv et al. 2017) with `TRAIN_MAX_LOG_SCALE`, so that a learned optimizer
  cannot memorise gradient scales.
* "held_out", the evaluation suite: 10 tasks whose (data, architecture) pair no training task has:
  the two generalization runs of the 2016 paper on the digits (1x20 ReLU and 2x20 sigmoid, exactly
  `problems.digits`; no training task puts a ReLU or sigmoid MLP on the digits), a conv net, a
  5-layer ReLU net and an autoencoder on the digits, MLPs on four other scikit-learn data sets
  (wine, breast cancer with a binary loss, iris, diabetes regression) and a GRU on the adding
  problem. No rescaling.
* "train_plain": the training tasks without the rescaling (validation, or evaluating a learned
  optimizer on its own training distribution).
* "train_conv" (and "train_conv_plain"): "train" plus a conv net on 8x8 images of oriented bars
  (synthetic, not the digits), 15 tasks.
* "smoke": three tiny tasks for unit tests.
* "held_out_mnist", optional: the 2016 generalization runs on MNIST (`problems.mnist`, 1x20 ReLU
  and 2x20 sigmoid), from MNIST's files in `suite(..., data_dir=DIR)`; not part of `SUITES`.

A task's `make_problem(seed)` returns a `make_loss` whose initial weights and batch order come from
`seed` (None: non-deterministic); each `l2l.Problem(make_loss).initial_values()` draws the next
instance of that stream. Data sets are fixed (`problems.suite_data`). `make_loss` returns the mean
training loss on a new random minibatch at every call.

Cost per optimizer step (the batch draw, forward and backward, and a plain SGD update; median
of 3 runs of 300 steps in one `tf.function` loop on the 2 shared CPU cores, TF 2.21; rough, +-50%
with the machine's load) is in `STEP_COST_MS` and each description: 0.1-0.4 ms for the training
tasks, 0.1-0.35 ms for the held-out MLPs, ~1.5 ms for the conv net and the GRU.
"""

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

from l2l.capture import MakeLoss
from problems import suite_models
from problems.digits import digits
from problems.mnist import mnist
from problems.rescaled import rescaled

# Lv et al.'s per-coordinate scales exp(U[-1, 1]): gradients vary e^2 ~ 7x across coordinates.
TRAIN_MAX_LOG_SCALE = 1.0
# A fixed offset that keeps the rescaling stream of seed s apart from the weights of seed s.
_RESCALE_SEED_SALT = 0x5CA1E


class SuiteTask(NamedTuple):
  """A task of a suite.

  Attributes:
    name: e.g. "digits_mlp_tanh_32".
    make_problem: seed -> `make_loss`; the same parameter shapes for every seed.
    description: one line: data, architecture, loss, batch size, initialisation, step cost.
    data: the data set (`problems.suite_data.LOADERS`, or "digits").
    architecture: the model, e.g. "mlp 32 tanh", "conv 8-16", "gru 16"; a held-out task's
      `(data, architecture)` pair is never a training task's.
    max_log_scale: the random rescaling of its parameters (0: none).
  """
  name: str
  make_problem: Callable[[Optional[int]], MakeLoss]
  description: str
  data: str = ""
  architecture: str = ""
  max_log_scale: float = 0.


def _rescale_seed(seed: Optional[int]) -> Optional[int]:
  if seed is None:
    return None
  return int(np.random.SeedSequence([int(seed), _RESCALE_SEED_SALT]).generate_state(1)[0])


def _task(name: str, builder: Callable[..., MakeLoss], options: Dict[str, Any], description: str,
          data: str, architecture: str, max_log_scale: float = 0.) -> SuiteTask:
  def make_problem(seed: Optional[int] = 0) -> MakeLoss:
    make_loss = builder(seed, **options)
    if max_log_scale:
      make_loss = rescaled(make_loss, max_log_scale, seed=_rescale_seed(seed))
    return make_loss
  make_problem.__name__ = name
  cost = STEP_COST_MS.get(name)
  if cost is not None:
    description = f"{description}; ~{cost:g} ms/step"
  return SuiteTask(name, make_problem, description, data, architecture, max_log_scale)


def _init_text(init: suite_models.Init) -> str:
  return {"glorot": "Glorot", "he": "He"}.get(init, f"N(0, {init}^2)")


def _mlp(data: str, hidden: Tuple[int, ...], activation: str, init: suite_models.Init,
         batch_size: int, about: str, max_log_scale: float = 0., name: Optional[str] = None
         ) -> SuiteTask:
  """An MLP task; `about` says what the data and the loss are."""
  widths = "x".join(str(h) for h in hidden)
  architecture = f"mlp {widths} {activation}" if hidden else "linear"
  name = name or (f"{data}_mlp_{activation}_{widths}" if hidden else f"{data}_linear")
  layers = (f"{len(hidden)}x{hidden[0]}" if len(set(hidden)) == 1 else widths) if hidden else ""
  model = f"{layers} {activation} MLP" if hidden else "linear model"
  scaled = f", rescaled exp(U[-{max_log_scale:g}, {max_log_scale:g}])" if max_log_scale else ""
  description = (f"{about}; {model}, init {_init_text(init)}, batch {batch_size}{scaled}")
  return _task(name, suite_models.mlp,
               dict(data=data, hidden_sizes=hidden, activation=activation, init=init,
                    batch_size=batch_size),
               description, data, architecture, max_log_scale)


_BLOBS8 = "Gaussian clusters (8-d, 3 classes, 2048 examples), softmax cross-entropy"
_BLOBS32 = "Gaussian clusters (32-d, 8 classes, 2048 examples), softmax cross-entropy"
_TEACHER16 = "random tanh teacher (16-d -> 4, 2048 examples), MSE"
_TEACHER8 = "random ReLU teacher (8-d -> 1, 2048 examples), MSE"
_BARS8 = ("oriented bars (8x8 images of a line segment in noise, 2048 examples, 4 "
          "orientations), softmax cross-entropy")
_DIGITS = "sklearn 8x8 digits (1438 train images, 10 classes), softmax cross-entropy"


def _train(s: float = TRAIN_MAX_LOG_SCALE) -> Tuple[SuiteTask, ...]:
  """The training tasks, rescaled by exp(U[-s, s]) per coordinate."""
  return (
      _mlp("blobs8", (32,), "sigmoid", 0.5, 32, _BLOBS8, s),
      _mlp("blobs8", (16, 16, 16), "relu", "he", 16, _BLOBS8, s),
      _mlp("blobs32", (), "linear", 0.01, 128, _BLOBS32, s),
      _mlp("blobs32", (64,), "gelu", "glorot", 64, _BLOBS32, s),
      _mlp("blobs32", (32, 32), "tanh", 0.1, 128, _BLOBS32, s),
      _mlp("teacher16", (32,), "tanh", "glorot", 64, _TEACHER16, s),
      _mlp("teacher16", (64, 64), "relu", "he", 32, _TEACHER16, s),
      _mlp("teacher8", (16, 16), "sigmoid", 1.0, 16, _TEACHER8, s),
      _mlp("teacher8", (32,), "gelu", 0.3, 128, _TEACHER8, s),
      _mlp("digits", (32,), "tanh", "glorot", 64, _DIGITS, s),
      _mlp("digits", (16, 16), "gelu", "he", 128, _DIGITS, s),
      _mlp("digits", (), "linear", 0.01, 32, _DIGITS, s),
      # Deeper nets: depth 4, so that depth varies beyond the shallow nets above.
      _mlp("teacher16", (32, 32, 32, 32), "relu", "he", 64, _TEACHER16, s),
      _mlp("blobs8", (16, 16, 16, 16), "tanh", "glorot", 32, _BLOBS8, s),
  )


def _train_conv(s: float = TRAIN_MAX_LOG_SCALE) -> Tuple[SuiteTask, ...]:
  """The training tasks plus a conv net, on images that are not the digits (the held-out conv
  net's)."""
  return _train(s) + (
      _task("bars8_conv_6x12", suite_models.conv,
            dict(data="bars8", side=8, channels=(6, 12), init="glorot", batch_size=32),
            f"{_BARS8}; conv net 3x3x6 stride 1, 3x3x12 stride 2, ReLU, linear head, init "
            "Glorot, batch 32", "bars8", "conv 6-12", s),
  )


def _digits_2016(hidden: Tuple[int, ...], activation: str) -> SuiteTask:
  """The 2016 paper's generalization runs on the digits: `problems.digits` unchanged."""
  widths = "x".join(str(h) for h in hidden)
  name = f"digits_mlp_{activation}_{widths}"
  model = f"{len(hidden)}x{hidden[0]} {activation} MLP"

  def builder(seed, **options):
    return digits(seed=seed, **options)
  return _task(name, builder, dict(hidden_sizes=hidden, activation=activation),
               f"{_DIGITS}; {model} (problems.digits), init N(0, 0.01^2), batch 128",
               "digits", f"mlp {widths} {activation}")


def _held_out() -> Tuple[SuiteTask, ...]:
  return (
      _digits_2016((20,), "relu"),
      _digits_2016((20, 20), "sigmoid"),
      _task("digits_conv_8x16", suite_models.conv,
            dict(data="digits", side=8, channels=(8, 16), init="he", batch_size=64),
            f"{_DIGITS}; conv net 3x3x8 stride 1, 3x3x16 stride 2, ReLU, linear head, init He, "
            "batch 64", "digits", "conv 8-16"),
      _mlp("digits", (32,) * 5, "relu", "he", 64, _DIGITS, name="digits_mlp_relu_5x32"),
      _mlp("digits_pixels", (32, 8, 32), "tanh", "glorot", 64,
           "sklearn 8x8 digits reconstructed (1438 images, 64 pixels), MSE",
           name="digits_autoencoder_32x8x32"),
      _mlp("wine", (32,), "relu", "he", 32,
           "sklearn wine (178 examples, 13 standardised features, 3 classes), softmax "
           "cross-entropy"),
      _mlp("breast_cancer", (16,), "tanh", "glorot", 32,
           "sklearn breast cancer (569 examples, 30 standardised features), binary sigmoid "
           "cross-entropy"),
      _mlp("iris", (16,), "sigmoid", "glorot", 16,
           "sklearn iris (150 examples, 4 standardised features, 3 classes), softmax "
           "cross-entropy"),
      _mlp("diabetes", (32,), "gelu", "he", 32,
           "sklearn diabetes (442 examples, 10 standardised features, standardised target), "
           "MSE"),
      _task("adding10_gru_16", suite_models.gru,
            dict(data="adding10", hidden_size=16, init="glorot", batch_size=32),
            "adding problem (4096 sequences of length 10, sum of the 2 marked values), MSE; "
            "GRU 16 statically unrolled, linear head, init Glorot, batch 32",
            "adding10", "gru 16"),
  )


def _smoke() -> Tuple[SuiteTask, ...]:
  blobs = "Gaussian clusters (4-d, 3 classes, 256 examples), softmax cross-entropy"
  teacher = "random tanh teacher (4-d -> 1, 256 examples), MSE"
  return (
      _mlp("tiny_blobs", (), "linear", 0.01, 16, blobs),
      _mlp("tiny_teacher", (8,), "tanh", "glorot", 16, teacher),
      _mlp("tiny_blobs", (8,), "relu", "he", 32, blobs, TRAIN_MAX_LOG_SCALE),
  )


def _held_out_mnist(data_dir: Optional[str]) -> Tuple[SuiteTask, ...]:
  """The 2016 paper's MNIST generalization runs, `problems.mnist` unchanged (optional: MNIST's
  files are not part of the offline suites)."""
  tasks = []
  for hidden, activation in (((20,), "relu"), ((20, 20), "sigmoid")):
    widths = "x".join(str(h) for h in hidden)

    def builder(seed, hidden_sizes=hidden, activation=activation):
      return mnist(hidden_sizes=hidden_sizes, activation=activation, data_dir=data_dir, seed=seed)
    tasks.append(_task(
        f"mnist_mlp_{activation}_{widths}", builder, {},
        f"MNIST (60000 training images, 10 classes), softmax cross-entropy; "
        f"{len(hidden)}x{hidden[0]} {activation} MLP (problems.mnist), init N(0, 0.01^2), "
        "batch 128", "mnist", f"mlp {widths} {activation}"))
  return tuple(tasks)


# Milliseconds per optimizer step, measured as the module docstring says.
STEP_COST_MS: Dict[str, float] = {
    # train
    "blobs8_mlp_sigmoid_32": 0.1, "blobs8_mlp_relu_16x16x16": 0.2, "blobs32_linear": 0.15,
    "blobs32_mlp_gelu_64": 0.4, "blobs32_mlp_tanh_32x32": 0.25, "teacher16_mlp_tanh_32": 0.1,
    "teacher16_mlp_relu_64x64": 0.2, "teacher8_mlp_sigmoid_16x16": 0.15,
    "teacher8_mlp_gelu_32": 0.25, "digits_mlp_tanh_32": 0.1, "digits_mlp_gelu_16x16": 0.25,
    "digits_linear": 0.1,
    "teacher16_mlp_relu_32x32x32x32": 0.3,  # Estimated from the 2x64 ReLU's cost, not timed.
    "bars8_conv_6x12": 1.3,  # Timed beside digits_conv_8x16 (1.1x its time; 3 runs, loaded).
    "blobs8_mlp_tanh_16x16x16x16": 0.3,  # Estimated, not timed.
    # held_out
    "digits_mlp_relu_20": 0.25, "digits_mlp_sigmoid_20x20": 0.2, "digits_conv_8x16": 1.5,
    "digits_mlp_relu_5x32": 0.35, "digits_autoencoder_32x8x32": 0.3, "wine_mlp_relu_32": 0.1,
    "breast_cancer_mlp_tanh_16": 0.1, "iris_mlp_sigmoid_16": 0.1,
    "diabetes_mlp_gelu_32": 0.15, "adding10_gru_16": 1.5,
    # held_out_mnist (60000 images: most of it is the batch draw)
    "mnist_mlp_relu_20": 1.2, "mnist_mlp_sigmoid_20x20": 1.2,
}

_SUITES: Dict[str, Callable[[], Tuple[SuiteTask, ...]]] = {
    "train": _train,
    "train_plain": lambda: _train(0.),
    "train_conv": _train_conv,
    "train_conv_plain": lambda: _train_conv(0.),
    "held_out": _held_out,
    "smoke": _smoke,
}
# Building a suite makes closures only: data load when a task's make_problem is first called.
SUITES: Dict[str, Tuple[SuiteTask, ...]] = {name: build() for name, build in _SUITES.items()}
# "held_out_mnist" needs MNIST's files, so it is built per call and is not in SUITES.
SUITE_NAMES = tuple(_SUITES) + ("held_out_mnist",)


def suite(name: str, data_dir: Optional[str] = None) -> Tuple[SuiteTask, ...]:
  """The tasks of the suite `name`: "train", "train_plain", "train_conv", "train_conv_plain",
  "held_out", "smoke" or "held_out_mnist".

  Args:
    name: the suite.
    data_dir: for "held_out_mnist" only: a directory with MNIST's idx files (None: the Keras
      download and cache, as `problems.mnist`); the files are read when a task's
      `make_problem` is first called.

  Raises:
    ValueError: an unknown name (the message lists the suites), or a `data_dir` for a suite
      that reads no files.
  """
  if name == "held_out_mnist":
    return _held_out_mnist(data_dir)
  if name not in _SUITES:
    raise ValueError(f"unknown suite {name!r}; expected one of {list(SUITE_NAMES)}")
  if data_dir is not None:
    raise ValueError(f"suite {name!r} reads no files: data_dir is for 'held_out_mnist' only, "
                     f"got {data_dir!r}")
  return SUITES[name]
