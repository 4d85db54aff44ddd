"""The test session's set-up: one persistent JAX compilation cache shared by the session's processes.

Many tests run o2o in subprocesses (the CLI, sweeps' workers, kill -9 and signal tests) and build
trainers whose jitted updates have the same programs; with the cache each program is compiled once per
session instead of once per process. The cache is a temporary directory, removed when the session ends;
a JAX_COMPILATION_CACHE_DIR already set by the caller is used as it is.

The suite's programs are small and run for a few hundred steps, so compiling them costs more than
running them: LLVM's optimisation of the compiled code is turned off (``--xla_backend_optimization_level=0``,
about half the compile time of an agent's update, its run time about the same at these sizes), and
XLA's CPU fusions are emitted by its older, faster-compiling emitters (``--xla_cpu_use_fusion_emitters=false``:
CPQ's update compiles in ~1.7 s instead of ~3 s; `make test` 7:48 -> 6:35 on 2 cores), each unless
the caller's XLA_FLAGS set it. What the programs compute is the same XLA graph either way; the emitters
may round a fused computation differently in the last bit.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile

import pytest

if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _cache = tempfile.mkdtemp(prefix="o2o-tests-jax-cache-")
    atexit.register(shutil.rmtree, _cache, True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    # cache every program, however fast it compiles or small it is (the defaults skip those under 1 s)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()


@pytest.fixture(scope="session")
def build_once(tmp_path_factory):
    """``build_once(name, build) -> Path``: the directory that ``build(path)`` filled, built once per test
    session and shared by its processes. pytest-xdist runs a module's tests on whichever worker is free, so
    a module-scoped fixture is otherwise built again by every worker that runs one of them. The tests
    read what is built; a test that changes it works on a copy."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, above each worker's own

    def get(name: str, build):
        out, done = root / f"shared-{name}", root / f"shared-{name}.built"
        with open(root / f"shared-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the other processes wait here while one builds
            if not done.exists():
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                build(out)
                done.touch()
        return out

    return get
