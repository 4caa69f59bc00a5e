"""Why do trained MAML / Meta-SGD initializations diverge over more inner steps than trained?

    python bench/maml_divergence.py --workdir=/work/runs/maml_table/seed_1 --method=MetaSGD \
        --shots=5 --seed=1

Restores `<workdir>/<method>_<shots>shot` (written by maml.py), evaluates the held-out tasks
(maml.py's, same seed) after --steps inner steps, and for the diverged tasks and as many
finite ones compares the inner step's local growth factor at the initialization theta:
the spectral radius of the linearised inner map, max |1 - eig(diag(alpha) H)|, with H the
Hessian of the task's support loss at theta and alpha the step sizes (MAML: inner_lr; Meta-SGD:
its learned per-coordinate rates). Above 1, gradient descent with those step sizes moves away
from theta along that eigenvector, and over 10 steps can overflow; one step cannot. Also prints
the share of Meta-SGD's learned rates that are negative (gradient ascent on those coordinates).
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from l2l.meta_learning import fewshot  # pylint: disable=g-import-not-at-top
from l2l.meta_learning import functional  # pylint: disable=g-import-not-at-top
from l2l.meta_learning import meta_trainer  # pylint: disable=g-import-not-at-top


def growth_factor(algorithm, task_x, task_y) -> float:
  """max |1 - eig(diag(alpha) H)| at the module's parameters, H the support-loss Hessian."""
  params = functional.named_parameters(algorithm.module)
  names = list(params)
  flat = tf.concat([tf.reshape(params[n], [-1]) for n in names], 0)
  shapes = [params[n].shape for n in names]
  sizes = [s.num_elements() for s in shapes]
  rates = algorithm.learning_rates()
  alpha = np.concatenate([np.reshape(rates[n].numpy(), [-1]) if isinstance(rates, dict)
                          else np.full(size, rates) for n, size in zip(names, sizes)])

  def loss(v):
    parts = [tf.reshape(p, s) for p, s in zip(tf.split(v, sizes), shapes)]
    out = functional.call(algorithm.module, dict(zip(names, parts)), task_x)
    return meta_trainer.mse(out, task_y)

  with tf.GradientTape() as outer:
    outer.watch(flat)
    with tf.GradientTape() as inner:
      inner.watch(flat)
      value = loss(flat)
    grad = inner.gradient(value, flat)
  hessian = outer.jacobian(grad, flat).numpy().astype(np.float64)
  return float(np.abs(1 - np.linalg.eigvals(alpha[:, None] * hessian)).max())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--method", default="MetaSGD")
  parser.add_argument("--shots", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--num_eval_tasks", type=int, default=600)
  parser.add_argument("--examples", type=int, default=10,
                      help="diverged and finite tasks whose growth factor is computed (each)")
  args = parser.parse_args()
  config = fewshot.FewShotConfig(seed=args.seed, num_eval_tasks=args.num_eval_tasks)
  directory = os.path.join(args.workdir, f"{args.method}_{args.shots}shot")
  if not tf.train.latest_checkpoint(directory):
    sys.exit(f"maml_divergence.py: no checkpoint in {directory}")
  _, algorithm = fewshot.build(config, args.method)
  tf.train.Checkpoint(algorithm=algorithm).restore(
      tf.train.latest_checkpoint(directory)).expect_partial()
  _, tasks = fewshot._samplers(config, args.shots, False)  # pylint: disable=protected-access
  trainer = meta_trainer.MetaTrainer(algorithm, None, meta_trainer.mse, None)
  losses = np.concatenate([trainer._evaluate(  # pylint: disable=protected-access
      tf.nest.map_structure(lambda a: tf.convert_to_tensor(a[i:i + 200]), tasks),
      args.steps)[0].numpy() for i in range(0, tasks.num_tasks, 200)])
  diverged = np.flatnonzero(~np.isfinite(losses))
  finite = np.flatnonzero(np.isfinite(losses))[:args.examples]
  print(f"{args.method} {args.shots}-shot seed {args.seed}: {len(diverged)} of {len(losses)} "
        f"tasks diverge after {args.steps} steps")
  rates = algorithm.learning_rates()
  if isinstance(rates, dict):
    values = np.concatenate([np.reshape(v.numpy(), [-1]) for v in rates.values()])
    print(f"learned rates: {np.mean(values < 0):.1%} negative, range [{values.min():.3g}, "
          f"{values.max():.3g}], median {np.median(values):.3g}")
  for label, indices in (("diverged", diverged[:args.examples]), ("finite", finite)):
    factors = [growth_factor(algorithm, tasks.support_x[i], tasks.support_y[i])
               for i in indices]
    if factors:
      print(f"{label} tasks: growth factor max |1 - eig(alpha H)| median "
            f"{np.median(factors):.3g}, range [{min(factors):.3g}, {max(factors):.3g}], "
            f"> 1 in {np.sum(np.array(factors) > 1)} of {len(factors)}")


if __name__ == "__main__":
  main()
