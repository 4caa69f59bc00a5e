"""Meta-training on `tf.distribute`: strategies, replicated meta-steps, multi-worker
checkpoints and a local launcher.

A meta-step averages the meta-gradients of a global meta-batch (problem instances for learned
optimizers, tasks for the MAML family). Under a strategy the meta-batch is split evenly across
the replicas (`MirroredStrategy` over local devices, `MultiWorkerMirroredStrategy` across
processes configured by `TF_CONFIG`) and the meta-gradients are all-reduced, so the global
meta-batch, and so the results, do not depend on the number of replicas.

    strategy = l2l.distribute.create_strategy("mirrored", cpu_devices=2)
    trainer = l2l.MetaTrainer(maml, snt.optimizers.Adam(1e-3), mse, sampler, strategy=strategy)
    trainer.fit(num_iterations=100, meta_batch_size=8)    # 4 tasks per replica

`python -m l2l.distribute.launch --workers=2 -- train.py ...` starts local workers.

This module loads without TensorFlow (train.py's --help stays fast); the submodules import it.
"""

import importlib as _importlib

# Names of train.py's / maml.py's --strategy (synchronous replicas).
STRATEGIES = ("default", "mirrored", "multi_worker")
# train.py --gradient=pes only: asynchronous workers (l2l.distribute.AsyncPES).
ASYNC_STRATEGIES = ("parameter_server",)

_LAZY = {
    "create_strategy": "strategies", "start_tensorflow": "startup",
    "replica_ids": "strategies", "all_reduce_mean": "strategies", "shard": "strategies",
    "barrier": "strategies", "is_chief": "strategies", "describe": "strategies",
    "write_dir": "checkpoints", "remove_write_dir": "checkpoints",
    "MetaBatchMinimize": "meta_batch", "AsyncPES": "async_pes",
    "meta_train_async": "async_training",
}

__all__ = ["STRATEGIES", "ASYNC_STRATEGIES", *_LAZY]


def __getattr__(name: str):
  if name in _LAZY:
    value = getattr(_importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
  elif name in ("async_pes", "async_training", "checkpoints", "launch", "meta_batch", "server",
                "startup", "strategies"):
    value = _importlib.import_module(f"{__name__}.{name}")
  else:
    raise AttributeError(f"module 'l2l.distribute' has no attribute {name!r}")
  globals()[name] = value
  return value
