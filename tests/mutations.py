"""Mutation check: plants realistic defects in a copy of the project and runs the tests that
should catch each one.

    python -m tests.mutations                 # every defect, its mapped test files (~15 min)
    python -m tests.mutations --only M1,T1    # some of them
    python -m tests.mutations --full         # the whole suite per defect (slow: hours)
    python -m tests.mutations --list          # the defects and their test files

For people, not for CI (pytest collects only `*_test.py`, so not this file). Each defect is one
textual replacement in one library file, planted alone in a fresh copy of the working tree
(without .git); the tests run there with `pytest -x`, and the table says whether a test failed
and which one first. A defect whose original text is no longer in the file (the code changed)
is reported as "n/a" rather than silently passing. Exit status 1 if any defect was not caught.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, NamedTuple, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_IGNORE = shutil.ignore_patterns(".git", ".venv", ".pytest_cache", "__pycache__", ".benchmarks",
                                 "*.egg-info")


class Mutation(NamedTuple):
  id: str
  description: str
  path: str              # Relative to the repo root.
  old: str               # Must occur exactly once in the file.
  new: str
  tests: Tuple[str, ...]  # Test files (relative to tests/) expected to catch it.


MUTATIONS: Sequence[Mutation] = (
    # The five defects of issue 19.
    Mutation("M1", "MetaLoss ignores second_derivatives", "l2l/meta_optimizer.py",
             "self.second_derivatives = bool(second_derivatives)",
             "self.second_derivatives = False",
             ("meta_loss_reference_test.py",)),
    Mutation("M2", "meta-gradient x7 before the Adam step", "l2l/meta_optimizer.py",
             "lambda: self.optimizer.apply(grads, variables)",
             "lambda: self.optimizer.apply([7. * g for g in grads], variables)",
             ("meta_loss_reference_test.py", "training_test.py")),
    Mutation("M3", "MetaLoss ignores segment_length", "l2l/meta_optimizer.py",
             "self.objective,\n                               self.segment_length, self._initial_loss,",
             "self.objective,\n                               None, self._initial_loss,",
             ("meta_loss_reference_test.py",)),
    Mutation("M4", "tune_learning_rate tunes on the TEST instances", "l2l/evaluation.py",
             "make_problem(instance_seed(seed, TUNE))",
             "make_problem(instance_seed(seed, TEST))",
             ("evaluation_reference_test.py",)),
    Mutation("M5", "LearnedOptimizer.apply does not carry the rule's state",
             "l2l/learned_optimizer.py",
             "      tf.nest.map_structure(lambda var, value: var.assign(value), state_vars, state)",
             "      pass  # The state is not stored.",
             ("meta_loss_reference_test.py", "learned_optimizer_test.py")),
    Mutation("M5b", "M5 for learned (LSTM) rules only; hand-designed ones keep their state",
             "l2l/learned_optimizer.py",
             "      tf.nest.map_structure(lambda var, value: var.assign(value), state_vars, state)",
             "      if \"LSTM\" not in type(self.nets[netid]).__name__:\n"
             "        tf.nest.map_structure(lambda var, value: var.assign(value), state_vars, state)",
             ("meta_loss_reference_test.py",)),
    # The two defects the suite missed besides.
    Mutation("T1", "train.py keeps the WORST validation score as best", "l2l/training.py",
             "improved = math.isfinite(score) and score < best and score < untrained",
             "improved = math.isfinite(score) and (score > best or math.isinf(best))",
             ("training_validation_test.py", "resume_test.py")),
    Mutation("E1", "evaluate.py's standard error not divided by sqrt(n)", "l2l/evaluation.py",
             "sem = np.std(final, ddof=1) / math.sqrt(len(final))",
             "sem = np.std(final, ddof=1)",
             ("evaluation_reference_test.py",)),
    # Further defects: the learned-optimizer engine.
    Mutation("U1", "unroll subtracts the rule's update (x - u)", "l2l/unroll.py",
             "params[i] = params[i] + update", "params[i] = params[i] - update",
             ("unroll_test.py",)),
    Mutation("U2", "meta-loss sums f(x_0..x_T-1) instead of f(x_1..x_T)", "l2l/unroll.py",
             "return UnrollResult(tf.reduce_sum(weights * losses[1:]), losses, state)",
             "return UnrollResult(tf.reduce_sum(weights * losses[:-1]), losses, state)",
             ("unroll_test.py",)),
    Mutation("U3", "first-order unroll drops the upstream gradient of f(x_t)", "l2l/unroll.py",
             "return [tf.cast(d_loss, g.dtype) * g for g in grads]",
             "return [g for g in grads]",
             ("unroll_test.py",)),
    Mutation("U4", "checkpointed segments give the nets' weights zero gradients",
             "l2l/recompute.py",
             "return input_grads, grads[len(sources):]",
             "return input_grads, [tf.zeros_like(g) for g in grads[len(sources):]]",
             ("unroll_test.py",)),
    Mutation("U5", "MetaLoss.reset() draws no new instance (only zeroes the count)",
             "l2l/meta_optimizer.py",
             "    self._reset()\n", "    self._num_unrolls.assign(0)\n",
             ("meta_optimizer_test.py",)),
    Mutation("U6", "MetaMinimize ignores max_grad_norm", "l2l/meta_optimizer.py",
             "        grads, _ = tf.clip_by_global_norm(grads, self.max_grad_norm)\n"
             "      apply_if_finite(",
             "        _ = tf.clip_by_global_norm(grads, self.max_grad_norm)\n"
             "      apply_if_finite(",
             ("meta_loss_reference_test.py", "training_test.py")),
    Mutation("U7", "LearnedOptimizer moves variables whose gradient is None",
             "l2l/learned_optimizer.py",
             "if updates[i] is not None:", "if True:",
             ("learned_optimizer_test.py",)),
    # PES.
    Mutation("P1", "PES estimate has the wrong sign (L- - L+)", "l2l/es.py",
             "((losses_plus - losses_minus) / (2. * std ** 2))",
             "((losses_minus - losses_plus) / (2. * std ** 2))",
             ("es_test.py",)),
    Mutation("P2", "PES does not accumulate its perturbations (plain truncated ES)", "l2l/es.py",
             "weights = self._xi + eps", "weights = eps",
             ("es_test.py",)),
    Mutation("P3", "PES divides by std instead of std^2", "l2l/es.py",
             "(2. * std ** 2))", "(2. * std))",
             ("es_test.py",)),
    # The MAML family.
    Mutation("A1", "MAML inner step climbs the support loss (theta + lr g)", "l2l/meta_learning/maml.py",
             "new[name] = params[name] - _lr_for(lr, name, g) * g",
             "new[name] = params[name] + _lr_for(lr, name, g) * g",
             ("maml_test.py",)),
    Mutation("A2", "MAML ignores first_order (always second order)", "l2l/meta_learning/maml.py",
             "g = tf.stop_gradient(grads[name]) if first_order else grads[name]",
             "g = grads[name]",
             ("maml_test.py",)),
    Mutation("A3", "Reptile moves away from the adapted parameters", "l2l/meta_learning/maml.py",
             "tf.convert_to_tensor(self.module_params[n]) - learner.params[n]",
             "learner.params[n] - tf.convert_to_tensor(self.module_params[n])",
             ("maml_test.py", "meta_trainer_test.py")),
    Mutation("A4", "MetaTrainer sums the task meta-gradients instead of averaging",
             "l2l/meta_learning/meta_trainer.py",
             "by_name = {k: tf.reduce_mean(g, axis=0)", "by_name = {k: tf.reduce_sum(g, axis=0)",
             ("meta_trainer_test.py", "imaml_test.py")),
    Mutation("A5", "MetaTrainer steps the inner rule's variables with the meta-optimizer",
             "l2l/meta_learning/meta_trainer.py", "(rule_optimizer, rule)]",
             "(meta_optimizer, rule)]", ("meta_trainer_test.py", "fewshot_imaml_test.py")),
    Mutation("A6", "MetaSGD-ANIL adapts (and learns rates for) every layer, not the head",
             "l2l/meta_learning/fewshot_config.py",
             "return maml_lib.MetaSGD(model, lr, c.inner_steps, adapt_names=head)",
             "return maml_lib.MetaSGD(model, lr, c.inner_steps)", ("fewshot_imaml_test.py",)),
    Mutation("A7", "ANIL's linear head input keeps the ReLU before the head",
             "l2l/meta_learning/fewshot.py", "activate_final=False, name=\"body\")",
             "activate_final=True, name=\"body\")", ("anil_head_input_test.py",)),
    Mutation("A8", "a checkpoint of another architecture is resumed half-restored",
             "l2l/meta_learning/fewshot.py", "latest).assert_existing_objects_matched()",
             "latest)", ("anil_head_input_test.py",)),
    # Training and evaluation.
    Mutation("T2", "learning-rate schedule one epoch ahead", "l2l/training.py",
             "(epoch - 1) / config.num_epochs))", "epoch / config.num_epochs))",
             ("resume_test.py", "training_test.py")),
    Mutation("T3", "checkpoint leaves out the instance generators", "l2l/training.py",
             "best_epoch=best_epoch_var, untrained=untrained_var, generators=generators())",
             "best_epoch=best_epoch_var, untrained=untrained_var, generators=[])",
             ("resume_test.py",)),
    Mutation("T4", "validation runs on the TRAIN instances", "l2l/training.py",
             "evaluation.instance_seed(config.seed, evaluation.VALIDATION))",
             "evaluation.instance_seed(config.seed, evaluation.TRAIN))",
             ("training_validation_test.py",)),
    Mutation("E2", "evaluate scores baselines on the TUNE instances", "l2l/evaluation.py",
             "test_seed = instance_seed(seed, TEST)", "test_seed = instance_seed(seed, TUNE)",
             ("evaluation_reference_test.py",)),
    Mutation("E3", "tuning scores the mean over the curve, not the final loss",
             "l2l/evaluation.py",
             "scores[lr] = curves.log10_final_loss_mean",
             "scores[lr] = math.log10(float(np.mean(curves.losses)))",
             ("evaluation_reference_test.py",)),
    # The versatile rule's online step-size adaptation (nets/mlp_rule.py).
    Mutation("S1", "adaptation signal reads the momentum at 0.99, not Adam's 0.9",
             "nets/mlp_rule.py", "[::stride, ADAM_MOMENTUM]\n", "[::stride, ADAM_MOMENTUM + 1]\n",
             ("step_adaptation_test.py",)),
    Mutation("S2", "one factor for the model weighs strided tensors by their sample only",
             "nets/mlp_rule.py", "dots.append(stride * dot)",
             "dots.append(dot)", ("step_adaptation_test.py",)),
    Mutation("S3", "adaptation moves the step size the wrong way", "nets/mlp_rule.py",
             "log_scale + rate * signal", "log_scale - rate * signal",
             ("step_adaptation_test.py",)),
    Mutation("S4", "the fused op ignores the adaptation's factors", "nets/mlp_rule_fused.py",
             "schedule_scale, use_tensor_features, size_scale)",
             "schedule_scale, use_tensor_features, None)",
             ("step_adaptation_test.py",)),
    Mutation("S5", "the cosine's sums of unscaled vectors (underflow at zero loss)",
             "nets/mlp_rule.py", "  x, y = _unit_scaled(x), _unit_scaled(y)\n", "\n",
             ("step_adaptation_test.py",)),
    Mutation("Q1", "the fused op ignores the quiet gate's factors", "nets/mlp_rule_fused.py",
             "sizes[i], direction_factor[i], ws", "sizes[i], 1., ws", ("quiet_gate_test.py",)),
    Mutation("H1", "one intra-op thread leaves the fused LSTM ops on one core", "nets/lstm.py",
             "inter_op_threads=inter if inter > 0 else available_cpus()", "inter_op_threads=1",
             ("threads_test.py",)),
    Mutation("H2", "the fused gradient's 256-bit last chunk also takes chunks of 9-12 columns "
             "(drops their last input gradients)", "nets/lstm_kernels.cc",
             "K % kLanes != 0 && K % kLanes <= 8", "K % kLanes != 0 && K % kLanes <= 12",
             ("fast_lstm_test.py",)),
    Mutation("H3", "the fused kernels pin vectors in registers on every CPU (no build without "
             "AVX-512: the ops fall back to the reference there)", "nets/lstm_kernels.cc",
             "#ifdef __AVX512F__  // Without AVX-512", "#if 1  // Without AVX-512",
             ("kernel_portability_test.py",)),
    Mutation("H4", "the fused forward's whole tanh chunks (gate j) take the logistic instead",
             "nets/lstm_kernels.cc", "        ar[j] = (y + y) - 1.0f;", "        ar[j] = y;",
             ("fast_lstm_test.py",)),
    Mutation("H5", "the fused logistic's polynomial loses its cubic term (e^r off by ~r^3 / 6)",
             "nets/lstm_kernels.cc", "  p = p * r + 1.6666665459e-1f;", "  p = p * r;",
             ("fast_lstm_test.py",)),
    # The optimizee's loss and gradient as one XLA call (l2l/loss_gradient.py).
    Mutation("L1", "the XLA path's gradient is scaled (f and grad f computed apart, one wrong)",
             "l2l/loss_gradient.py",
             "    return unroll_lib.value_and_grads(lambda p: self.problem.loss(p, constants), params)",
             "    loss, grads = unroll_lib.value_and_grads(\n"
             "        lambda p: self.problem.loss(p, constants), params)\n"
             "    return loss, [1.001 * g for g in grads]",
             ("loss_gradient_test.py",)),
    Mutation("L2", "compile_loss='auto' decides per process (a resumed run may take the other "
             "path)", "l2l/loss_gradient.py",
             "  data = _read()\n  data[key] =", "  return\n  data = _read()\n  data[key] =",
             ("loss_gradient_test.py",)),
)


class Outcome(NamedTuple):
  mutation: Mutation
  status: str            # "caught", "MISSED", "n/a" (text not found), "error" (no test ran)
  test: str              # The first failing test, or a note.
  seconds: float


def copy_project(destination: str) -> str:
  root = os.path.join(destination, "repo")
  shutil.copytree(REPO, root, ignore=_IGNORE)
  return root


def plant(root: str, mutation: Mutation) -> Optional[str]:
  """Applies `mutation` in the copy at `root`; returns a reason if it cannot."""
  path = os.path.join(root, mutation.path)
  if not os.path.isfile(path):
    return f"{mutation.path} not found"
  with open(path) as f:
    source = f.read()
  count = source.count(mutation.old)
  if count != 1:
    return f"original text found {count} times in {mutation.path}"
  mutated = source.replace(mutation.old, mutation.new)
  if path.endswith(".py"):
    try:
      compile(mutated, path, "exec")
    except SyntaxError as e:
      return f"mutated {mutation.path} does not compile: {e}"
  with open(path, "w") as f:
    f.write(mutated)
  return None


def first_failure(output: str) -> Optional[str]:
  match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)
  return match.group(1) if match else None


def run_tests(root: str, tests: Sequence[str], timeout: float) -> Tuple[int, str]:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
  command = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider",
             *tests]
  try:
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
  except subprocess.TimeoutExpired:
    return -1, "timeout"
  return done.returncode, done.stdout + done.stderr


def check(mutation: Mutation, full: bool, timeout: float) -> Outcome:
  start = time.time()
  with tempfile.TemporaryDirectory(prefix="l2l_mutation_") as tmp:
    root = copy_project(tmp)
    reason = plant(root, mutation)
    if reason:
      return Outcome(mutation, "n/a", reason, time.time() - start)
    tests = ["tests"] if full else [os.path.join("tests", t) for t in mutation.tests]
    code, output = run_tests(root, tests, timeout)
  seconds = time.time() - start
  failed = first_failure(output)
  if code == 1 and failed:
    return Outcome(mutation, "caught", failed, seconds)
  if code == 0:
    return Outcome(mutation, "MISSED", "all tests passed", seconds)
  if failed:  # A collection error names the file that could not be imported.
    return Outcome(mutation, "caught", f"{failed} (error)", seconds)
  return Outcome(mutation, "error", f"pytest exit {code}: {output.strip()[-300:]}", seconds)


def table(outcomes: Sequence[Outcome]) -> str:
  rows = [("id", "defect", "caught?", "first failing test", "s")]
  rows += [(o.mutation.id, o.mutation.description, o.status, o.test, f"{o.seconds:.0f}")
           for o in outcomes]
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  lines = []
  for k, row in enumerate(rows):
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row[:4], widths))
                 + f" | {row[4]:>4} |")
    if k == 0:
      lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|------|")
  return "\n".join(lines)


def check_copy_imports_itself() -> None:
  """The tests in a copy must import the copy's packages, not an installed (editable) l2l."""
  with tempfile.TemporaryDirectory(prefix="l2l_mutation_") as tmp:
    root = copy_project(tmp)
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", "import l2l, nets, problems; "
                          "print(l2l.__file__, nets.__file__, problems.__file__)"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode or any(not p.startswith(root) for p in out.stdout.split()):
      raise SystemExit(f"the copy does not import its own packages: {out.stdout}{out.stderr}")


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="comma-separated defect ids (default: all)")
  parser.add_argument("--full", action="store_true",
                      help="run the whole suite per defect instead of its mapped test files")
  parser.add_argument("--list", action="store_true", help="list the defects and exit")
  parser.add_argument("--timeout", type=float, default=1800., help="seconds per defect")
  args = parser.parse_args(argv)
  chosen = list(MUTATIONS)
  if args.only:
    ids = args.only.split(",")
    unknown = sorted(set(ids) - {m.id for m in MUTATIONS})
    if unknown:
      parser.error(f"unknown defect ids {unknown}; known: {[m.id for m in MUTATIONS]}")
    chosen = [m for m in MUTATIONS if m.id in ids]
  if args.list:
    for m in chosen:
      print(f"{m.id:<3} {m.description}  [{m.path}; {', '.join(m.tests)}]")
    return 0
  check_copy_imports_itself()
  outcomes = []
  for mutation in chosen:
    outcome = check(mutation, args.full, args.timeout)
    print(f"{mutation.id}: {outcome.status} ({outcome.test}, {outcome.seconds:.0f}s)",
          flush=True)
    outcomes.append(outcome)
  print()
  print(table(outcomes))
  missed = [o.mutation.id for o in outcomes if o.status != "caught"]
  print(f"\n{len(outcomes) - len(missed)}/{len(outcomes)} defects caught"
        + (f"; not caught: {', '.join(missed)}" if missed else ""))
  return 1 if missed else 0


if __name__ == "__main__":
  sys.exit(main())
