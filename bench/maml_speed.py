"""MAML meta-steps per second on Finn et al. 2017's sinusoid regression.

The setup of `l2l.meta_learning.fewshot` (and `maml.py --problem=sinusoid`): an MLP 1-40-40-1 (ReLU),
second-order `l2l.MAML` with inner learning rate 0.01, a meta-batch of 25 tasks of 10 support
and 10 query points, `l2l.MetaTrainer` (tasks vectorized with `tf.vectorized_map`, Adam 1e-3).
One meta-step is `MetaTrainer.meta_step` on a batch sampled beforehand (sampling, numpy, is not
timed). Per inner-step count one line:

    case=maml_sinusoid inner_steps=1 meta_batch=25 ms_per_meta_step=... meta_steps_per_s=...
    first_step_s=... traces=1

`first_step_s` includes tracing; `traces` counts the traces of the compiled meta-step (1: the
timed steps never retraced). None of the peers implements MAML, so there is nothing to compare
against.

    python -m bench.maml_speed --inner_steps 1,5 --steps 20
"""

import argparse
import statistics
import time
from typing import List, Optional

META_BATCH = 25
SHOTS = 10


def run(inner_steps: int, steps: int, warmup: int, seed: int = 0) -> str:
  """Times `steps` meta-steps (after `warmup`) with `inner_steps`; returns the case line."""
  import sonnet as snt  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2l.meta_learning import fewshot  # pylint: disable=g-import-not-at-top
  from l2l.meta_learning import meta_trainer  # pylint: disable=g-import-not-at-top
  from problems import tasks  # pylint: disable=g-import-not-at-top
  tf.random.set_seed(seed)
  config = fewshot.FewShotConfig(problem="sinusoid", inner_steps=inner_steps,
                                 meta_batch_size=META_BATCH, seed=seed)
  _, maml = fewshot.build(config, "MAML")
  sampler = tasks.SinusoidTaskSampler(k_support=SHOTS, k_query=config.k_query, seed=seed)
  trainer = meta_trainer.MetaTrainer(maml, snt.optimizers.Adam(config.meta_lr),
                                     meta_trainer.mse, sampler)
  batches = [sampler.sample(META_BATCH) for _ in range(max(1, warmup) + steps)]
  start = time.perf_counter()
  trainer.meta_step(batches[0])
  first_s = time.perf_counter() - start
  for batch in batches[1:max(1, warmup)]:
    trainer.meta_step(batch)
  times = []
  for batch in batches[max(1, warmup):]:
    start = time.perf_counter()
    trainer.meta_step(batch)
    times.append(time.perf_counter() - start)
  ms = 1e3 * statistics.median(times)
  traces = trainer._step.experimental_get_tracing_count()  # pylint: disable=protected-access
  return (f"case=maml_sinusoid inner_steps={inner_steps} meta_batch={META_BATCH} shots={SHOTS} "
          f"ms_per_meta_step={ms:.2f} meta_steps_per_s={1e3 / ms:.1f} "
          f"first_step_s={first_s:.2f} traces={traces}")


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--inner_steps", default="1,5", help="comma-separated inner step counts")
  parser.add_argument("--steps", type=int, default=20, help="timed meta-steps per count")
  parser.add_argument("--warmup", type=int, default=2, help="untimed meta-steps per count")
  args = parser.parse_args(argv)
  for inner_steps in [int(k) for k in args.inner_steps.split(",")]:
    print(run(inner_steps, args.steps, args.warmup), flush=True)


if __name__ == "__main__":
  main()
