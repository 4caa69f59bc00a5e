"""The fused coordinatewise LSTM kernels' parts and memory traffic, on one thread.

    python -m bench.kernel_phases                  # 15,910 rows (the peers' mlp config)
    taskset -c 0 python -m bench.kernel_phases --rows 1280 --repeats 5

Builds `bench/kernel_phases.cc` (which includes `nets/lstm_kernels.cc`, with the flags of the
kernels' own build: `nets.kernel_build`) into a temporary directory and runs it: the 2016
optimizer's 2x20 LSTM with LogAndSign, outside TensorFlow, on the calling thread. Prints

    part=forward_matmul|forward_gates|backward_gates|backward_weight_gradients|
         backward_input_gradients ns_per_row=...
        one 64-row block of the second layer (40 inputs, 20 units) in the core's cache
    case=in_cache rows=--cache_rows forward_ns_per_row=... backward_ns_per_row=...
        a whole step repeated on the same buffers (what the kernels cost with warm caches)
    case=through_memory rows=--rows ...
        an unroll of 20 steps forward then 20 backward, each step with its own buffers, as in a
        meta-step (the saved activations and states come back from memory)
    case=memory_only rows=--rows backward_ns_per_row=...
        that backward's reads and writes without its arithmetic (the memory floor)

Best of `--repeats` rounds each. For A/B of kernel changes below the op level (BUILD.md "Speed");
`python -m bench.kernel_speed` times the ops themselves in TensorFlow.

    python -m bench.kernel_phases --baseline HEAD --rounds 3     # your change against HEAD's

`--baseline` (a git revision of this repo, or a path to a kernel source) builds the same
benchmark a second time on that `nets/lstm_kernels.cc` and runs the two alternately, `--rounds`
times (one round each without a baseline), each line then starting `build=current|baseline
round=k`; a summary line per build, case and field gives the min-max over the rounds.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


KERNEL_SOURCE = os.path.join("nets", "lstm_kernels.cc")


def baseline_source(baseline: str, out_dir: str) -> str:
  """The path of the baseline's kernel source: `baseline` itself if it is a file, else the file
  at that git revision of this repo, written into `out_dir` (raises ValueError)."""
  if os.path.isfile(baseline):
    return os.path.abspath(baseline)
  try:
    out = subprocess.run(["git", "-C", REPO, "show", f"{baseline}:{KERNEL_SOURCE}"],
                         capture_output=True, text=True, check=False)
    returncode, detail = out.returncode, out.stderr
  except OSError as e:  # no git
    returncode, detail = 1, str(e)
  if returncode != 0:
    detail = " ".join(detail.split())[:200]
    raise ValueError(f"--baseline={baseline!r} is neither a file nor a git revision with "
                     f"{KERNEL_SOURCE} ({detail})")
  path = os.path.join(out_dir, "baseline_lstm_kernels.cc")
  with open(path, "w") as f:
    f.write(out.stdout)
  return path


def build(out_dir: str, source: Optional[str] = None, name: str = "kernel_phases") -> str:
  """Compiles the benchmark on the kernel `source` (default: this tree's); returns the
  executable's path (raises CalledProcessError)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from nets import kernel_build  # pylint: disable=g-import-not-at-top
  source = source or os.path.join(REPO, KERNEL_SOURCE)
  path = os.path.join(out_dir, name)
  flags = kernel_build.compile_flags(
      [f'-DL2L_KERNEL_SOURCE="{source}"', f"-Wl,-rpath,{os.path.dirname(tf.__file__)}"],
      shared=False)
  kernel_build.run_compiler([os.path.join(REPO, "bench", "kernel_phases.cc")], path, flags)
  return path


def summarize(lines: List[str]) -> List[str]:
  """Per build, case (or part) and timing field: min-max over the rounds' lines."""
  values = {}
  for line in lines:
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    kind = "case" if "case" in fields else "part"
    for key, value in fields.items():
      if key.endswith("ns_per_row"):
        values.setdefault((fields["build"], kind, fields[kind], key), []).append(float(value))
  return [f"summary build={build} {kind}={label} {key}={min(v):.1f}-{max(v):.1f} "
          f"rounds={len(v)}" for (build, kind, label, key), v in values.items()]


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.kernel_phases",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=15910, help="rows of the unroll cases")
  parser.add_argument("--cache_rows", type=int, default=1280, help="rows of case=in_cache")
  parser.add_argument("--repeats", type=int, default=3, help="rounds per measurement (best)")
  parser.add_argument("--baseline", default=None,
                      help="git revision or kernel source file to compare against")
  parser.add_argument("--rounds", type=int, default=None,
                      help="alternating rounds of both builds (default 3 with --baseline)")
  args = parser.parse_args(argv)
  for name in ("rows", "cache_rows", "repeats", "rounds"):
    value = getattr(args, name)
    if value is not None and value < 1:
      parser.exit(2, f"{parser.prog}: error: --{name} must be >= 1\n")
  if args.rounds is not None and args.baseline is None and args.rounds != 1:
    parser.exit(2, f"{parser.prog}: error: --rounds needs --baseline\n")
  rounds = args.rounds or (3 if args.baseline else 1)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with tempfile.TemporaryDirectory() as tmp:
    builds = []
    try:
      baseline = None if args.baseline is None else baseline_source(args.baseline, tmp)
    except ValueError as e:
      parser.exit(2, f"{parser.prog}: error: {e}\n")
    try:
      builds.append(("current", build(tmp)))
      if baseline is not None:
        builds.append(("baseline", build(tmp, baseline, "kernel_phases_baseline")))
    except (OSError, subprocess.SubprocessError) as e:
      detail = getattr(e, "stderr", "") or ""
      which = "the baseline" if builds else "the benchmark"
      parser.exit(2, f"{parser.prog}: error: cannot build {which}: {e} {detail[-1500:]}\n")
    lines = []
    for k in range(rounds):
      for name, path in builds:
        out = subprocess.run([path, str(args.rows), str(args.repeats), str(args.cache_rows)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
          parser.exit(1, f"{parser.prog}: error: the benchmark failed: {out.stderr[-1500:]}\n")
        for line in out.stdout.splitlines():
          if args.baseline is not None:
            line = f"build={name} round={k} {line}"
            lines.append(line)
          print(line, flush=True)
  if args.baseline is not None:
    for line in summarize(lines):
      print(line)


if __name__ == "__main__":
  main()
