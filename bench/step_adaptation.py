"""How `versatile-mlp-v2` and `-v3` were chosen: the step adaptation and the quiet gate, on the
*training* tasks only.

Every candidate rule is the shipped `versatile-mlp-v1` (its meta-trained weights unchanged)
with or without `nets.PerParameterMLP`'s online step-size adaptation. Each runs on VALIDATION
instances of every task of a training suite (no rescaling) against Adam with its learning rate
tuned per task (over 1e-3 .. 1e-1, half a decade apart, on one TUNE instance), at each horizon.
Reported per candidate and horizon: the tasks where it beats tuned Adam's final loss, the
median and mean log10 ratio of final losses, and every task's ratio. No held-out task is run.

    python -m bench.step_adaptation                      # the table of README / BUILD.md
    python -m bench.step_adaptation --save=runs/v2       # also writes the chosen rule there
    python -m bench.step_adaptation --candidates=0.03:global:-3:0:1:0.01,\
        0.03:global:-3:0:1:0.001,0.03:global:-3:0:1:0.0001,0.03:global:-3:0:1:0.00001  # v3's gate

A candidate is `v1` or `RATE:SCOPE[:MIN:MAX:ASYMMETRY[:QUIET_GATE]]` (SCOPE global or tensor;
defaults -3:0:1, no quiet gate), e.g. 0.03:global or 0.03:global:-3:0:1:0.03 (with
`quiet_gate=0.03`). `--save` writes the first candidate as a saved optimizer (what
`python -m l2l.versatile --ship` takes).
"""

import argparse
import json
import math
import os
import sys
import time

DEFAULT_CANDIDATES = ("v1", "0.03:global", "0.03:tensor", "0.01:global", "0.1:global",
                      "0.03:global:-3:0:3", "0.03:global:-3:3:1")
ADAM_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def parse_candidate(spec: str):
  """`(options for PerParameterMLP, label)`; options None for plain v1."""
  if spec == "v1":
    return None
  parts = spec.split(":")
  if len(parts) not in (2, 5, 6) or parts[1] not in ("global", "tensor"):
    raise ValueError(f"candidate {spec!r}: expected v1 or "
                     f"RATE:global|tensor[:MIN:MAX:ASYMMETRY[:QUIET_GATE]]")
  low, high, asymmetry = (parts[2:5] if len(parts) >= 5 else ("-3", "0", "1"))
  options = dict(step_adaptation=float(parts[0]), adaptation_per_tensor=parts[1] == "tensor",
                 adaptation_min=float(low), adaptation_max=float(high),
                 adaptation_asymmetry=float(asymmetry))
  if len(parts) == 6:
    options["quiet_gate"] = float(parts[5])
  return options


def build(options):
  """v1's weights, plus the adaptation of `options` (its rate as given)."""
  from l2l import meta_optimizer as meta_optimizer_lib  # pylint: disable=g-import-not-at-top
  from l2l.versatile import suite_training  # pylint: disable=g-import-not-at-top
  from l2l.versatile import zoo  # pylint: disable=g-import-not-at-top
  with open(os.path.join(zoo.path("versatile-mlp-v1"), "config.json")) as f:
    config = json.load(f)
  config["rule"]["net_options"].update(options or {})
  optimizer = meta_optimizer_lib.MetaOptimizer(**config)
  suite_training.warm_start(optimizer, "pretrained:versatile-mlp-v1")
  return optimizer


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.step_adaptation", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--suite", default="train_conv_plain")
  parser.add_argument("--horizons", default="1000,2000")
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES))
  parser.add_argument("--save", help="write the first candidate as a saved optimizer here")
  args = parser.parse_args(argv)
  try:
    candidates = [(spec, parse_candidate(spec)) for spec in args.candidates.split(",")]
    horizons = [int(h) for h in args.horizons.split(",")]
  except ValueError as e:
    parser.error(str(e))
  from l2l import cli  # pylint: disable=g-import-not-at-top
  cli.start_tensorflow()
  import numpy as np  # pylint: disable=g-import-not-at-top
  from l2l import evaluation  # pylint: disable=g-import-not-at-top
  from l2l.versatile.suite_evaluation import _curves  # pylint: disable=g-import-not-at-top
  from l2l.versatile.suite_training import final_loss  # pylint: disable=g-import-not-at-top
  from problems.suite import suite  # pylint: disable=g-import-not-at-top
  if args.save:
    build(candidates[0][1]).save(args.save)
    print(f"saved {candidates[0][0]} to {args.save}")
  tasks = suite(args.suite)
  validation = evaluation.instance_seed(0, evaluation.VALIDATION)
  tune = evaluation.instance_seed(0, evaluation.TUNE)
  start = time.time()
  for horizon in horizons:
    adam = []
    for i, task in enumerate(tasks):
      scores = {}
      for lr in ADAM_RATES:
        curves = _curves(evaluation.hand_designed("Adam", lr), task.make_problem(tune + i), 1,
                         horizon)
        value = float(np.mean(final_loss(curves)))
        scores[lr] = math.log10(value) if value > 0 and math.isfinite(value) else (
            -math.inf if value == 0 else math.inf)
      best = min(ADAM_RATES, key=lambda lr: (scores[lr], lr))
      curves = _curves(evaluation.hand_designed("Adam", best), task.make_problem(validation + i),
                       args.runs, horizon)
      adam.append(float(np.mean(final_loss(curves))))
    print(f"\n{args.suite}, {horizon} steps, {args.runs} VALIDATION runs per task "
          f"({time.time() - start:.0f}s)", flush=True)
    for spec, options in candidates:
      optimizer = build(options)
      ratios, wins = [], 0
      for i, task in enumerate(tasks):
        curves = _curves(optimizer, task.make_problem(validation + i), args.runs, horizon)
        value = float(np.mean(final_loss(curves)))
        if not math.isfinite(value):
          ratio = math.inf
        elif adam[i] > 0:
          ratio = value / adam[i]
        else:
          ratio = 1. if value == 0 else math.inf
        wins += ratio < 1
        ratios.append(ratio)
      logs = np.log10(np.clip(ratios, 1e-6, 1e6))
      print(f"{spec:22s} wins {wins:2d}/{len(tasks)}  log10 ratio median {np.median(logs):+.2f} "
            f"mean {np.mean(logs):+.2f} | " + " ".join(
                f"{t.name}={r:.2g}" for t, r in zip(tasks, ratios)), flush=True)


if __name__ == "__main__":
  sys.exit(main())
