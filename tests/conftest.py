"""The test session's set-up: one persistent JAX compilation cache shared by the session's processes.

Many tests run o2o in subprocesses (the CLI, sweeps' workers, kill -9 and signal tests) and build
trainers whose jitted updates have the same programs; with the cache each program is compiled once per
session instead of once per process. The cache is a temporary directory, removed when the session ends;
a JAX_COMPILATION_CACHE_DIR already set by the caller is used as it is.
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
