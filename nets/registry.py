"""The registry of update rules, `factory(config)`, and checkpoint save / restore of net weights."""

import os
from typing import Any, Callable, Dict, Mapping

import tensorflow as tf

from nets import base
from nets import coordinatewise
from nets import hand_designed
from nets import kernel
from nets import mlp_rule
from nets import standard

NETS: Dict[str, Callable[..., base.UpdateRule]] = {
    "CoordinateWiseDeepLSTM": coordinatewise.CoordinateWiseDeepLSTM,
    "KernelDeepLSTM": kernel.KernelDeepLSTM,
    "StandardDeepLSTM": standard.StandardDeepLSTM,
    "PerParameterMLP": mlp_rule.PerParameterMLP,
    "Sgd": hand_designed.Sgd,
    "Momentum": hand_designed.Momentum,
    "NAG": hand_designed.NAG,
    "RMSProp": hand_designed.RMSProp,
    "Adam": hand_designed.Adam,
}


def factory(config: Mapping[str, Any]) -> base.UpdateRule:
  """Builds an update rule from `{"net": name, "net_options": {...}, "net_path": optional}`.

  `net_path`, when given, restores the net's weights from a checkpoint written by `save`.
  """
  if not isinstance(config, Mapping):
    raise TypeError(f"net config must be a dict with a 'net' key, got {type(config).__name__}")
  unknown_keys = set(config) - {"net", "net_options", "net_path"}
  if "net" not in config or unknown_keys:
    raise ValueError(f"net config must have keys 'net' and optionally 'net_options', 'net_path'; "
                     f"got {sorted(config)}")
  name = config["net"]
  if name not in NETS:
    raise ValueError(f"unknown net {name!r}; expected one of {sorted(NETS)}")
  options = dict(config.get("net_options") or {})
  try:
    net = NETS[name](**options)
  except TypeError as e:
    raise TypeError(f"bad net_options for net {name!r}: {e}") from None
  if config.get("net_path"):
    restore(net, config["net_path"])
  return net


def save(net: tf.Module, path: str) -> str:
  """Writes the net's variables to the checkpoint prefix `path`; returns the prefix."""
  return tf.train.Checkpoint(net=net).write(path)


def restore(net: tf.Module, path: str) -> None:
  """Restores the net's variables from the checkpoint prefix `path` written by `save`.

  Raises:
    ValueError: no checkpoint at `path`, a corrupt one, or one written by a differently shaped
      net.
  """
  if not os.path.exists(path + ".index"):
    raise ValueError(f"no checkpoint at {path!r} (expected the file {path + '.index'})")
  try:
    status = tf.train.Checkpoint(net=net).read(path)
    status.assert_consumed()
  except (ValueError, AssertionError, tf.errors.OpError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f"checkpoint {path!r} does not match net {net.name!r}: {first_line}") from None
