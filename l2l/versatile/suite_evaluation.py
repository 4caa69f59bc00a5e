"""Evaluating a learned optimizer on a held-out task suite against per-task lr-tuned baselines.

The protocol follows learned_optimization's normalised evaluation:

* Final loss: the mean training loss over the last 5% of a run's steps (`final_loss`), so that
  one noisy minibatch does not decide it; averaged over `num_runs` TEST instances (new initial
  weights and batches) per task, with its standard error.
* Baselines (Adam; optionally SGD, NAG, RMSProp) get their learning rate tuned per task and per
  horizon over a log grid, on `tuning_runs` TUNE instances, disjoint from the TEST ones (one run
  of 2T steps per rate serves both horizons' tuning), then run on the TEST instances for exactly
  each horizon, as the learned optimizer is.
* The learned optimizer gets no tuning: it is told the horizon (`num_steps`) and nothing else.
* Per task and horizon: the final-loss ratio (learned / tuned Adam, < 1 is better), a win when the
  learned mean final loss is lower, and the speedup: the steps tuned Adam's mean curve (smoothed
  like the final loss) needs to reach the learned optimizer's final loss, divided by the horizon
  (censored at the end of Adam's run: reported as a lower bound). At both horizons this reads
  the run of 2T steps at the rate tuned for 2T, so a speedup at T can reach 2.
* Across tasks: the median and the interquartile mean (IQM) of the ratio and the speedup.
"""

import json
import math
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from l2l import checks
from l2l import evaluation
from l2l import meta_optimizer as meta_optimizer_lib
from l2l.versatile.suite_training import final_loss

ADAM_GRID = tuple(float(f"{10 ** (e / 2):.4g}") for e in range(-9, 1))  # 3.2e-5 .. 1


def _curves(optimizer: meta_optimizer_lib.MetaOptimizer, make_loss, num_runs: int,
            num_steps: int, horizon: Optional[int] = None) -> np.ndarray:
  """`losses[run, step]` of `num_runs` instances, `num_steps` steps each (the rule is told the
  horizon `horizon`, default `num_steps`)."""
  run = optimizer.meta_loss(make_loss, num_steps, use_while_loop=True,
                            num_steps=horizon or num_steps)
  return evaluation.run_instances(run, num_runs).losses


def _log10_mean(finals: np.ndarray) -> float:
  mean = float(np.mean(finals))
  return math.log10(mean) if mean > 0 and math.isfinite(mean) else math.inf


def _standard_error(finals: np.ndarray) -> float:
  if len(finals) < 2 or not np.all(np.isfinite(finals)):
    return math.inf
  return float(np.std(finals, ddof=1) / math.sqrt(len(finals)))


def smoothed(curve: np.ndarray, fraction: float = 0.05, horizon: Optional[int] = None
             ) -> np.ndarray:
  """The trailing mean of `curve` over the window `final_loss` uses at `horizon` steps:
  `smoothed(c)[t]` is comparable with the final loss of a run of t steps."""
  horizon = horizon or len(curve) - 1
  window = max(1, int(round((horizon + 1) * fraction)))
  cumulative = np.concatenate([[0.], np.cumsum(curve)])
  ends = np.arange(1, len(curve) + 1)
  starts = np.maximum(0, ends - window)
  return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def speedup(adam_curve: np.ndarray, target: float, horizon: int) -> Dict[str, Any]:
  """Steps tuned Adam's mean curve needs to reach `target`, over `horizon`.

  Returns `{"speedup": value, "censored": bool}`; censored means Adam never got there within
  its run, and the value is the lower bound (run length / horizon).
  """
  curve = smoothed(adam_curve, horizon=horizon)
  reached = np.nonzero(curve <= target)[0]
  if len(reached) == 0:
    return {"speedup": (len(curve) - 1) / horizon, "censored": True}
  return {"speedup": max(int(reached[0]), 1) / horizon, "censored": False}


def iqm(values: Sequence[float]) -> float:
  """The interquartile mean: the mean of the middle half (25th to 75th percentile)."""
  values = np.sort(np.asarray(values, float))
  n = len(values)
  if n == 0:
    return math.nan
  low, high = int(math.floor(n * 0.25)), int(math.ceil(n * 0.75))
  middle = values[low:high] if high > low else values
  return float(np.mean(middle))


def tune(name: str, make_problem: Callable[[int], Any], horizons: Sequence[int],
         tuning_runs: int, seed: int, grid: Sequence[float]) -> Dict[int, Dict[str, Any]]:
  """The best learning rate of `grid` per horizon, by mean log10 final loss on TUNE instances.

  Returns `{horizon: {"learning_rate": best, "grid": {lr: score}}}`.
  """
  longest = max(horizons)
  scores: Dict[int, Dict[float, float]] = {h: {} for h in horizons}
  for lr in grid:
    losses = _curves(evaluation.hand_designed(name, lr),
                     make_problem(evaluation.instance_seed(seed, evaluation.TUNE)), tuning_runs,
                     longest)
    for h in horizons:
      scores[h][lr] = _log10_mean(final_loss(losses[:, :h + 1]))
  out = {}
  for h in horizons:
    best = min(grid, key=lambda lr: (scores[h][lr], lr))
    if not math.isfinite(scores[h][best]):
      raise ValueError(f"tuning {name}: every learning rate of {list(grid)} diverged")
    out[h] = {"learning_rate": best, "grid": scores[h]}
  return out


def evaluate_task(learned: meta_optimizer_lib.MetaOptimizer, make_problem: Callable[[int], Any],
                  num_steps: int, num_runs: int, tuning_runs: int, seed: int,
                  baselines: Sequence[str] = ("Adam",),
                  grid: Sequence[float] = ADAM_GRID) -> Dict[str, Any]:
  """One task at the horizons T = num_steps and 2T; see the module docstring."""
  horizons = (num_steps, 2 * num_steps)
  test_seed = evaluation.instance_seed(seed, evaluation.TEST)
  result: Dict[str, Any] = {"horizons": {}}
  learned_curves = {h: _curves(learned, make_problem(test_seed), num_runs, h) for h in horizons}
  baseline_curves: Dict[str, Dict[int, np.ndarray]] = {}
  tuned: Dict[str, Dict[int, Dict[str, Any]]] = {}
  for name in baselines:
    tuned[name] = tune(name, make_problem, horizons, tuning_runs, seed, grid)
    # Runs of exactly h steps, like the learned optimizer's: a problem's batch stream runs on
    # from one instance to the next, so instances after the first see the same batches only
    # in runs of the same length.
    baseline_curves[name] = {
        h: _curves(evaluation.hand_designed(name, tuned[name][h]["learning_rate"]),
                   make_problem(test_seed), num_runs, h) for h in horizons}
  for h in horizons:
    row: Dict[str, Any] = {}
    learned_final = final_loss(learned_curves[h])
    row["learned"] = {"final_loss_mean": float(np.mean(learned_final)),
                      "final_loss_se": _standard_error(learned_final),
                      "diverged_runs": int(np.sum(~np.isfinite(learned_curves[h]).all(axis=1))),
                      "loss_curve": [float(v) for v in np.mean(learned_curves[h], axis=0)]}
    for name in baselines:
      curves = baseline_curves[name][h]
      finals = final_loss(curves)
      row[name] = {"learning_rate": tuned[name][h]["learning_rate"],
                   "final_loss_mean": float(np.mean(finals)),
                   "final_loss_se": _standard_error(finals),
                   "loss_curve": [float(v) for v in np.mean(curves, axis=0)]}
    adam = row.get("Adam")
    if adam is not None:
      ratio = row["learned"]["final_loss_mean"] / adam["final_loss_mean"]
      row["ratio_to_adam"] = ratio if math.isfinite(ratio) else math.inf
      row["wins_over_adam"] = bool(row["learned"]["final_loss_mean"] < adam["final_loss_mean"])
      row["speedup_over_adam"] = speedup(
          np.mean(baseline_curves["Adam"][2 * num_steps], axis=0),
          row["learned"]["final_loss_mean"], h)
    result["horizons"][h] = row
  return result


def evaluate_suite(learned: meta_optimizer_lib.MetaOptimizer, suite_name: str = "held_out",
                   num_steps: int = 1000, num_runs: int = 10, tuning_runs: int = 3,
                   seed: int = 0, baselines: Sequence[str] = ("Adam",),
                   tasks: Optional[Sequence[str]] = None,
                   grid: Sequence[float] = ADAM_GRID) -> Dict[str, Any]:
  """Every task of the suite (or the named ones); returns the JSON-ready results.

  Raises:
    ValueError: an unknown suite, task or baseline, or bad counts.
  """
  from problems.suite import suite  # pylint: disable=g-import-not-at-top
  for arg, value in (("num_steps", num_steps), ("num_runs", num_runs),
                     ("tuning_runs", tuning_runs)):
    checks.positive_int(arg, value)
  for name in baselines:
    if name not in evaluation.HAND_DESIGNED:
      raise ValueError(f"unknown baseline {name!r}; expected some of "
                       f"{sorted(evaluation.HAND_DESIGNED)}")
  if "Adam" not in baselines:
    raise ValueError("baselines must include Adam: the ratios and speedups are relative to it")
  all_tasks = suite(suite_name)
  names = [t.name for t in all_tasks]
  if tasks:
    unknown = [t for t in tasks if t not in names]
    if unknown:
      raise ValueError(f"unknown tasks {unknown} in suite {suite_name!r}; it has {names}")
  chosen = [t for t in all_tasks if not tasks or t.name in tasks]
  results = {}
  for i, task in enumerate(chosen):
    start = time.time()
    results[task.name] = evaluate_task(learned, task.make_problem, num_steps, num_runs,
                                       tuning_runs, seed, baselines, grid)
    row = results[task.name]["horizons"][num_steps]
    logging.info("%d/%d %s: learned %.4g, Adam %.4g (lr %g): ratio %.3f (%.0fs)", i + 1,
                 len(chosen), task.name, row["learned"]["final_loss_mean"],
                 row["Adam"]["final_loss_mean"], row["Adam"]["learning_rate"],
                 row["ratio_to_adam"], time.time() - start)
  return {"suite": suite_name, "num_steps": num_steps, "num_runs": num_runs,
          "tuning_runs": tuning_runs, "seed": seed, "baselines": list(baselines),
          "optimizer": learned.net_configs, "tasks": results,
          "summary": summarize(results, num_steps)}


def summarize(results: Mapping[str, Any], num_steps: int) -> Dict[str, Any]:
  """Wins, median and IQM of the ratio to Adam and of the speedup, per horizon."""
  out = {}
  for h in (num_steps, 2 * num_steps):
    rows = [r["horizons"][h] for r in results.values()]
    ratios = [r["ratio_to_adam"] for r in rows]
    speedups = [r["speedup_over_adam"]["speedup"] for r in rows]
    out[h] = {"tasks": len(rows), "wins": sum(r["wins_over_adam"] for r in rows),
              "diverged_tasks": sum(r["learned"]["diverged_runs"] > 0 for r in rows),
              "ratio_median": float(np.median(ratios)) if ratios else math.nan,
              "ratio_iqm": iqm(ratios),
              "speedup_median": float(np.median(speedups)) if speedups else math.nan,
              "speedup_iqm": iqm(speedups),
              "speedups_censored": sum(r["speedup_over_adam"]["censored"] for r in rows)}
  return out


def format_table(output: Mapping[str, Any]) -> str:
  """Per task and horizon: final losses +- SE, Adam's tuned lr, the ratio and the speedup."""
  lines = [f"{'task':<32} {'steps':>5} {'learned':>18} {'tuned Adam':>18} {'lr':>8} "
           f"{'ratio':>6} {'speedup':>8}"]
  for name, result in output["tasks"].items():
    for h, row in sorted(result["horizons"].items(), key=lambda kv: int(kv[0])):
      learned, adam = row["learned"], row["Adam"]
      s = row["speedup_over_adam"]
      lines.append(
          f"{name:<32} {int(h):>5} {learned['final_loss_mean']:>10.4g} +-{learned['final_loss_se']:<6.2g}"
          f" {adam['final_loss_mean']:>10.4g} +-{adam['final_loss_se']:<6.2g} "
          f"{adam['learning_rate']:>8.2g} {row['ratio_to_adam']:>6.3f} "
          f"{('>' if s['censored'] else '') + format(s['speedup'], '.2f'):>8}"
          + ("  win" if row["wins_over_adam"] else ""))
  for h, s in sorted(output["summary"].items(), key=lambda kv: int(kv[0])):
    lines.append(f"{int(h)} steps: wins {s['wins']}/{s['tasks']}, diverged {s['diverged_tasks']}, "
                 f"ratio median {s['ratio_median']:.3f} IQM {s['ratio_iqm']:.3f}, speedup "
                 f"median {s['speedup_median']:.2f} IQM {s['speedup_iqm']:.2f} "
                 f"({s['speedups_censored']} lower bounds)")
  return "\n".join(lines)


def _row(result: Mapping[str, Any], horizon: int) -> Mapping[str, Any]:
  """A task's row at `horizon`, from `evaluate_suite`'s output or its JSON (string keys)."""
  rows = result["horizons"]
  return rows[horizon] if horizon in rows else rows[str(horizon)]


def plot(output: Mapping[str, Any], path: str) -> None:
  """One figure: log10 of the final-loss ratio to tuned Adam per task, at T and 2T.

  Ratios of 0 (the learned optimizer's loss underflowed to 0) and inf are drawn at 1e-6 and
  1e6, the axis' ends.
  """
  evaluation.check_plot_path(path)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  names = list(output["tasks"])
  horizons = sorted({int(h) for r in output["tasks"].values() for h in r["horizons"]})
  figure, axes = pyplot.subplots(figsize=(max(6, 0.7 * len(names) + 2), 4))
  try:
    width = 0.8 / max(1, len(horizons))
    for k, h in enumerate(horizons):
      values = [math.log10(min(max(_row(output["tasks"][n], h)["ratio_to_adam"], 1e-6), 1e6))
                for n in names]
      axes.bar(np.arange(len(names)) + k * width, values, width, label=f"{h} steps")
    axes.axhline(0., color="black", linewidth=0.8)
    axes.set_xticks(np.arange(len(names)) + width * (len(horizons) - 1) / 2)
    axes.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel("log10(final loss / tuned Adam's)")
    axes.set_title(f"{output['suite']}: learned optimizer vs per-task tuned Adam (below 0 wins)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
  finally:
    pyplot.close(figure)


def to_json(output: Mapping[str, Any]) -> str:
  return json.dumps(output, indent=1, default=lambda x: None if x is None else str(x))
