"""TensorFlow thread settings for meta-training processes."""

from absl import logging
import tensorflow as tf


def use_inter_op_threads(num_threads: int) -> None:
  """Sets TensorFlow's inter-op thread count for this process; 0 keeps TensorFlow's default.

  A meta-step is a chain of dependent ops (each optimizer step needs the previous one), so
  inter-op threads beyond one have little to run; on the 2-core development machine they slowed
  the fused optimizer ops, which split their rows over the intra-op threads, in a chain of
  optimizer steps (median 152 instead of 284 us per 1,280-row step). In whole meta-steps
  (interleaved runs of `python -m bench.speed --cases l2l,l2l+inter_op1,...`) one inter-op
  thread gave 13.1 instead of 16.1 ms (quadratic) and 113.6 instead of 127.5 (mlp) in one run,
  and no difference in another (12.7 / 12.8, 118.9 / 120.0). train.py and
  evaluate.py call this with their `--inter_op_threads` (default 1). It takes effect only before
  TensorFlow runs its first op; later it logs a warning and changes nothing.

  Raises:
    ValueError: `num_threads` is not a non-negative int.
  """
  if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
    raise ValueError(f"inter-op threads must be a non-negative int (0: TensorFlow's default), "
                     f"got {num_threads!r}")
  if num_threads == 0:
    return
  try:
    tf.config.threading.set_inter_op_parallelism_threads(num_threads)
  except RuntimeError as e:  # TensorFlow already initialized its thread pools.
    logging.warning("l2l: inter-op threads left at %d, not %d: %s",
                    tf.config.threading.get_inter_op_parallelism_threads(), num_threads, e)
