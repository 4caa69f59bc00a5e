"""A weighted sum of problems, each under its own name scope."""

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from l2l.capture import MakeLoss


def ensemble(problems: Sequence[Mapping[str, Any]], weights: Optional[Sequence[float]] = None,
             seed: Optional[int] = 0) -> MakeLoss:
  """f = sum_i weights[i] * f_i for problems given as `{"name": ..., "options": {...}}`.

  Each problem's variables live under the name scope `problem_<i>`. Problems that take a seed
  get their own, derived from `(seed, i)`, so members of different ensembles never coincide.
  """
  from problems import registry  # The registry imports this module.
  if not problems:
    raise ValueError("ensemble: problems must be a non-empty list of {'name', 'options'} dicts")
  weights = [1.0] * len(problems) if weights is None else list(weights)
  if len(weights) != len(problems):
    raise ValueError(f"ensemble: {len(weights)} weights for {len(problems)} problems")
  make_losses = []
  for i, spec in enumerate(problems):
    if not isinstance(spec, Mapping) or "name" not in spec:
      raise ValueError(f"ensemble: problem {i} must be a dict with a 'name', got {spec!r}")
    options = dict(spec.get("options") or {})
    member_seed = (None if seed is None else
                   int(np.random.SeedSequence([seed, i]).generate_state(1)[0] >> 1))
    make_losses.append(registry.get(spec["name"], seed=member_seed, **options))

  def make_loss():
    total = []
    for i, (weight, sub) in enumerate(zip(weights, make_losses)):
      with tf.name_scope(f"problem_{i}"):
        total.append(weight * sub())
    return tf.add_n(total)
  return make_loss
