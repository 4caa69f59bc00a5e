"""Damaged, truncated or foreign saved optimizers: a ValueError naming the directory from
`MetaOptimizer.load` / `LearnedOptimizer(path)`, a one-line error from evaluate.py --path."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

import l2l
from l2l import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = {"cw": {"net": "CoordinateWiseDeepLSTM", "net_options": {"layers": [4], "seed": 0}}}


def _data_file(path):
  return glob.glob(os.path.join(path, "nets.data-*"))[0]


def truncate_data(path):
  with open(_data_file(path), "rb") as f:
    data = f.read()
  with open(_data_file(path), "wb") as f:
    f.write(data[:len(data) // 2])


def empty_data(path):
  open(_data_file(path), "wb").close()


def flip_data_bytes(path):
  with open(_data_file(path), "rb") as f:
    data = bytearray(f.read())
  data[8:24] = b"\xff" * 16
  with open(_data_file(path), "wb") as f:
    f.write(bytes(data))


def remove_data(path):
  os.remove(_data_file(path))


def garbage_index(path):
  with open(os.path.join(path, "nets.index"), "wb") as f:
    f.write(b"garbage" * 20)


def truncate_index(path):
  with open(os.path.join(path, "nets.index"), "rb") as f:
    data = f.read()
  with open(os.path.join(path, "nets.index"), "wb") as f:
    f.write(data[:len(data) // 2])


def something_else(path):
  shutil.rmtree(path)
  os.makedirs(path)
  with open(os.path.join(path, "notes.txt"), "w") as f:
    f.write("not an optimizer")


def foreign_checkpoint(path):
  for name in glob.glob(os.path.join(path, "nets.*")):
    os.remove(name)
  tf.train.Checkpoint(v=tf.Variable(1.0)).write(os.path.join(path, "nets"))


def other_nets_config(path):
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write('{"cw": {"net": "CoordinateWiseDeepLSTM", "net_options": {"layers": [7]}}}')


def broken_json(path):
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write("{not json")


def json_of_something_else(path):
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write('{"cw": 3}')


DAMAGES = [
    (truncate_data, "corrupt or incomplete"), (empty_data, "corrupt or incomplete"),
    (flip_data_bytes, "corrupt or incomplete.*[Cc]hecksum"),
    (remove_data, "corrupt or incomplete"), (garbage_index, "corrupt or incomplete"),
    (truncate_index, "corrupt or incomplete"), (something_else, "no saved optimizer"),
    (foreign_checkpoint, "does not match these nets"),
    (other_nets_config, "does not match these nets"),
    (broken_json, "corrupt optimizer config"), (json_of_something_else, "bad optimizer config"),
]


class CorruptFilesTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.saved = os.path.join(tempfile.mkdtemp(), "opt")
    l2l.MetaOptimizer(**NET).save(cls.saved)

  def damaged(self, damage):
    path = os.path.join(tempfile.mkdtemp(), "opt")
    shutil.copytree(self.saved, path)
    damage(path)
    return path

  @parameterized.parameters(*DAMAGES)
  def test_api_raises_value_error_naming_the_directory(self, damage, message):
    path = self.damaged(damage)
    for load in (l2l.MetaOptimizer.load, lambda p: l2l.LearnedOptimizer(p, num_steps=5)):
      with self.assertRaisesRegex(ValueError, f"{path}.*{message}|{message}.*{path}"):
        load(path)

  def test_undamaged_copy_loads(self):
    loaded = l2l.MetaOptimizer.load(self.damaged(lambda path: None))
    self.assertEqual(sorted(loaded.nets), ["cw"])

  def test_wrong_path_types(self):
    for bad in (None, 3, ["a"]):
      with self.assertRaisesRegex(TypeError, "path must be"):
        l2l.MetaOptimizer.load(bad)
    with tempfile.NamedTemporaryFile() as f:
      with self.assertRaisesRegex(ValueError, "is a file, not a directory"):
        l2l.MetaOptimizer.load(f.name)

  def test_evaluate_py_one_line_errors(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for damage, message in (DAMAGES[0],):
      with self.subTest(damage=damage.__name__):
        result = subprocess.run(
            [sys.executable, "evaluate.py", "--optimizer=L2L", f"--path={self.damaged(damage)}",
             "--num_epochs=1", "--num_steps=2"], cwd=REPO, env=env, capture_output=True,
            text=True, timeout=300)
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertLen(lines, 1, result.stderr)
        self.assertRegex(lines[0], f"^evaluate.py: error: .*{message}")


  def test_damaged_training_state_is_a_value_error_naming_it(self):
    path = os.path.join(tempfile.mkdtemp(), "run")
    config = dict(problem="quadratic", num_epochs=1, num_steps=4, unroll_length=2,
                  evaluation_epochs=1, save_path=path)
    training.meta_train(training.TrainConfig(**config))
    state = os.path.join(path, training.TRAIN_STATE)
    truncate_data_file = glob.glob(os.path.join(state, "ckpt-1.data-*"))[0]
    open(truncate_data_file, "wb").close()  # Truncated to nothing: even the epoch is unreadable.
    with self.assertRaisesRegex(ValueError, f"training state '{state}/ckpt-1' is corrupt.*"
                                "--overwrite"):
      training.meta_train(training.TrainConfig(**config))


if __name__ == "__main__":
  absltest.main()
