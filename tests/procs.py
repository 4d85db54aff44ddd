"""Helpers for the tests that stop a real `o2o` process with a signal (test_stop.py, test_sweep.py);
imported as ``procs`` (pytest puts tests/ on the path: the directory has no ``__init__.py``)."""

import subprocess
import time
from pathlib import Path


def metrics_rows(run: Path) -> int:
    """Rows written to ``run/metrics.csv`` so far (0 before the file exists)."""
    path = Path(run) / "metrics.csv"
    return max(len(path.read_text().splitlines()) - 1, 0) if path.is_file() else 0


def run_and_signal(cmd, ready, signum, *, timeout: float = 400, **popen) -> tuple[int, str, str]:
    """Start ``cmd``, send it ``signum`` once ``ready()`` holds (or it has ended, or ``timeout`` seconds
    passed), and return its (exit status, stdout, stderr); a process that does not stop within 120 s
    is killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.2)
        proc.send_signal(signum)  # a no-op once the process has ended
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def run_online_optimised(algo: str, task: str, seed: int, overrides: list[str], out: Path) -> dict:
    """``run_online`` of the resolved config in a child process whose XLA optimises the compiled code, and
    the run's summary. The suite turns LLVM's optimisation off (conftest.py): most tests are compile-bound,
    while a learning test's thousands of updates run faster optimised (test_sac_learns_pendulum 30.6 -> 24.5 s,
    test_td3_learns_pendulum 21.0 -> 12.7 s, child process included)."""
    import json
    import os
    import sys

    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_backend_optimization_level" not in f)
    code = ("import json, sys; from o2o.loops.online import run_online; from o2o.presets import resolve_train_config; "
            "a = json.loads(sys.argv[1]); run_online(resolve_train_config(*a[:3], overrides=a[3]), a[4], progress=False)")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([algo, task, seed, list(overrides), str(out)])],
                          env={**os.environ, "XLA_FLAGS": flags}, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(out) / "summary.json").read_text())
