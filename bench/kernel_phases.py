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
"""

import argparse
import os
import subprocess
import sys
import tempfile
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(out_dir: str) -> str:
  """Compiles the benchmark; returns the executable's path (raises CalledProcessError)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from nets import kernel_build  # pylint: disable=g-import-not-at-top
  source = os.path.join(REPO, "nets", "lstm_kernels.cc")
  path = os.path.join(out_dir, "kernel_phases")
  flags = kernel_build.compile_flags(
      [f'-DL2L_KERNEL_SOURCE="{source}"', f"-Wl,-rpath,{os.path.dirname(tf.__file__)}"],
      shared=False)
  kernel_build.run_compiler([os.path.join(REPO, "bench", "kernel_phases.cc")], path, flags)
  return path


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.kernel_phases",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=15910, help="rows of the unroll cases")
  parser.add_argument("--cache_rows", type=int, default=1280, help="rows of case=in_cache")
  parser.add_argument("--repeats", type=int, default=3, help="rounds per measurement (best)")
  args = parser.parse_args(argv)
  for name in ("rows", "cache_rows", "repeats"):
    if getattr(args, name) < 1:
      parser.exit(2, f"{parser.prog}: error: --{name} must be >= 1\n")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with tempfile.TemporaryDirectory() as tmp:
    try:
      path = build(tmp)
    except (OSError, subprocess.SubprocessError) as e:
      detail = getattr(e, "stderr", "") or ""
      parser.exit(2, f"{parser.prog}: error: cannot build the benchmark: {e} {detail[-1500:]}\n")
    out = subprocess.run([path, str(args.rows), str(args.repeats), str(args.cache_rows)],
                         capture_output=True, text=True, check=False)
  sys.stdout.write(out.stdout)
  if out.returncode != 0:
    parser.exit(1, f"{parser.prog}: error: the benchmark failed: {out.stderr[-1500:]}\n")


if __name__ == "__main__":
  main()
