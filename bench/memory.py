"""Peak memory of a MAML meta-gradient against the number of inner steps: plain backprop through
the inner loop, the same checkpointed (segments recomputed in the backward pass), and iMAML.

    python bench/memory.py                       # the table: 10, 100, 500 inner steps
    python bench/memory.py --conv --budget_gib=10  # a conv net whose plain unroll does not fit
    python bench/memory.py --l2o --steps_list=10,100  # a learned optimizer's unroll

Each configuration runs in its own subprocess, which builds the model, takes one warm-up
meta-gradient with 1 inner step (kernels, allocator pools), reads its peak resident set size
(`resource.getrusage(...).ru_maxrss`) as the baseline, then takes the meta-gradient of the
configuration and reads the peak again. "extra" is the difference: the memory the meta-gradient
itself needed. Everything runs eagerly: the inner loop reads no watched variable, so the
checkpointed and implicit forms save memory eagerly too.

`--conv`: second-order MAML with 100 inner steps on a small conv net (3 layers of 2 3x3
filters: few channels keep the compute per byte of activations low on a CPU) over a batch of
640 128x128 RGB images, under an address-space limit (`resource.setrlimit(RLIMIT_AS)`) of
`--budget_gib` (default 10) in the subprocess, so that a run that does not fit fails with an
allocation error instead of exhausting the machine. Plain is also measured at 2 and 4 inner
steps (no limit) and its need at 100 steps extrapolated linearly.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("plain", "checkpointed", "imaml")


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.  # Linux: KiB.


def child(args: argparse.Namespace) -> dict:
  """One configuration; returns its measurements."""
  if args.budget_gib:
    limit = int(args.budget_gib * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  sys.path.insert(0, REPO)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import sonnet as snt  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import l2l  # pylint: disable=g-import-not-at-top

  rng = np.random.RandomState(0)
  tf.random.set_seed(0)
  if args.l2o:
    return _l2o_child(args, tf, l2l)
  if args.conv:
    model = snt.Sequential([
        snt.Conv2D(args.channels, 3, name="conv_0"), tf.nn.relu,
        snt.Conv2D(args.channels, 3, name="conv_1"), tf.nn.relu,
        snt.Conv2D(args.channels, 3, name="conv_2"), tf.nn.relu,
        lambda h: tf.reduce_mean(h, axis=[1, 2]),
        snt.Linear(5, name="head")], name="convnet")
    x = rng.rand(args.batch, args.image_size, args.image_size, 3).astype(np.float32)
    y = rng.randint(0, 5, args.batch).astype(np.int32)
    loss_fn = lambda logits, labels: tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
  else:
    model = snt.nets.MLP([args.hidden, args.hidden, 1], activation=tf.tanh, name="mlp")
    x = rng.uniform(-5, 5, [args.batch, 1]).astype(np.float32)
    y = np.sin(x)
    loss_fn = lambda p, t: tf.reduce_mean(tf.square(p - t))
  model(x[:1])
  half = args.batch // 2

  def build(steps):
    if args.method == "plain":
      return l2l.MAML(model, args.inner_lr, steps)
    if args.method == "checkpointed":
      return l2l.CheckpointedMAML(model, args.inner_lr, steps, args.segment_length)
    return l2l.IMAML(model, args.inner_lr, steps, lam=1.0, cg_steps=5, damping=0.1)

  def meta_gradient(steps):
    algorithm = build(steps)
    with tf.GradientTape() as tape:
      learner = algorithm.clone().adapt_on(loss_fn, x[:half], y[:half])
      loss = loss_fn(learner(x[half:]), y[half:])
    grads = tape.gradient(loss, algorithm.trainable_variables)
    return float(loss), float(tf.linalg.global_norm(grads))

  meta_gradient(1)
  baseline = _peak_mib()
  start = time.time()
  try:
    loss, norm = meta_gradient(args.steps)
    status = "ok"
  except (tf.errors.ResourceExhaustedError, MemoryError, tf.errors.InternalError) as e:
    loss, norm, status = float("nan"), float("nan"), f"failed: {type(e).__name__}"
  return {"method": args.method, "steps": args.steps, "baseline_mib": baseline,
          "peak_mib": _peak_mib(), "extra_mib": _peak_mib() - baseline,
          "seconds": time.time() - start, "meta_loss": loss, "grad_norm": norm,
          "status": status, "budget_gib": args.budget_gib}


def _l2o_child(args: argparse.Namespace, tf, l2l) -> dict:
  """A learned optimizer's meta-gradient through `args.steps` steps, under tf.function."""
  import nets  # pylint: disable=g-import-not-at-top
  from l2l import unroll as unroll_lib  # pylint: disable=g-import-not-at-top
  n = args.l2o_dims
  target = tf.random.stateless_normal([n], seed=[0, 0])
  net = nets.CoordinateWiseDeepLSTM(layers=(4,), preprocess_name=None, scale=0.01, seed=0)
  groups = [l2l.Group(net, (0,))]
  segment = None if args.method == "plain" else args.segment_length

  @tf.function(autograph=False)
  def meta_gradient(steps):
    state = unroll_lib.initial_state(groups, [tf.zeros([n])])
    with tf.GradientTape() as tape:
      result = unroll_lib.unroll(lambda p: tf.reduce_sum(tf.square(p[0] - target)), groups,
                                 state, steps, segment_length=segment, use_while_loop=True)
    return result.meta_loss, tape.gradient(result.meta_loss, net.trainable_variables)

  meta_gradient(1)
  baseline = _peak_mib()
  start = time.time()
  loss, grads = meta_gradient(args.steps)
  return {"method": args.method, "steps": args.steps, "baseline_mib": baseline,
          "peak_mib": _peak_mib(), "extra_mib": _peak_mib() - baseline,
          "seconds": time.time() - start, "meta_loss": float(loss),
          "grad_norm": float(tf.linalg.global_norm(grads)), "status": "ok", "budget_gib": 0.0}


def run_child(method: str, steps: int, args: argparse.Namespace, conv: bool = False,
              budget_gib: float = 0.0) -> dict:
  segment_length = args.conv_segment_length if conv else args.segment_length
  command = [sys.executable, os.path.abspath(__file__), "--child", f"--method={method}",
             f"--steps={steps}", f"--segment_length={segment_length}",
             f"--batch={args.conv_batch if conv else args.batch}", f"--hidden={args.hidden}",
             f"--inner_lr={args.conv_inner_lr if conv else args.inner_lr}",
             f"--budget_gib={budget_gib}", f"--image_size={args.image_size}",
             f"--channels={args.channels}", f"--l2o_dims={args.l2o_dims}"
             ] + (["--conv"] if conv else []) + (["--l2o"] if args.l2o else [])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(command, capture_output=True, text=True, env=env)
  lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
  if result.returncode != 0 or not lines:
    # An allocation failure outside TF's error handling (e.g. std::bad_alloc) kills the child.
    tail = (result.stderr.strip().splitlines() or ["?"])[-1][:160]
    return {"method": method, "steps": steps, "status": f"failed (exit {result.returncode}): "
            f"{tail}", "budget_gib": budget_gib}
  return json.loads(lines[-1])


def _row(r: dict) -> str:
  if "peak_mib" not in r:
    return f"| {r['method']} | {r['steps']} | - | - | - | {r['status']} |"
  return (f"| {r['method']} | {r['steps']} | {r['peak_mib']:.0f} | {r['extra_mib']:.0f} | "
          f"{r['seconds']:.1f} | {r['status']} (meta-loss {r['meta_loss']:.4g}) |")


HEADER = ("| method | inner steps | peak RSS MiB | extra MiB | seconds | status |\n"
          "|---|---|---|---|---|---|")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--method", choices=METHODS, default="plain")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--steps_list", default="10,100,500")
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--segment_length", type=int, default=10)
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--inner_lr", type=float, default=0.01)
  parser.add_argument("--conv", action="store_true")
  parser.add_argument("--conv_batch", type=int, default=640)
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--channels", type=int, default=2)
  parser.add_argument("--conv_segment_length", type=int, default=5)
  parser.add_argument("--conv_inner_lr", type=float, default=0.01)
  parser.add_argument("--conv_steps", type=int, default=100)
  parser.add_argument("--budget_gib", type=float, default=0.0)
  parser.add_argument("--l2o", action="store_true")
  parser.add_argument("--l2o_dims", type=int, default=250_000)
  parser.add_argument("--output_json", default=None)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args)))
    return
  rows = []
  if args.conv:
    budget = args.budget_gib or 10.0
    print(f"MAML on a conv net (3 conv layers of {args.channels} 3x3 filters, {args.image_size}x"
          f"{args.image_size}x3 inputs, batch {args.conv_batch}, support = query = half), "
          f"second order; checkpointed segments of {args.conv_segment_length}; address-space "
          f"budget {budget:g} GiB.")
    print(HEADER)
    for steps in (2, 4):
      rows.append(run_child("plain", steps, args, conv=True))
      print(_row(rows[-1]), flush=True)
    per_step = (rows[1]["extra_mib"] - rows[0]["extra_mib"]) / 2
    need = rows[1]["peak_mib"] + per_step * (args.conv_steps - 4)
    print(f"plain: {per_step:.0f} MiB per inner step -> ~{need / 1024:.1f} GiB peak RSS at "
          f"{args.conv_steps} steps (extrapolated)", flush=True)
    for method in ("plain", "checkpointed"):
      rows.append(run_child(method, args.conv_steps, args, conv=True, budget_gib=budget))
      print(_row(rows[-1]), flush=True)
  elif args.l2o:
    print(f"Learned optimizer (coordinatewise LSTM, 4 units) on a {args.l2o_dims}-dimensional "
          f"quadratic, meta-gradient through the unroll under tf.function (while loops); "
          f"checkpointed segments of {args.segment_length}.")
    print(HEADER)
    for method in [m for m in args.methods.split(",") if m != "imaml"]:
      for steps in [int(s) for s in args.steps_list.split(",")]:
        rows.append(run_child(method, steps, args))
        print(_row(rows[-1]), flush=True)
  else:
    print(f"MAML on an MLP (1-{args.hidden}-{args.hidden}-1, tanh), batch {args.batch}, second "
          f"order; checkpointed segments of {args.segment_length}; iMAML cg_steps 5.")
    print(HEADER)
    for method in args.methods.split(","):
      for steps in [int(s) for s in args.steps_list.split(",")]:
        rows.append(run_child(method, steps, args))
        print(_row(rows[-1]), flush=True)
  if args.output_json:
    with open(args.output_json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
