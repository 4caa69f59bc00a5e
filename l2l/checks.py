"""Argument checks shared by the library: one wording for the same mistake everywhere."""

from typing import Any


def positive_int(name: str, value: Any) -> int:
  """Returns `value` if it is a positive int (not a bool); else ValueError naming `name`."""
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return value
