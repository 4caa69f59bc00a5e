"""TensorFlow thread settings for meta-training processes.

A meta-step is a chain of dependent ops. On a small problem (the 1,280-coordinate quadratic of
`python -m bench`) the problem's own ops are tiny (a batched 10x10 matvec: about 20 us on one
thread, 45-60 us split over two, which wakes a second thread for every call), while the fused
optimizer ops (`nets/lstm_kernels.cc`) split their rows over the threads of whichever of
TensorFlow's pools is larger. One intra-op thread therefore keeps the problem's ops unsplit and
still runs the optimizer on every core: quadratic meta-steps 10.9-11.4 ms against 12.9-13.4 ms
with TensorFlow's defaults, the 15,910-coordinate MLP unchanged (114-118 ms either way; BUILD.md
"Speed"). train.py and evaluate.py start TensorFlow that way (`--intra_op_threads`, default 1;
`--inter_op_threads`, default 0: TensorFlow's). Large optimizees whose own matmuls or
convolutions dominate (applying a learned optimizer to a big model) want TensorFlow's defaults.
Each setting takes effect only before TensorFlow runs its first op; later it logs a warning and
changes nothing.
"""

from absl import logging
import tensorflow as tf


def _use(kind: str, num_threads: int, get, set_) -> None:
  if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
    raise ValueError(f"{kind} threads must be a non-negative int (0: TensorFlow's default), "
                     f"got {num_threads!r}")
  if num_threads == 0:
    return
  try:
    set_(num_threads)
  except RuntimeError as e:  # TensorFlow already initialized its thread pools.
    logging.warning("l2l: %s threads left at %d, not %d: %s", kind, get(), num_threads, e)


def use_inter_op_threads(num_threads: int) -> None:
  """Sets TensorFlow's inter-op thread count for this process; 0 keeps TensorFlow's default.

  With one inter-op thread the fused optimizer ops take their helper threads from the intra-op
  pool instead (lstm_kernels.cc, ForParts); with one thread in both pools they run on one core.

  Raises:
    ValueError: `num_threads` is not a non-negative int.
  """
  threading = tf.config.threading
  _use("inter-op", num_threads, threading.get_inter_op_parallelism_threads,
       threading.set_inter_op_parallelism_threads)


def use_intra_op_threads(num_threads: int) -> None:
  """Sets TensorFlow's intra-op thread count for this process; 0 keeps TensorFlow's default.

  1 is faster for meta-training on small problems (see the module docstring): the problem's ops
  run unsplit, the fused optimizer ops still on every core.

  Raises:
    ValueError: `num_threads` is not a non-negative int.
  """
  threading = tf.config.threading
  _use("intra-op", num_threads, threading.get_intra_op_parallelism_threads,
       threading.set_intra_op_parallelism_threads)
