"""Where does MAML / FOMAML + a learned inner optimizer (maml.py's "MAML+LSTM" / "FOMAML+LSTM") go
wrong? Restores a trained checkpoint and measures, on sinusoid tasks:

    python bench/joint_lstm_diagnosis.py --workdir=runs/maml_table/seed_0 --method=FOMAML+LSTM \
        --shots=20 --seed=0

* the LSTM's correction against MAML's step: median over tasks of |rule(g)| / |inner_lr g|;
* the 1-step query MSE with the correction, and with MAML's plain step `theta - inner_lr g` from
  the same initialization theta (how good theta is without the LSTM);
* the first-order meta-gradient against the exact (second-order) one over a meta-batch of
  training tasks, for theta and for the LSTM's weights: their cosine and norm ratio.

Tasks: --num_tasks held-out tasks of the validation split (maml.py --split=validation: seed +
20,000) for the first two, a meta-batch of --meta_batch_size fresh training tasks for the last.
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from l2l.meta_learning import fewshot  # pylint: disable=g-import-not-at-top
from l2l.meta_learning import meta_trainer  # pylint: disable=g-import-not-at-top
from problems import tasks as tasks_lib  # pylint: disable=g-import-not-at-top

JOINT = ("MAML+LSTM", "FOMAML+LSTM")


def restore(workdir: str, method: str, shots: int, seed: int):
  """The model and algorithm of `<workdir>/<method>_<shots>shot` (written by maml.py)."""
  config = fewshot.FewShotConfig(methods=(method,), shots=(shots,), seed=seed)
  model, algorithm = fewshot.build(config, method)
  directory = os.path.join(workdir, f"{method}_{shots}shot")
  latest = tf.train.latest_checkpoint(directory)
  if latest is None:
    raise SystemExit(f"joint_lstm_diagnosis.py: no checkpoint in {directory}")
  tf.train.Checkpoint(algorithm=algorithm).restore(latest).expect_partial()
  return model, algorithm


def correction_and_mse(model, algorithm, tasks):
  """Per task: |rule(g)| / |lr g|, query MSE after the step with and without the correction."""
  residual = algorithm.inner_optimizer
  variables = model.trainable_variables
  ratios, with_rule, plain = [], [], []
  for t in range(tasks.num_tasks):
    with tf.GradientTape() as tape:
      loss = meta_trainer.mse(model(tf.constant(tasks.support_x[t])),
                              tf.constant(tasks.support_y[t]))
    grads = tape.gradient(loss, variables)
    corrections, _ = residual.rule(grads, residual.initial_state(variables))
    norm = lambda xs: np.sqrt(sum(float(tf.reduce_sum(x ** 2)) for x in xs))
    ratios.append(norm(corrections) / norm([residual.learning_rate * g for g in grads]))
    saved = [v.numpy() for v in variables]
    for store, use_rule in ((with_rule, True), (plain, False)):
      for v, g, c in zip(variables, grads, corrections):
        v.assign_sub(residual.learning_rate * g - (c if use_rule else 0.))
      store.append(float(meta_trainer.mse(model(tf.constant(tasks.query_x[t])),
                                          tf.constant(tasks.query_y[t]))))
      for v, s in zip(variables, saved):
        v.assign(s)
  return np.array(ratios), np.array(with_rule), np.array(plain)


def meta_gradients(model, algorithm, tasks, first_order: bool):
  """The meta-batch's summed meta-gradient for (theta, the LSTM's weights), flattened."""
  theta = list(model.trainable_variables)
  rule = [v for v in algorithm.trainable_variables if not any(v is t for t in theta)]
  algorithm.first_order = first_order
  total = 0.
  for t in range(tasks.num_tasks):
    with tf.GradientTape() as tape:
      learner = algorithm.clone().adapt_on(meta_trainer.mse, tf.constant(tasks.support_x[t]),
                                           tf.constant(tasks.support_y[t]))
      loss = meta_trainer.mse(learner(tf.constant(tasks.query_x[t])),
                              tf.constant(tasks.query_y[t]))
    grads = tape.gradient(loss, theta + rule)
    total = total + np.concatenate([np.zeros(v.shape.num_elements()) if g is None
                                    else g.numpy().ravel() for g, v in zip(grads, theta + rule)])
  split = sum(v.shape.num_elements() for v in theta)
  return total[:split], total[split:]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a maml.py (per-seed) workdir")
  parser.add_argument("--method", default="FOMAML+LSTM", choices=JOINT)
  parser.add_argument("--shots", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0, help="the seed the workdir was trained with")
  parser.add_argument("--num_tasks", type=int, default=200)
  parser.add_argument("--meta_batch_size", type=int, default=25)
  args = parser.parse_args()
  for name in ("shots", "num_tasks", "meta_batch_size"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be positive, got {getattr(args, name)}")
  model, algorithm = restore(args.workdir, args.method, args.shots, args.seed)
  held_out = tasks_lib.SinusoidTaskSampler(k_support=args.shots, k_query=100,
                                           seed=args.seed + 20_000).sample(args.num_tasks)
  ratios, with_rule, plain = correction_and_mse(model, algorithm, held_out)
  print(f"{args.method} {args.shots}-shot, seed {args.seed}: |LSTM correction| / |lr g| median "
        f"{np.median(ratios):.2f} (90th percentile {np.percentile(ratios, 90):.2f}); 1-step MSE "
        f"on {args.num_tasks} validation tasks: {with_rule.mean():.3f} with the correction, "
        f"{plain.mean():.3f} with MAML's plain step from the same theta")
  train = tasks_lib.SinusoidTaskSampler(k_support=args.shots, k_query=10,
                                        seed=args.seed + 30_000).sample(args.meta_batch_size)
  first, exact = (meta_gradients(model, algorithm, train, f) for f in (True, False))
  for name, a, b in (("theta", first[0], exact[0]), ("LSTM", first[1], exact[1])):
    print(f"  {name}: first-order vs exact meta-gradient: cosine "
          f"{a @ b / np.linalg.norm(a) / np.linalg.norm(b):.3f}, norm ratio "
          f"{np.linalg.norm(a) / np.linalg.norm(b):.2f}")


if __name__ == "__main__":
  main()
