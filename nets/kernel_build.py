"""Compiling and loading l2l's fused C++ ops on first use (shared by every fused kernel).

A kernel source is built once per source, TensorFlow version and machine into
`$XDG_CACHE_HOME/l2l` (default `~/.cache/l2l`) with the C++ compiler (`$CXX`, default `g++`) and
the flags of the installed TensorFlow, for the CPU it runs on (`-march=native`;
`L2L_KERNEL_MARCH=x86-64-v3`, for example, builds for another x86 level instead: how the tests
check the kernels on CPUs without AVX-512). When no compiler is found or the build fails, the
loader returns None and callers fall back to their reference ops (same results, slower);
`L2L_NO_KERNELS=1` forces that fallback.
"""

import hashlib
import os
import platform
import subprocess
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import tensorflow as tf

BASE_FLAGS = ("-std=c++17", "-shared", "-fPIC", "-O3", "-march=native", "-mno-avx512fp16",
              "-fno-math-errno", "-fno-trapping-math")


def base_flags() -> Sequence[str]:
  """`BASE_FLAGS`, with `-march=$L2L_KERNEL_MARCH` when that is set."""
  march = os.environ.get("L2L_KERNEL_MARCH")
  if not march:
    return BASE_FLAGS
  return tuple(f"-march={march}" if f == "-march=native" else f for f in BASE_FLAGS)


def cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "l2l")


def compile_flags(extra_flags: Sequence[str] = (), shared: bool = True,
                  link: bool = True) -> List[str]:
  """The compiler flags of a build: `base_flags()`, `extra_flags` (later flags win, e.g. another
  -O or -march), TensorFlow's compile flags and, with `link`, its link flags; without `shared`
  an executable or (with `-c`) an object instead of a shared library."""
  base = [f for f in base_flags() if shared or f not in ("-shared", "-fPIC")]
  return [*base, *extra_flags, "-w", *tf.sysconfig.get_compile_flags(),
          *(tf.sysconfig.get_link_flags() if link else ())]


def run_compiler(sources: Sequence[str], output: str, flags: Sequence[str],
                 timeout: float = 900) -> subprocess.CompletedProcess:
  """Runs `$CXX` (default g++) on `sources` into `output`; raises CalledProcessError (with its
  stderr) or OSError. Compilers that do not know -mno-avx512fp16 (needed by newer ones with
  Eigen's headers) are retried without it."""
  command = [os.environ.get("CXX", "g++"), *sources, "-o", output, *flags]
  try:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
  except subprocess.CalledProcessError:
    if "-mno-avx512fp16" not in command:
      raise
    return subprocess.run([f for f in command if f != "-mno-avx512fp16"], check=True,
                          capture_output=True, text=True, timeout=timeout)


def cpu_flags() -> str:
  """The CPU's feature flags (part of the build key: a cache may be shared across machines)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return line
  except OSError:
    pass
  return ""


def load(source_path: str, cache: Dict[str, Any], label: str,
         extra_flags: Sequence[str] = ()) -> Optional[Any]:
  """The op library built from `source_path`, or None when unavailable.

  Args:
    source_path: the .cc file.
    cache: the caller's dict; holds "lib" (the library or None) and, when None, "error".
    label: what the kernels are, for the warning logged when they cannot be built.
    extra_flags: compiler flags beyond `BASE_FLAGS`.
  """
  if "lib" in cache:
    return cache["lib"]
  cache["lib"] = None
  if os.environ.get("L2L_NO_KERNELS"):
    cache["error"] = "disabled by L2L_NO_KERNELS"
    return None
  try:
    with open(source_path, "rb") as f:
      source = f.read()
    flags = compile_flags(extra_flags)
    key = hashlib.sha256(b"\0".join([source, tf.__version__.encode(), platform.machine().encode(),
                                      cpu_flags().encode(), " ".join(flags).encode()]))
    stem = os.path.splitext(os.path.basename(source_path))[0]
    path = os.path.join(cache_dir(), f"{stem}_{key.hexdigest()[:16]}.so")
    if not os.path.exists(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = f"{path}.{os.getpid()}.tmp"
      run_compiler([source_path], tmp, flags, timeout=600)
      os.replace(tmp, path)  # Atomic: concurrent builds in several processes are safe.
    cache["lib"] = tf.load_op_library(path)
  except (OSError, subprocess.SubprocessError, tf.errors.OpError) as e:
    detail = getattr(e, "stderr", "") or ""  # text (run_compiler)
    cache["error"] = f"{type(e).__name__}: {e} {detail[-2000:]}"
    logging.warning("l2l: %s unavailable, using the reference ops (same results, slower): %s",
                    label, cache["error"][:500])
  return cache["lib"]
