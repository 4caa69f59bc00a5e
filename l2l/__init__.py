"""l2l: learning to learn in TensorFlow 2 + Sonnet 2.

Learned optimizers (`MetaOptimizer`) and gradient-based meta-learning (the MAML family) on one
unroll engine; update rules live in `nets`, problems and task samplers in `problems`.
"""

import importlib as _importlib
import importlib.util as _importlib_util

# Every public name is imported on first use (PEP 562), so that `import l2l` (and the scripts'
# --help and flag errors) does not import TensorFlow, and `import problems` before `import l2l`
# works. name -> (module, attribute); attribute None: the module itself.
_LAZY = {
    "Problem": ("l2l.capture", "Problem"),
    "VariableSpec": ("l2l.capture", "VariableSpec"),
    "PESMinimize": ("l2l.es", "PESMinimize"),
    "LearnedOptimizer": ("l2l.learned_optimizer", "LearnedOptimizer"),
    "MetaLoss": ("l2l.meta_optimizer", "MetaLoss"),
    "MetaMinimize": ("l2l.meta_optimizer", "MetaMinimize"),
    "MetaOptimizer": ("l2l.meta_optimizer", "MetaOptimizer"),
    "resolve_assignments": ("l2l.meta_optimizer", "resolve_assignments"),
    "Group": ("l2l.unroll", "Group"),
    "UnrollResult": ("l2l.unroll", "UnrollResult"),
    "UnrollState": ("l2l.unroll", "UnrollState"),
    "keras": ("l2l.keras_optimizer", None),
    # The MAML family (l2l/meta_learning/).
    "functional": ("l2l.meta_learning.functional", None),
    "functional_forward": ("l2l.meta_learning.functional", "functional_forward"),
    "named_params": ("l2l.meta_learning.functional", "named_params"),
    "CheckpointedMAML": ("l2l.meta_learning.checkpointed_maml", "CheckpointedMAML"),
    "IMAML": ("l2l.meta_learning.imaml", "IMAML"),
    **{name: ("l2l.meta_learning.inner_optimizers", name) for name in (
        "DifferentiableOptimizer", "FunctionalModel", "innerloop_ctx", "rule_from")},
    **{name: ("l2l.meta_learning.maml", name) for name in (
        "ANIL", "MAML", "Learner", "MetaSGD", "Reptile", "adapt", "head_names", "inner_step")},
    **{name: ("l2l.meta_learning.maml_step", name) for name in (
        "fomaml_step", "maml_step", "reptile_step")},
    "History": ("l2l.meta_learning.meta_trainer", "History"),
    "MetaTrainer": ("l2l.meta_learning.meta_trainer", "MetaTrainer"),
    # Versatile learned optimizers (l2l/versatile/).
    "zoo": ("l2l.versatile.zoo", None),
    "pretrained": ("l2l.versatile.zoo", "pretrained"),
    "pretrained_optimizer": ("l2l.versatile.zoo", "pretrained_optimizer"),
    "SuiteTrainConfig": ("l2l.versatile.suite_training", "SuiteTrainConfig"),
    "meta_train_suite": ("l2l.versatile.suite_training", "meta_train_suite"),
    "evaluate_suite": ("l2l.versatile.suite_evaluation", "evaluate_suite"),
}


def __getattr__(name: str):
  if name in _LAZY:
    module, attribute = _LAZY[name]
    value = _importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
  elif not name.startswith("__") and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
    value = _importlib.import_module(f"{__name__}.{name}")  # A submodule: l2l.threads, ...
  else:
    raise AttributeError(f"module 'l2l' has no attribute {name!r}")
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))


def _submodules_on_demand(package_name: str) -> None:
  """Lets `l2l.<package>.<module>` resolve after `import l2l` (as the README writes such names)
  by importing the module on first access; the subpackages' own __init__ import nothing."""
  package = _importlib.import_module(package_name)
  if "__getattr__" in vars(package):
    return

  def get(name):
    if not name.startswith("__") and _importlib_util.find_spec(f"{package_name}.{name}"):
      return _importlib.import_module(f"{package_name}.{name}")
    raise AttributeError(f"module {package_name!r} has no attribute {name!r}")

  package.__getattr__ = get


for _package in ("l2l.meta_learning", "l2l.versatile"):
  _submodules_on_demand(_package)
del _package

__all__ = [
    # Learned optimizers.
    "Problem", "VariableSpec", "MetaOptimizer", "MetaLoss", "MetaMinimize",
    "resolve_assignments", "Group", "UnrollResult", "UnrollState", "LearnedOptimizer",
    # The MAML family.
    "functional", "MAML", "MetaSGD", "ANIL", "Reptile", "Learner", "adapt", "inner_step",
    "head_names", "maml_step", "fomaml_step", "reptile_step", "MetaTrainer", "History",
    "DifferentiableOptimizer", "FunctionalModel", "innerloop_ctx", "rule_from",
    "functional_forward", "named_params",
    # Long horizons at bounded memory.
    "CheckpointedMAML", "IMAML", "PESMinimize",
    # Versatile learned optimizers: pretrained, trained and evaluated on task suites.
    "zoo", "pretrained", "pretrained_optimizer", "SuiteTrainConfig", "meta_train_suite",
    "evaluate_suite",
    # A Keras 3 optimizer over any rule, for model.compile / model.fit.
    "keras",
]

# Keras finds `l2l.keras.Optimizer` in a saved model only once the class is registered, which
# importing `l2l.keras_optimizer` does. With Keras already loaded that import costs little, so it
# happens here: `import keras; import l2l; keras.models.load_model(path)` works in a fresh
# process. (Keras loaded after l2l: use `l2l.keras` once before loading.)
import sys as _sys  # pylint: disable=g-import-not-at-top,g-bad-import-order
if "keras" in _sys.modules:
  _importlib.import_module("l2l.keras_optimizer")
del _sys
