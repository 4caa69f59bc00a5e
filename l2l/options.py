"""Options of the learned-optimizer scripts that load without TensorFlow (for a fast --help).

`TrainConfig` (the options of `l2l.training.meta_train`, train.py's flags) and the names the
scripts' flags accept; `l2l.training`, `l2l.unroll` and `l2l.evaluation` use the same objects.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

from l2l import checks
from l2l import configs

SCHEDULES = ("constant", "cosine")
# How the meta-gradient is computed: backprop through each truncated unroll, the same with
# segments recomputed in the backward pass (bounded memory), or persistent ES (l2l.es).
GRADIENTS = ("backprop", "checkpointed", "pes")
OBJECTIVES = ("sum", "log", "log_mean")  # l2l.unroll.OBJECTIVES.
# evaluate.py --optimizer: the learned optimizer and l2l.evaluation.HAND_DESIGNED's baselines.
OPTIMIZERS = ("L2L", "SGD", "NAG", "RMSProp", "Adam")


@dataclasses.dataclass
class TrainConfig:
  """Options of `meta_train`; train.py's flags have the same names and defaults."""
  problem: str = "quadratic"
  save_path: Optional[str] = None
  overwrite: bool = False
  num_epochs: int = 2400
  num_steps: int = 100
  unroll_length: int = 10
  learning_rate: float = 3e-3
  learning_rate_schedule: str = "cosine"
  max_grad_norm: Optional[float] = None
  second_derivatives: bool = False
  objective: str = "log_mean"
  log_period: int = 100
  evaluation_period: int = 200
  evaluation_epochs: int = 20
  seed: int = 0
  checkpoint_period: int = 100
  data_dir: Optional[str] = None
  rescale: float = 0.0
  curriculum: Tuple[int, ...] = ()
  gradient: str = "backprop"
  segment_length: Optional[int] = None
  pes_particles: int = 8
  pes_std: float = 0.01
  net_layers: Tuple[int, ...] = ()
  # Problem instances per meta-step (their meta-gradients averaged); split across the replicas
  # of a tf.distribute strategy (l2l.distribute).
  meta_batch_size: int = 1

  def resume_key(self) -> Dict[str, Any]:
    """The options a resumed run must share with the run that wrote the checkpoint."""
    return {k: v for k, v in dataclasses.asdict(self).items()
            if k not in ("save_path", "overwrite", "log_period", "checkpoint_period")}

  def validate(self) -> None:
    """Raises ValueError naming the first bad option."""
    for name in ("num_epochs", "num_steps", "unroll_length", "log_period", "evaluation_period",
                 "evaluation_epochs", "checkpoint_period"):
      checks.positive_int(name, getattr(self, name))
    if self.num_steps % self.unroll_length:
      raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of unroll_length "
                       f"({self.unroll_length})")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
    if self.learning_rate_schedule not in SCHEDULES:
      raise ValueError(f"learning_rate_schedule must be one of {SCHEDULES}, got "
                       f"{self.learning_rate_schedule!r}")
    if self.max_grad_norm is not None and not self.max_grad_norm > 0:
      raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm!r}")
    if self.objective not in OBJECTIVES:
      raise ValueError(f"objective must be one of {OBJECTIVES}, got "
                       f"{self.objective!r}")
    if isinstance(self.rescale, bool) or not isinstance(self.rescale, (int, float)) or not (
        self.rescale >= 0):
      raise ValueError(f"rescale must be a number >= 0 (the largest |log scale|), got "
                       f"{self.rescale!r}")
    if isinstance(self.curriculum, (str, bytes)):
      raise ValueError(f"curriculum must be a list of step counts, got {self.curriculum!r}")
    for i, steps in enumerate(self.curriculum):
      checks.positive_int(f"curriculum[{i}]", steps)
      if steps % self.unroll_length:
        raise ValueError(f"curriculum[{i}] ({steps}) must be a multiple of unroll_length "
                         f"({self.unroll_length})")
    if len(self.curriculum) > self.num_epochs:
      raise ValueError(f"curriculum has {len(self.curriculum)} stages, more than num_epochs "
                       f"({self.num_epochs})")
    if self.gradient not in GRADIENTS:
      raise ValueError(f"gradient must be one of {GRADIENTS}, got {self.gradient!r}")
    if (self.segment_length is None) != (self.gradient != "checkpointed"):
      raise ValueError("segment_length is required with gradient='checkpointed' and only used "
                       f"there; got gradient={self.gradient!r}, "
                       f"segment_length={self.segment_length!r}")
    if self.segment_length is not None:
      checks.positive_int("segment_length", self.segment_length)
    checks.positive_int("meta_batch_size", self.meta_batch_size)
    if self.gradient == "pes" and self.meta_batch_size != 1:
      raise ValueError(f"meta_batch_size must be 1 with gradient='pes' (its particles are its "
                       f"batch), got {self.meta_batch_size}")
    checks.positive_int("pes_particles", self.pes_particles)
    if not self.pes_std > 0:
      raise ValueError(f"pes_std must be positive, got {self.pes_std!r}")
    if self.gradient == "pes" and self.second_derivatives:
      raise ValueError("second_derivatives has no effect with gradient='pes' (no backprop)")
    named = configs.get_config(self.problem, data_dir=self.data_dir)  # Raises on a bad problem.
    if isinstance(self.net_layers, (str, bytes)):
      raise ValueError(f"net_layers must be a list of layer sizes, got {self.net_layers!r}")
    for i, size in enumerate(self.net_layers):
      checks.positive_int(f"net_layers[{i}]", size)
    if self.net_layers and not any("layers" in c.get("net_options", {})
                                   for c in named.net_configs.values()):
      raise ValueError(f"net_layers: no net of problem {self.problem!r} has LSTM layers to "
                       f"resize (nets {sorted(named.net_configs)})")

  def steps_at(self, epoch: int) -> int:
    """Optimizee steps of 1-based `epoch`: `num_steps`, or its curriculum stage's step count
    (the stages split the epochs evenly, in order)."""
    if not self.curriculum:
      return self.num_steps
    return self.curriculum[min((epoch - 1) * len(self.curriculum) // self.num_epochs,
                               len(self.curriculum) - 1)]
