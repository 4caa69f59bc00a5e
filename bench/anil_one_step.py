"""How low can one head-only gradient step (ANIL's 1-step column) go on sinusoid regression?

    python bench/anil_one_step.py [--tasks=20000] [--seed=0]

NumPy only, under a minute. One gradient step on a linear head h over features f changes the
prediction at x by -lr (2 / K) sum_i f(x).f(x_i) r_i (r_i the support residuals): a kernel
smoother with kernel f(x).f(x'). The sinusoid tasks of maml.py (amplitude 0.1-5, phase 0-pi,
x in [-5, 5]) are exactly linear in [sin x, cos x], whose kernel cos(x - x') changes sign.
ANIL's head sees a ReLU layer's outputs, which are non-negative, so its kernel never is. This
prints, for K = 5, 10, 20 support points and 100 query points per task, the query MSE of the
best single step (step size scanned, the start h0 the best of zero and the best fixed head) on

* "exact": [sin x, cos x], the model class of the tasks;
* "ReLU'd": [relu(sin x), relu(-sin x), relu(cos x), relu(-cos x)], which span the same
  functions (least squares on either is exact) but give a non-negative kernel;
* "shifted": [relu(1 + sin x), relu(1 - sin x), relu(1 + cos x), relu(1 - cos x), 1] (the last
  a bias), non-negative features a ReLU layer can compute, with one step size (ANIL) and with
  one step size per coordinate (Meta-SGD's rates on the head: MetaSGD-ANIL). A step with rates
  alpha has the kernel sum_j alpha_j f_j(x) f_j(x'), which can change sign when some alpha_j
  are negative: for the shifted features alpha = lr (1/2, 1/2, 1/2, 1/2, -2) gives exactly the
  exact features' kernel lr cos(x - x'). Per-coordinate rates are fitted by least squares
  (the query residual is linear in them) on `--tasks` training tasks and scored on as many
  other tasks.

None is a bound on ANIL (its body can learn other non-negative features); the ReLU'd row is
what one head step gets from a perfect body behind a ReLU, the shifted rows what learned
per-coordinate rates add. With `maml.py --anil_head_input=linear` ANIL's head reads the last
hidden layer's pre-activations, which are signed: the "exact" row is what one head step gets
from a perfect body then.
"""

import argparse

import numpy as np


def features(x: np.ndarray, kind: str) -> np.ndarray:
  """`[..., d]` features of `x`: "exact", "relu" or "shifted" (see the module docstring)."""
  exact = np.stack([np.sin(x), np.cos(x)], -1)
  if kind == "exact":
    return exact
  if kind == "relu":
    return np.concatenate([np.maximum(exact, 0), np.maximum(-exact, 0)], -1)
  if kind == "shifted":
    return np.concatenate([np.maximum(1 + exact, 0), np.maximum(1 - exact, 0),
                           np.ones(x.shape + (1,))], -1)
  raise ValueError(f"kind must be 'exact', 'relu' or 'shifted', got {kind!r}")


def sample(shots: int, tasks: int, seed: int):
  """Support and query inputs and targets of `tasks` sinusoid tasks (maml.py's ranges)."""
  rng = np.random.default_rng(seed)
  amp, phase = rng.uniform(0.1, 5, tasks), rng.uniform(0, np.pi, tasks)
  xs, xq = rng.uniform(-5, 5, (tasks, shots)), rng.uniform(-5, 5, (tasks, 100))
  return (xs, amp[:, None] * np.sin(xs - phase[:, None]), xq,
          amp[:, None] * np.sin(xq - phase[:, None]))


def one_step(fs, ys, fq, h0, rates):
  """Query predictions after one step `h = h0 - rates o grad` of the support MSE (per task)."""
  grad = 2 / fs.shape[1] * np.einsum("tkd,tk->td", fs, fs @ h0 - ys)
  return np.einsum("tqd,td->tq", fq, h0 - rates * grad)


def starts(fs, ys):
  """The starts tried: zero and the best fixed head (least squares over every support point)."""
  d = fs.shape[-1]
  fixed = np.linalg.lstsq(fs.reshape(-1, d), ys.ravel(), rcond=None)[0]
  return np.zeros(d), fixed


def best_one_step(shots: int, kind: str, tasks: int, seed: int):
  """(query MSE, step size) of the best single step with one step size over `tasks` tasks."""
  xs, ys, xq, yq = sample(shots, tasks, seed)
  fs, fq = features(xs, kind), features(xq, kind)
  best = (np.inf, None)
  for h0 in starts(fs, ys):
    for lr in np.linspace(0.05, 4.0, 80) / (1 if kind != "shifted" else 5):
      best = min(best, (float(((one_step(fs, ys, fq, h0, lr) - yq) ** 2).mean()), lr))
  return best


def fit_rates(fs, ys, fq, yq, h0):
  """The per-coordinate rates minimizing the query MSE of one step (linear least squares)."""
  grad = 2 / fs.shape[1] * np.einsum("tkd,tk->td", fs, fs @ h0 - ys)
  # prediction = fq.h0 - sum_j rates_j fq_j grad_j: linear in the rates.
  design = (fq * grad[:, None, :]).reshape(-1, fs.shape[-1])
  return np.linalg.lstsq(design, (fq @ h0 - yq).ravel(), rcond=None)[0]


def per_coordinate_step(shots: int, kind: str, tasks: int, seed: int):
  """(query MSE on other tasks, rates) of one step with rates fitted on `tasks` tasks."""
  xs, ys, xq, yq = sample(shots, tasks, seed)
  fs, fq = features(xs, kind), features(xq, kind)
  xs2, ys2, xq2, yq2 = sample(shots, tasks, seed + 1)
  fs2, fq2 = features(xs2, kind), features(xq2, kind)
  best = (np.inf, None)
  for h0 in starts(fs, ys):
    rates = fit_rates(fs, ys, fq, yq, h0)
    mse = float(((one_step(fs2, ys2, fq2, h0, rates) - yq2) ** 2).mean())
    if mse < best[0]:
      best = (mse, rates)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", type=int, default=20000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if args.tasks < 1:
    parser.error(f"--tasks must be positive, got {args.tasks}")
  print("| features | step sizes | 5-shot | 10-shot | 20-shot |\n|---|---|---|---|---|")
  for kind, name in (("exact", "exact [sin, cos]"),
                     ("relu", "ReLU'd [relu(+-sin), relu(+-cos)]"),
                     ("shifted", "shifted [relu(1 +- sin), relu(1 +- cos), 1]")):
    cells = [best_one_step(k, kind, args.tasks, args.seed) for k in (5, 10, 20)]
    print(f"| {name} | one (best of a scan) | "
          + " | ".join(f"{mse:.3f} (lr {lr:.2f})" for mse, lr in cells) + " |")
    if kind != "exact":
      cells = [per_coordinate_step(k, kind, args.tasks, args.seed) for k in (5, 10, 20)]
      print(f"| {name} | per coordinate (fitted, other tasks) | "
            + " | ".join(f"{mse:.3f} (rates {np.array2string(r, precision=2)})"
                         for mse, r in cells) + " |")


if __name__ == "__main__":
  main()
