"""The benchmark suite: `python -m bench` from the repo root.

Cases (every one in its own process, printing `key=value` lines that start with `case=`):

* the speed comparison of `bench/speed.py` (`l2l`, `l2l-reference` and the peers `tf`,
  `tf+while_loop`, `tf+xla`, `torch`, `torch+compile`, `jax`, `jax+remat`) on `--configs`:
  ms per meta-step, first meta-loss, achieved GFLOP/s and its fraction of the machine's fp32
  matmul peak (`case=matmul_peak`, measured in the same run), and the process's memory
  (`peak_rss_mib`, `meta_step_mib`, `rss_growth_kib_per_step`; `bench/rss.py`). A peer whose
  interpreter is missing prints `skipped=1`. Then one `summary config=...` line per config with
  `speedup_vs_fastest_peer=` and `first_meta_loss_match=`.
* `apply_1m` (`bench/apply_cost.py`): one training step of a 1M-parameter MLP with a learned
  optimizer's `apply` against `snt.optimizers.Adam`: the 2016 LSTM (`case=apply_1m`) and the
  versatile per-parameter rule, fused and reference (`case=apply_1m_mlp_rule`), in one run.
* `maml_sinusoid` (`bench/maml_speed.py`): MAML meta-steps per second on the sinusoid, meta-batch
  25, for each of `--maml_inner_steps`.
* `leak` (`bench/leak.py`): resident memory over `--leak_steps` meta-steps and the number of
  traces of the meta-step's `tf.function`s.
* `meta_throughput` (`bench/meta_throughput.py`): meta-training throughput on a 2,410-parameter
  MLP of the versatile optimizer's task suite: optimizee steps per second and ms per meta-step of
  truncated backprop (`meta_minimize`) and of PES (`PESMinimize`), for the 2016 LSTM and the
  versatile per-parameter rule; medians and min-max over `--throughput_repeats`.

The suite starts with `case=machine cpu_model=... cpus=... simd=... load_avg=...` (what the
figures ran on) and ends with `summary suite cases=... skipped=... failed=... checks_failed=...` and exits
with status 1 when a case failed or a check (`flat`, `traced_once`, `first_meta_loss_match`) did
not pass.

    python -m bench                                    # everything (about 10 min, quiet machine)
    python -m bench --cases l2l,tf,torch+compile --configs quadratic --extras none
    python -m bench --cases leak,apply_1m              # only these extras
    python -m bench --extras maml_sinusoid --maml_inner_steps 1
    python -m bench --extras meta_throughput --throughput_steps 10 --throughput_repeats 3
"""

import argparse
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from bench import speed

# Extra case -> (module, function of the parsed arguments giving the module's arguments).
EXTRAS = {
    "apply_1m": ("bench.apply_cost", lambda a: ["--steps", str(a.apply_steps), "--repeats",
                                                str(a.apply_repeats)]),
    "maml_sinusoid": ("bench.maml_speed", lambda a: ["--inner_steps", a.maml_inner_steps,
                                                     "--steps", str(a.maml_steps)]),
    "leak": ("bench.leak", lambda a: ["--steps", str(a.leak_steps), "--peers_dir",
                                      a.peers_dir]),
    "meta_throughput": ("bench.meta_throughput", lambda a: [
        "--steps", str(a.throughput_steps), "--repeats", str(a.throughput_repeats)]),
}
SPEED_CASES = (*speed.OWN_CASES, *speed.PEER_CASES)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
  parser.add_argument(
      "--cases", default="all",
      help=f"comma-separated cases: speed-comparison cases {list(SPEED_CASES)} and extras "
      f"{list(EXTRAS)}; 'all' (default) is {list(speed.DEFAULT_CASES)} and every extra")
  parser.add_argument(
      "--extras", default=None,
      help="comma-separated extras to run, replacing any named in --cases; 'none' for none, "
      "'all' for every one")
  speed.add_arguments(parser)
  parser.add_argument("--apply_steps", type=int, default=20,
                      help="apply_1m: timed steps per repeat")
  parser.add_argument("--apply_repeats", type=int, default=3,
                      help="apply_1m: repeats (the ratios' medians and spread are over them)")
  parser.add_argument("--maml_inner_steps", default="1,5",
                      help="maml_sinusoid: comma-separated inner step counts")
  parser.add_argument("--maml_steps", type=int, default=20,
                      help="maml_sinusoid: timed meta-steps per count")
  parser.add_argument("--leak_steps", type=int, default=1000, help="leak: meta-steps")
  parser.add_argument("--throughput_steps", type=int, default=10,
                      help="meta_throughput: timed meta-steps per case and repeat")
  parser.add_argument("--throughput_repeats", type=int, default=3,
                      help="meta_throughput: interleaved repeats (medians and min-max over them)")
  return parser


def _names(text: str) -> List[str]:
  return [name for name in text.split(",") if name]


def select(args: argparse.Namespace) -> Tuple[List[str], List[str], List[str]]:
  """(speed cases, configs, extras) chosen by `--cases`, `--configs` and `--extras`.

  Raises:
    ValueError: an unknown case, extra or config.
  """
  if args.cases == "all":
    cases = [*speed.DEFAULT_CASES, *EXTRAS]
  else:
    cases = _names(args.cases)
  unknown = [c for c in cases if c not in SPEED_CASES and c not in EXTRAS]
  if unknown:
    raise ValueError(f"unknown cases {unknown}; expected some of {list(SPEED_CASES)} or "
                     f"extras {list(EXTRAS)}")
  extras = [c for c in cases if c in EXTRAS]
  if args.extras is not None:
    extras = {"none": [], "all": list(EXTRAS)}.get(args.extras, _names(args.extras))
    bad = [e for e in extras if e not in EXTRAS]
    if bad:
      raise ValueError(f"unknown extras {bad}; expected some of {list(EXTRAS)}, 'none' or 'all'")
  speed_cases = [c for c in cases if c in SPEED_CASES]
  configs = _names(args.configs)
  if speed_cases:
    speed.check_cases(speed_cases, configs)
  return speed_cases, configs, extras


def run_extra(name: str, args: argparse.Namespace) -> List[Dict[str, str]]:
  """Runs one extra case in its own process; prints and returns its `case=` lines' fields.

  A case that fails (non-zero exit, no `case=` line, timeout) prints `case=NAME failed=1 note=...`
  and returns one field dict with `failed`.
  """
  module, options = EXTRAS[name]
  cmd = [sys.executable, "-m", module, *options(args)]
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=speed.REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                          capture_output=True, text=True, timeout=args.timeout)
  except subprocess.TimeoutExpired:
    proc = None
  lines = [l for l in proc.stdout.splitlines() if l.startswith("case=")] if proc else []
  if proc is None or proc.returncode != 0 or not lines:
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1] if proc else (
        f"timeout_after_{args.timeout:g}s")
    line = f"case={name} failed=1 note={tail!r}"
    print(line, flush=True)
    return [speed.parse(line)]
  results = []
  for line in lines:
    print(f"{line} wall_s={time.perf_counter() - start:.1f}", flush=True)
    results.append(speed.parse(line))
  return results


def failed_checks(fields: Dict[str, str]) -> List[str]:
  """The names of a case line's checks that did not pass (`flat`, `traced_once`, ...)."""
  return [key for key in ("flat", "traced_once", "first_meta_loss_match")
          if fields.get(key) == "False"]


def machine_line(cpuinfo: str = "/proc/cpuinfo") -> str:
  """`case=machine cpu_model=... cpus=... simd=... load_avg=...`: what the figures ran on
  (the CPU model with spaces as underscores, its widest SIMD extensions, the 1-minute load
  average before the suite starts: other processes' work skews every timing)."""
  model, flags = "unknown", set()
  try:
    with open(cpuinfo) as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
          model = "_".join(value.split()) or "unknown"
        elif key.strip() == "flags" and not flags:
          flags = set(value.split())
  except OSError:
    pass
  simd = "+".join(f for f in ("avx512f", "avx512_bf16", "avx2", "fma") if f in flags) or "none"
  load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"
  return f"case=machine cpu_model={model} cpus={os.cpu_count()} simd={simd} load_avg={load}"


def main(argv: Optional[List[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    speed_cases, configs, extras = select(args)
  except ValueError as e:
    parser.error(str(e))
  print(machine_line(), flush=True)
  failures, checks, ran, skipped = 0, [], 0, 0
  if speed_cases:
    summaries, failures = speed.compare(args, speed_cases, configs)
    ran += len(speed_cases) * len(configs) * args.repeats
    skipped = len(configs) * args.repeats * sum(
        c in speed.PEER_CASES and not os.path.exists(speed.interpreter(c, args))
        for c in speed_cases)
    for line in summaries:
      checks += [f"{speed.parse(line)['config']}:{c}" for c in failed_checks(speed.parse(line))]
  for name in extras:
    for fields in run_extra(name, args):
      ran += 1
      failures += "failed" in fields
      skipped += "skipped" in fields
      checks += [f"{name}:{c}" for c in failed_checks(fields)]
  print(f"summary suite cases={ran} skipped={skipped} failed={failures} "
        f"checks_failed={','.join(checks) or 'none'}", flush=True)
  return 1 if failures or checks else 0


if __name__ == "__main__":
  sys.exit(main())
