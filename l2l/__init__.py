"""l2l: learning to learn in TensorFlow 2 + Sonnet 2.

Learned optimizers (`MetaOptimizer`) and gradient-based meta-learning (the MAML family) on one
unroll engine; update rules live in `nets`, problems and task samplers in `problems`.
"""

from l2l.capture import Problem, VariableSpec
from l2l.es import PESMinimize
from l2l.learned_optimizer import LearnedOptimizer
from l2l.meta_optimizer import MetaLoss, MetaMinimize, MetaOptimizer, resolve_assignments
from l2l.unroll import Group, UnrollResult, UnrollState
from l2l import keras_optimizer as keras
# The MAML family (l2l/meta_learning/).
from l2l.meta_learning import functional
from l2l.meta_learning.functional import functional_forward, named_params
from l2l.meta_learning.checkpointed_maml import CheckpointedMAML
from l2l.meta_learning.imaml import IMAML
from l2l.meta_learning.inner_optimizers import (DifferentiableOptimizer, FunctionalModel,
                                                innerloop_ctx, rule_from)
from l2l.meta_learning.maml import (ANIL, MAML, Learner, MetaSGD, Reptile, adapt, head_names,
                                    inner_step)
from l2l.meta_learning.maml_step import fomaml_step, maml_step, reptile_step
from l2l.meta_learning.meta_trainer import History, MetaTrainer
# Versatile learned optimizers (l2l/versatile/).
from l2l.versatile import zoo
from l2l.versatile.zoo import pretrained, pretrained_optimizer

# The suite trainer and evaluator import the problems package, which imports l2l: loaded on
# first use so that `import problems` before `import l2l` works.
_LAZY = {"SuiteTrainConfig": "l2l.versatile.suite_training",
         "meta_train_suite": "l2l.versatile.suite_training",
         "evaluate_suite": "l2l.versatile.suite_evaluation"}


def __getattr__(name):
  if name in _LAZY:
    import importlib  # pylint: disable=g-import-not-at-top
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'l2l' has no attribute {name!r}")

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
