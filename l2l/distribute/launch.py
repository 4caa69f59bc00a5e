"""Starts N local workers of a script under `MultiWorkerMirroredStrategy`, on loopback ports.

    python -m l2l.distribute.launch --workers=2 -- train.py --strategy=multi_worker \\
        --meta_batch_size=4 --save_path=/tmp/l2l_mw

Each worker runs `python <script> <args>` with its own `TF_CONFIG` (a cluster of `--workers`
workers on 127.0.0.1, free ports unless `--port` gives the first one; worker i has task index
i, worker 0 is the chief). Their output is interleaved line by line, prefixed with
`[worker i]`. When a worker fails the others are stopped (SIGTERM, then SIGKILL after
`--grace_seconds`); SIGINT / SIGTERM to the launcher go to every worker. The exit status is the
first failing worker's, else 0. On a cluster, set `TF_CONFIG` on each machine instead (BUILD.md).

With `--parameter_servers=P` (asynchronous PES, `ParameterServerStrategy`) it starts a cluster
of one coordinator ("chief", running `python <script> <args>`), P parameter servers and
`--workers` workers (each `python -m l2l.distribute.server`) on loopback ports:

    python -m l2l.distribute.launch --parameter_servers=1 --workers=2 -- train.py \
        --gradient=pes --strategy=parameter_server --save_path=/tmp/l2l_async

A worker that dies is reported and the run goes on (the coordinator reschedules its work);
the launcher ends when the coordinator does, stops the servers and returns its exit status.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional, Sequence, Tuple

from absl import app
from absl import flags

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> List[int]:
  """`count` distinct ports that were free on the loopback interface a moment ago."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((LOOPBACK, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_configs(ports: Sequence[int]) -> List[str]:
  """The TF_CONFIG of each worker of a loopback cluster on `ports`."""
  cluster = {"worker": [f"{LOOPBACK}:{port}" for port in ports]}
  return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
          for i in range(len(ports))]


def parameter_server_configs(ports: Sequence[int], parameter_servers: int
                             ) -> List[Tuple[str, str]]:
  """(task name, TF_CONFIG) of a loopback coordinator, `parameter_servers` servers and workers
  on `ports` (the chief's first, then the servers', then the workers')."""
  addresses = [f"{LOOPBACK}:{port}" for port in ports]
  cluster = {"chief": addresses[:1], "ps": addresses[1:1 + parameter_servers],
             "worker": addresses[1 + parameter_servers:]}
  return [(f"{kind} {index}" if kind != "chief" else "chief",
           json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))
          for kind in ("chief", "ps", "worker") for index in range(len(cluster[kind]))]


def _pump(stream, prefix: str, out) -> None:
  for line in iter(stream.readline, b""):
    out.write(prefix + line.decode(errors="replace"))
    out.flush()
  stream.close()


def _stop(processes: Sequence[subprocess.Popen], grace_seconds: float) -> None:
  for process in processes:
    if process.poll() is None:
      process.terminate()
  deadline = time.monotonic() + grace_seconds
  for process in processes:
    try:
      process.wait(max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def _start(args: Sequence[str], config: str, label: str, env: Optional[dict]
           ) -> Tuple[subprocess.Popen, threading.Thread]:
  """`python <args>` with TF_CONFIG=config, its output prefixed with `[label] ` on our stdout."""
  process = subprocess.Popen([sys.executable, *args],
                             env=dict(os.environ if env is None else env, TF_CONFIG=config),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  pump = threading.Thread(target=_pump, args=(process.stdout, f"[{label}] ", sys.stdout),
                          daemon=True)
  pump.start()
  return process, pump


def _finish(processes: Sequence[subprocess.Popen], pumps: Sequence[threading.Thread],
            previous_handlers: dict, grace_seconds: float) -> None:
  """Stops what still runs, restores the signal handlers and drains the output pumps."""
  _stop(processes, grace_seconds)
  for s, handler in previous_handlers.items():
    signal.signal(s, handler)
  for pump in pumps:
    pump.join(timeout=5.0)


def launch(command: Sequence[str], workers: int, port: int = 0, grace_seconds: float = 10.0,
           env: Optional[dict] = None) -> int:
  """Runs `python <command>` as `workers` local workers; returns the exit status (see above).

  Raises:
    ValueError: no command, `workers` < 1 or a bad `port`.
  """
  if not command:
    raise ValueError("give the script to run after --, e.g. -- train.py --strategy=multi_worker")
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
    raise ValueError(f"workers must be a positive integer, got {workers!r}")
  if not 0 <= port <= 65535 - workers:
    raise ValueError(f"port must be 0 (free ports) or a first port in 1..{65535 - workers}, got "
                     f"{port}")
  ports = free_ports(workers) if port == 0 else list(range(port, port + workers))
  processes, pumps = map(list, zip(*[_start(command, config, f"worker {index}", env)
                                     for index, config in enumerate(tf_configs(ports))]))

  def forward(signum, _):
    for process in processes:
      if process.poll() is None:
        process.send_signal(signum)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  status = 0
  try:
    running = list(processes)
    while running:
      for process in list(running):
        code = process.poll()
        if code is None:
          continue
        running.remove(process)
        if code != 0 and status == 0:
          status = code if code > 0 else 128 - code
          sys.stderr.write(f"launch: worker {processes.index(process)} exited with status "
                           f"{code}; stopping the others\n")
          _stop(running, grace_seconds)
      time.sleep(0.1)
  finally:
    _finish(processes, pumps, previous, grace_seconds)
  return status


def launch_parameter_server(command: Sequence[str], workers: int, parameter_servers: int = 1,
                            port: int = 0, grace_seconds: float = 10.0,
                            env: Optional[dict] = None) -> int:
  """Runs `python <command>` as the coordinator of a loopback `ParameterServerStrategy`
  cluster with `parameter_servers` servers and `workers` workers; returns its exit status.

  Raises:
    ValueError: no command, fewer than 1 worker or server, or a bad `port`.
  """
  if not command:
    raise ValueError("give the script to run after --, e.g. -- train.py "
                     "--strategy=parameter_server --gradient=pes")
  for name, value in (("workers", workers), ("parameter_servers", parameter_servers)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  tasks = 1 + parameter_servers + workers
  if not 0 <= port <= 65535 - tasks:
    raise ValueError(f"port must be 0 (free ports) or a first port in 1..{65535 - tasks}, got "
                     f"{port}")
  ports = free_ports(tasks) if port == 0 else list(range(port, port + tasks))
  # Servers first, so that they listen when the coordinator connects.
  configs = parameter_server_configs(ports, parameter_servers)
  configs = configs[1:] + configs[:1]
  names = [name for name, _ in configs]
  processes, pumps = map(list, zip(*[
      _start(command if name == "chief" else ["-m", "l2l.distribute.server"], config, name, env)
      for name, config in configs]))
  chief = processes[-1]

  def forward(signum, _):
    if chief.poll() is None:
      chief.send_signal(signum)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  reported = set()
  try:
    while chief.poll() is None:
      for name, process in zip(names, processes[:-1]):
        if process.poll() is not None and name not in reported:
          reported.add(name)
          consequence = ("the coordinator reschedules its work" if name.startswith("worker")
                         else "the coordinator cannot go on without it")
          sys.stderr.write(f"launch: {name} exited with status {process.returncode}; "
                           f"{consequence}\n")
      time.sleep(0.1)
    code = chief.returncode
  finally:
    _finish(processes, pumps, previous, grace_seconds)
  return code if code >= 0 else 128 - code


def main() -> None:
  """The command line (flags are defined here, not at import: this module is also a library)."""
  from l2l import cli  # pylint: disable=g-import-not-at-top
  workers = flags.DEFINE_integer("workers", 2, "Worker processes to start.")
  port = flags.DEFINE_integer("port", 0, "First port (worker i listens on port + i); 0: free "
                              "ports chosen by the system.")
  parameter_servers = flags.DEFINE_integer(
      "parameter_servers", 0, "Asynchronous mode (ParameterServerStrategy): start this many "
      "parameter servers, --workers workers and the script as the coordinator; 0: the "
      "synchronous workers of MultiWorkerMirroredStrategy.")
  grace = flags.DEFINE_float("grace_seconds", 10.0, "Seconds between SIGTERM and SIGKILL when "
                             "stopping the workers.")

  def run(argv: Sequence[str]) -> None:
    try:
      if parameter_servers.value:
        sys.exit(launch_parameter_server(list(argv[1:]), workers.value,
                                         parameter_servers.value, port.value, grace.value))
      sys.exit(launch(list(argv[1:]), workers.value, port.value, grace.value))
    except ValueError as e:
      raise app.UsageError(str(e)) from None

  cli.run(run)


if __name__ == "__main__":
  main()
