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
