"""Stopping long runs cleanly on SIGINT (Ctrl-C) and SIGTERM (schedulers, `kill`).

A training loop runs inside `StopOnSignal()` and checks `stop.signal` at points where its state
is consistent (between epochs or meta-steps); there it saves a checkpoint and raises
`Interrupted`. The scripts turn that into one line saying how to resume and the conventional exit
status 128 + the signal number: 130 for SIGINT, 143 for SIGTERM (`Interrupted.exit_code`).

A second signal of the same kind while the loop finishes its current part stops the process at
once, as if no handler were installed (Ctrl-C twice: KeyboardInterrupt), losing that part.
"""

import os
import signal
from typing import Dict, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
  """A run stopped by SIGINT or SIGTERM after saving its state.

  Attributes:
    signal_name: "SIGINT" or "SIGTERM".
    exit_code: 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
  """

  def __init__(self, message: str, signal_name: str = "SIGINT"):
    super().__init__(message)
    self.signal_name = signal_name
    self.exit_code = 128 + int(getattr(signal, signal_name, signal.SIGINT))


class StopOnSignal:
  """Context manager turning SIGINT / SIGTERM into a flag, `signal` (None or the signal's name).

  Outside the main thread (where Python cannot install handlers) it does nothing. On exit the
  previous handlers come back.
  """

  def __init__(self, what: str = "the current step"):
    self.signal: Optional[str] = None
    self._what = what
    self._previous: Dict[int, object] = {}

  def __enter__(self) -> "StopOnSignal":
    for sig in SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: signals stay as they are.
        pass
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    self.signal = signal.Signals(signum).name
    # A second one stops at once: the previous handler (default: KeyboardInterrupt / terminate).
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
    # os.write, not logging: a signal handler may run while the logging lock is held.
    os.write(2, f"{self.signal}: finishing {self._what}, then saving; send it again to stop "
                "at once (loses that part)\n".encode())

  def raise_if_signalled(self, message: str) -> None:
    """Raises `Interrupted(f"{signal}: {message}")` if a signal arrived."""
    if self.signal is not None:
      raise Interrupted(f"{self.signal}: {message}", self.signal)

  def __exit__(self, *args) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
