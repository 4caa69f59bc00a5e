"""TensorFlow thread settings for meta-training processes."""

from absl import logging
import tensorflow as tf


def use_inter_op_threads(num_threads: int) -> None:
  """Sets TensorFlow's inter-op thread count for this process; 0 keeps TensorFlow's default.

  A meta-step is a chain of dependent ops (each optimizer step needs the previous one), so
  inter-op threads beyond one have little to run. In whole meta-steps (interleaved runs of
  `python -m bench --cases l2l,l2l+inter_op1,...`, session 5) one inter-op thread was faster on
  the quadratic config in five of six runs (10.6-15.6 against 11.4-17.8 ms) and on the MLP
  config in five of six (by 0.3-11%); the fused optimizer ops then take their helper threads from
  the intra-op pool instead of the inter-op one (lstm_kernels.cc, ForParts). train.py and
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
