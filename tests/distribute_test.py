"""l2l.distribute: meta-batches, MirroredStrategy and MultiWorkerMirroredStrategy.

The replicated runs are checked against single-replica runs with the same seeds and the same
global meta-batch: after k meta-steps the nets must agree to rtol 1e-5 / atol 1e-6 (float32
sums of the meta-gradients in another order; Adam's normalised steps keep the differences near
float32 rounding). MirroredStrategy needs 2 logical CPU devices configured before TensorFlow
starts, so that part runs in a subprocess (this file run as a script); the multi-worker part
starts train.py as 2 workers on 127.0.0.1 through l2l.distribute.launch.
"""

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl.testing import absltest
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 1e-5, 1e-6
# The tiny runs compared below: a learned optimizer on the quadratic (2 epochs of 2 unrolls of 5
# steps) and MAML / Reptile on sinusoids (3 meta-steps of 4 tasks).
L2L_EPOCHS, L2L_UNROLLS, L2L_UNROLL, META_BATCH = 2, 2, 5, 4
MAML_STEPS = 3


def learned_optimizer_nets(strategy, meta_batch_size=META_BATCH):
  """The nets' weights after L2L_EPOCHS x L2L_UNROLLS meta-steps of MetaBatchMinimize."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from l2l import configs
  from l2l import distribute
  from l2l import meta_optimizer
  from l2l import options
  from l2l import training
  # pylint: enable=g-import-not-at-top
  named = configs.get_config("quadratic")
  tf.random.set_seed(0)
  opt = meta_optimizer.MetaOptimizer(**training.seeded_net_configs(named.net_configs, 0))
  config = options.TrainConfig(seed=0)
  trainer = distribute.MetaBatchMinimize(
      opt, [training.train_problem(named, config, i) for i in range(meta_batch_size)],
      L2L_UNROLL, 1e-2, named.net_assignments, strategy=strategy, objective="log")
  losses = []
  for _ in range(L2L_EPOCHS):
    trainer.reset()
    for _ in range(L2L_UNROLLS):
      losses.append(float(trainer.step()))
  return [v.numpy() for v in opt.trainable_variables], losses


def maml_nets(strategy, algorithm="MAML"):
  """The model's weights after MAML_STEPS meta-steps of MetaTrainer.fit on sinusoids."""
  import sonnet as snt  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import l2l  # pylint: disable=g-import-not-at-top
  from l2l.meta_learning import meta_trainer  # pylint: disable=g-import-not-at-top
  import problems  # pylint: disable=g-import-not-at-top
  model = snt.nets.MLP([16, 1], name="mlp")
  model(tf.zeros([1, 1]))
  rng = np.random.default_rng(0)  # The same start in every run of the process.
  for v in model.trainable_variables:
    v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
  maml = (l2l.Reptile(model, 0.05, 2) if algorithm == "Reptile"
          else l2l.MAML(model, 0.05, 2))
  trainer = l2l.MetaTrainer(maml, snt.optimizers.Adam(1e-2), meta_trainer.mse,
                            problems.SinusoidTaskSampler(k_support=5, k_query=5, seed=0),
                            strategy=strategy)
  history = trainer.fit(MAML_STEPS, meta_batch_size=META_BATCH, log_every_seconds=None)
  return [v.numpy() for v in model.trainable_variables], history.meta_losses


def fewshot_nets(strategy, workdir: str):
  """maml.py's library run (fewshot.run: MAML, 5-shot sinusoids, MAML_STEPS meta-steps of
  META_BATCH tasks) in `workdir`; the trained weights read back from its checkpoint."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2l.meta_learning import fewshot  # pylint: disable=g-import-not-at-top
  config = fewshot.FewShotConfig(methods=("MAML",), shots=(5,), num_iterations=MAML_STEPS,
                                 meta_batch_size=META_BATCH, meta_lr=1e-2, inner_lr=0.05,
                                 eval_steps=(1,), num_eval_tasks=8, k_query=5, hidden=(16,),
                                 workdir=workdir)
  results = fewshot.run(config, strategy)
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
      os.path.join(workdir, "MAML_5shot")))
  keys = sorted(k for k in reader.get_variable_to_shape_map()
                if k.startswith("algorithm/") and "OPTIMIZER_SLOT" not in k)
  assert keys, reader.get_variable_to_shape_map()
  return [reader.get_tensor(k) for k in keys], [results["rows"][0]["final_meta_loss"]]


def mirrored_main(out: str) -> None:
  """Script mode: single-replica and 2-replica (logical CPU) runs, weights saved to `out`."""
  from l2l import distribute  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy("mirrored", cpu_devices=2)
  assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
  arrays = {}
  workdir = os.path.dirname(out)
  for name, run in (("l2l", learned_optimizer_nets), ("maml", maml_nets),
                    ("reptile", lambda s: maml_nets(s, "Reptile")),
                    ("fewshot", lambda s: fewshot_nets(s, os.path.join(
                        workdir, "fewshot_" + ("single" if s is None else "mirrored"))))):
    for mode, s in (("single", None), ("mirrored", strategy)):
      weights, losses = run(s)
      arrays[f"{name}/{mode}/losses"] = np.array(losses)
      for i, w in enumerate(weights):
        arrays[f"{name}/{mode}/{i}"] = w
  np.savez(out, **arrays)


def multi_worker_maml_main(out: str) -> None:
  """Script mode, one worker of a TF_CONFIG cluster: MAML under MultiWorkerMirroredStrategy;
  the chief saves the weights to `out`."""
  from l2l import distribute  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy("multi_worker")  # Before any other TensorFlow op.
  weights, losses = maml_nets(strategy)
  if distribute.is_chief(strategy):
    np.savez(out, losses=np.array(losses), **{str(i): w for i, w in enumerate(weights)})


def run_checked(args, **kwargs) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False, **kwargs)
  if result.returncode:
    raise AssertionError(f"{args} exited with {result.returncode}:\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")
  return result


class MirroredTest(absltest.TestCase):
  """MirroredStrategy over 2 logical CPU devices against one replica, same global meta-batch."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    out = os.path.join(cls.tmp.name, "mirrored.npz")
    run_checked([os.path.abspath(__file__), "mirrored", out])
    with np.load(out) as arrays:
      cls.arrays = dict(arrays)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def assert_same_training(self, name):
    single = sorted(k for k in self.arrays if k.startswith(f"{name}/single/"))
    self.assertGreater(len(single), 2)
    initial_moved = False
    for key in single:
      a, b = self.arrays[key], self.arrays[key.replace("/single/", "/mirrored/")]
      np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=key)
      initial_moved |= key.endswith("losses") or bool(np.any(a != 0))
    self.assertTrue(initial_moved)
    losses = self.arrays[f"{name}/single/losses"]
    self.assertTrue(np.all(np.isfinite(losses)))

  def test_learned_optimizer(self):
    self.assert_same_training("l2l")
    self.assertEqual(len(self.arrays["l2l/single/losses"]), L2L_EPOCHS * L2L_UNROLLS)

  def test_maml(self):
    self.assert_same_training("maml")
    self.assertEqual(len(self.arrays["maml/single/losses"]), MAML_STEPS)

  def test_reptile(self):
    self.assert_same_training("reptile")

  def test_maml_script(self):
    """maml.py's run (fewshot.run, as --strategy=mirrored --cpu_devices=2 calls it): the
    checkpointed meta-parameters and results equal one replica's."""
    self.assert_same_training("fewshot")
    for mode in ("single", "mirrored"):
      workdir = os.path.join(self.tmp.name, f"fewshot_{mode}")
      self.assertEqual(sorted(os.listdir(workdir)), ["MAML_5shot", "results.json"])


class MetaBatchTest(absltest.TestCase):
  """The meta-batch without a strategy, against independent references (in this process)."""

  def test_mean_of_per_instance_meta_gradients(self):
    """One step of a meta-batch of 2 = Adam on the mean of the two instances' meta-gradients,
    each computed alone by MetaLoss under a GradientTape."""
    import sonnet as snt  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # pylint: disable=g-import-not-at-top
    from l2l import configs
    from l2l import distribute
    from l2l import meta_optimizer
    from l2l import options
    from l2l import training
    # pylint: enable=g-import-not-at-top
    named = configs.get_config("quadratic")
    config = options.TrainConfig(seed=3)
    problems_ = [training.train_problem(named, config, i) for i in range(2)]
    nets = lambda: meta_optimizer.MetaOptimizer(
        **training.seeded_net_configs(named.net_configs, 3))
    opt = nets()
    trainer = distribute.MetaBatchMinimize(opt, problems_, 4, 1e-2, named.net_assignments)
    trainer.reset()
    trainer.step()
    reference = nets()
    grads = []
    for make_loss in [training.train_problem(named, config, i) for i in range(2)]:
      meta_loss = reference.meta_loss(make_loss, 4, named.net_assignments)
      meta_loss.reset()
      with tf.GradientTape() as tape:
        loss = meta_loss()
      grads.append(tape.gradient(loss, reference.trainable_variables))
    adam = snt.optimizers.Adam(1e-2)
    adam.apply([(a + b) / 2 for a, b in zip(*grads)], reference.trainable_variables)
    for got, want in zip(opt.trainable_variables, reference.trainable_variables):
      np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=RTOL, atol=ATOL)
    self.assertFalse(np.allclose(grads[0][0].numpy(), grads[1][0].numpy()))

  def test_batch_of_one_is_meta_minimize(self):
    """A meta-batch of 1 without a strategy trains exactly as MetaMinimize (bit for bit)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # pylint: disable=g-import-not-at-top
    from l2l import configs
    from l2l import distribute
    from l2l import meta_optimizer
    from l2l import options
    from l2l import training
    # pylint: enable=g-import-not-at-top
    named = configs.get_config("quadratic")
    config = options.TrainConfig(seed=1)
    results = []
    for batched in (False, True):
      tf.random.set_seed(1)
      opt = meta_optimizer.MetaOptimizer(**training.seeded_net_configs(named.net_configs, 1))
      problem = training.train_problem(named, config)
      trainer = (distribute.MetaBatchMinimize(opt, [problem], 5, 1e-2, named.net_assignments)
                 if batched else opt.meta_minimize(problem, 5, 1e-2, named.net_assignments))
      for _ in range(2):
        trainer.reset()
        trainer.step()
        trainer.step()
      results.append(([v.numpy() for v in opt.trainable_variables],
                      trainer.losses.numpy()))
    for a, b in zip(results[0][0], results[1][0]):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[0][1], results[1][1])

  def test_errors(self):
    from l2l import distribute, options  # pylint: disable=g-import-not-at-top
    with self.assertRaisesRegex(ValueError, "strategy must be one of"):
      distribute.create_strategy("tpu")
    with self.assertRaisesRegex(ValueError, "cpu_devices applies to strategy 'mirrored'"):
      distribute.create_strategy("multi_worker", cpu_devices=2)
    saved = os.environ.pop("TF_CONFIG", None)
    try:
      with self.assertRaisesRegex(ValueError, "needs the TF_CONFIG environment variable"):
        distribute.create_strategy("multi_worker")
      os.environ["TF_CONFIG"] = "{not json"
      with self.assertRaisesRegex(ValueError, "TF_CONFIG must be JSON like"):
        distribute.create_strategy("multi_worker")
    finally:
      os.environ.pop("TF_CONFIG", None)
      if saved is not None:
        os.environ["TF_CONFIG"] = saved
    with self.assertRaisesRegex(ValueError, r"meta_batch_size must be 1 with gradient='pes'"):
      options.TrainConfig(gradient="pes", meta_batch_size=2).validate()
    with self.assertRaisesRegex(ValueError, "meta_batch_size must be a positive integer"):
      options.TrainConfig(meta_batch_size=0).validate()
    with self.assertRaisesRegex(ValueError, "must be a multiple of the number of replicas"):
      distribute.shard(3, _FakeStrategy(2))
    self.assertEqual(distribute.shard(4, _FakeStrategy(2)), 2)
    import sonnet as snt  # pylint: disable=g-import-not-at-top
    import l2l  # pylint: disable=g-import-not-at-top
    from l2l.meta_learning import meta_trainer  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    model = snt.Linear(1)
    model(tf.zeros([1, 1]))
    import problems  # pylint: disable=g-import-not-at-top
    trainer = l2l.MetaTrainer(l2l.MAML(model, 0.1), snt.optimizers.SGD(0.1), meta_trainer.mse,
                              problems.tasks.SinusoidTaskSampler(seed=0),
                              strategy=_FakeStrategy(2))
    with self.assertRaisesRegex(ValueError, r"meta_batch_size \(3\) must be a multiple of the "
                                r"number of replicas \(2\)"):
      trainer.fit(1, meta_batch_size=3)


class _FakeStrategy:
  def __init__(self, replicas):
    self.num_replicas_in_sync = replicas


class LaunchTest(absltest.TestCase):
  """The launcher without TensorFlow: TF_CONFIG per worker, a failure stops the others."""

  def test_tf_configs_are_a_loopback_cluster(self):
    from l2l.distribute import launch  # pylint: disable=g-import-not-at-top
    ports = launch.free_ports(3)
    self.assertLen(set(ports), 3)
    configs = [json.loads(c) for c in launch.tf_configs(ports)]
    for index, config in enumerate(configs):
      self.assertEqual(config["cluster"]["worker"], [f"127.0.0.1:{p}" for p in ports])
      self.assertEqual(config["task"], {"type": "worker", "index": index})

  def test_parameter_server_configs_are_a_loopback_cluster(self):
    from l2l.distribute import launch  # pylint: disable=g-import-not-at-top
    ports = launch.free_ports(4)
    tasks = launch.parameter_server_configs(ports, 1)
    self.assertEqual([name for name, _ in tasks], ["chief", "ps 0", "worker 0", "worker 1"])
    for name, config in tasks:
      config = json.loads(config)
      self.assertEqual(config["cluster"], {"chief": [f"127.0.0.1:{ports[0]}"],
                                           "ps": [f"127.0.0.1:{ports[1]}"],
                                           "worker": [f"127.0.0.1:{p}" for p in ports[2:]]})
      self.assertEqual(f"{config['task']['type']} {config['task']['index']}"
                       if name != "chief" else "chief", name)
    with self.assertRaisesRegex(ValueError, "parameter_servers must be a positive integer"):
      launch.launch_parameter_server(["x.py"], workers=1, parameter_servers=0)

  def test_a_failing_worker_stops_the_others(self):
    from l2l.distribute import launch  # pylint: disable=g-import-not-at-top
    script = ("import json, os, sys, time\n"
              "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
              "print('started', index, flush=True)\n"
              "time.sleep(120) if index == 0 else sys.exit(3)\n")
    start = time.monotonic()
    with mock.patch("sys.stdout", new_callable=io.StringIO) as out:
      status = launch.launch(["-c", script], workers=2, grace_seconds=5.0)
    self.assertEqual(status, 3)
    self.assertLess(time.monotonic() - start, 60.0)  # Worker 0 was stopped, not waited for.
    self.assertIn("[worker 1] started 1", out.getvalue())
    with self.assertRaisesRegex(ValueError, "workers must be a positive integer"):
      launch.launch(["x.py"], workers=0)


class MultiWorkerTest(absltest.TestCase):
  """train.py as 2 MultiWorkerMirroredStrategy workers on 127.0.0.1 (started by the launcher)
  against one process with the same flags and meta-batch."""

  FLAGS = ["--num_epochs=2", "--num_steps=20", "--unroll_length=10", "--meta_batch_size=2",
           "--evaluation_period=2", "--evaluation_epochs=2", "--log_period=1",
           "--learning_rate=0.01", "--seed=4"]

  def test_two_workers_match_one_process(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from l2l import options, training  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as tmp:
      distributed, single = os.path.join(tmp, "mw"), os.path.join(tmp, "single")
      result = run_checked(["-m", "l2l.distribute.launch", "--workers=2", "--",
                            "train.py", "--strategy=multi_worker", f"--save_path={distributed}",
                            *self.FLAGS])
      for worker in (0, 1):
        self.assertIn(f"[worker {worker}] ", result.stdout)
      self.assertIn("2 replicas (MultiWorkerMirroredStrategy, worker 1", result.stdout)
      summary = training.meta_train(options.TrainConfig(
          num_epochs=2, num_steps=20, unroll_length=10, meta_batch_size=2,
          evaluation_period=2, evaluation_epochs=2, log_period=1, learning_rate=0.01, seed=4,
          save_path=single))
      self.assertEqual(summary["meta_steps"], 4)
      # Only the chief's files remain: the other worker's temporary directories are gone.
      self.assertEqual(sorted(os.listdir(os.path.join(distributed, "train_state"))),
                       sorted(os.listdir(os.path.join(single, "train_state"))))
      self.assertEqual(sorted(os.listdir(distributed)), sorted(os.listdir(single)))
      a = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(single,
                                                                           "train_state")))
      b = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(distributed,
                                                                           "train_state")))
      shapes = a.get_variable_to_shape_map()
      self.assertEqual(shapes, b.get_variable_to_shape_map())
      nets = [k for k in shapes if "meta_optimizer" in k and "OPTIMIZER_SLOT" not in k]
      self.assertGreater(len(nets), 4)
      self.assertTrue(any(k.startswith("generators/") for k in shapes))
      for key in shapes:
        # A worker's checkpoint holds the last unroll's state of its own instances only (the
        # others' are stale there); every epoch starts by resetting them all.
        if key == "_CHECKPOINTABLE_OBJECT_GRAPH" or key.startswith("trainer/meta_losses/"):
          continue
        want, got = a.get_tensor(key), b.get_tensor(key)
        if np.issubdtype(np.asarray(want).dtype, np.floating):
          np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=key)
        else:
          np.testing.assert_array_equal(got, want, err_msg=key)

  @pytest.mark.slow
  def test_maml_two_workers_match_one_process(self):
    """MetaTrainer (MAML, 4 tasks per meta-step) on 2 workers against one replica; slow (2 more
    TensorFlow processes), run with -m slow."""
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "maml.npz")
      run_checked(["-m", "l2l.distribute.launch", "--workers=2", "--",
                   os.path.abspath(__file__), "multi_worker_maml", out])
      weights, losses = maml_nets(None)
      with np.load(out) as saved:
        np.testing.assert_allclose(saved["losses"], losses, rtol=RTOL, atol=ATOL)
        for i, w in enumerate(weights):
          np.testing.assert_allclose(saved[str(i)], w, rtol=RTOL, atol=ATOL)

  @pytest.mark.slow
  def test_maml_script_two_workers_match_one_process(self):
    """maml.py --strategy=multi_worker as 2 workers (the launcher) against fewshot.run in this
    process: the same checkpointed weights, and only the chief's files in --workdir (slow)."""
    with tempfile.TemporaryDirectory() as tmp:
      distributed = os.path.join(tmp, "mw")
      try:
        run_checked(["-m", "l2l.distribute.launch", "--workers=2", "--", "maml.py",
                     "--strategy=multi_worker", "--methods=MAML", "--shots=5",
                     f"--num_iterations={MAML_STEPS}", f"--meta_batch_size={META_BATCH}",
                     "--meta_lr=0.01", "--inner_lr=0.05", "--eval_steps=1",
                     "--num_eval_tasks=8", "--k_query=5", "--hidden=16",
                     f"--workdir={distributed}"])
      except AssertionError as e:  # Exit status 3: labelled diverged (3 meta-steps), compared.
        self.assertIn("exited with 3", str(e).splitlines()[0])
      weights, _ = fewshot_nets(None, os.path.join(tmp, "single"))
      self.assertEqual(sorted(os.listdir(distributed)), ["MAML_5shot", "results.json"])
      self.assertFalse(any(n.startswith("workertemp")
                           for n in os.listdir(os.path.join(distributed, "MAML_5shot"))))
      rows = []
      for workdir in (distributed, os.path.join(tmp, "single")):
        with open(os.path.join(workdir, "results.json")) as f:
          rows.append(json.load(f)["rows"][0])
      self.assertEqual(rows[0]["iterations"], MAML_STEPS)
      self.assertEqual(rows[0]["diverged"], rows[1]["diverged"])
      np.testing.assert_allclose(rows[0]["loss@1"], rows[1]["loss@1"], rtol=RTOL)
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
          os.path.join(distributed, "MAML_5shot")))
      keys = sorted(k for k in reader.get_variable_to_shape_map()
                    if k.startswith("algorithm/") and "OPTIMIZER_SLOT" not in k)
      self.assertLen(keys, len(weights))
      for key, want in zip(keys, weights):
        np.testing.assert_allclose(reader.get_tensor(key), want, rtol=RTOL, atol=ATOL,
                                   err_msg=key)

  @pytest.mark.slow
  def test_killed_worker_resumes_from_the_chiefs_checkpoint(self):
    """SIGKILL worker 1 once the chief has checkpointed epoch >= 4 (and stop the chief, which
    waits in the all-reduce), restart both with the launcher: the job resumes from the chief's
    last checkpoint and ends as an uninterrupted single process does (slow: -m slow)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from l2l import options, training  # pylint: disable=g-import-not-at-top
    from l2l.distribute import launch  # pylint: disable=g-import-not-at-top
    epochs = 40
    flags = [f"--num_epochs={epochs}", "--num_steps=20", "--unroll_length=10",
             "--meta_batch_size=2", "--evaluation_period=10", "--evaluation_epochs=2",
             "--log_period=10", "--learning_rate=0.01", "--seed=5", "--checkpoint_period=2"]
    with tempfile.TemporaryDirectory() as tmp:
      distributed, single = os.path.join(tmp, "mw"), os.path.join(tmp, "single")
      command = [sys.executable, "train.py", "--strategy=multi_worker",
                 f"--save_path={distributed}", *flags]
      env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                 TF_CPP_MIN_LOG_LEVEL="2")
      workers = [subprocess.Popen(command, cwd=REPO, env=dict(env, TF_CONFIG=config),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for config in launch.tf_configs(launch.free_ports(2))]
      state = os.path.join(distributed, "train_state")
      try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and all(w.poll() is None for w in workers):
          latest = tf.train.latest_checkpoint(state)
          if latest and int(latest.rsplit("-", 1)[1]) >= 4:
            break
          time.sleep(0.05)
        killed_at = int(tf.train.latest_checkpoint(state).rsplit("-", 1)[1])
        self.assertIsNone(workers[1].poll(), "the run ended before the kill")
        workers[1].kill()
      finally:
        for worker in workers:
          worker.kill()
          worker.wait()
      self.assertLess(killed_at, epochs)
      result = run_checked(["-m", "l2l.distribute.launch", "--workers=2", "--", *command[1:]])
      self.assertIn("resuming from checkpoint", result.stdout)
      training.meta_train(options.TrainConfig(
          num_epochs=epochs, num_steps=20, unroll_length=10, meta_batch_size=2,
          evaluation_period=10, evaluation_epochs=2, log_period=10, learning_rate=0.01, seed=5,
          checkpoint_period=2, save_path=single))
      a = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(single,
                                                                           "train_state")))
      b = tf.train.load_checkpoint(tf.train.latest_checkpoint(state))
      self.assertEqual(int(b.get_tensor("meta_steps/.ATTRIBUTES/VARIABLE_VALUE")), 2 * epochs)
      for key in a.get_variable_to_shape_map():
        if key.startswith("trainer/meta_optimizer/") or key.startswith("generators/"):
          np.testing.assert_allclose(b.get_tensor(key), a.get_tensor(key), rtol=1e-4,
                                     atol=1e-5, err_msg=key)


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "mirrored":
    sys.path.insert(0, REPO)
    mirrored_main(sys.argv[2])
  elif len(sys.argv) == 3 and sys.argv[1] == "multi_worker_maml":
    sys.path.insert(0, REPO)
    multi_worker_maml_main(sys.argv[2])
  else:
    absltest.main()
