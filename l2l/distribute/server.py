"""A parameter server or worker task of an asynchronous (`ParameterServerStrategy`) cluster.

    TF_CONFIG='{"cluster": {...}, "task": {"type": "worker", "index": 0}}' \\
        python -m l2l.distribute.server

Starts a `tf.distribute.Server` for this task of TF_CONFIG and serves until killed: the
coordinator (the "chief" task, e.g. `train.py --strategy=parameter_server`) places variables on
the "ps" tasks and schedules functions on the "worker" tasks; these processes run no Python code
of their own. `train.py --strategy=parameter_server` started with a "ps" or "worker" TF_CONFIG
does the same, so every machine of a cluster can run one command.
"""

import json
import os
import sys

SERVER_TASKS = ("ps", "worker")


def task_type() -> str:
  """This process's task type in TF_CONFIG ("" without one)."""
  try:
    return str(json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {}).get("type", ""))
  except (ValueError, AttributeError):
    return ""


def serve() -> None:
  """Runs this TF_CONFIG task's server until the process is killed (never returns)."""
  from l2l import cli  # pylint: disable=g-import-not-at-top
  tf = cli.start_tensorflow()  # Quietly (TensorFlow's start-up chatter hidden).
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  if resolver.task_type not in SERVER_TASKS:
    raise ValueError(f"TF_CONFIG's task type must be one of {SERVER_TASKS} for a server, got "
                     f"{resolver.task_type!r}")
  # The functions the coordinator sends may use l2l's custom ops (the fused LSTM and MLP-rule
  # kernels): register them in this process too (the same cached build as the coordinator's).
  from nets import lstm, mlp_rule_fused  # pylint: disable=g-import-not-at-top
  lstm.lstm_kernels()
  mlp_rule_fused.mlp_rule_kernels()
  server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                task_index=resolver.task_id, protocol="grpc", start=True)
  print(f"serving {resolver.task_type} {resolver.task_id} at {server.target}", flush=True)
  server.join()


def main() -> None:
  try:
    serve()
  except ValueError as e:
    print(f"l2l.distribute.server: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
