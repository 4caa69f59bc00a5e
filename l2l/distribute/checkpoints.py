"""Where each worker writes: TensorFlow's multi-worker checkpoint convention.

Under `MultiWorkerMirroredStrategy` every worker takes part in a save, but only the chief's
files are kept: the chief writes to the real directory, every other worker to a temporary
`workertemp_<task index>` directory inside it, deleted right after the save (as Keras'
`distributed_file_utils` does). Every worker resumes from the chief's directory, so it must be
on storage all workers see (one machine, NFS, GCS).
"""

import os
import shutil
import tempfile
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


def worker_workdir(workdir: str, strategy: Optional[tf.distribute.Strategy]) -> str:
  """The work directory of this worker for code that both reads and writes one (maml.py's
  checkpoints and results): `workdir` on the chief; on another worker a temporary copy of the
  chief's `workdir` as it is before anyone trains (so it resumes from the same checkpoint),
  which the caller deletes with `remove_write_dir` at the end. Every worker must call it."""
  if strategies.is_chief(strategy) or not workdir:
    strategies.barrier(strategy)
    strategies.barrier(strategy)
    return workdir
  copy = tempfile.mkdtemp(prefix=f"l2l_{_TEMP_PREFIX}{strategies.worker_index(strategy)}_")
  strategies.barrier(strategy)  # The chief has not changed workdir yet.
  if os.path.isdir(workdir):
    shutil.copytree(workdir, copy, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(f"{_TEMP_PREFIX}*"))
  strategies.barrier(strategy)  # Every copy is done: the chief may write.
  return copy
