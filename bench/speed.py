"""Meta-training speed: l2l against the PyTorch / JAX / plain-TF peers of ../shared/peers.

One meta-step of the 2016 learned optimizer (coordinatewise LSTM 2x20, LogAndSign k=5, output
scale 0.01, unroll 20, first order, Adam 1e-3) on the peers' two configs, `quadratic` (1,280
coordinates) and `mlp` (784-20-10 sigmoid MLP, 15,910 coordinates). l2l runs through its public
API (`MetaOptimizer.meta_minimize`, `reset()` + `step()` per meta-step, so every step restarts
from x0 and a zero state as the peers do) with the peers' initial weights, problem data and x0
from their `common.py`, and is timed by the peers' own timing loop (`common.benchmark`: 2 warm-up
steps, median of N timed steps, `other_cores` contention check).

Every case runs in its own process, one at a time, and the cases are interleaved over repeats.
Per case one line `case=... config=... ms_per_meta_step=... first_meta_loss=... other_cores=...`
with the process's memory (`peak_rss_mib=`, `meta_step_mib=`, `rss_growth_kib_per_step=`; see
`bench/rss.py`, which also runs the peers' programs to measure theirs) and
`fraction_of_matmul_peak=` (achieved GFLOP/s over the matmul peak measured in the same run);
per config one summary line with `speedup_vs_fastest_peer=` (fastest peer ms / l2l ms, from
the medians over the repeats) and whether l2l's first meta-loss matches every peer's to 1e-5.
`python -m bench` runs this comparison and the suite's other cases.

    python -m bench.speed                          # everything, 1 repeat
    python -m bench.speed --repeats 3 --cases l2l,tf,torch+compile --configs quadratic
    bench/speed.sh                                 # the BUILD.md table

Peers whose interpreter is missing are skipped with a note (set up as in the peers' README:
/tmp/torchenv, /tmp/jaxenv, /tmp/tfenv).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEERS_DIR = os.path.join(os.path.dirname(REPO), "shared", "peers")

# case -> (interpreter flag, script, extra args). "l2l" is this library with TensorFlow's default
# threads; "l2l-reference" is the same with the reference (autodiff) LSTM instead of the fused
# kernels; "l2l+intra_op1" is "l2l" in a process with one TensorFlow intra-op thread (train.py's
# default, `l2l.threads.use_intra_op_threads(1)`); "l2l+inter_op1" with one inter-op thread
# (evaluate.py's default).
PEER_CASES = {
    "tf": ("tf", "l2l_tf.py", []),
    "tf+while_loop": ("tf", "l2l_tf.py", ["--while_loop"]),
    "tf+xla": ("tf", "l2l_tf.py", ["--xla"]),
    "torch": ("torch", "l2l_torch.py", []),
    "torch+compile": ("torch", "l2l_torch.py", ["--compile"]),
    "jax": ("jax", "l2l_jax.py", []),
    "jax+remat": ("jax", "l2l_jax.py", ["--remat"]),
}
OWN_CASES = ("l2l", "l2l+intra_op1", "l2l+inter_op1", "l2l-reference")
DEFAULT_CASES = ("l2l", "l2l+intra_op1", "l2l+inter_op1", "l2l-reference", "tf",
                 "tf+while_loop", "torch", "torch+compile", "jax", "jax+remat")
KEYS = ("ms_per_meta_step", "first_meta_loss", "last_meta_loss", "achieved_gflops",
        "fraction_of_matmul_peak", "first_step_s", "own_cores", "other_cores", "rss_base_mib",
        "peak_rss_mib", "rss_warm_mib", "step_peak_rss_mib", "meta_step_mib",
        "rss_growth_kib_per_step")
CONFIGS = ("quadratic", "mlp")


def make_problem(config: str, common):
  """The peers' problem as an l2l `make_loss`: one flat trainable vector x, data as constants."""
  import numpy as np
  import tensorflow as tf
  x0, data = common.problem(config)
  if config == "quadratic":
    def make_loss():
      w = tf.Variable(data["w"], trainable=False, name="w")
      y = tf.Variable(data["y"], trainable=False, name="y")
      x = tf.Variable(x0, name="x")
      r = tf.linalg.matvec(w, tf.reshape(x, [128, 10])) - y
      return tf.reduce_mean(tf.reduce_sum(r ** 2, 1))
  else:
    def make_loss():
      inputs = tf.Variable(data["inputs"], trainable=False, name="inputs")
      labels = tf.Variable(data["labels"].astype(np.int32), trainable=False, name="labels")
      x = tf.Variable(x0, name="x")
      w1, b1, w2, b2 = common.mlp_split(x, tf.reshape)
      logits = tf.sigmoid(inputs @ w1 + b1) @ w2 + b2
      return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=labels, logits=logits))
  return make_loss


def build_l2l(config: str, common, fast_path: bool = True):
  """(MetaOptimizer, MetaMinimize) for `config` with the peers' initial net weights."""
  import l2l
  opt = l2l.MetaOptimizer(cw={"net": "CoordinateWiseDeepLSTM", "net_options": dict(
      layers=(common.HIDDEN, common.HIDDEN), preprocess_name="LogAndSign",
      preprocess_options={"k": common.K}, scale=common.SCALE)})
  core = opt.nets["cw"].core
  core.fast_path = fast_path
  # Same layout as the peers: [input; h] -> 80 gate columns (i, j, f, o), forget bias at run time.
  variables = [core.weights[0], core.biases[0], core.weights[1], core.biases[1], core.out_w,
               core.out_b]
  for variable, value in zip(variables, common.net_weights()):
    variable.assign(value)
  trainer = opt.meta_minimize(make_problem(config, common), len_unroll=common.UNROLL,
                              learning_rate=common.META_LR)
  return opt, trainer


def run_l2l(args) -> None:
  """The l2l case, in this process (invoked by `main` as a subprocess)."""
  sys.path.insert(0, args.peers_dir)
  sys.path.insert(0, REPO)
  import common  # The peers' shared data, weights and timing loop.
  from bench import rss  # pylint: disable=g-import-not-at-top
  from l2l import threads  # pylint: disable=g-import-not-at-top
  if args.case == "l2l+inter_op1":
    threads.use_inter_op_threads(1)
  elif args.case == "l2l+intra_op1":
    threads.use_intra_op_threads(1)
  _, trainer = build_l2l(args.config, common, fast_path=args.case != "l2l-reference")

  def step() -> float:
    trainer.reset()  # x0 and a zero LSTM state, as every peer meta-step.
    return float(trainer.step())

  rss.with_memory(common.benchmark, args, step, args.case)


def parse(text: str) -> Dict[str, str]:
  """The `key=value` fields of a case's output (the last value of a repeated key)."""
  return dict(re.findall(r"(\w+)=([-\w.+]+)", text))


def interpreter(case: str, args) -> str:
  """The Python interpreter a peer case runs with (`--torch_python` etc.)."""
  return getattr(args, f"{PEER_CASES[case][0]}_python")


def run_case(case: str, config: str, args, peak: Optional[float] = None
             ) -> Optional[Dict[str, str]]:
  """Runs one case in a fresh process; prints and returns its key=value fields.

  Returns None (after printing a `skipped=1` or `failed=1` line) when the peer's interpreter is
  missing or the case fails. `peak`: the matmul GFLOP/s of this run, for
  `fraction_of_matmul_peak`.
  """
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  if case in OWN_CASES:
    cmd = [sys.executable, "-m", "bench.speed", "--_run_l2l", "--case", case, "--peers_dir",
           args.peers_dir]
    cwd = REPO
  else:
    _, script, extra = PEER_CASES[case]
    python = interpreter(case, args)
    if not os.path.exists(python):
      print(f"case={case} config={config} skipped=1 note=no_interpreter_at_{python}", flush=True)
      return None
    # bench/rss.py runs the peer's program unchanged, adding its memory line.
    cmd = [python, os.path.join(REPO, "bench", "rss.py"), args.peers_dir,
           os.path.join(args.peers_dir, script), *extra]
    cwd = args.peers_dir
  cmd += ["--config", config, "--steps", str(args.steps), "--warmup", str(args.warmup)]
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=args.timeout)
  except subprocess.TimeoutExpired:
    print(f"case={case} config={config} failed=1 note=timeout_after_{args.timeout:g}s", flush=True)
    return None
  fields = parse(proc.stdout)
  if proc.returncode != 0 or "ms_per_meta_step" not in fields:
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    print(f"case={case} config={config} failed=1 note={tail!r}", flush=True)
    return None
  fields["wall_s"] = f"{time.perf_counter() - start:.1f}"
  if peak and "achieved_gflops" in fields:
    fields["fraction_of_matmul_peak"] = f"{float(fields['achieved_gflops']) / peak:.3f}"
  print(f"case={case} config={config} " + " ".join(
      f"{k}={fields[k]}" for k in (*KEYS, "wall_s") if k in fields), flush=True)
  return fields


def matmul_peak(args) -> Optional[float]:
  """The machine's numpy fp32 2048^2 matmul GFLOP/s (the peers' matmul_peak.py)."""
  try:
    proc = subprocess.run([sys.executable, os.path.join(args.peers_dir, "matmul_peak.py")],
                          capture_output=True, text=True, timeout=args.timeout)
    value = parse(proc.stdout).get("matmul_gflops")
  except (OSError, subprocess.TimeoutExpired):
    value = None
  print(f"case=matmul_peak matmul_gflops={value}", flush=True)
  return float(value) if value else None


def summary_line(config: str, by_case: Dict[str, List[Dict[str, str]]],
                 peak: Optional[float]) -> Optional[str]:
  """The summary of one config (medians over repeats), or None without an l2l result."""
  medians = {case: statistics.median(float(r["ms_per_meta_step"]) for r in runs)
             for case, runs in by_case.items() if runs}
  if "l2l" not in medians:
    return None
  runs = by_case["l2l"]
  own_first = float(runs[0]["first_meta_loss"])
  line = f"summary config={config} l2l_ms={medians['l2l']:.2f} first_meta_loss={own_first:.9g}"
  gflops = statistics.median(float(r["achieved_gflops"]) for r in runs)
  line += f" l2l_gflops={gflops:.2f}"
  if peak:
    line += f" matmul_gflops={peak:.1f} l2l_fraction_of_matmul_peak={gflops / peak:.3f}"
  if all("peak_rss_mib" in r for r in runs):
    line += f" l2l_peak_rss_mib={max(float(r['peak_rss_mib']) for r in runs):.1f}"
  peers = {c: m for c, m in medians.items() if c not in OWN_CASES}
  peer_firsts = [float(r["first_meta_loss"]) for c in peers for r in by_case[c]]
  if peer_firsts:
    rel = max(abs(own_first - f) / abs(f) for f in peer_firsts)
    line += f" max_rel_diff_vs_peers={rel:.1e} first_meta_loss_match={rel <= 1e-5}"
  if "l2l-reference" in medians:
    line += f" l2l_reference_ms={medians['l2l-reference']:.2f}"
  if peers:
    fastest = min(peers, key=peers.get)
    line += (f" fastest_peer={fastest} fastest_peer_ms={peers[fastest]:.2f} "
             f"speedup_vs_fastest_peer={peers[fastest] / medians['l2l']:.2f}")
    for case in ("l2l+intra_op1", "l2l+inter_op1"):
      if case in medians:
        name = case.split("+")[1]
        line += (f" l2l_{name}_ms={medians[case]:.2f} "
                 f"speedup_{name}_vs_fastest_peer={peers[fastest] / medians[case]:.2f}")
  else:
    line += " speedup_vs_fastest_peer=n/a note=no_peer_ran"
  return line


def summarize(results: Dict[str, Dict[str, List[Dict[str, str]]]], peak: Optional[float]
              ) -> List[str]:
  """Prints the table (medians over repeats) and one summary line per config; returns those."""
  print("\n| config | case | ms / meta-step, median (range) | achieved GFLOP/s | % of matmul peak "
        "| first_meta_loss | max other_cores | peak RSS MiB | meta-step MiB |")
  print("|---" * 9 + "|")
  lines = []
  for config, by_case in results.items():
    for case, runs in by_case.items():
      if not runs:
        continue
      ms = [float(r["ms_per_meta_step"]) for r in runs]
      gflops = statistics.median(float(r["achieved_gflops"]) for r in runs)
      share = f"{100 * gflops / peak:.1f}%" if peak else "n/a"
      firsts = sorted({r["first_meta_loss"] for r in runs})
      other = max(float(r["other_cores"]) for r in runs)
      rss = max((r["peak_rss_mib"] for r in runs if "peak_rss_mib" in r), key=float,
                default="n/a")
      step = max((r["meta_step_mib"] for r in runs if "meta_step_mib" in r), key=float,
                 default="n/a")
      print(f"| {config} | {case} | {statistics.median(ms):.1f} ({min(ms):.1f}-{max(ms):.1f}) | "
            f"{gflops:.1f} | {share} | {', '.join(firsts)} | {other:.2f} | {rss} | {step} |")
  for config, by_case in results.items():
    line = summary_line(config, by_case, peak)
    if line:
      print(line, flush=True)
      lines.append(line)
  return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The comparison's options (shared with `python -m bench`), except `--cases`."""
  parser.add_argument("--configs", default=",".join(CONFIGS),
                      help=f"comma-separated, from {list(CONFIGS)}")
  parser.add_argument("--steps", type=int, default=20, help="timed meta-steps per case")
  parser.add_argument("--warmup", type=int, default=2, help="untimed meta-steps per case")
  parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats of all cases")
  parser.add_argument("--peers_dir", default=DEFAULT_PEERS_DIR)
  parser.add_argument("--torch_python", default="/tmp/torchenv/bin/python")
  parser.add_argument("--jax_python", default="/tmp/jaxenv/bin/python")
  parser.add_argument("--tf_python", default="/tmp/tfenv/bin/python")
  parser.add_argument("--timeout", type=float, default=1200, help="seconds per case")
  parser.add_argument("--no_matmul_peak", action="store_true")


def check_cases(cases: List[str], configs: List[str]) -> None:
  """Raises ValueError naming unknown comparison cases or configs."""
  unknown = [c for c in cases if c not in OWN_CASES and c not in PEER_CASES]
  if unknown:
    raise ValueError(f"unknown cases {unknown}; expected some of "
                     f"{list(OWN_CASES) + list(PEER_CASES)}")
  bad = [c for c in configs if c not in CONFIGS]
  if bad or not configs:
    raise ValueError(f"unknown configs {bad or configs}; expected some of {list(CONFIGS)}")


def compare(args, cases: List[str], configs: List[str]) -> Tuple[List[str], int]:
  """Runs the comparison (matmul peak, every case, summaries); returns (summaries, failures)."""
  results = {config: {case: [] for case in cases} for config in configs}
  peaks = []
  failures = 0
  for repeat in range(args.repeats):
    print(f"# repeat {repeat + 1}/{args.repeats}", flush=True)
    if not args.no_matmul_peak:
      value = matmul_peak(args)
      if value:
        peaks.append(value)
    for config in configs:
      for case in cases:
        skipped = case in PEER_CASES and not os.path.exists(interpreter(case, args))
        fields = run_case(case, config, args, peaks[-1] if peaks else None)
        if fields:
          results[config][case].append(fields)
        elif not skipped:
          failures += 1
  return summarize(results, statistics.median(peaks) if peaks else None), failures


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                      help=f"comma-separated, from {list(OWN_CASES) + list(PEER_CASES)}")
  add_arguments(parser)
  # Internal: run one l2l case in this process.
  parser.add_argument("--_run_l2l", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--case", default="l2l", help=argparse.SUPPRESS)
  parser.add_argument("--config", default="quadratic", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._run_l2l:
    run_l2l(args)
    return
  configs, cases = args.configs.split(","), args.cases.split(",")
  try:
    check_cases(cases, configs)
  except ValueError as e:
    parser.error(str(e))
  _, failures = compare(args, cases, configs)
  if failures:
    sys.exit(1)


if __name__ == "__main__":
  main()
