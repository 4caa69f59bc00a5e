"""Optimizee problems: `make_loss` callables, and a registry by name."""

from problems.ensemble import ensemble
from problems.quadratic import quadratic
from problems.registry import PROBLEMS, get
from problems.simple import simple, simple_multi_optimizer

__all__ = ["PROBLEMS", "get", "simple", "simple_multi_optimizer", "quadratic", "ensemble"]
