"""Strategies by name, replica shards and the all-reduce of a replicated meta-step.

`create_strategy(name)` builds the `tf.distribute` strategy of train.py's / maml.py's
`--strategy`; `all_reduce_mean(strategy, fn)` runs `fn(replica_id)` on every replica (of every
worker) and returns the mean of its results, the same on every replica. The trained variables
stay ordinary variables, created outside `strategy.scope()` from the same seeds on every worker
(so they start equal); every worker applies the same all-reduced meta-gradient to its copy, so
they stay equal. The meta-optimizers (Sonnet's, which accept no `MirroredStrategy` scope) run
unchanged outside the replica context.
"""

import json
import os
from typing import Any, Callable, Optional, Tuple

import tensorflow as tf

from l2l.distribute import ASYNC_STRATEGIES
from l2l.distribute import STRATEGIES

Strategy = tf.distribute.Strategy


def _check_tf_config() -> None:
  """ValueError unless TF_CONFIG describes a cluster with workers and this process's task."""
  text = os.environ.get("TF_CONFIG")
  if not text:
    raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable (the "
                     "cluster and this process's task; see BUILD.md, or start local workers "
                     "with python -m l2l.distribute.launch)")
  try:
    config = json.loads(text)
    workers = config["cluster"]["worker"]
    task = config["task"]
    if not isinstance(workers, list) or not workers or task["type"] not in ("worker", "chief"):
      raise ValueError
    int(task["index"])
  except (ValueError, KeyError, TypeError):
    raise ValueError(f"TF_CONFIG must be JSON like {{\"cluster\": {{\"worker\": [\"host:port\", "
                     f"...]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}}, got "
                     f"{text[:200]!r}") from None


def _check_parameter_server_config() -> None:
  """ValueError unless TF_CONFIG describes a chief (this process), ps and worker tasks."""
  text = os.environ.get("TF_CONFIG")
  if not text:
    raise ValueError("strategy 'parameter_server' needs the TF_CONFIG environment variable (a "
                     "cluster with chief, ps and worker tasks; see BUILD.md, or start one "
                     "with python -m l2l.distribute.launch --parameter_servers=1)")
  try:
    config = json.loads(text)
    cluster, task = config["cluster"], config["task"]
    if not all(isinstance(cluster.get(k), list) and cluster[k] for k in ("chief", "ps", "worker")):
      raise ValueError
    if task["type"] != "chief":
      raise ValueError
  except (ValueError, KeyError, TypeError, AttributeError):
    raise ValueError(f"strategy 'parameter_server' needs TF_CONFIG like {{\"cluster\": "
                     f"{{\"chief\": [...], \"ps\": [...], \"worker\": [...]}}, \"task\": "
                     f"{{\"type\": \"chief\", \"index\": 0}}}} in the coordinator, got "
                     f"{text[:200]!r}") from None


def create_strategy(name: str, cpu_devices: int = 0) -> Optional[Strategy]:
  """The strategy called `name` (one of `STRATEGIES`); None for "default" (one replica, the
  trainers' single-process code).

  Call it before TensorFlow runs its first op: "multi_worker" configures collective ops and
  `cpu_devices` splits the CPU into logical devices, both only possible at start-up.

  Args:
    name: "default", "mirrored" (`MirroredStrategy` over the local GPUs, or over
      `cpu_devices` logical CPU devices), "multi_worker" (`MultiWorkerMirroredStrategy`
      across the processes of `TF_CONFIG`, CPU collectives over "RING") or
      "parameter_server" (`ParameterServerStrategy`, this process the coordinator of the
      TF_CONFIG cluster; asynchronous PES only, `l2l.distribute.AsyncPES`).
    cpu_devices: "mirrored" only: replicate over this many logical CPU devices (0: the GPUs if
      there are any, else the one CPU).

  Raises:
    ValueError: an unknown name, a bad `cpu_devices`, a missing or malformed TF_CONFIG, or
      TensorFlow already initialised.
  """
  if name not in STRATEGIES + ASYNC_STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES + ASYNC_STRATEGIES}, got {name!r}")
  if isinstance(cpu_devices, bool) or not isinstance(cpu_devices, int) or cpu_devices < 0:
    raise ValueError(f"cpu_devices must be an int >= 0, got {cpu_devices!r}")
  if cpu_devices and name != "mirrored":
    raise ValueError(f"cpu_devices applies to strategy 'mirrored' only, got strategy {name!r}")
  if name == "default":
    return None
  if name == "parameter_server":
    _check_parameter_server_config()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.experimental.ParameterServerStrategy(resolver)
  if name == "multi_worker":
    _check_tf_config()
    gpus = tf.config.list_physical_devices("GPU")
    implementation = (tf.distribute.experimental.CommunicationImplementation.AUTO if gpus
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    try:
      return tf.distribute.MultiWorkerMirroredStrategy(
          communication_options=tf.distribute.experimental.CommunicationOptions(
              implementation=implementation))
    except RuntimeError as e:
      raise ValueError(f"strategy 'multi_worker' must be created before TensorFlow runs its "
                       f"first op ({e})") from None
  if cpu_devices:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    except RuntimeError:
      if len(tf.config.list_logical_devices("CPU")) != cpu_devices:
        raise ValueError(f"cpu_devices={cpu_devices}: TensorFlow is already initialised with "
                         f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s); create "
                         "the strategy before any other TensorFlow op") from None
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
  else:
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or ["/cpu:0"]
  return tf.distribute.MirroredStrategy(devices)


def num_replicas(strategy: Optional[Strategy]) -> int:
  return 1 if strategy is None else strategy.num_replicas_in_sync


def replica_ids(strategy: Optional[Strategy]) -> Tuple[int, ...]:
  """The global ids (`replica_id_in_sync_group`) of this process's replicas."""
  if strategy is None:
    return (0,)
  ids = tf.function(lambda: strategy.run(
      lambda: tf.distribute.get_replica_context().replica_id_in_sync_group))()
  return tuple(int(i) for i in strategy.experimental_local_results(ids))


def shard(global_size: int, strategy: Optional[Strategy], name: str = "meta_batch_size"
          ) -> int:
  """Items per replica of a global batch of `global_size`; ValueError unless it splits evenly."""
  if isinstance(global_size, bool) or not isinstance(global_size, int) or global_size < 1:
    raise ValueError(f"{name} must be a positive int, got {global_size!r}")
  replicas = num_replicas(strategy)
  if global_size % replicas:
    raise ValueError(f"{name} ({global_size}) must be a multiple of the number of replicas "
                     f"({replicas}): every replica computes an equal share")
  return global_size // replicas


def _static_replica_id() -> int:
  replica_id = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
  if replica_id is None:
    raise ValueError("this strategy gives no static replica id (MirroredStrategy and "
                     "MultiWorkerMirroredStrategy do)")
  return int(replica_id)


def all_reduce_mean(strategy: Optional[Strategy], fn: Callable[..., Any], *args: Any) -> Any:
  """Runs `fn(replica_id, *args)` on every replica and returns the mean of its results (a nest
  of float tensors) over all replicas of all workers; `fn(0, *args)` itself without a strategy.

  `replica_id` is the replica's global id, a Python int (so `fn` may pick Python objects by it).
  Call it inside a `tf.function` (or eagerly); the result is the same on every replica.
  """
  if strategy is None:
    return fn(0, *args)

  def replica_fn(*replica_args):
    result = fn(_static_replica_id(), *replica_args)
    result = tf.nest.map_structure(tf.convert_to_tensor, result)
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, result)

  reduced = strategy.run(replica_fn, args)
  return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], reduced)


def barrier(strategy: Optional[Strategy]) -> None:
  """Returns once every worker has called it (an all-reduce of a scalar)."""
  if num_replicas(strategy) > 1:
    tf.function(lambda: all_reduce_mean(strategy, lambda _: tf.zeros([])))()


def is_chief(strategy: Optional[Strategy]) -> bool:
  """Whether this process writes checkpoints and summaries (the only one, or the chief)."""
  if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
    return True  # The coordinator: the only process that runs Python code.
  return strategy is None or bool(strategy.extended.should_checkpoint)


def worker_index(strategy: Optional[Strategy]) -> int:
  """This process's task index in TF_CONFIG (0 without a multi-worker strategy)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def describe(strategy: Optional[Strategy]) -> str:
  """A line for the log: the strategy, its replicas, this worker."""
  if strategy is None:
    return "one replica (default strategy)"
  if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
    cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    return (f"ParameterServerStrategy: this process the coordinator, "
            f"{cluster.num_tasks('ps')} parameter server(s), {cluster.num_tasks('worker')} "
            f"worker(s)")
  multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
  text = (f"{strategy.num_replicas_in_sync} replicas ("
          f"{'MultiWorkerMirroredStrategy' if multi_worker else type(strategy).__name__}")
  resolver = getattr(strategy, "cluster_resolver", None)
  if multi_worker and resolver is not None:
    text += f", {resolver.task_type} {resolver.task_id}"
  return text + f", local devices {', '.join(strategy.extended.worker_devices)})"
