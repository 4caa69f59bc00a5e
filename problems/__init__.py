"""Optimizee problems: `make_loss` callables, and a registry by name."""

from problems.cifar10 import cifar10, cifar10_structure
from problems.datasets import Dataset, load_cifar10, load_mnist
from problems.digits import digits
from problems.ensemble import ensemble
from problems.mnist import mnist
from problems.quadratic import quadratic
from problems.registry import PROBLEMS, get
from problems.rescaled import rescaled
from problems.simple import simple, simple_multi_optimizer
from problems.suite import SUITES, SuiteTask, suite
from problems.tasks import (NWayKShotSampler, SinusoidTaskSampler, Task, TaskSampler,
                            digits_samplers, load_digits)

__all__ = [
    "PROBLEMS", "get", "simple", "simple_multi_optimizer", "quadratic", "ensemble",
    # Few-shot task samplers.
    "Task", "TaskSampler", "SinusoidTaskSampler", "NWayKShotSampler", "load_digits",
    "digits_samplers",
    # Minibatch classification problems and their datasets.
    "mnist", "cifar10", "cifar10_structure", "digits", "Dataset", "load_mnist", "load_cifar10",
    # The task suite for versatile learned optimizers.
    "suite", "SuiteTask", "SUITES",
]
