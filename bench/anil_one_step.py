"""How low can one head-only gradient step (ANIL's 1-step column) go on sinusoid regression?

    python bench/anil_one_step.py [--tasks=20000] [--seed=0]

NumPy only, a few seconds. One gradient step on a linear head h over features f changes the
prediction at x by -lr (2 / K) sum_i f(x).f(x_i) r_i (r_i the support residuals): a kernel
smoother with kernel f(x).f(x'). The sinusoid tasks of maml.py (amplitude 0.1-5, phase 0-pi,
x in [-5, 5]) are exactly linear in [sin x, cos x], whose kernel cos(x - x') changes sign.
ANIL's head sees a ReLU layer's outputs, which are non-negative, so its kernel never is. This
prints, for K = 5, 10, 20 support points and 100 query points per task, the query MSE of the
best single step (step size scanned, the start h0 the best of zero and the mean true head) on

* "exact": [sin x, cos x], the model class of the tasks;
* "ReLU'd": [relu(sin x), relu(-sin x), relu(cos x), relu(-cos x)], which span the same
  functions (least squares on either is exact) but give a non-negative kernel.

Neither is a bound on ANIL (its body can learn other non-negative features); the second is
what one head step gets from a perfect body behind a ReLU.
"""

import argparse

import numpy as np


def features(x: np.ndarray, relu: bool) -> np.ndarray:
  exact = np.stack([np.sin(x), np.cos(x)], -1)
  return np.concatenate([np.maximum(exact, 0), np.maximum(-exact, 0)], -1) if relu else exact


def best_one_step(shots: int, relu: bool, tasks: int, seed: int):
  """(query MSE, step size) of the best single head step over `tasks` random tasks."""
  rng = np.random.default_rng(seed)
  amp, phase = rng.uniform(0.1, 5, tasks), rng.uniform(0, np.pi, tasks)
  xs, xq = rng.uniform(-5, 5, (tasks, shots)), rng.uniform(-5, 5, (tasks, 100))
  ys = amp[:, None] * np.sin(xs - phase[:, None])
  yq = amp[:, None] * np.sin(xq - phase[:, None])
  fs, fq = features(xs, relu), features(xq, relu)
  true = np.stack([amp * np.cos(phase), -amp * np.sin(phase)], -1)  # a sin x + b cos x
  if relu:
    true = np.concatenate([true, -true], -1)
  best = (np.inf, None)
  for h0 in (np.zeros(fs.shape[-1]), true.mean(0)):
    for lr in np.linspace(0.05, 4.0, 80):
      h = h0 - lr * 2 / shots * np.einsum("tkd,tk->td", fs, fs @ h0 - ys)
      best = min(best, (float(((np.einsum("tqd,td->tq", fq, h) - yq) ** 2).mean()), lr))
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", type=int, default=20000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if args.tasks < 1:
    parser.error(f"--tasks must be positive, got {args.tasks}")
  print("| features | 5-shot | 10-shot | 20-shot |\n|---|---|---|---|")
  for relu, name in ((False, "exact [sin, cos]"), (True, "ReLU'd [relu(+-sin), relu(+-cos)]")):
    cells = [best_one_step(k, relu, args.tasks, args.seed) for k in (5, 10, 20)]
    print(f"| {name} | " + " | ".join(f"{mse:.3f} (lr {lr:.2f})" for mse, lr in cells) + " |")


if __name__ == "__main__":
  main()
