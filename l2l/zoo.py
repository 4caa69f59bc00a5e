"""Pretrained learned optimizers shipped with the package, loaded by name.

    rule = l2l.pretrained()                     # the recommended general-purpose optimizer
    opt = l2l.LearnedOptimizer(rule, num_steps=2000)
    ...
    opt.apply(grads, model.trainable_variables)

Each optimizer is a directory of `l2l/pretrained_optimizers/` written by `MetaOptimizer.save`
(config.json and the weights, a few KB) plus `info.json`: what it is, how it was trained (the
command), the horizon it was trained for, and a short stored trajectory that the tests
reproduce. `python -m l2l.zoo` lists them.
"""

import json
import os
from typing import Any, Dict, List, Optional

from l2l import meta_optimizer as meta_optimizer_lib
from nets import base as nets_base

DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_optimizers")
INFO_FILE = "info.json"


def available() -> List[str]:
  """The names of the shipped optimizers."""
  if not os.path.isdir(DIRECTORY):
    return []
  return sorted(n for n in os.listdir(DIRECTORY)
                if os.path.isfile(os.path.join(DIRECTORY, n, INFO_FILE)))


def info(name: str) -> Dict[str, Any]:
  """The `info.json` of a shipped optimizer (see the module docstring)."""
  with open(os.path.join(path(name), INFO_FILE)) as f:
    return json.load(f)


def recommended() -> str:
  """The name of the recommended general-purpose optimizer."""
  names = [n for n in available() if info(n).get("recommended")]
  if len(names) != 1:
    raise ValueError(f"expected one recommended pretrained optimizer, found {names}")
  return names[0]


def path(name: str) -> str:
  """The directory of the shipped optimizer `name`.

  Raises:
    ValueError: no shipped optimizer of that name (the message lists the available ones).
  """
  names = available()
  if not isinstance(name, str) or name not in names:
    raise ValueError(f"unknown pretrained optimizer {name!r}; available: {', '.join(names)}")
  return os.path.join(DIRECTORY, name)


def pretrained_optimizer(name: Optional[str] = None) -> meta_optimizer_lib.MetaOptimizer:
  """The shipped optimizer `name` (default: the recommended one) as a `MetaOptimizer`."""
  return meta_optimizer_lib.MetaOptimizer.load(path(recommended() if name is None else name))


def pretrained(name: Optional[str] = None) -> nets_base.UpdateRule:
  """The update rule of the shipped optimizer `name` (default: the recommended one).

  Usable wherever a rule is: `LearnedOptimizer(rule, num_steps=...)`, `innerloop_ctx(model,
  rule)`, `MetaOptimizer`-free. Rules that read the training progress need the horizon
  (`num_steps`); without it they assume the horizon they were trained for (`info(name)`).

  Raises:
    ValueError: an unknown name, listing the available ones.
  """
  optimizer = pretrained_optimizer(name)
  if len(optimizer.nets) != 1:
    raise ValueError(f"pretrained optimizer {name!r} has several nets {sorted(optimizer.nets)}; "
                     "use pretrained_optimizer()")
  return next(iter(optimizer.nets.values()))


def main() -> None:
  for name in available():
    data = info(name)
    print(f"{name}{' (recommended)' if data.get('recommended') else ''}: {data['description']}")


if __name__ == "__main__":
  main()
