"""Problems by name: `get(name, seed=..., **options)` returns a `make_loss`."""

import inspect
from typing import Any, Callable, Dict, Optional

from l2l.capture import MakeLoss
from problems.cifar10 import cifar10
from problems.digits import digits
from problems.ensemble import ensemble
from problems.mnist import mnist
from problems.quadratic import quadratic
from problems.simple import simple, simple_multi_optimizer

PROBLEMS: Dict[str, Callable[..., MakeLoss]] = {
    "simple": simple,
    "simple-multi": simple_multi_optimizer,
    "quadratic": quadratic,
    "ensemble": ensemble,
    "mnist": mnist,
    "cifar10": cifar10,
    "digits": digits,
}


def get(name: str, seed: Optional[int] = 0, **options: Any) -> MakeLoss:
  """Builds the problem `name`; `seed` goes to problems that draw random instances."""
  if name not in PROBLEMS:
    raise ValueError(f"unknown problem {name!r}; expected one of {sorted(PROBLEMS)}")
  constructor = PROBLEMS[name]
  parameters = inspect.signature(constructor).parameters
  if "seed" in parameters:
    options["seed"] = seed
  unknown = [k for k in options if k not in parameters]
  if unknown:
    raise ValueError(f"problem {name!r} has no options {unknown}; it takes "
                     f"{[p for p in parameters if p != 'seed']}")
  return constructor(**options)
