"""Settings of `maml.py`'s few-shot experiments, their method registry and workdir checks.

This module does not import TensorFlow (the builders in `METHODS` import the MAML family when
called), so `maml.py` defines its flags from it and rejects bad settings, or a workdir it could
not use, before TensorFlow loads: `--help` and usage errors stay fast. `l2l.meta_learning.fewshot`
runs the experiments and re-exports these names.
"""

import dataclasses
import json
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# pylint: disable=g-import-not-at-top  (the builders import TensorFlow only when called)

PROBLEMS = ("sinusoid", "digits")
BASELINES = ("Pretrained", "Prototypes")
SPLITS = ("test", "validation")
IMAML_SOLVERS = ("gd", "newton")  # l2l.meta_learning.imaml.SOLVERS (a test checks they agree).
# What ANIL's head reads: "relu", the last hidden layer's ReLU outputs (Raghu et al. 2020's
# penultimate activations, non-negative), or "linear", that layer's pre-activations (signed).
ANIL_HEAD_INPUTS = ("relu", "linear")


def _maml(model, c):
  from l2l.meta_learning import maml as maml_lib
  return maml_lib.MAML(model, c.inner_lr, c.inner_steps)


def _fomaml(model, c):
  from l2l.meta_learning import maml as maml_lib
  return maml_lib.MAML(model, c.inner_lr, c.inner_steps, first_order=True)


def _reptile(model, c):
  from l2l.meta_learning import maml as maml_lib
  return maml_lib.Reptile(model, c.inner_lr, c.reptile_inner_steps)


def _metasgd(model, c):
  from l2l.meta_learning import maml as maml_lib
  return maml_lib.MetaSGD(model, c.inner_lr, c.inner_steps)


def _anil(model, c):
  from l2l.meta_learning import maml as maml_lib
  lr = c.inner_lr if c.anil_inner_lr is None else c.anil_inner_lr
  # With anil_head_input "linear", fewshot.build gives ANIL a model whose head is `model.head`.
  head = model.head if c.anil_head_input == "linear" else model.submodules[-1]
  return maml_lib.ANIL(model, head, lr, c.inner_steps)


def _metasgd_anil(model, c):
  # ANIL's head-only inner loop with Meta-SGD's learned per-coordinate step sizes (initially
  # ANIL's inner lr; the outer learning rate is meta_lr, as Meta-SGD's). A step of size alpha_j
  # on head weight j changes the prediction at x by
  # -(2 / K) sum_i (sum_j alpha_j f_j(x) f_j(x_i) + alpha_b) r_i, a kernel that can change sign
  # when some alpha are negative, although the ReLU features f are not (bench/anil_one_step.py).
  from l2l.meta_learning import maml as maml_lib
  lr = c.inner_lr if c.anil_inner_lr is None else c.anil_inner_lr
  head = maml_lib.head_names(model, model.submodules[-1])
  return maml_lib.MetaSGD(model, lr, c.inner_steps, adapt_names=head)


def _imaml(model, c):
  from l2l.meta_learning import imaml as imaml_lib
  lr = c.imaml_inner_lr
  if lr is None:
    lr = 1.0 if c.imaml_solver == "newton" else c.inner_lr
  return imaml_lib.IMAML(model, lr, c.imaml_inner_steps, lam=c.imaml_lam,
                         cg_steps=c.imaml_cg_steps, damping=c.imaml_damping,
                         solver=c.imaml_solver, newton_cg_steps=c.imaml_newton_cg_steps,
                         tol=c.imaml_tol)


# "MAML + learned inner optimizer": the inner step is MAML's `theta - inner_lr g` plus a small
# coordinatewise LSTM's correction (LogAndSign inputs, JOINT_LSTM_LAYERS, outputs times
# JOINT_LSTM_SCALE), the LSTM's weights meta-trained with the initialization.
JOINT_LSTM_LAYERS = (8,)
JOINT_LSTM_SCALE = 0.01


def _joint(first_order):
  def build_joint(model, c):
    import nets
    from l2l.meta_learning import maml as maml_lib
    lstm = nets.CoordinateWiseDeepLSTM(layers=JOINT_LSTM_LAYERS, preprocess_name="LogAndSign",
                                       scale=JOINT_LSTM_SCALE, seed=c.seed, name="inner_lstm")
    # The fused LSTM op has no vectorized (tf.vectorized_map) form with a gradient.
    lstm.core.fast_path = False
    rule = maml_lib.ResidualRule(lstm, c.inner_lr)
    return maml_lib.MAML(model, c.inner_lr, c.inner_steps, first_order=first_order,
                         inner_optimizer=rule)
  return build_joint


# (model: snt.Module, config: FewShotConfig) -> an l2l.MAML subclass MetaTrainer can train.
Builder = Callable[[Any, "FewShotConfig"], Any]
METHODS: Dict[str, Builder] = {"MAML": _maml, "FOMAML": _fomaml, "Reptile": _reptile,
                               "MetaSGD": _metasgd, "ANIL": _anil,
                               "MetaSGD-ANIL": _metasgd_anil, "iMAML": _imaml,
                               "MAML+LSTM": _joint(False), "FOMAML+LSTM": _joint(True)}


def _check_steps(steps: Any, argument: str) -> None:
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
    raise ValueError(f"{argument} must be a non-negative integer, got {steps!r}")


@dataclasses.dataclass
class FewShotConfig:
  """Settings of one experiment; defaults are Finn et al. 2017's sinusoid setup.

  `methods` empty means every `METHODS` entry and the baselines that apply to the problem.
  `split`, `augment`, `finetune_steps` and `finetune_lr` concern digits only (see
  `problems.tasks.digits_split` and `l2l.meta_learning.fewshot`); the `imaml_*` fields concern
  iMAML only (`l2l.IMAML`'s `inner_steps`, `lam`, `cg_steps`, `damping`, and `inner_lr`, None
  meaning `inner_lr`). The default lam = 10 = 1 / (inner_lr x imaml_inner_steps): with it the
  ten inner steps come close to the proximal solution the implicit gradient assumes (on
  validation sinusoid tasks lam 1 and 3 barely learned in 400-2,000 iterations).
  `imaml_iterations` (None: `num_iterations`) gives iMAML its own number of meta-steps: with
  the Newton solver its meta-step costs about 20 MAML meta-steps. `fomaml_meta_lr` (None:
  `meta_lr`) is FOMAML's own outer learning rate: its first-order meta-gradient is biased and
  small where MAML's curvature term matters, and at Finn et al.'s 1e-3 it is still far from
  converged after 10,000 meta-steps (BUILD.md). `fomaml_lstm_meta_lr` and `anil_meta_lr` are
  FOMAML+LSTM's and ANIL's own, and `anil_inner_lr` (None: `inner_lr`) ANIL's inner step size
  (meta-training and evaluation) and MetaSGD-ANIL's initial step sizes. `anil_head_input`
  (`ANIL_HEAD_INPUTS`) is what ANIL's head reads: "relu" (Raghu et al.'s, the default) the last
  hidden layer's ReLU outputs, which are non-negative, so one head step is a kernel smoother
  with a kernel f(x).f(x') + 1 that never is; "linear" that layer's pre-activations, the same
  MLP without its last ReLU, whose kernel can change sign as the sinusoids' cos(x - x') does
  (bench/anil_one_step.py). ANIL stays ANIL: body frozen in the inner loop, one step size.
  `maml_lstm_rule_meta_lr` / `fomaml_lstm_rule_meta_lr` (None: one optimizer) give the LSTM's
  weights of MAML+LSTM / FOMAML+LSTM an Adam of their own, beside the initialization's
  (`MetaTrainer(rule_optimizer=...)`). BUILD.md gives the validation runs behind the values used.
  """
  problem: str = "sinusoid"
  methods: Sequence[str] = ()
  shots: Sequence[int] = (5, 10, 20)
  num_iterations: int = 10000
  meta_batch_size: int = 25
  meta_lr: float = 1e-3
  inner_lr: float = 0.01
  inner_steps: int = 1
  reptile_inner_steps: int = 5
  eval_steps: Sequence[int] = (1, 10)
  num_eval_tasks: int = 600
  n_way: int = 5
  k_query: int = 10
  hidden: Sequence[int] = (40, 40)
  seed: int = 0
  workdir: str = ""
  log_every: int = 1000
  checkpoint_every: int = 1000
  split: str = "test"
  augment: bool = True
  finetune_steps: int = 100
  finetune_lr: float = 0.1
  imaml_lam: float = 10.0
  imaml_inner_lr: Optional[float] = None
  imaml_inner_steps: int = 10
  imaml_cg_steps: int = 5
  imaml_damping: float = 0.0
  imaml_solver: str = "newton"
  imaml_newton_cg_steps: int = 10
  imaml_tol: float = 1e-4
  imaml_iterations: Optional[int] = None
  fomaml_meta_lr: Optional[float] = None
  fomaml_lstm_meta_lr: Optional[float] = None
  anil_inner_lr: Optional[float] = None
  anil_meta_lr: Optional[float] = None
  anil_head_input: str = "relu"
  maml_lstm_rule_meta_lr: Optional[float] = None
  fomaml_lstm_rule_meta_lr: Optional[float] = None

  def method_names(self) -> Tuple[str, ...]:
    if self.methods:
      return tuple(self.methods)
    baselines = BASELINES if self.problem == "digits" else ("Pretrained",)
    return tuple(METHODS) + baselines

  def iterations(self, method: str) -> int:
    """The number of meta-steps `method` trains for."""
    if method == "iMAML" and self.imaml_iterations is not None:
      return self.imaml_iterations
    return self.num_iterations

  def meta_learning_rate(self, method: str) -> float:
    """The outer (Adam) learning rate of `method`."""
    own = {"FOMAML": self.fomaml_meta_lr, "FOMAML+LSTM": self.fomaml_lstm_meta_lr,
           "ANIL": self.anil_meta_lr}.get(method)
    return self.meta_lr if own is None else own

  def rule_meta_learning_rate(self, method: str) -> Optional[float]:
    """The outer (Adam) learning rate of `method`'s learned inner rule (the LSTM's weights of
    MAML+LSTM / FOMAML+LSTM), or None: one optimizer at `meta_learning_rate` for everything."""
    return {"MAML+LSTM": self.maml_lstm_rule_meta_lr,
            "FOMAML+LSTM": self.fomaml_lstm_rule_meta_lr}.get(method)

  def validate(self) -> None:
    """Raises ValueError naming the first field that is out of range."""
    if self.problem not in PROBLEMS:
      raise ValueError(f"unknown problem {self.problem!r}; expected one of {PROBLEMS}")
    known = tuple(METHODS) + BASELINES
    unknown = [m for m in self.method_names() if m not in known]
    if unknown:
      raise ValueError(f"unknown methods {unknown!r}; expected some of {known}")
    if "Prototypes" in self.method_names() and self.problem != "digits":
      raise ValueError("the Prototypes baseline is for classification (problem 'digits')")
    if self.split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
    for name in ("num_iterations", "meta_batch_size", "num_eval_tasks", "n_way", "k_query",
                 "reptile_inner_steps", "finetune_steps", "imaml_inner_steps", "imaml_cg_steps",
                 "imaml_newton_cg_steps", "log_every", "checkpoint_every"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if self.problem == "digits" and self.n_way < 2:
      raise ValueError(f"n_way must be at least 2 for classification, got {self.n_way}")
    _check_steps(self.inner_steps, "inner_steps")
    for k in list(self.shots) + list(self.eval_steps):
      _check_steps(k, "shots and eval_steps entries")
    if not self.shots or min(self.shots) < 1:
      raise ValueError(f"shots must be positive integers, got {list(self.shots)}")
    if not self.eval_steps:
      raise ValueError("eval_steps must name at least one number of inner steps")
    if not self.hidden or any(not isinstance(h, int) or isinstance(h, bool) or h < 1
                              for h in self.hidden):
      raise ValueError(f"hidden must be positive integers, got {list(self.hidden)}")
    if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
      raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
    optional = ("fomaml_meta_lr", "fomaml_lstm_meta_lr", "anil_inner_lr", "anil_meta_lr",
                "maml_lstm_rule_meta_lr", "fomaml_lstm_rule_meta_lr")
    for name in ("meta_lr", "inner_lr", "finetune_lr") + optional:
      value = getattr(self, name)
      if name in optional and value is None:
        continue
      if (not isinstance(value, (int, float)) or isinstance(value, bool)
          or not math.isfinite(value) or not value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    if self.imaml_iterations is not None and (
        not isinstance(self.imaml_iterations, int) or isinstance(self.imaml_iterations, bool)
        or self.imaml_iterations < 1):
      raise ValueError(f"imaml_iterations must be a positive integer or None, got "
                       f"{self.imaml_iterations!r}")
    if self.anil_head_input not in ANIL_HEAD_INPUTS:
      raise ValueError(f"anil_head_input must be one of {ANIL_HEAD_INPUTS}, got "
                       f"{self.anil_head_input!r}")
    if self.imaml_solver not in IMAML_SOLVERS:
      raise ValueError(f"imaml_solver must be one of {IMAML_SOLVERS}, got "
                       f"{self.imaml_solver!r}")
    for name, lowest in (("imaml_lam", "positive"), ("imaml_damping", "non-negative"),
                         ("imaml_inner_lr", "positive"), ("imaml_tol", "non-negative")):
      value = getattr(self, name)
      if name == "imaml_inner_lr" and value is None:
        continue
      if (not isinstance(value, (int, float)) or isinstance(value, bool)
          or not math.isfinite(value) or not (value > 0 if lowest == "positive" else value >= 0)):
        raise ValueError(f"{name} must be a finite {lowest} number, got {value!r}")


# Fields that do not change any result, and fields that change only one method's rows.
_RUN_ONLY_FIELDS = ("methods", "workdir", "log_every", "checkpoint_every")
_METHOD_FIELDS = {"reptile_inner_steps": ("Reptile",), "finetune_steps": ("Pretrained",),
                  "finetune_lr": ("Pretrained",), "fomaml_meta_lr": ("FOMAML",),
                  "fomaml_lstm_meta_lr": ("FOMAML+LSTM",),
                  "maml_lstm_rule_meta_lr": ("MAML+LSTM",),
                  "fomaml_lstm_rule_meta_lr": ("FOMAML+LSTM",),
                  "anil_inner_lr": ("ANIL", "MetaSGD-ANIL"),
                  "anil_meta_lr": ("ANIL",), "anil_head_input": ("ANIL",),
                  **{name: ("iMAML",) for name in (
                      "imaml_lam", "imaml_inner_lr", "imaml_inner_steps", "imaml_cg_steps",
                      "imaml_damping", "imaml_solver", "imaml_newton_cg_steps", "imaml_tol",
                      "imaml_iterations")}}


# Settings whose default changed after they were added: results files without them ran with
# these values (iMAML's inner solver was gradient descent before "newton" existed).
_LEGACY_DEFAULTS = {"imaml_solver": "gd"}


def _as_json(config: FewShotConfig) -> Dict[str, Any]:
  return json.loads(json.dumps(dataclasses.asdict(config), default=list))


def kept_rows(config: FewShotConfig) -> Tuple[List[Dict[str, Any]], Tuple[str, ...]]:
  """Rows and methods of `workdir/results.json` that a run of `config` keeps (its other methods).

  Raises:
    ValueError: the file is not a results file, or the kept rows were computed with settings
      other than `config`'s.
  """
  path = os.path.join(config.workdir, "results.json") if config.workdir else ""
  if not path or not os.path.exists(path):
    return [], ()
  try:
    with open(path) as f:
      previous = json.load(f)
    previous["rows"], previous["config"]  # pylint: disable=pointless-statement
    methods = tuple(dict.fromkeys(r["method"] for r in previous["rows"]
                                  if r["method"] not in config.method_names()))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} is not a results file of maml.py ({type(e).__name__}: {e}); "
                     f"delete it (the checkpoints next to it are kept)") from None
  if not methods:
    return [], ()
  # Settings added after the file was written: it ran with their defaults then.
  saved = {**_as_json(FewShotConfig()), **_LEGACY_DEFAULTS, **previous["config"]}
  current = _as_json(config)
  different = [name for name in current
               if name not in _RUN_ONLY_FIELDS and saved[name] != current[name]
               and set(_METHOD_FIELDS.get(name, methods)) & set(methods)]
  if different:
    raise ValueError(
        f"{path} holds results of {list(methods)} computed with other settings "
        f"({', '.join(f'{n}={saved[n]!r}, now {current[n]!r}' for n in different)}); "
        f"use the same settings or another workdir")
  return [r for r in previous["rows"] if r["method"] in methods], methods


def seed_configs(config: FewShotConfig, seeds: Sequence[int]) -> List[FewShotConfig]:
  """One config per seed, each with its own `workdir/seed_<s>`."""
  return [dataclasses.replace(config, seed=seed, workdir=os.path.join(
      config.workdir, f"seed_{seed}") if config.workdir else "") for seed in seeds]


def check_workdir(config: FewShotConfig, seeds: Sequence[int] = ()) -> None:
  """Raises the ValueError `fewshot.run` (`run_seeds` with `seeds`) would raise before training.

  That is, for an invalid config, a workdir that is a file, or results in the workdir that
  could not be merged (rows of other methods computed with other settings).
  """
  if config.workdir and os.path.exists(config.workdir) and not os.path.isdir(config.workdir):
    raise ValueError(f"workdir {config.workdir} exists and is not a directory")
  if seeds and (len(set(seeds)) != len(seeds) or any(
      not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds)):
    raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
  for seed_config in seed_configs(config, seeds) if seeds else [config]:
    seed_config.validate()
    kept_rows(seed_config)
