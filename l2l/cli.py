"""Flag handling shared by the command-line scripts (train.py, evaluate.py, maml.py)."""

from typing import Sequence, Tuple

from absl import app

from l2l import threads


def int_list(name: str, values: Sequence[str]) -> Tuple[int, ...]:
  """The integers of a comma-separated list flag `--name`; app.UsageError if one is not."""
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f"--{name} must be a comma-separated list of integers, got "
                         f"{','.join(values)}") from None


def use_inter_op_threads(num_threads: int) -> None:
  """`--inter_op_threads`: `threads.use_inter_op_threads`, app.UsageError if negative."""
  if num_threads < 0:
    raise app.UsageError(f"--inter_op_threads must be >= 0 (0: TensorFlow's default), got "
                         f"{num_threads}")
  threads.use_inter_op_threads(num_threads)
