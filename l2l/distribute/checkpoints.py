"""Where each worker writes: TensorFlow's multi-worker checkpoint convention.

Under `MultiWorkerMirroredStrategy` every worker takes part in a save, but only the chief's
files are kept: the chief writes to the real directory, every other worker to a temporary
`workertemp_<task index>` directory inside it, deleted right after the save (as Keras'
`distributed_file_utils` does). Every worker resumes from the chief's directory, so it must be
on storage all workers see (one machine, NFS, GCS).
"""

import os
import shutil
from typing import Optional

import tensorflow as tf

from l2l.distribute import strategies

_TEMP_PREFIX = "workertemp_"


def write_dir(directory: str, strategy: Optional[tf.distribute.Strategy]) -> str:
  """`directory` for the chief (or a single process); `directory/workertemp_<i>` for worker i."""
  if strategies.is_chief(strategy):
    return directory
  return os.path.join(directory, f"{_TEMP_PREFIX}{strategies.worker_index(strategy)}")


def remove_write_dir(written: str, directory: str) -> None:
  """Deletes `written` if it is a worker's temporary directory (not `directory` itself)."""
  if os.path.normpath(written) != os.path.normpath(directory):
    shutil.rmtree(written, ignore_errors=True)

