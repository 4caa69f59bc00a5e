"""Asynchronous PES (l2l.distribute.AsyncPES, train.py --strategy=parameter_server).

A truncation is checked against l2l.PESMinimize (the single-process PES) with the same
perturbations, and for purity (a re-run gives the same result and changes nothing). The
cluster test starts a parameter server, 2 workers and the coordinator (train.py) on 127.0.0.1,
SIGKILLs a worker mid-run and checks that training goes on to the last meta-step and ends with
a finite saved optimizer; it stops every process it started.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pes_pair(seed: int = 5):
  """An AsyncPES without a cluster and a PESMinimize on the same nets and first instance."""
  # pylint: disable=g-import-not-at-top
  from l2l import configs, es, meta_optimizer, training
  from l2l.distribute import async_pes
  # pylint: enable=g-import-not-at-top
  named = configs.get_config("quadratic")
  net_configs = training.seeded_net_configs(named.net_configs, 0, [8])
  reference_nets = meta_optimizer.MetaOptimizer(**net_configs)
  reference = es.PESMinimize(reference_nets, named.make_problem(seed), len_unroll=5,
                             num_particles=2, std=0.01, seed=7, num_steps=20)
  nets = meta_optimizer.MetaOptimizer(**net_configs)
  trainer = async_pes.AsyncPES(None, nets, named.make_problem, [seed], len_unroll=5,
                               num_steps=20, num_particles=2, std=0.01)
  return reference, reference_nets, trainer, nets


class TruncationTest(absltest.TestCase):

  def test_matches_pes_minimize(self):
    """Three chained truncations give PESMinimize.estimate's estimates and meta-losses (same
    instance, same eps: PESMinimize draws them from Generator.from_seed(7))."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    reference, reference_nets, trainer, nets = _pes_pair()
    for a, b in zip(reference_nets.trainable_variables, nets.trainable_variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
    generator = tf.random.Generator.from_seed(7)
    chain = trainer.chains[0]
    states, xi = chain.states, chain.xi
    for _ in range(3):
      want = reference.estimate()
      eps = 0.01 * generator.normal([2, trainer.num_weights])
      gradient, meta_losses, _, states, xi = trainer.truncation(
          nets.trainable_variables, eps, states, xi, chain.constants)
      np.testing.assert_allclose(meta_losses.numpy(), want.meta_losses.numpy(), rtol=1e-5)
      np.testing.assert_allclose(gradient.numpy(), want.gradient.numpy(), rtol=1e-4,
                                 atol=1e-4 * np.abs(want.gradient.numpy()).max())
    self.assertGreater(np.abs(gradient.numpy()).max(), 0.0)

  def test_a_rerun_is_the_same_and_writes_nothing(self):
    """The scheduled function is pure: run twice on the same chain state it returns the same
    estimate and new state, and the nets, the chain and the version are unchanged."""
    _, _, trainer, nets = _pes_pair()
    before = [v.numpy().copy() for v in nets.trainable_variables]
    # pylint: disable=protected-access
    chain = trainer.chains[0]
    args = (trainer._seed(0, chain), chain.states, chain.xi, chain.constants)
    first, second = trainer._remote(*args), trainer._remote(*args)
    # pylint: enable=protected-access
    for a, b in zip(*(tf_flatten(r) for r in (first, second))):
      np.testing.assert_array_equal(a, b)
    for b, v in zip(before, nets.trainable_variables):
      np.testing.assert_array_equal(b, v.numpy())
    self.assertIs(trainer.chains[0], chain)
    self.assertEqual(int(trainer.version.numpy()), 0)
    # The particles moved: the new state is not the old one.
    self.assertFalse(np.allclose(tf_flatten(first.states)[0], tf_flatten(chain.states)[0]))

  def test_train_applies_estimates_in_process(self):
    """Without a cluster (one process) train() applies the requested number of Adam steps
    (the staleness bound drops none with one chain) and moves the nets."""
    _, _, trainer, nets = _pes_pair()
    before = [v.numpy().copy() for v in nets.trainable_variables]
    summary = trainer.train(3)
    self.assertEqual(summary["meta_steps"], 3)
    self.assertEqual(summary["dropped"], 0)
    self.assertEqual(int(trainer.version.numpy()), 3)
    self.assertEqual(trainer.chains[0].truncation, 3)  # 3 of the 4 truncations of a horizon.
    self.assertTrue(any(not np.allclose(b, v.numpy())
                        for b, v in zip(before, nets.trainable_variables)))

  def test_errors(self):
    from l2l.distribute import async_pes  # pylint: disable=g-import-not-at-top
    reference, _, _, nets = _pes_pair()
    del reference
    from l2l import configs  # pylint: disable=g-import-not-at-top
    named = configs.get_config("quadratic")
    with self.assertRaisesRegex(ValueError, r"num_steps \(25\) must be a multiple of "
                                r"len_unroll \(10\)"):
      async_pes.AsyncPES(None, nets, named.make_problem, [0], 10, 25)
    with self.assertRaisesRegex(ValueError, "max_staleness must be an int >= 0"):
      async_pes.AsyncPES(None, nets, named.make_problem, [0], 10, 20, max_staleness=-1)


def tf_flatten(structure):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [np.asarray(t) for t in tf.nest.flatten(structure)]


class ScriptErrorsTest(absltest.TestCase):

  def test_needs_pes(self):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    out = subprocess.run([sys.executable, "train.py", "--strategy=parameter_server"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("--strategy=parameter_server needs --gradient=pes", out.stderr)
    self.assertNotIn("Traceback", out.stderr)


def _start(args, env, log_path):
  log = open(log_path, "w")  # pylint: disable=consider-using-with
  process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
  log.close()
  return process


class ClusterTest(absltest.TestCase):
  """1 parameter server + 2 workers + the coordinator on 127.0.0.1; a worker is killed."""

  @pytest.mark.slow
  def test_training_survives_a_killed_worker(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from l2l.distribute import launch  # pylint: disable=g-import-not-at-top
    epochs, unrolls = 40, 2
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    processes = {}
    with tempfile.TemporaryDirectory() as tmp:
      save_path = os.path.join(tmp, "run")
      configs = dict(launch.parameter_server_configs(launch.free_ports(4), 1))
      for config in configs.values():  # Loopback only.
        for addresses in json.loads(config)["cluster"].values():
          self.assertTrue(all(a.startswith("127.0.0.1:") for a in addresses))
      try:
        for name in ("ps 0", "worker 0", "worker 1"):
          processes[name] = _start(["-m", "l2l.distribute.server"],
                                   dict(env, TF_CONFIG=configs[name]),
                                   os.path.join(tmp, name.replace(" ", "") + ".log"))
        coordinator_log = os.path.join(tmp, "chief.log")
        processes["chief"] = _start(
            ["train.py", "--strategy=parameter_server", "--gradient=pes",
             f"--num_epochs={epochs}", "--num_steps=20", "--unroll_length=10",
             "--pes_particles=2", "--net_layers=8", "--evaluation_period=20",
             "--evaluation_epochs=2", "--log_period=2", "--checkpoint_period=10",
             "--learning_rate=0.003", f"--save_path={save_path}"],
            dict(env, TF_CONFIG=configs["chief"]), coordinator_log)
        # Kill worker 1 once the coordinator has applied some estimates (logged every 4).
        deadline = time.monotonic() + 300
        killed_after = None
        while time.monotonic() < deadline and processes["chief"].poll() is None:
          with open(coordinator_log) as f:
            steps = [int(line.split("meta-step ")[1].split("/")[0]) for line in f
                     if "] meta-step " in line]
          if steps and steps[-1] >= 8:
            killed_after = steps[-1]
            processes["worker 1"].send_signal(signal.SIGKILL)
            break
          time.sleep(0.05)
        self.assertIsNotNone(killed_after, "no progress before the kill")
        self.assertLess(killed_after, epochs * unrolls, "the run ended before the kill")
        processes["chief"].wait(timeout=300)
        with open(coordinator_log) as f:
          log = f.read()
        self.assertEqual(processes["chief"].returncode, 0, log[-3000:])
        self.assertIsNotNone(processes["worker 1"].poll())  # It stayed dead.
        self.assertIn(f"meta-step {epochs * unrolls}/{epochs * unrolls}", log)
        self.assertIn("done in", log)
        state = tf.train.load_checkpoint(tf.train.latest_checkpoint(
            os.path.join(save_path, "train_state")))
        self.assertEqual(int(state.get_tensor("version/.ATTRIBUTES/VARIABLE_VALUE")),
                         epochs * unrolls)
        nets = [k for k in state.get_variable_to_shape_map()
                if k.startswith("nets/") and "OPTIMIZER_SLOT" not in k]
        self.assertNotEmpty(nets)
        for key in nets:
          self.assertTrue(np.all(np.isfinite(state.get_tensor(key))), key)
        self.assertTrue(os.path.exists(os.path.join(save_path, "config.json")))
      finally:
        for process in processes.values():
          if process.poll() is None:
            process.kill()
          process.wait()


if __name__ == "__main__":
  absltest.main()
