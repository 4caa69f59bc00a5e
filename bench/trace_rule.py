"""A shipped learned optimizer stepped by hand on one suite task, step by step.

For finding out *why* a run blows up or stalls: every `--every` steps it prints the mean and
largest minibatch loss, the step-size adaptation's log-factor a (0 without adaptation), the
largest relative update |u| / |p| over the tensors (huge in the first steps for biases that
start at zero) and the gradient norm, and it saves every
step's values to `--save` (a .npy of [runs, steps, 4 + tensors]: loss, a, gradient norm, the
largest relative update, then each tensor's relative update).

    python -m bench.trace_rule --task=digits_mlp_relu_5x32 --steps=2000 --runs=2
    python -m bench.trace_rule --task=digits_conv_8x16 --split=TEST --skip=1 \\
        --options='{"quiet_gate": 0.1}'

`--split` and `--skip` choose the instances (the evaluation's TEST runs are instances 0, 1, ...
of the TEST stream; the minibatch order differs from evaluate.py's, so a run is an instance of
the same distribution, not a replay). `--options` sets attributes of the loaded rule
(`nets.PerParameterMLP` options such as quiet_gate, step_adaptation is fixed by the weights).
"""

import argparse
import json
import sys

SPLITS = ("TRAIN", "VALIDATION", "TUNE", "TEST")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.trace_rule", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", required=True,
                      help="a task of any suite, e.g. digits_conv_8x16 (training tasks unrescaled)")
  parser.add_argument("--optimizer", default=None, help="a shipped optimizer (default: l2l's)")
  parser.add_argument("--split", default="TEST", choices=SPLITS)
  parser.add_argument("--skip", type=int, default=0, help="instances of the stream to skip")
  parser.add_argument("--runs", type=int, default=1)
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--every", type=int, default=50)
  parser.add_argument("--options", default="{}", help="JSON: attributes set on the rule")
  parser.add_argument("--save", default=None, help="write the per-step values here (.npy)")
  args = parser.parse_args(argv)
  if min(args.runs, args.steps, args.every) < 1 or args.skip < 0:
    parser.error("--runs, --steps and --every must be positive, --skip >= 0")
  try:
    options = json.loads(args.options)
    assert isinstance(options, dict)
  except (ValueError, AssertionError):
    parser.error(f"--options must be a JSON object, got {args.options!r}")
  from l2l import cli  # pylint: disable=g-import-not-at-top
  cli.start_tensorflow()
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import l2l  # pylint: disable=g-import-not-at-top
  from l2l import evaluation  # pylint: disable=g-import-not-at-top
  from l2l.capture import Problem  # pylint: disable=g-import-not-at-top
  from problems.suite import SUITES, suite  # pylint: disable=g-import-not-at-top
  tasks = {}
  for name in ("held_out", "train_conv_plain", *SUITES):  # Unrescaled tasks first.
    for task in suite(name):
      tasks.setdefault(task.name, task)
  if args.task not in tasks:
    parser.error(f"--task: unknown task {args.task!r}; one of {sorted(tasks)}")
  try:
    rule = l2l.pretrained(args.optimizer)
  except ValueError as e:
    parser.error(f"--optimizer: {e}")
  for key, value in options.items():
    if not hasattr(rule, key):
      parser.error(f"--options: the rule has no option {key!r}")
    setattr(rule, key, value)
  seed = evaluation.instance_seed(0, getattr(evaluation, args.split))
  problem = Problem(tasks[args.task].make_problem(seed))
  for _ in range(args.skip):
    problem.initial_values()
  traces = []
  for run in range(args.runs):
    params, constants = problem.initial_values()
    state = rule.initial_state(params, num_steps=args.steps)

    @tf.function
    def step(params, state):
      with tf.GradientTape() as tape:
        tape.watch(params)
        loss = problem.loss(params, constants)
      grads = tape.gradient(loss, params)
      updates, state = rule(grads, state, params=params, loss=loss)
      relative = tf.stack([tf.norm(u) / (tf.norm(p) + 1e-12) for u, p in zip(updates, params)])
      norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
      log_scale = state.log_scale[0] if hasattr(state, "log_scale") else tf.constant(0.)
      return ([p + u for p, u in zip(params, updates)], state,
              tf.concat([[loss, tf.cast(log_scale, loss.dtype), norm,
                          tf.reduce_max(relative)], relative], 0))

    rows = []
    print(f"run {run}: {args.task}, {args.split} instance {args.skip + run}, {args.steps} steps")
    for t in range(args.steps):
      params, state, values = step(params, state)
      rows.append(values.numpy())
      if (t + 1) % args.every == 0:
        r = np.array(rows[-args.every:])
        print(f"{t + 1:6d} loss {r[:, 0].mean():.2e} max {r[:, 0].max():.2e} a {r[-1, 1]:+.2f} "
              f"|u|/|p| max {r[:, 3].max():.2e} |g| {r[:, 2].mean():.2e}", flush=True)
    traces.append(np.array(rows))
  if args.save:
    np.save(args.save, np.stack(traces))


if __name__ == "__main__":
  sys.exit(main())
