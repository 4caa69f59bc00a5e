"""Meta-train and evaluate the MAML family on few-shot sinusoid regression or digits.

  python maml.py --problem=sinusoid --seeds=0,1,2 --workdir=/tmp/sinusoid
  python maml.py --problem=digits --shots=1,5 --workdir=/tmp/digits   (see bench/maml_digits.sh)

Progress goes to the log, checkpoints to --workdir (a rerun resumes), and the results table to
stdout and --workdir/results.json (with --seeds: one run per seed in --workdir/seed_<s>, and the
mean +- std table in --workdir/results_seeds.json). results.json merges: rows of methods not in
this run are kept when computed with the same settings, so `--methods=iMAML` adds iMAML to an
existing table (other settings: an error before training).

SIGINT / SIGTERM stop it after the current meta-step, checkpointed in --workdir; it says how
to resume and exits with 128 + the signal number (a rerun resumes, losing nothing). Exit
status 3: some method diverged (its row is labelled; the log has the iteration where its
meta-loss exploded); 2: a damaged checkpoint or results file.

--strategy=mirrored (local GPUs, or --cpu_devices logical CPU devices) or multi_worker
(processes of TF_CONFIG; `python -m l2l.distribute.launch --workers=2 -- maml.py
--strategy=multi_worker ...`) splits each meta-batch of --meta_batch_size tasks across the
replicas, with the results of one replica; only the chief writes to --workdir.

Quiet by default (l2l.cli): settings out of range are a one-line error found before TensorFlow
loads; TensorFlow's start-up and per-checkpoint INFO lines are hidden unless --verbosity=1.
"""

import sys

from absl import app
from absl import flags
from absl import logging

# Only modules that load without TensorFlow here: --help and usage errors stay fast. fewshot
# (TensorFlow) is imported in main(), after l2l.cli.start_tensorflow().
from l2l import cli
from l2l import distribute
from l2l.meta_learning import fewshot_config

_PROBLEM = flags.DEFINE_enum("problem", "sinusoid", list(fewshot_config.PROBLEMS),
                             "Task family.")
_METHODS = flags.DEFINE_list("methods", [], "Algorithms to compare (default: all that apply): "
                             f"some of {list(fewshot_config.METHODS)}"
                             f" + {list(fewshot_config.BASELINES)}.")
_SHOTS = flags.DEFINE_list("shots", ["5", "10", "20"], "Support examples (per class) K.")
_ITERATIONS = flags.DEFINE_integer("num_iterations", 10000, "Meta-steps per (method, K).")
_META_BATCH = flags.DEFINE_integer("meta_batch_size", 25, "Tasks per meta-step.")
_META_LR = flags.DEFINE_float("meta_lr", 1e-3, "Adam learning rate of the outer loop.")
_INNER_LR = flags.DEFINE_float("inner_lr", 0.01, "Inner-loop step size.")
_INNER_STEPS = flags.DEFINE_integer("inner_steps", 1, "Inner steps in meta-training.")
_REPTILE_STEPS = flags.DEFINE_integer("reptile_inner_steps", 5, "Reptile's inner steps.")
_EVAL_STEPS = flags.DEFINE_list("eval_steps", ["1", "10"], "Inner steps at evaluation.")
_EVAL_TASKS = flags.DEFINE_integer("num_eval_tasks", 600, "Held-out tasks.")
_K_QUERY = flags.DEFINE_integer("k_query", 10, "Query examples (per class) in meta-training.")
_HIDDEN = flags.DEFINE_list("hidden", ["40", "40"], "Hidden layer sizes of the MLP (ReLU).")
_N_WAY = flags.DEFINE_integer("n_way", 5, "Classes per task (digits).")
_SPLIT = flags.DEFINE_enum("split", "test", list(fewshot_config.SPLITS),
                           "Digits: 'test' meta-trains on 0-4 and evaluates on 5-9; "
                           "'validation' (to choose settings) meta-trains on 0-2 and evaluates "
                           "on the rotations and reflections of 3 and 4. Sinusoid: "
                           "'validation' evaluates on held-out tasks of another seed.")
_AUGMENT = flags.DEFINE_bool("augment", True, "Digits: the 8 rotations / reflections of each "
                             "meta-training digit are distinct classes.")
_FINETUNE_STEPS = flags.DEFINE_integer("finetune_steps", 100, "Digits Pretrained baseline: "
                                       "gradient steps fitting its new head.")
_FINETUNE_LR = flags.DEFINE_float("finetune_lr", 0.1, "Digits Pretrained baseline: step size "
                                  "fitting its new head.")
_IMAML_LAM = flags.DEFINE_float("imaml_lam", 10.0, "iMAML: proximal regularisation strength "
                                "lambda (> 0); about 1 / (inner lr x inner steps) lets the inner "
                                "steps come close to the proximal solution.")
_IMAML_LR = flags.DEFINE_float("imaml_inner_lr", None, "iMAML: inner step size, in "
                               "meta-training and evaluation (default: 1, the Newton step, for "
                               "--imaml_solver=newton; --inner_lr for gd).")
_IMAML_STEPS = flags.DEFINE_integer("imaml_inner_steps", 10, "iMAML: inner steps (Newton or "
                                    "gradient steps) on the proximal objective in meta-training.")
_IMAML_CG = flags.DEFINE_integer("imaml_cg_steps", 5, "iMAML: conjugate-gradient steps of the "
                                 "implicit meta-gradient.")
_IMAML_DAMPING = flags.DEFINE_float("imaml_damping", 0.0, "iMAML: added to the identity in the "
                                    "CG system (>= 0).")
_IMAML_SOLVER = flags.DEFINE_enum("imaml_solver", "newton", ["newton", "gd"], "iMAML: inner "
                                  "solver of the proximal objective: damped Newton-CG with a "
                                  "line search (never increases it, stops at --imaml_tol) or "
                                  "fixed-step gradient descent.")
_IMAML_NEWTON_CG = flags.DEFINE_integer("imaml_newton_cg_steps", 10, "iMAML, newton solver: CG "
                                        "iterations per Newton step.")
_IMAML_ITERATIONS = flags.DEFINE_integer("imaml_iterations", None, "iMAML: meta-steps per K "
                                         "(default --num_iterations; a Newton-solver meta-step "
                                         "costs about 20 MAML meta-steps).")
_FOMAML_META_LR = flags.DEFINE_float("fomaml_meta_lr", None, "FOMAML: its own outer Adam "
                                     "learning rate (default --meta_lr).")
_FOMAML_LSTM_META_LR = flags.DEFINE_float("fomaml_lstm_meta_lr", None, "FOMAML+LSTM: its own "
                                          "outer Adam learning rate (default --meta_lr).")
_ANIL_INNER_LR = flags.DEFINE_float("anil_inner_lr", None, "ANIL: its own inner step size "
                                    "(head only), in meta-training and evaluation (default "
                                    "--inner_lr); MetaSGD-ANIL: its initial step sizes.")
_ANIL_META_LR = flags.DEFINE_float("anil_meta_lr", None, "ANIL: its own outer Adam learning "
                                   "rate (default --meta_lr).")
_ANIL_HEAD_INPUT = flags.DEFINE_enum(
    "anil_head_input", "relu", list(fewshot_config.ANIL_HEAD_INPUTS), "ANIL: what its head "
    "reads: 'relu', the last hidden layer's ReLU outputs (Raghu et al.; non-negative, so one "
    "head step's kernel never changes sign), or 'linear', that layer's pre-activations (the "
    "same MLP without its last ReLU; signed).")
_MAML_LSTM_RULE_META_LR = flags.DEFINE_float(
    "maml_lstm_rule_meta_lr", None, "MAML+LSTM: the outer Adam learning rate of the LSTM's "
    "weights, a second optimizer beside the initialization's (default: one optimizer at "
    "--meta_lr for both).")
_FOMAML_LSTM_RULE_META_LR = flags.DEFINE_float(
    "fomaml_lstm_rule_meta_lr", None, "FOMAML+LSTM: the outer Adam learning rate of the "
    "LSTM's weights (default: one optimizer at --fomaml_lstm_meta_lr for both).")
_IMAML_TOL = flags.DEFINE_float("imaml_tol", 1e-4, "iMAML, newton solver: relative tolerance "
                                "on the proximal objective's gradient norm.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of tasks and initializations.")
_SEEDS = flags.DEFINE_list("seeds", [], "Run once per seed (overrides --seed) and tabulate "
                           "mean +- std over seeds.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Checkpoints and results.json; none if empty.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 1000, "Log the meta-loss every N iterations.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES),
                              "tf.distribute strategy splitting each meta-batch: one replica, "
                              "MirroredStrategy over local devices, or "
                              "MultiWorkerMirroredStrategy across the processes of TF_CONFIG "
                              "(see python -m l2l.distribute.launch).")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "--strategy=mirrored: replicate over this "
                                    "many logical CPU devices (0: the GPUs, or the one CPU).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = fewshot_config.FewShotConfig(
      problem=_PROBLEM.value, methods=tuple(_METHODS.value),
      shots=cli.int_list("shots", _SHOTS.value),
      num_iterations=_ITERATIONS.value, meta_batch_size=_META_BATCH.value,
      meta_lr=_META_LR.value, inner_lr=_INNER_LR.value, inner_steps=_INNER_STEPS.value,
      reptile_inner_steps=_REPTILE_STEPS.value,
      eval_steps=cli.int_list("eval_steps", _EVAL_STEPS.value),
      num_eval_tasks=_EVAL_TASKS.value, k_query=_K_QUERY.value, n_way=_N_WAY.value,
      hidden=cli.int_list("hidden", _HIDDEN.value), seed=_SEED.value, split=_SPLIT.value,
      augment=_AUGMENT.value, finetune_steps=_FINETUNE_STEPS.value,
      finetune_lr=_FINETUNE_LR.value, imaml_lam=_IMAML_LAM.value, imaml_inner_lr=_IMAML_LR.value,
      imaml_inner_steps=_IMAML_STEPS.value, imaml_cg_steps=_IMAML_CG.value,
      imaml_damping=_IMAML_DAMPING.value, imaml_solver=_IMAML_SOLVER.value,
      imaml_newton_cg_steps=_IMAML_NEWTON_CG.value, imaml_tol=_IMAML_TOL.value,
      imaml_iterations=_IMAML_ITERATIONS.value, fomaml_meta_lr=_FOMAML_META_LR.value,
      fomaml_lstm_meta_lr=_FOMAML_LSTM_META_LR.value, anil_inner_lr=_ANIL_INNER_LR.value,
      anil_meta_lr=_ANIL_META_LR.value, anil_head_input=_ANIL_HEAD_INPUT.value,
      maml_lstm_rule_meta_lr=_MAML_LSTM_RULE_META_LR.value,
      fomaml_lstm_rule_meta_lr=_FOMAML_LSTM_RULE_META_LR.value,
      workdir=_WORKDIR.value, log_every=_LOG_EVERY.value,
      checkpoint_every=_LOG_EVERY.value)
  seeds = cli.int_list("seeds", _SEEDS.value)
  if seeds and len(set(seeds)) != len(seeds):
    raise app.UsageError(f"--seeds must be distinct, got {','.join(_SEEDS.value)}")
  try:
    fewshot_config.check_workdir(config, seeds)  # Before TensorFlow loads.
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  strategy = distribute.start_tensorflow(_STRATEGY.value, 0, _CPU_DEVICES.value)
  from l2l.meta_learning import fewshot  # pylint: disable=g-import-not-at-top
  try:
    distribute.shard(config.meta_batch_size, strategy, "--meta_batch_size")
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    results = (fewshot.run_seeds(config, seeds, strategy) if seeds
               else fewshot.run(config, strategy))
  except fewshot.Interrupted as e:
    print(f"maml.py: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  except ValueError as e:  # A damaged checkpoint or results file found while running.
    print(f"maml.py: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("done")
  print(results["table"])
  runs = results["runs"] if seeds else [results]
  diverged = sorted({f"{r['method']} {r['shots']}-shot" for run in runs for r in run["rows"]
                     if r.get("diverged")})
  if diverged:
    print(f"maml.py: diverged (worse than the untrained model after every number of inner "
          f"steps): {', '.join(diverged)}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  cli.run(main)  # One-line errors for bad flags and usage errors.
