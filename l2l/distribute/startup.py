"""`start_tensorflow`: TensorFlow's start-up for a script with a `--strategy` (no TensorFlow
imported here: the scripts' --help stays fast)."""

from typing import Any

from absl import app
from absl import logging as absl_logging

from l2l import cli


def start_tensorflow(name: str, inter_op_threads: int = 0, cpu_devices: int = 0,
                     intra_op_threads: int = 0) -> Any:
  """`l2l.cli.start_tensorflow` for a script with a `--strategy`: quietly imports TensorFlow,
  sets its inter-op threads, creates the strategy (`create_strategy`) before TensorFlow's first
  op and returns it (None for "default", which is exactly `cli.start_tensorflow`).

  Raises:
    app.UsageError: a bad name, `cpu_devices` or TF_CONFIG (one line, for `cli.run`).
  """
  if name == "default" and not cpu_devices:
    cli.start_tensorflow(inter_op_threads, intra_op_threads)
    return None
  cli.check_threads(inter_op_threads, intra_op_threads)
  quiet = not cli.verbose()
  captured = cli._StderrCapture() if quiet else None  # pylint: disable=protected-access
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from l2l import threads  # pylint: disable=g-import-not-at-top
    from l2l.distribute import strategies  # pylint: disable=g-import-not-at-top
    if quiet:  # The strategy's own INFO lines, as cli.start_tensorflow hides them.
      tf.get_logger().setLevel("WARNING")
      absl_logging.get_absl_handler().addFilter(
          cli._drop_tensorflow_info)  # pylint: disable=protected-access
    threads.use_inter_op_threads(inter_op_threads)
    threads.use_intra_op_threads(intra_op_threads)
    strategy = strategies.create_strategy(name, cpu_devices)
  except ValueError as e:
    raise app.UsageError(str(e).replace("cpu_devices", "--cpu_devices")) from None
  finally:
    if captured is not None:
      captured.replay()
  cli.start_tensorflow(0)  # Its first op and quiet logging; the threads are set above.
  absl_logging.info("strategy %r: %s", name, strategies.describe(strategy))
  return strategy
