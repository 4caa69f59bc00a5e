"""Per-step overhead of `l2l.keras.Optimizer(nets.Adam)` against `keras.optimizers.Adam` in fit.

An MLP 256-1024-512-512-10 (1,055,754 parameters, ReLU; the model of `bench/apply_cost.py`) as a
`keras.Sequential`, compiled with each optimizer (same initial weights) and trained with
`model.fit` on a fixed random dataset, batch 128. Rounds alternate between the optimizers (one
`fit` of `--steps` steps each per round, after one warm-up round that traces); a callback stamps
the end of every batch, and a step's time is the interval between consecutive batch ends, so
`fit`'s per-call setup is left out. Prints one line of medians over every timed step:

    case=keras_overhead params=1055754 ms_per_step_l2l=... ms_per_step_keras=... ratio=...
    fit_ms_per_step_l2l=... fit_ms_per_step_keras=...

(`fit_ms_per_step_*`: median over rounds of a whole `fit` call's time divided by its steps.)

    python -m bench.keras_overhead --steps 20 --rounds 5
"""

import argparse
import statistics
import time
from typing import Dict, List

LAYERS = (1024, 512, 512, 10)
INPUTS = 256
BATCH = 128


def build_model(optimizer, seed: int = 0):
  """The MLP (`LAYERS`, seeded) compiled with `optimizer`."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  layers = [keras.Input((INPUTS,))]
  layers += [keras.layers.Dense(n, activation="relu") for n in LAYERS[:-1]]
  layers.append(keras.layers.Dense(LAYERS[-1]))
  model = keras.Sequential(layers)
  model.compile(optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def run(steps: int, rounds: int) -> Dict[str, float]:
  """Times both optimizers; returns the printed figures."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import l2l  # pylint: disable=g-import-not-at-top
  import nets  # pylint: disable=g-import-not-at-top

  class Stamps(keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.times: List[float] = []

    def on_train_batch_end(self, batch, logs=None):
      self.times.append(time.perf_counter())

  rng = np.random.RandomState(0)
  x = rng.randn(steps * BATCH, INPUTS).astype(np.float32)
  y = rng.randint(0, LAYERS[-1], steps * BATCH).astype(np.int32)
  models = {"l2l": build_model(l2l.keras.Optimizer(nets.Adam(1e-3))),
            "keras": build_model(keras.optimizers.Adam(1e-3))}
  step_ms = {name: [] for name in models}
  fit_ms = {name: [] for name in models}
  for round_index in range(rounds + 1):
    for name, model in models.items():
      stamps = Stamps()
      start = time.perf_counter()
      model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[stamps])
      elapsed = time.perf_counter() - start
      if round_index == 0:
        continue  # Warm-up: tracing.
      step_ms[name] += [1e3 * (b - a) for a, b in zip(stamps.times, stamps.times[1:])]
      fit_ms[name].append(1e3 * elapsed / steps)
  params = sum(int(np.prod(v.shape)) for v in models["l2l"].trainable_variables)
  result = {"params": params}
  for name in models:
    result[f"ms_per_step_{name}"] = statistics.median(step_ms[name])
    result[f"fit_ms_per_step_{name}"] = statistics.median(fit_ms[name])
  result["ratio"] = result["ms_per_step_l2l"] / result["ms_per_step_keras"]
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20, help="fit steps per round")
  parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
  args = parser.parse_args()
  if args.steps < 2 or args.rounds < 1:
    parser.error("--steps must be >= 2 and --rounds >= 1")
  result = run(args.steps, args.rounds)
  print("case=keras_overhead " + " ".join(
      f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
  main()
