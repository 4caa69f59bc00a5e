"""The fused C++ kernels on x86 CPUs without AVX-512.

The kernels are built with `-march=native`, so a test machine with AVX-512 only ever builds and
runs their AVX-512 code. A source that does not compile for a lesser CPU fails silently there
(the ops fall back to the reference, several times slower), so these tests build the sources
for the baseline x86-64 (SSE2) and for AVX2, and run the fused LSTM ops' tests against a build
for AVX2 (`L2L_KERNEL_MARCH=x86-64-v3`: the generic vector code instead of the AVX-512
intrinsics; the PerParameterMLP kernel has no AVX-512 code of its own).
"""

import concurrent.futures
import os
import platform
import re
import shutil
import subprocess
import sys

import tensorflow as tf

from nets import kernel_build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("nets/lstm_kernels.cc", "nets/mlp_rule_kernels.cc")
LEVELS = ("x86-64", "x86-64-v3")  # SSE2 only; AVX2 and FMA


def _compiler() -> str:
  return os.environ.get("CXX", "g++")


class KernelPortabilityTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    if platform.machine() not in ("x86_64", "AMD64"):
      self.skipTest("not an x86-64 machine")
    if shutil.which(_compiler()) is None:
      self.skipTest("no C++ compiler: the fused ops fall back to the reference")

  def test_march_comes_from_the_environment(self):
    os.environ["L2L_KERNEL_MARCH"] = "x86-64-v3"
    try:
      flags = kernel_build.base_flags()
    finally:
      del os.environ["L2L_KERNEL_MARCH"]
    self.assertIn("-march=x86-64-v3", flags)
    self.assertNotIn("-march=native", flags)
    self.assertIn("-march=native", kernel_build.base_flags())

  def test_sources_compile_for_every_x86_level(self):
    # -O0 and no link: fast, and enough to reject code that needs AVX-512 registers (an asm
    # operand of a 64-byte vector fails at any optimization level).
    def build(source, level):
      flags = kernel_build.compile_flags(["-c", "-O0", f"-march={level}"], shared=False,
                                         link=False)
      try:
        kernel_build.run_compiler([os.path.join(REPO, source)], os.devnull, flags)
        return ""
      except subprocess.CalledProcessError as e:
        return e.stderr or "failed"

    jobs = [(source, level) for source in SOURCES for level in LEVELS]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      results = list(pool.map(lambda job: build(*job), jobs))
    for (source, level), error in zip(jobs, results):
      with self.subTest(source=source, level=level):
        self.assertEqual(error, "", error[-3000:])

  def test_avx2_build_passes_the_fused_op_tests(self):
    # The same tests as the native build passes, in a fresh process whose kernels are built for
    # AVX2 (a separate cache entry: the flags are part of its key), including the ones that
    # fail when the kernels are unavailable.
    env = dict(os.environ, L2L_KERNEL_MARCH="x86-64-v3", TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
               "tests/fast_lstm_test.py", "-k", "built or match or deterministic or helper_pool"]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=1800)
    self.assertEqual(out.returncode, 0, out.stdout[-3000:] + out.stderr[-2000:])
    passed = re.search(r"(\d+) passed", out.stdout)
    self.assertIsNotNone(passed, out.stdout[-3000:])
    self.assertGreaterEqual(int(passed.group(1)), 15, out.stdout[-3000:])


if __name__ == "__main__":
  tf.test.main()
