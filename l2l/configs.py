"""Named configurations: a problem with the nets and net assignments the paper used for it.

The problems package (and TensorFlow) is imported on first use, so that the scripts list the
configurations in their --help without importing TensorFlow.
"""

import importlib
import inspect
import os
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, TYPE_CHECKING

if TYPE_CHECKING:
  from l2l import capture  # pylint: disable=g-import-not-at-top

# A problem's loss builder (l2l.capture.MakeLoss), without importing TensorFlow here.
MakeLoss = Callable[[], Any]
# problems.cifar10.KERNEL_SHAPE (configs_test checks they agree).
CIFAR_KERNEL_SHAPE = (5, 5)

NetConfigs = Dict[str, Dict[str, Any]]

# The 2016 paper's coordinatewise LSTM: two layers of 20 units, LogAndSign(k=5), outputs x 0.01.
PAPER_LSTM = {
    "net": "CoordinateWiseDeepLSTM",
    "net_options": {"layers": [20, 20], "preprocess_name": "LogAndSign",
                    "preprocess_options": {"k": 5}, "scale": 0.01},
}
# The same net with outputs x 0.1: lr-tuned Adam takes steps of about 0.2-0.3 on the quadratics,
# which outputs scaled by 0.01 reach only with large weights (measured: scale 0.1 gave a lower
# final loss than 0.01, 0.3 or 1.0 for the same training; see README "Results").
QUADRATIC_LSTM = {
    "net": "CoordinateWiseDeepLSTM",
    "net_options": {"layers": [20, 20], "preprocess_name": "LogAndSign",
                    "preprocess_options": {"k": 5}, "scale": 0.1},
}

# The net for the MLP classifiers (mnist, digits): LogAndSign with k=10, outputs x 0.1. At the
# MLP's N(0, 0.01^2) start the first layer's gradients are ~1e-4, so k=5 (the 2016 code) feeds
# the LSTM a sign input of ~0.01 (clip(g e^5)) and meta-training on digits made no progress in
# 1,200 epochs; k=10 (the paper's text) saturates it (clip(g e^10) = +-1 from |g| ~ 5e-5).
MLP_LSTM = {
    "net": "CoordinateWiseDeepLSTM",
    "net_options": {"layers": [20, 20], "preprocess_name": "LogAndSign",
                    "preprocess_options": {"k": 10}, "scale": 0.1},
}


class Config(NamedTuple):
  """A named configuration.

  Attributes:
    make_problem: seed -> make_loss; each seed gives its own stream of problem instances.
    net_configs: netid -> net config for `MetaOptimizer(**net_configs)`.
    net_assignments: `(netid, [variable names])` or None for a single net.
  """
  make_problem: Callable[[Optional[int]], MakeLoss]
  net_configs: NetConfigs
  net_assignments: Optional[List[Tuple[str, List[str]]]]


def _problem(name: str, **options: Any) -> Callable[[Optional[int]], MakeLoss]:
  def make_problem(seed):
    import problems  # pylint: disable=g-import-not-at-top
    return problems.get(name, seed=seed, **options)
  return make_problem


# The 2016 code's cifar-multi nets: a kernel LSTM over every 5x5 filter of the conv kernels and a
# coordinatewise LSTM for everything else.
PAPER_KERNEL_LSTM = {
    "net": "KernelDeepLSTM",
    "net_options": {"layers": [20, 20], "kernel_shape": list(CIFAR_KERNEL_SHAPE),
                    "preprocess_name": "LogAndSign", "preprocess_options": {"k": 5},
                    "scale": 0.01},
}
CIFAR_ARCHITECTURE = {"conv_channels": (16, 16, 16), "linear_layers": (32,), "batch_norm": True}


def data_dir_option(data_dir: Optional[str] = None) -> Optional[str]:
  """`data_dir` if given, else the environment variable L2L_DATA_DIR, else None (which makes
  the MNIST and CIFAR-10 problems use the Keras download and cache)."""
  from problems import datasets  # pylint: disable=g-import-not-at-top
  return data_dir if data_dir is not None else (os.environ.get(datasets.ENV_DATA_DIR) or None)


def assignments_by_rank(problem: "capture.Problem", netids: Dict[int, str], default: str
                        ) -> List[Tuple[str, List[str]]]:
  """`net_assignments` that give each parameter the net of its rank (`netids[rank]`), or
  `default`; e.g. `{4: "conv"}` sends conv kernels to one net and the rest to another.

  Nets that would update nothing are left out.
  """
  groups: Dict[str, List[str]] = {}
  for spec in problem.param_specs:
    groups.setdefault(netids.get(spec.shape.rank, default), []).append(spec.name)
  return [(netid, names) for netid, names in sorted(groups.items())]


def _cifar_multi_assignments(architecture: Dict[str, Any]) -> List[Tuple[str, List[str]]]:
  # The variable names come from the network's structure alone: no data needed.
  import problems  # pylint: disable=g-import-not-at-top
  from l2l import capture  # pylint: disable=g-import-not-at-top
  structure = capture.Problem(problems.cifar10_structure(**architecture), name="cifar10")
  return assignments_by_rank(structure, {4: "conv"}, "fc")


def _cifar(data_dir: Optional[str], multi: bool) -> Config:
  make_problem = _problem("cifar10", data_dir=data_dir_option(data_dir), **CIFAR_ARCHITECTURE)
  if not multi:
    return Config(make_problem, {"cw": PAPER_LSTM}, None)
  return Config(make_problem, {"conv": PAPER_KERNEL_LSTM, "fc": PAPER_LSTM},
                _cifar_multi_assignments(CIFAR_ARCHITECTURE))


CONFIGS: Dict[str, Callable[..., Config]] = {
    "simple": lambda: Config(
        _problem("simple"),
        {"cw": {"net": "CoordinateWiseDeepLSTM",
                "net_options": {"layers": [], "initializer": "zeros"}}},
        None),
    "simple-multi": lambda: Config(
        _problem("simple-multi", num_dims=2),
        {"cw": {"net": "CoordinateWiseDeepLSTM",
                "net_options": {"layers": [], "initializer": "zeros"}},
         "adam": {"net": "Adam", "net_options": {"learning_rate": 0.1}}},
        [("cw", ["x_0"]), ("adam", ["x_1"])]),
    "quadratic": lambda: Config(_problem("quadratic", distribution="normal"),
                                {"cw": QUADRATIC_LSTM}, None),
    "quadratic-uniform": lambda: Config(_problem("quadratic", distribution="uniform"),
                                        {"cw": QUADRATIC_LSTM}, None),
    "quadratic-paper": lambda: Config(_problem("quadratic", distribution="normal"),
                                      {"cw": PAPER_LSTM}, None),
    # The paper's MNIST problem: a 1x20 sigmoid MLP, batches of 128, one LSTM for every
    # variable. Data from `data_dir`, L2L_DATA_DIR, or the Keras download (at make_problem).
    # `hidden_sizes` and `activation` change the MLP (the paper's generalization runs).
    "mnist": lambda data_dir=None, hidden_sizes=(20,), activation="sigmoid": Config(
        _problem("mnist", hidden_sizes=tuple(hidden_sizes), activation=activation,
                 batch_size=128, data_dir=data_dir_option(data_dir)),
        {"cw": MLP_LSTM}, None),
    # The paper's CIFAR-10 conv net with one LSTM, or with a KernelDeepLSTM for the conv
    # kernels and a coordinatewise LSTM for biases, batch norm and linear weights.
    "cifar": lambda data_dir=None: _cifar(data_dir, multi=False),
    "cifar-multi": lambda data_dir=None: _cifar(data_dir, multi=True),
    # The MNIST problem on scikit-learn's bundled 8x8 digits: offline, for quick runs.
    "digits": lambda hidden_sizes=(20,), activation="sigmoid": Config(
        _problem("digits", hidden_sizes=tuple(hidden_sizes), activation=activation,
                 batch_size=128),
        {"cw": MLP_LSTM}, None),
}


def custom_config(spec: str) -> Config:
  """A user's problem, `"module:function"`: `function(seed)` returns a `make_loss`.

  The module is imported as `python -m` would (the current directory first on the path). The
  learned optimizer is one `MLP_LSTM` for every variable (LogAndSign k=10 resolves the small
  gradients of freshly initialised networks).

  Raises:
    ValueError: a malformed spec, a module that cannot be imported, no such function, or a
      function whose result is not a `make_loss` that builds a problem (one line, naming it).
  """
  module_name, _, function_name = spec.partition(":")
  if not module_name or not function_name or ":" in function_name:
    raise ValueError(f"problem {spec!r}: expected a configuration name or module:function")
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  try:
    module = importlib.import_module(module_name)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"problem {spec!r}: cannot import module {module_name!r} "
                     f"({type(e).__name__}: {e})") from None
  factory = getattr(module, function_name, None)
  if not callable(factory):
    raise ValueError(f"problem {spec!r}: module {module_name!r} has no function "
                     f"{function_name!r}")

  def make_problem(seed: Optional[int]) -> MakeLoss:
    make_loss = factory(seed)
    if not callable(make_loss):
      raise ValueError(f"problem {spec!r}: {function_name}(seed) must return a make_loss "
                       f"callable, got {type(make_loss).__name__}")
    return make_loss

  from l2l import capture  # pylint: disable=g-import-not-at-top
  try:  # Fail now, with one line, rather than deep inside training.
    capture.Problem(make_problem(0), name=spec)
  except ValueError as e:
    raise ValueError(str(e) if str(e).startswith(f"problem {spec!r}") else
                     f"problem {spec!r}: {e}") from None
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"problem {spec!r}: {function_name}(seed) failed to build a problem "
                     f"({type(e).__name__}: {e})") from None
  return Config(make_problem, {"cw": MLP_LSTM}, None)


def get_config(name: str, **options: Any) -> Config:
  """The named configuration `name` (see `CONFIGS`), or a user's `module:function`.

  Args:
    name: a key of `CONFIGS`, or `module:function` (`custom_config`).
    **options: options of the configuration; `mnist`, `cifar` and `cifar-multi` take
      `data_dir` (default: the environment variable L2L_DATA_DIR, else the Keras download).
      Nothing is loaded until `make_problem` is called. Options given as None are left out.
  """
  options = {k: v for k, v in options.items() if v is not None}
  if ":" in name:
    if options:
      raise ValueError(f"problem {name!r} (module:function) takes no options; got "
                       f"{sorted(options)}")
    return custom_config(name)
  if name not in CONFIGS:
    raise ValueError(f"unknown problem {name!r}; expected one of {sorted(CONFIGS)}")
  accepted = inspect.signature(CONFIGS[name]).parameters
  unknown = sorted(k for k in options if k not in accepted)
  if unknown:
    raise ValueError(f"configuration {name!r} has no options {unknown}; it takes "
                     f"{sorted(accepted)}")
  return CONFIGS[name](**options)
