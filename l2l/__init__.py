"""l2l: learning to learn in TensorFlow 2 + Sonnet 2."""

from l2l.capture import Problem, VariableSpec
from l2l.meta_optimizer import MetaLoss, MetaMinimize, MetaOptimizer, resolve_assignments
from l2l.unroll import Group, UnrollResult, UnrollState

__all__ = [
    "Problem", "VariableSpec", "MetaOptimizer", "MetaLoss", "MetaMinimize",
    "resolve_assignments", "Group", "UnrollResult", "UnrollState",
]
