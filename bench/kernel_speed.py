"""The fused coordinatewise LSTM ops alone: ns per coordinate and step, forward and backward.

    python -m bench.kernel_speed                                  # 1,280 and 15,910 rows
    python -m bench.kernel_speed --rows 1280 --threads 1          # one thread in both pools
    taskset -c 0 python -m bench.kernel_speed --threads 1         # pinned, for A/B of kernels

A chain of `--unroll` steps of `nets.lstm.fused_coordinatewise_step` (the 2016 optimizer's 2x20
LSTM, LogAndSign, scale 0.01; each step's gradient input is the previous update plus a fixed
vector, so the ops depend on each other as in an unroll) in one `tf.function`, without and with
the backward pass (the meta-gradient of a sum of the updates' squares to the weights). Per rows
setting one line

    case=kernel_speed rows=... threads=... forward_ns_per_coord=... forward_backward_ns_per_coord=...

with the medians of `--calls` timed calls (and their min-max), after two warm-up calls. The
meta-step's own ops (the problem, Adam) are not in it: this is what the fused kernels cost, for
comparing kernel changes (BUILD.md "Speed"). `--threads`: 0 keeps TensorFlow's defaults, N sets
both pools to N.
"""

import argparse
import statistics
import time
from typing import Callable, List, Optional

HIDDEN, K, SCALE = 20, 5.0, 0.01


def chain(tf, lstm, rows: int, unroll: int, backward: bool, seed: int = 0) -> Callable:
  """A compiled unroll of the fused step over `rows` coordinates."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  weights = [tf.Variable(rng.randn(2 + HIDDEN, 4 * HIDDEN).astype(np.float32) * 0.1),
             tf.Variable(rng.randn(2 * HIDDEN, 4 * HIDDEN).astype(np.float32) * 0.1)]
  biases = [tf.Variable(np.zeros(4 * HIDDEN, np.float32)) for _ in range(2)]
  out_w = tf.Variable(rng.randn(HIDDEN, 1).astype(np.float32) * 0.1)
  out_b = tf.Variable(np.zeros(1, np.float32))
  g0 = tf.constant(rng.randn(rows).astype(np.float32))
  variables = [*weights, *biases, out_w, out_b]

  @tf.function(autograph=False)
  def run():
    with tf.GradientTape() as tape:
      state = tuple((tf.zeros([rows, HIDDEN]), tf.zeros([rows, HIDDEN])) for _ in range(2))
      g, total = g0, 0.0
      for _ in range(unroll):
        step = lstm.fused_coordinatewise_step(g, state, weights, biases, out_w, out_b,
                                              log_and_sign=K, scale=SCALE)
        if step is None:
          raise ValueError("the fused kernels are unavailable (no compiler, L2L_NO_KERNELS or "
                           "not a CPU)")
        update, state = step
        total += tf.reduce_sum(update * update)
        g = g0 + update
    if backward:
      return tape.gradient(total, variables)[0]
    return total

  return run


def time_calls(fn: Callable, calls: int) -> List[float]:
  """Seconds of `calls` calls of `fn` (each waits for its result), after two warm-up calls."""
  for _ in range(2):
    fn().numpy()
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    fn().numpy()
    times.append(time.perf_counter() - start)
  return times


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.kernel_speed",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--rows", default="1280,15910",
                      help="comma-separated coordinate counts (the peers' two configs)")
  parser.add_argument("--unroll", type=int, default=20, help="steps per call")
  parser.add_argument("--calls", type=int, default=30, help="timed calls per setting")
  parser.add_argument("--threads", type=int, default=0,
                      help="TensorFlow's inter- and intra-op threads (0: its defaults)")
  args = parser.parse_args(argv)
  try:
    rows = [int(r) for r in args.rows.split(",")]
    if not rows or min(rows) < 1:
      raise ValueError
  except ValueError:
    parser.exit(2, f"{parser.prog}: error: --rows must be positive integers, got "
                f"{args.rows!r}\n")
  for name in ("unroll", "calls"):
    if getattr(args, name) < 1:
      parser.exit(2, f"{parser.prog}: error: --{name} must be >= 1\n")
  if args.threads < 0:
    parser.exit(2, f"{parser.prog}: error: --threads must be >= 0\n")
  from l2l import cli  # pylint: disable=g-import-not-at-top
  tf = cli.start_tensorflow(args.threads, args.threads)
  from nets import lstm  # pylint: disable=g-import-not-at-top
  if lstm.lstm_kernels() is None:
    parser.exit(2, f"{parser.prog}: error: the fused kernels are unavailable\n")
  for n in rows:
    fields = {}
    for backward, name in ((False, "forward"), (True, "forward_backward")):
      run = chain(tf, lstm, n, args.unroll, backward)
      ns = [1e9 * t / args.unroll / n for t in time_calls(run, args.calls)]
      fields[f"{name}_ns_per_coord"] = f"{statistics.median(ns):.1f}"
      fields[f"{name}_ns_min"] = f"{min(ns):.1f}"
      fields[f"{name}_ns_max"] = f"{max(ns):.1f}"
    print(f"case=kernel_speed rows={n} unroll={args.unroll} calls={args.calls} "
          f"threads={args.threads} " + " ".join(f"{k}={v}" for k, v in fields.items()),
          flush=True)


if __name__ == "__main__":
  main()
