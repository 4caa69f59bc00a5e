"""Resident memory of a benchmark process, from /proc (Linux). Standard library only, so that
the peers' interpreters can run this file too.

`with_memory(benchmark, args, step_fn, tag)` runs the peers' timing loop (`common.benchmark`)
and adds one line with the process's memory around the meta-steps:

* `rss_base_mib`: resident memory after building everything, before the first meta-step (the
  framework, the model, the data).
* `peak_rss_mib`: the process's peak (`ru_maxrss`), including the first step's tracing or
  compilation.
* `rss_warm_mib`: resident memory between meta-steps once warmed up (after the warm-up steps:
  traced graphs, compiled code and allocator pools included).
* `step_peak_rss_mib`: the peak during the timed meta-steps only (the kernel's high-water mark
  `VmHWM`, reset through `/proc/self/clear_refs` after the warm-up steps).
* `meta_step_mib`: `step_peak_rss_mib - rss_warm_mib`, the memory one steady-state meta-step
  needs on top of the warmed-up process (activations kept for the backward pass and the like;
  memory an allocator keeps between steps is in `rss_warm_mib` instead); 0 when the timed
  steps never rose above the warm level.
* `rss_growth_kib_per_step`: (resident memory after the timed steps - `rss_warm_mib`) / timed
  steps; about 0 when nothing accumulates (a few timed steps give a noisy figure; the suite's
  `leak` case runs 1,000).

Only this process is measured: helper processes (torch.compile's Inductor compile workers)
are not. As a script, `python bench/rss.py PEERS_DIR SCRIPT ARGS...` runs the peer program
SCRIPT as `python SCRIPT ARGS...` would, with its `common.benchmark` wrapped by `with_memory`
(the peers' files are not changed).
"""

import os
import resource
import runpy
import sys
from typing import Callable, Dict, Optional

_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def current_mib() -> float:
  """Resident set size now."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * _PAGE_MIB


def peak_mib() -> float:
  """Peak resident set size of the process so far (`ru_maxrss`, KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.


def high_water_mib() -> Optional[float]:
  """The kernel's resident high-water mark (`VmHWM`), resettable by `reset_high_water`."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024.
  except OSError:
    pass
  return None


def reset_high_water() -> bool:
  """Resets `VmHWM` to the current resident size; False where the kernel does not allow it."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def memory_fields(base: float, after_warmup: float, end: float, steps: int,
                  step_peak: Optional[float], peak: float) -> Dict[str, str]:
  """The key=value fields of the memory line (see the module docstring); MiB in, strings out."""
  fields = {"rss_base_mib": f"{base:.1f}", "peak_rss_mib": f"{peak:.1f}",
            "rss_warm_mib": f"{after_warmup:.1f}"}
  if step_peak is not None:
    fields["step_peak_rss_mib"] = f"{step_peak:.1f}"
    # 0 when the timed steps never rose above the warm level (memory was returned meanwhile).
    fields["meta_step_mib"] = f"{max(0., step_peak - after_warmup):.1f}"
  fields["rss_growth_kib_per_step"] = f"{(end - after_warmup) * 1024 / max(steps, 1):.1f}"
  return fields


def with_memory(benchmark: Callable, args, step_fn: Callable[[], float], tag: str) -> None:
  """`benchmark(args, step_fn, tag)` (the peers' `common.benchmark`), then the memory line.

  `common.benchmark` runs `max(1, args.warmup)` untimed steps, then `args.steps` timed ones; the
  marks are taken between steps, outside the timed calls.
  """
  untimed = max(1, args.warmup)
  marks: Dict[str, float] = {}
  calls = [0]

  def step() -> float:
    if calls[0] == 0:
      marks["base"] = current_mib()
    loss = step_fn()
    calls[0] += 1
    if calls[0] == untimed:
      marks["after_warmup"] = current_mib()
      marks["hwm_reset"] = float(reset_high_water())
    return loss

  benchmark(args, step, tag)
  end = current_mib()
  step_peak = high_water_mib() if marks.get("hwm_reset") else None
  fields = memory_fields(marks["base"], marks["after_warmup"], end, args.steps, step_peak,
                         peak_mib())
  print(" ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def run_peer(argv) -> None:
  """Runs a peer program (`PEERS_DIR SCRIPT ARGS...`) with memory reporting."""
  peers_dir, script, *rest = argv
  sys.path[0] = os.path.abspath(peers_dir)  # As if SCRIPT were run directly.
  import common  # pylint: disable=g-import-not-at-top  # The peers' common.py.
  benchmark = common.benchmark
  common.benchmark = lambda args, step_fn, tag: with_memory(benchmark, args, step_fn, tag)
  sys.argv = [script, *rest]
  runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
  run_peer(sys.argv[1:])
