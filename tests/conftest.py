"""The test session's set-up: one persistent JAX compilation cache shared by the session's processes.

Many tests run o2o in subprocesses (the CLI, sweeps' workers, kill -9 and signal tests) and build
trainers whose jitted updates have the same programs; with the cache each program is compiled once per
session instead of once per process. The cache is a temporary directory, removed when the session ends;
a JAX_COMPILATION_CACHE_DIR already set by the caller is used as it is.

The suite's programs are small and run for a few hundred steps, so compiling them costs more than
running them: LLVM's optimisation of the compiled code is turned off (``--xla_backend_optimization_level=0``,
about half the compile time of an agent's update, its run time about the same at these sizes), unless
the caller's XLA_FLAGS set a level. What the programs compute is the same XLA graph either way.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _cache = tempfile.mkdtemp(prefix="o2o-tests-jax-cache-")
    atexit.register(shutil.rmtree, _cache, True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    # cache every program, however fast it compiles or small it is (the defaults skip those under 1 s)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
