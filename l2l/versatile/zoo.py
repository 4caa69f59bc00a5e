"""Pretrained learned optimizers shipped with the package, loaded by name.

    rule = l2l.pretrained()                     # the recommended general-purpose optimizer
    opt = l2l.LearnedOptimizer(rule, num_steps=2000)
    ...
    opt.apply(grads, model.trainable_variables)

Each optimizer is a directory of `l2l/versatile/pretrained_optimizers/` written by
`MetaOptimizer.save` (config.json and the weights, a few KB) plus `info.json`: what it is, how it was trained (the
command), the horizon it was trained for, and a short stored trajectory that the tests
reproduce. `python -m l2l.versatile` lists them.
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


def reference_trajectory(rule: nets_base.UpdateRule, num_steps: int = 30) -> List[float]:
  """The losses of `num_steps` steps of `rule` (through `LearnedOptimizer`, told the horizon)
  on a fixed float32 least-squares problem with a matrix and a vector parameter.

  The shipped `info.json` stores them, and the tests check that a loaded optimizer reproduces
  them: the weights, the loading and the rule's maths are what they were when it was shipped.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2l import learned_optimizer  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  a = tf.constant(rng.randn(16, 5).astype(np.float32))
  b = tf.constant(rng.randn(16, 4).astype(np.float32))
  w = tf.Variable(np.zeros([5, 4], np.float32))
  c = tf.Variable(np.zeros([4], np.float32))
  optimizer = learned_optimizer.LearnedOptimizer(rule, num_steps=num_steps)
  losses = []
  for _ in range(num_steps):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(tf.matmul(a, w) + c - b))
    losses.append(float(loss))
    optimizer.apply(tape.gradient(loss, [w, c]), [w, c], loss=loss)
  losses.append(float(tf.reduce_mean(tf.square(tf.matmul(a, w) + c - b))))
  return losses


def ship(source: str, name: str, description: str, command: str, horizon: Optional[int],
         recommended: bool = False) -> str:
  """Copies the optimizer saved at `source` (train.py's save_path) into the package as `name`,
  with its `info.json` and reference trajectory; returns the new directory. For maintainers.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  optimizer = meta_optimizer_lib.MetaOptimizer.load(source)  # Checks that it loads.
  target = os.path.join(DIRECTORY, name)
  os.makedirs(target, exist_ok=True)
  for file in os.listdir(source):
    if file == "config.json" or file.startswith("nets."):
      shutil.copy(os.path.join(source, file), target)
  rule = next(iter(optimizer.nets.values())) if len(optimizer.nets) == 1 else None
  data = {"description": description, "recommended": bool(recommended), "command": command,
          "horizon": horizon,
          "trajectory": reference_trajectory(rule) if rule is not None else None}
  with open(os.path.join(target, INFO_FILE), "w") as f:
    json.dump(data, f, indent=1)
  if recommended:  # One recommended optimizer: the others stop being it.
    for other in available():
      if other != name and info(other).get("recommended"):
        other_info = dict(info(other), recommended=False)
        with open(os.path.join(DIRECTORY, other, INFO_FILE), "w") as f:
          json.dump(other_info, f, indent=1)
  return target

