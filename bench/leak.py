"""No leaks: resident memory stays flat over 1,000 l2l meta-steps and nothing retraces.

The speed comparison's l2l case on the peers' `quadratic` config (`bench.speed.build_l2l`:
the 2016 coordinatewise LSTM, unroll 20, `reset()` + `step()` per meta-step) run for `--steps`
meta-steps. Resident memory (`/proc/self/statm`) is read every 10 steps from step `--first_mark`
(100: after allocator pools and caches have settled) to the last. It moves up and down by a few
MiB as the allocator reuses and returns memory (measured: within 726-735 MiB over 2,000 steps,
not monotonic), so the growth is the median of the last 10 readings minus the median of the
first 10; the run is flat when that is below `--threshold_mib` (10 MiB over 900 steps, about
11 KiB per step; keeping only the unroll's optimizee iterates, 1,280 floats x 20 steps = 100
KiB, every step would add about 90 MiB). `rss_at_100_mib` and `rss_at_1000_mib` are the single
readings at those steps. Traces are the `experimental_get_tracing_count()` of the two
`tf.function`s a meta-step runs, `MetaMinimize.step` and `MetaLoss.reset`: 1 each when nothing
retraces. One line:

    case=leak config=quadratic steps=1000 rss_at_100_mib=... rss_at_1000_mib=... growth_mib=...
    threshold_mib=10 flat=True step_traces=1 reset_traces=1 traced_once=True

    python -m bench.leak --steps 1000
"""

import argparse
import os
import statistics
import sys
import time
from typing import List, Optional

from bench import rss
from bench import speed


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=1000, help="meta-steps")
  parser.add_argument("--first_mark", type=int, default=100,
                      help="the step after which growth is measured")
  parser.add_argument("--threshold_mib", type=float, default=10.,
                      help="largest growth between first_mark and the end that counts as flat")
  parser.add_argument("--peers_dir", default=speed.DEFAULT_PEERS_DIR)
  args = parser.parse_args(argv)
  if not 0 < args.first_mark < args.steps:
    parser.error(f"need 0 < --first_mark < --steps, got {args.first_mark} and {args.steps}")
  if not os.path.exists(os.path.join(args.peers_dir, "common.py")):
    print(f"case=leak config=quadratic skipped=1 note=no_peers_common.py_in_{args.peers_dir}",
          flush=True)
    return
  sys.path.insert(0, args.peers_dir)
  import common  # pylint: disable=g-import-not-at-top  # The peers' problem data and weights.
  _, trainer = speed.build_l2l("quadratic", common)
  marks = {}
  start = time.perf_counter()
  for step in range(1, args.steps + 1):
    trainer.reset()
    loss = float(trainer.step())
    if step >= args.first_mark and (step - args.first_mark) % 10 == 0 or step == args.steps:
      marks[step] = rss.current_mib()
  seconds = time.perf_counter() - start
  readings = list(marks.values())
  growth = statistics.median(readings[-10:]) - statistics.median(readings[:10])
  # pylint: disable=protected-access
  step_traces = trainer._step.experimental_get_tracing_count()
  reset_traces = trainer.meta_loss._reset.experimental_get_tracing_count()
  # pylint: enable=protected-access
  flat = growth < args.threshold_mib
  once = step_traces == 1 and reset_traces == 1
  print(f"case=leak config=quadratic steps={args.steps} "
        f"rss_at_{args.first_mark}_mib={marks[args.first_mark]:.1f} "
        f"rss_at_{args.steps}_mib={marks[args.steps]:.1f} growth_mib={growth:.1f} "
        f"growth_kib_per_step={growth * 1024 / (args.steps - args.first_mark):.2f} "
        f"threshold_mib={args.threshold_mib:g} flat={flat} peak_rss_mib={rss.peak_mib():.1f} "
        f"step_traces={step_traces} reset_traces={reset_traces} traced_once={once} "
        f"last_meta_loss={loss:.6g} ms_per_meta_step={1e3 * seconds / args.steps:.2f}",
        flush=True)


if __name__ == "__main__":
  main()
