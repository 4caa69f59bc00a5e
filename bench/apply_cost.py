"""Cost of training a 1M-parameter model with a learned optimizer, relative to Adam.

An MLP 256-1024-512-512-10 (1,055,754 parameters, ReLU) on one fixed batch of 128 random inputs
and labels; one training step (forward, backward, update) inside `tf.function`, with

* `l2l`: `l2l.LearnedOptimizer` around the 2016 coordinatewise LSTM (2x20, LogAndSign k=5,
  output scale 0.01, the fused LSTM kernels): every parameter is one LSTM row;
* `adam`: `snt.optimizers.Adam(1e-3)`;
* `no_update`: forward and backward only, the part both share;
* `mlp_rule`: `l2l.LearnedOptimizer` around the versatile per-parameter rule
  (`nets.PerParameterMLP`, default sizes, random non-zero weights in every layer) with its fused
  forward op (`nets/mlp_rule_kernels.cc`);
* `mlp_rule_reference`: the same rule with `fused=False` (the reference TF ops);
* `mlp_rule_tensor`: the fused rule with `tensor_features=True` (a step size per tensor from
  its schedule features);
* `mlp_rule_adaptive`: the fused rule with the online step-size adaptation of
  `versatile-mlp-v2` (`step_adaptation=0.03`, one factor for the model);
* `mlp_rule_recommended`: the fused rule with every option of the recommended shipped optimizer
  (`l2l.pretrained()`'s config: today's default, whatever it is; its weights random as above).

The LSTM's weights are its random initialization, not trained ones: a trained optimizer runs the
same operations on the same shapes, so the cost is the same. Each optimizer trains its own copy of
the model (same initial weights); the three steps are timed interleaved, one of each per round,
after warm-up rounds (tracing). Prints one line:

    case=apply_1m params=1055754 ms_per_step_l2l=... ms_per_step_adam=... ratio_vs_adam=...
    ms_per_step_no_update=... update_ratio_vs_adam=...

`update_ratio_vs_adam` compares the updates alone (step - no_update).

    python -m bench.apply_cost --steps 20
"""

import argparse
import statistics
import time
from typing import Callable, List, Optional

LAYERS = (1024, 512, 512, 10)
INPUTS = 256
BATCH = 128


def build_step(optimizer, seed: int = 0) -> Callable:
  """A compiled training step of a fresh MLP (`LAYERS`, seeded) with `optimizer` (None: none)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import sonnet as snt  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  x = tf.constant(rng.normal(size=(BATCH, INPUTS)).astype(np.float32))
  y = tf.constant(rng.randint(0, LAYERS[-1], size=BATCH).astype(np.int32))
  model = snt.nets.MLP(LAYERS, w_init=snt.initializers.VarianceScaling(1.0, seed=seed),
                       name="mlp")
  model(x)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x)))
    grads = tape.gradient(loss, model.trainable_variables)
    if optimizer is not None:
      optimizer.apply(grads, model.trainable_variables)
    else:  # Use the gradients, so that the backward pass is not pruned.
      loss += tf.add_n([tf.reduce_sum(g) for g in grads]) * 0.
    return loss

  step.num_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  return step


def learned_optimizer():
  """`l2l.LearnedOptimizer` of the 2016 coordinatewise LSTM (untrained weights, seed 0)."""
  import l2l  # pylint: disable=g-import-not-at-top
  from l2l import configs  # pylint: disable=g-import-not-at-top
  net = dict(configs.PAPER_LSTM, net_options=dict(configs.PAPER_LSTM["net_options"], seed=0))
  return l2l.LearnedOptimizer(l2l.MetaOptimizer(cw=net))


def mlp_rule_optimizer(fused: bool, seed: int = 0, **options):
  """`l2l.LearnedOptimizer` of `nets.PerParameterMLP` with random weights in every layer.

  The untrained rule's last layers are zero; a trained rule's are not, and the cost must not
  depend on it, so every weight is drawn (seeded) at a trained-looking scale.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import l2l  # pylint: disable=g-import-not-at-top
  import nets  # pylint: disable=g-import-not-at-top
  rule = nets.PerParameterMLP(seed=seed, fused=fused, **options)
  rng = np.random.default_rng(seed)
  for w, b in [*rule.layers, *rule.schedule_layers]:
    w.assign(rng.normal(size=w.shape).astype(np.float32) / np.sqrt(w.shape[0]))
    b.assign(rng.normal(size=b.shape).astype(np.float32) * 0.1)
  return l2l.LearnedOptimizer(rule, num_steps=1000)


def recommended_options() -> dict:
  """The `nets.PerParameterMLP` options of the recommended shipped optimizer, but seed and fused."""
  import l2l  # pylint: disable=g-import-not-at-top
  options = dict(l2l.pretrained().config["net_options"])
  for key in ("seed", "fused"):
    options.pop(key, None)
  return options


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=20, help="timed rounds")
  parser.add_argument("--warmup", type=int, default=2, help="untimed rounds")
  parser.add_argument("--repeats", type=int, default=3, help="blocks of --steps timed rounds")
  args = parser.parse_args(argv)
  import sonnet as snt  # pylint: disable=g-import-not-at-top
  steps = {"l2l": build_step(learned_optimizer()),
           "adam": build_step(snt.optimizers.Adam(1e-3)),
           "no_update": build_step(None),
           "mlp_rule": build_step(mlp_rule_optimizer(fused=True)),
           "mlp_rule_reference": build_step(mlp_rule_optimizer(fused=False)),
           "mlp_rule_tensor": build_step(mlp_rule_optimizer(fused=True, tensor_features=True)),
           "mlp_rule_adaptive": build_step(mlp_rule_optimizer(fused=True, step_adaptation=0.03)),
           "mlp_rule_recommended": build_step(mlp_rule_optimizer(fused=True,
                                                                 **recommended_options()))}
  times = {name: [] for name in steps}
  for round_ in range(args.warmup + args.steps * args.repeats):
    for name, step in steps.items():
      start = time.perf_counter()
      float(step())  # Waits for the result.
      if round_ >= args.warmup:
        times[name].append(time.perf_counter() - start)
  ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}

  def block_ratios(name: str) -> List[float]:
    blocks = [slice(i * args.steps, (i + 1) * args.steps) for i in range(args.repeats)]
    return [statistics.median(times[name][b]) / statistics.median(times["adam"][b])
            for b in blocks]

  fused, reference = block_ratios("mlp_rule"), block_ratios("mlp_rule_reference")
  print(f"case=apply_1m params={steps['l2l'].num_params} batch={BATCH} "
        f"ms_per_step_l2l={ms['l2l']:.2f} ms_per_step_adam={ms['adam']:.2f} "
        f"ratio_vs_adam={ms['l2l'] / ms['adam']:.2f} ms_per_step_no_update={ms['no_update']:.2f} "
        f"update_ratio_vs_adam="
        f"{(ms['l2l'] - ms['no_update']) / max(ms['adam'] - ms['no_update'], 1e-3):.1f}",
        flush=True)
  print(f"case=apply_1m_mlp_rule params={steps['mlp_rule'].num_params} batch={BATCH} "
        f"repeats={args.repeats} ms_per_step_fused={ms['mlp_rule']:.2f} "
        f"ms_per_step_reference={ms['mlp_rule_reference']:.2f} ms_per_step_adam={ms['adam']:.2f} "
        f"ratio_vs_adam={statistics.median(fused):.2f} ratio_vs_adam_min={min(fused):.2f} "
        f"ratio_vs_adam_max={max(fused):.2f} "
        f"reference_ratio_vs_adam={statistics.median(reference):.2f} "
        f"reference_ratio_vs_adam_min={min(reference):.2f} "
        f"reference_ratio_vs_adam_max={max(reference):.2f} update_ratio_vs_adam="
        f"{(ms['mlp_rule'] - ms['no_update']) / max(ms['adam'] - ms['no_update'], 1e-3):.1f}",
        flush=True)
  tensor = block_ratios("mlp_rule_tensor")
  print(f"case=apply_1m_mlp_rule_tensor_features ms_per_step={ms['mlp_rule_tensor']:.2f} "
        f"ms_per_step_adam={ms['adam']:.2f} ratio_vs_adam={statistics.median(tensor):.2f} "
        f"ratio_vs_adam_min={min(tensor):.2f} ratio_vs_adam_max={max(tensor):.2f}", flush=True)
  adaptive = block_ratios("mlp_rule_adaptive")
  print(f"case=apply_1m_mlp_rule_step_adaptation ms_per_step={ms['mlp_rule_adaptive']:.2f} "
        f"ms_per_step_adam={ms['adam']:.2f} ratio_vs_adam={statistics.median(adaptive):.2f} "
        f"ratio_vs_adam_min={min(adaptive):.2f} ratio_vs_adam_max={max(adaptive):.2f}", flush=True)
  shipped = block_ratios("mlp_rule_recommended")
  from l2l.versatile import zoo  # pylint: disable=g-import-not-at-top
  print(f"case=apply_1m_mlp_rule_recommended name={zoo.recommended()} "
        f"ms_per_step={ms['mlp_rule_recommended']:.2f} ms_per_step_adam={ms['adam']:.2f} "
        f"ratio_vs_adam={statistics.median(shipped):.2f} ratio_vs_adam_min={min(shipped):.2f} "
        f"ratio_vs_adam_max={max(shipped):.2f}", flush=True)


if __name__ == "__main__":
  main()
