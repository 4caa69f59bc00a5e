"""Meta-training throughput on a small problem: optimizee steps per second of a meta-step.

The problem is a task of the versatile optimizer's training suite, by default
`digits_mlp_tanh_32` of `problems.suite("train")`: an MLP 64-32-10 (tanh, Glorot init; 2,410
parameters) on minibatches of 64 of scikit-learn's 8x8 digits, softmax cross-entropy, each
parameter rescaled by exp(U[-1, 1]); `--task` picks another task of the suites. Every trainer
gets its own instance stream of the task (seed 0). Two rules, each meta-trained two ways, with
the sizes and options of train.py's defaults (read from `l2l.options.TrainConfig` and
`l2l.versatile.suite_training.SuiteTrainConfig` at run time; today's values below):

| rule | gradient | trainer | len_unroll | particles | as in |
|---|---|---|---|---|---|
| `lstm` | `backprop` | `MetaOptimizer.meta_minimize` | 10 | - | train.py --problem=digits |
| `lstm` | `pes` | `l2l.PESMinimize` | 10 | 8 | train.py --gradient=pes |
| `mlp_rule` | `backprop` | `MetaOptimizer.meta_minimize` | 10 | - | train.py --unroll_length |
| `mlp_rule` | `pes` | `l2l.PESMinimize` | 50 | 2 | train.py --suite |

`lstm` is the 2016 coordinatewise LSTM as train.py builds it for an MLP classifier
(`l2l.configs.MLP_LSTM`: 2x20, LogAndSign k=10, outputs x 0.1; first order, objective
`log_mean`, Adam 3e-3); `mlp_rule` the versatile per-parameter rule as train.py --suite builds it
(`l2l.versatile.suite_training.VERSATILE_NET`, fused op; objective `log`, Adam 2e-3, gradient
norm clipped at 1, PES std 0.01, the particles on common random numbers, a while loop over the
unroll). Nothing of train.py's loop but the trainer's `step()` is timed: `reset()` (a new problem
instance after each horizon, train.py's `--num_steps` 100 for `lstm` and the suite's 1,000 for
`mlp_rule`) runs between timed steps, untimed. `--len_unroll` / `--particles` override the
table for every case.

Optimizee steps per meta-step: `len_unroll` for backprop (one trajectory, forward and backward);
`2 x particles x len_unroll` for PES (every particle of the antithetic pairs runs its own
trajectory of `len_unroll` steps, forward only). `optimizee_steps_per_s` is that count over the
seconds of one meta-step.

The four trainers live in one process and are timed interleaved: after `--warmup` untimed
steps each (the first one traces), `--repeats` rounds of `--steps` timed steps of each case in
turn. Per case one line, with the median over the repeats of each repeat's median and the
repeats' min-max:

    case=meta_throughput rule=lstm gradient=backprop task=digits_mlp_tanh_32 params=2410
    len_unroll=10 particles=0 optimizee_steps_per_meta_step=10 ms_per_meta_step=...
    ms_per_meta_step_min=... ms_per_meta_step_max=... optimizee_steps_per_s=...
    optimizee_steps_per_s_min=... optimizee_steps_per_s_max=... first_step_s=... traces=1
    repeats=3 steps=10 inter_op_threads=0 intra_op_threads=1 cpus_allowed=2 cpu_model=...

`traces`: traces of the trainer's compiled step (1: the timed steps never retraced);
`inter_op_threads` / `intra_op_threads` TensorFlow's settings (0: its default);
`cpus_allowed` the CPUs the process may run on; `cpu_model` as `python -m bench`'s machine line.

    python -m bench.meta_throughput --steps 10 --repeats 3
"""

import argparse
import statistics
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

DEFAULT_TASK = "digits_mlp_tanh_32"
RULES = ("lstm", "mlp_rule")
GRADIENTS = ("backprop", "pes")


class Setting(NamedTuple):
  """How a rule is meta-trained with one gradient (the defaults of the table above)."""
  len_unroll: int
  particles: int      # Antithetic pairs (PES); 0 for backprop.
  horizon: int        # Optimizee steps per problem instance (reset() after them).


def default_settings() -> Dict[Tuple[str, str], Setting]:
  """The table above, read from train.py's defaults (`l2l.options.TrainConfig` for `lstm`,
  `l2l.versatile.suite_training.SuiteTrainConfig` for `mlp_rule`'s PES and horizon)."""
  from l2l import options  # pylint: disable=g-import-not-at-top
  from l2l.versatile import suite_training  # pylint: disable=g-import-not-at-top
  train, suite = options.TrainConfig(), suite_training.SuiteTrainConfig()
  return {
      ("lstm", "backprop"): Setting(train.unroll_length, 0, train.num_steps),
      ("lstm", "pes"): Setting(train.unroll_length, train.pes_particles, train.num_steps),
      ("mlp_rule", "backprop"): Setting(train.unroll_length, 0, suite.num_steps),
      ("mlp_rule", "pes"): Setting(suite.unroll_length, suite.pes_particles, suite.num_steps),
  }


def find_task(name: str):
  """The `problems.SuiteTask` called `name` in any of `problems.SUITES`.

  Raises:
    ValueError: no task of that name.
  """
  import problems  # pylint: disable=g-import-not-at-top
  names = []
  for tasks in problems.SUITES.values():
    for task in tasks:
      if task.name == name:
        return task
      names.append(task.name)
  raise ValueError(f"--task: no task {name!r} in problems.SUITES; expected one of "
                   f"{sorted(set(names))}")


def build(rule: str, gradient: str, make_loss, setting: Setting, seed: int = 0):
  """The trainer of `rule` x `gradient` on `make_loss` (see the module docstring's table), with
  the meta-learning rate, objective, clipping and PES std of train.py's defaults."""
  import l2l  # pylint: disable=g-import-not-at-top
  from l2l import configs  # pylint: disable=g-import-not-at-top
  from l2l import options  # pylint: disable=g-import-not-at-top
  from l2l import training  # pylint: disable=g-import-not-at-top
  from l2l.versatile import suite_training  # pylint: disable=g-import-not-at-top
  if rule == "lstm":
    config = options.TrainConfig()
    opt = l2l.MetaOptimizer(**training.seeded_net_configs({"cw": configs.MLP_LSTM}, seed))
    kwargs = {}
  else:
    config = suite_training.SuiteTrainConfig()
    opt = l2l.MetaOptimizer(**training.seeded_net_configs(
        {"rule": suite_training.VERSATILE_NET}, seed))
    kwargs = dict(num_steps=setting.horizon)
  kwargs.update(learning_rate=config.learning_rate, objective=config.objective,
                max_grad_norm=config.max_grad_norm)
  if gradient == "backprop":
    return opt.meta_minimize(make_loss, setting.len_unroll, **kwargs)
  if rule == "mlp_rule":  # As suite_training's PESMinimize.
    generators = training._find_generators(make_loss)  # pylint: disable=protected-access
    kwargs.update(use_while_loop=True, common_random_numbers=generators)
  return l2l.PESMinimize(opt, make_loss, setting.len_unroll, setting.particles,
                         std=config.pes_std, seed=seed + 1, **kwargs)


class Case:
  """One trainer and its timings."""

  def __init__(self, rule: str, gradient: str, task, setting: Setting):
    self.rule, self.gradient, self.setting, self.task = rule, gradient, setting, task.name
    self.trainer = build(rule, gradient, task.make_problem(0), setting)
    problem = (self.trainer.meta_loss.problem if gradient == "backprop" else
               self.trainer.problem)
    self.params = sum(int(s.shape.num_elements()) for s in problem.param_specs)
    self.per_step = setting.len_unroll * (2 * setting.particles if gradient == "pes" else 1)
    self.per_horizon = max(1, setting.horizon // setting.len_unroll)
    self.done = 0  # Meta-steps since the last reset.
    self.times: List[List[float]] = []
    self.first_step_s = 0.

  def step(self) -> float:
    """Runs one meta-step (after an untimed `reset()` at a horizon's end); returns seconds."""
    if self.done == self.per_horizon:
      self.trainer.reset()
      self.done = 0
    start = time.perf_counter()
    float(self.trainer.step())  # Waits for the result.
    self.done += 1
    return time.perf_counter() - start

  def line(self, machine: Dict[str, Any]) -> str:
    """The case's line; `machine` (thread settings, CPUs, CPU model) is appended to it."""
    ms = [1e3 * statistics.median(t) for t in self.times]
    rates = [1e3 * self.per_step / m for m in ms]
    traces = self.trainer._step.experimental_get_tracing_count()  # pylint: disable=protected-access
    fields = dict(
        case="meta_throughput", rule=self.rule, gradient=self.gradient, task=self.task,
        params=self.params, len_unroll=self.setting.len_unroll,
        particles=self.setting.particles, optimizee_steps_per_meta_step=self.per_step,
        ms_per_meta_step=f"{statistics.median(ms):.2f}", ms_per_meta_step_min=f"{min(ms):.2f}",
        ms_per_meta_step_max=f"{max(ms):.2f}",
        optimizee_steps_per_s=f"{statistics.median(rates):.1f}",
        optimizee_steps_per_s_min=f"{min(rates):.1f}",
        optimizee_steps_per_s_max=f"{max(rates):.1f}",
        first_step_s=f"{self.first_step_s:.2f}", traces=traces, repeats=len(self.times),
        steps=len(self.times[0]))
    fields.update(machine)
    return " ".join(f"{key}={value}" for key, value in fields.items())


def _names(option: str, text: str, allowed) -> List[str]:
  names = [n for n in text.split(",") if n]
  bad = [n for n in names if n not in allowed]
  if not names or bad:
    raise ValueError(f"{option}: expected some of {list(allowed)}, got {text!r}")
  return names


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=10, help="timed meta-steps per repeat")
  parser.add_argument("--warmup", type=int, default=2, help="untimed meta-steps (>= 1: tracing)")
  parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of --steps")
  parser.add_argument("--rules", default=",".join(RULES), help=f"some of {list(RULES)}")
  parser.add_argument("--gradients", default=",".join(GRADIENTS),
                      help=f"some of {list(GRADIENTS)}")
  parser.add_argument("--task", default=DEFAULT_TASK, help="a task of problems.SUITES")
  parser.add_argument("--len_unroll", type=int, default=0,
                      help="optimizee steps per truncation for every case (0: the table's)")
  parser.add_argument("--particles", type=int, default=0,
                      help="PES antithetic pairs for every PES case (0: the table's)")
  parser.add_argument("--inter_op_threads", type=int, default=0,
                      help="TensorFlow inter-op threads (train.py's default 0: TensorFlow's)")
  parser.add_argument("--intra_op_threads", type=int, default=1,
                      help="TensorFlow intra-op threads (train.py's default 1; 0: TensorFlow's)")
  args = parser.parse_args(argv)
  try:
    rules = _names("--rules", args.rules, RULES)
    gradients = _names("--gradients", args.gradients, GRADIENTS)
    for name in ("steps", "repeats", "warmup"):
      if getattr(args, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("len_unroll", "particles", "inter_op_threads", "intra_op_threads"):
      if getattr(args, name) < 0:
        raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
  except ValueError as e:
    parser.exit(2, f"{parser.prog}: error: {e}\n")  # One line, no usage dump.
  from l2l import cli  # pylint: disable=g-import-not-at-top
  # Before anything imports TensorFlow.
  tf = cli.start_tensorflow(args.inter_op_threads, args.intra_op_threads)
  try:
    task = find_task(args.task)
  except ValueError as e:
    parser.exit(2, f"{parser.prog}: error: {e}\n")
  from bench import __main__ as suite  # pylint: disable=g-import-not-at-top
  from bench import speed  # pylint: disable=g-import-not-at-top
  from nets import lstm  # pylint: disable=g-import-not-at-top
  tf.random.set_seed(0)
  machine = dict(inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
                 intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
                 cpus_allowed=lstm.available_cpus(),
                 cpu_model=speed.parse(suite.machine_line())["cpu_model"])
  settings = default_settings()
  cases = []
  for rule in rules:
    for gradient in gradients:
      default = settings[rule, gradient]
      setting = default._replace(
          len_unroll=args.len_unroll or default.len_unroll,
          particles=(args.particles or default.particles) if gradient == "pes" else 0)
      cases.append(Case(rule, gradient, task, setting))
  for case in cases:
    case.first_step_s = case.step()
    for _ in range(args.warmup - 1):
      case.step()
  for _ in range(args.repeats):
    for case in cases:
      case.times.append([case.step() for _ in range(args.steps)])
  for case in cases:
    print(case.line(machine), flush=True)


if __name__ == "__main__":
  main()
