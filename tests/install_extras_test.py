"""The install extras resolve to exactly one TensorFlow build: `cpu` and `test` to tensorflow-cpu,
`gpu` to TensorFlow with CUDA (`tensorflow[and-cuda]`), the same version everywhere.

Checked on the package metadata setuptools writes from pyproject.toml (the Requires-Dist lines
pip reads), built in a scratch copy of the project's metadata files: no GPU, no network.
"""

import contextlib
import os
import shutil
import tempfile
import tomllib

from absl.testing import absltest
from packaging import markers
from packaging import requirements

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENSORFLOW_BUILDS = ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-gpu")


def requires_dist():
  """The Requires-Dist lines of the metadata built from pyproject.toml."""
  from setuptools import build_meta  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as project:
    for name in ("pyproject.toml", "README.md"):
      shutil.copy(os.path.join(REPO, name), project)
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
      setuptools_config = tomllib.load(f)["tool"]["setuptools"]
    # Every package and module pyproject.toml lists, as an empty stub.
    for package in setuptools_config["packages"]:
      os.makedirs(os.path.join(project, *package.split(".")), exist_ok=True)
      open(os.path.join(project, *package.split("."), "__init__.py"), "w").close()
    for module in setuptools_config.get("py-modules", ()):
      open(os.path.join(project, module + ".py"), "w").close()
    output = os.path.join(project, "metadata")
    os.makedirs(output)
    cwd = os.getcwd()
    try:
      os.chdir(project)
      with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
          contextlib.redirect_stderr(devnull):
        dist_info = build_meta.prepare_metadata_for_build_wheel(output)
    finally:
      os.chdir(cwd)
    with open(os.path.join(output, dist_info, "METADATA")) as f:
      return [line.split(":", 1)[1].strip() for line in f
              if line.startswith("Requires-Dist:")]


def resolved(lines, extras):
  """The requirements `pip install l2l[extras]` asks for (markers evaluated on this machine)."""
  result = []
  for line in lines:
    requirement = requirements.Requirement(line)
    marker = requirement.marker
    if marker is None or any(marker.evaluate({"extra": e}) for e in (extras or [""])):
      result.append(requirement)
  return result


def tensorflow_builds(requirement_list):
  """The distinct TensorFlow requirements (the same one from two extras counts once)."""
  unique = {(r.name, tuple(sorted(r.extras)), str(r.specifier)): r
            for r in requirement_list if r.name in TENSORFLOW_BUILDS}
  return list(unique.values())


class InstallExtrasTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.lines = requires_dist()

  def test_gpu_extra_brings_tensorflow_with_cuda_and_no_cpu_build(self):
    (tf_req,) = tensorflow_builds(resolved(self.lines, ["gpu"]))
    self.assertEqual(tf_req.name, "tensorflow")
    self.assertEqual(tf_req.extras, {"and-cuda"})
    self.assertEqual(str(tf_req.specifier), "==2.21.0")

  def test_cpu_and_test_extras_bring_the_cpu_build(self):
    for extras in (["cpu"], ["test"], ["cpu", "test"]):
      (tf_req,) = tensorflow_builds(resolved(self.lines, extras))
      self.assertEqual((tf_req.name, str(tf_req.specifier)), ("tensorflow-cpu", "==2.21.0"),
                       msg=extras)
    self.assertIn("pytest", [r.name for r in resolved(self.lines, ["test"])])

  def test_base_leaves_tensorflow_to_the_extras(self):
    # tensorflow-cpu and tensorflow install the same files and an extra cannot drop a base
    # requirement: a base TensorFlow would clash with the gpu extra's (BUILD.md, "Install").
    self.assertEqual(tensorflow_builds(resolved(self.lines, None)), [])
    self.assertIn("dm-sonnet", [r.name for r in resolved(self.lines, None)])

  def test_markers_name_only_known_extras(self):
    for line in self.lines:
      marker = requirements.Requirement(line).marker
      if marker is not None:
        self.assertTrue(any(marker.evaluate({"extra": e}) for e in ("cpu", "gpu", "test")),
                        msg=line)
    self.assertIsInstance(markers.default_environment(), dict)


if __name__ == "__main__":
  absltest.main()
