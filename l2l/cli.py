"""Start-up shared by the command-line scripts (train.py, evaluate.py, maml.py).

Quiet by default: `run(main)` replaces `absl.app.run(main)` so that a bad flag value or a
`app.UsageError` prints one line (`<script>: error: <message>`) instead of the help, and
`start_tensorflow()` imports TensorFlow without its start-up chatter (the oneDNN notice and
absl's "All log messages before absl::InitializeLog()" warning, which C++ writes to stderr
whatever TF_CPP_MIN_LOG_LEVEL says) and keeps TensorFlow's INFO lines ("Sharding callback
duration" at every checkpoint) out of the log. `--verbosity=1` (or -v 1) shows them all again.
This module does not import TensorFlow itself, so --help and flag errors stay fast.
"""

import os
import re
import sys
import tempfile
from typing import Callable, List, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging as absl_logging

# C++ start-up lines of TensorFlow that say nothing about the run.
_CHATTER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:. ]+\d+ (port|cpu_feature_guard)\.cc:\d+\] .*"
    r"|To enable the following instructions: .*|E\d{4} .*Unable to register cu(DNN|FFT|BLAS) .*)$")


def _one_line_usage_error(message: str, exitcode: int = 1) -> None:
  sys.stderr.write(f"{os.path.basename(sys.argv[0])}: error: {message}\n")
  sys.exit(exitcode)


def _parse_flags(argv: List[str]) -> List[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _one_line_usage_error(f"{e} (--helpfull lists the flags)")
  return []  # Not reached.


def run(main: Callable[[List[str]], None]) -> None:
  """`absl.app.run(main)` with one-line errors for bad flags and `app.UsageError`."""

  def wrapped(argv: List[str]) -> None:
    try:
      main(argv)
    except app.UsageError as e:
      _one_line_usage_error(str(e), e.exitcode)

  try:
    app.run(wrapped, flags_parser=_parse_flags)
  except BrokenPipeError:
    # The reader of stdout went away (`train.py --help | head`): stop quietly, as `cat` does.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)


def verbose() -> bool:
  """Whether `--verbosity` (absl's) asks for more than INFO: then nothing is hidden."""
  return flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].value >= 1


def start_tensorflow(inter_op_threads: int = 0, intra_op_threads: int = 0):
  """Imports TensorFlow quietly, sets its inter-op and intra-op threads (`--inter_op_threads`,
  `--intra_op_threads`: `l2l.threads`; app.UsageError if negative) and returns the module.

  Unless `verbose()`: stderr (file descriptor 2, where C++ writes) goes to a temporary file while
  TensorFlow loads and initializes its CPU device; lines of it other than the known start-up
  chatter are written back to stderr, so real errors still show. TensorFlow's Python INFO lines
  are dropped. Numerics are unchanged (oneDNN stays on; only its notice is hidden).
  """
  check_threads(inter_op_threads, intra_op_threads)
  quiet = not verbose()
  if quiet:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  captured = _StderrCapture() if quiet else None
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from l2l import threads  # pylint: disable=g-import-not-at-top
    threads.use_inter_op_threads(inter_op_threads)
    threads.use_intra_op_threads(intra_op_threads)
    tf.constant(0.0).numpy()  # Initializes the CPU device (its notice) while stderr is captured.
  finally:
    if captured is not None:
      captured.replay()
  if quiet:
    tf.get_logger().setLevel("WARNING")
    # TensorFlow also logs INFO lines through absl ("Sharding callback duration" at every save).
    absl_logging.get_absl_handler().addFilter(_drop_tensorflow_info)
  return tf


def _drop_tensorflow_info(record) -> bool:
  """A logging filter: False for INFO (and lower) records of TensorFlow's own modules, and for
  its "triggered tf.function retracing" warnings (the scripts trace one unroll per problem or
  task on purpose: evaluate.py --suite builds ten, and TensorFlow counts them as retraces)."""
  if f"{os.sep}tensorflow{os.sep}" not in record.pathname:
    return True
  return record.levelno > 20 and "triggered tf.function retracing" not in record.getMessage()


class _StderrCapture:
  """Points file descriptor 2 at a temporary file until `replay()`."""

  def __init__(self):
    sys.stderr.flush()
    self._file = tempfile.TemporaryFile()
    self._saved = os.dup(2)
    os.dup2(self._file.fileno(), 2)

  def replay(self) -> None:
    sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    self._file.seek(0)
    text = self._file.read().decode(errors="replace")
    self._file.close()
    kept = [line for line in text.splitlines() if line.strip() and not _CHATTER.match(line)]
    if kept:
      sys.stderr.write("\n".join(kept) + "\n")


def int_list(name: str, values: Sequence[str]) -> Tuple[int, ...]:
  """The integers of a comma-separated list flag `--name`; app.UsageError if one is not."""
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f"--{name} must be a comma-separated list of integers, got "
                         f"{','.join(values)}") from None


def check_output_file(name: str, path: str) -> None:
  """`--name=path` names a file the script writes at the end: app.UsageError now, before the
  work, if its directory does not exist or it is a directory."""
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise app.UsageError(f"--{name}: directory {directory!r} of {path!r} does not exist")
  if os.path.isdir(path):
    raise app.UsageError(f"--{name}: {path!r} is a directory; give a file name")


def check_threads(inter_op_threads: int, intra_op_threads: int = 0) -> None:
  """app.UsageError naming `--inter_op_threads` or `--intra_op_threads` when one is negative."""
  for name, value in (("inter_op_threads", inter_op_threads),
                      ("intra_op_threads", intra_op_threads)):
    if value < 0:
      raise app.UsageError(f"--{name} must be >= 0 (0: TensorFlow's default), got {value}")


def use_inter_op_threads(num_threads: int) -> None:
  """`--inter_op_threads`: `threads.use_inter_op_threads`, app.UsageError if negative."""
  check_threads(num_threads)
  from l2l import threads  # pylint: disable=g-import-not-at-top
  threads.use_inter_op_threads(num_threads)

