"""Where a meta-step's time goes: the l2l speed case under TensorFlow's profiler, per op kind.

    python -m bench.op_profile --config quadratic                   # TensorFlow's default threads
    python -m bench.op_profile --config mlp --threads intra_op1     # train.py's threads
    python -m bench.op_profile --config quadratic --threads inter_op1 --steps 20

Builds the l2l case of `bench/speed.py` (the peers' problem data, x0 and initial net weights,
`meta_minimize`, `reset()` + `step()` per meta-step) with the chosen thread settings, times
`--timed` unprofiled meta-steps (median and min-max), then profiles `--steps` more
(`tf.profiler.experimental`) and prints, per op kind, one line

    op=<kind> ms_per_meta_step=... calls_per_meta_step=... share_of_op_time=...

from the events of TensorFlow's executor threads (`tf_Compute` lines of the trace). An op's time
is its wall time on the thread that ran it: a fused optimizer op's includes waiting for its
helper thread, and an op that splits its work (oneDNN) counts the caller's wall time only.
Ops of both executor threads are summed, so the shares are of the total op time, not of the
wall clock; `executor_ms_per_meta_step` is the executor's own time around the ops (its
`Process` events minus the ops inside them). The profiler adds a few microseconds per op, so
the profiled total exceeds the unprofiled median. BUILD.md "Speed" quotes these tables.
"""

import argparse
import collections
import glob
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from bench import speed

# Executor bookkeeping on the tf_Compute lines besides its `Process` events: not an op.
_EXECUTOR = ("ExecutorDoneCallback",)
# An asynchronous op's start and completion (the problem's loss and gradient as one XLA call,
# `l2l.loss_gradient`): the XLA executable's own events (CpuExecutable::ExecuteAsyncOnStream, its
# HLO ops) run inside the start and are counted as part of it.
_ASYNC = "xla_call(async)"
THREADS = ("default", "intra_op1", "inter_op1")


def op_times(logdir: str) -> Tuple[Dict[str, Tuple[float, int]], float]:
  """({op kind: (total seconds, calls)}, executor seconds) from a profile in `logdir`."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
  if not paths:
    raise ValueError(f"no *.xplane.pb under {logdir!r}: was the profiler running?")
  ops = collections.defaultdict(lambda: [0, 0])
  process_ps = 0
  for path in paths:
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
      space.ParseFromString(f.read())
    for plane in space.planes:
      names = plane.event_metadata
      for line in plane.lines:
        if not line.name.startswith("tf_Compute"):
          continue
        counted_until = 0  # The end of the last counted op: events inside it are its parts.
        for event in sorted(line.events, key=lambda e: e.offset_ps):
          name = names[event.metadata_id].name
          kind = _ASYNC if name.startswith("ExecutorState::ProcessAsync") else name.split(":")[-1]
          if kind == "Process":
            process_ps += event.duration_ps
          elif (kind not in _EXECUTOR and event.duration_ps > 0  # Not a marker (StartRegion).
                and event.offset_ps >= counted_until):
            ops[kind][0] += event.duration_ps
            ops[kind][1] += 1
            counted_until = event.offset_ps + event.duration_ps
  total_op_ps = sum(ps for ps, _ in ops.values())
  return ({k: (ps * 1e-12, n) for k, (ps, n) in ops.items()},
          max(0.0, (process_ps - total_op_ps) * 1e-12))


def report(ops: Dict[str, Tuple[float, int]], executor_s: float, steps: int,
           top: int = 12) -> List[str]:
  """The per-kind lines (the `top` largest, the rest as `op=other`), per meta-step."""
  total = sum(s for s, _ in ops.values()) or 1.0
  ranked = sorted(ops.items(), key=lambda kv: -kv[1][0])
  lines = [f"op={k} ms_per_meta_step={1e3 * s / steps:.3f} calls_per_meta_step={n / steps:g} "
           f"share_of_op_time={s / total:.3f}" for k, (s, n) in ranked[:top]]
  rest = ranked[top:]
  if rest:
    s, n = sum(v[0] for _, v in rest), sum(v[1] for _, v in rest)
    lines.append(f"op=other kinds={len(rest)} ms_per_meta_step={1e3 * s / steps:.3f} "
                 f"calls_per_meta_step={n / steps:g} share_of_op_time={s / total:.3f}")
  lines.append(f"op_total ms_per_meta_step={1e3 * total / steps:.3f} "
               f"executor_ms_per_meta_step={1e3 * executor_s / steps:.3f}")
  return lines


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.op_profile",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="quadratic", choices=speed.CONFIGS)
  parser.add_argument("--threads", default="default", choices=THREADS,
                      help="TensorFlow's defaults, one intra-op thread (train.py) or one "
                      "inter-op thread (evaluate.py)")
  parser.add_argument("--steps", type=int, default=10, help="profiled meta-steps")
  parser.add_argument("--timed", type=int, default=30, help="unprofiled timed meta-steps")
  parser.add_argument("--warmup", type=int, default=3, help="untimed meta-steps first")
  parser.add_argument("--peers_dir", default=speed.DEFAULT_PEERS_DIR)
  args = parser.parse_args(argv)
  for name in ("steps", "timed", "warmup"):
    if getattr(args, name) < 1:
      parser.exit(2, f"{parser.prog}: error: --{name} must be >= 1, got {getattr(args, name)}\n")
  if not os.path.exists(os.path.join(args.peers_dir, "common.py")):
    parser.exit(2, f"{parser.prog}: error: no common.py in --peers_dir={args.peers_dir!r} "
                "(the peers' problem data)\n")
  sys.path.insert(0, args.peers_dir)
  import common  # pylint: disable=g-import-not-at-top
  from l2l import cli  # pylint: disable=g-import-not-at-top
  tf = cli.start_tensorflow(1 if args.threads == "inter_op1" else 0,
                            1 if args.threads == "intra_op1" else 0)
  _, trainer = speed.build_l2l(args.config, common)

  def step() -> float:
    trainer.reset()
    return float(trainer.step())

  for _ in range(args.warmup):
    step()
  times = []
  for _ in range(args.timed):
    start = time.perf_counter()
    step()
    times.append(1e3 * (time.perf_counter() - start))
  print(f"case=op_profile config={args.config} threads={args.threads} "
        f"ms_per_meta_step={statistics.median(times):.2f} ms_min={min(times):.2f} "
        f"ms_max={max(times):.2f} timed={args.timed}", flush=True)
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    try:
      for _ in range(args.steps):
        step()
    finally:
      tf.profiler.experimental.stop()
    ops, executor_s = op_times(logdir)
  for line in report(ops, executor_s, args.steps):
    print(line, flush=True)


if __name__ == "__main__":
  main()
