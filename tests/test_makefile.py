"""The Makefile refuses a Python other than 3.11 with one clear line before it creates anything, and
never keeps a .venv whose install failed (issue #39). Stand-in interpreters (shell scripts) play the
Pythons, so nothing is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

# a stand-in interpreter: `-c CODE` exits with the version check's answer, `-m venv DIR` makes a venv whose
# python answers the version check like the stand-in and fails every pip install
STAND_IN = """#!/bin/sh
if [ "$1" = "-c" ]; then exit {check}; fi
if [ "$1" = "--version" ]; then echo "Python {version}"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\nif [ "$1" = "-c" ]; then exit {check}; fi\\necho "ERROR: No matching distribution found" >&2; exit 1\\n' > "$3/bin/python"
  chmod +x "$3/bin/python"; exit 0
fi
exit 1
"""


def _project(tmp_path: Path) -> Path:
    work = tmp_path / "o2o"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, work / name)
    return work


def _python(tmp_path: Path, version: str) -> Path:
    path = tmp_path / f"python{version}"
    path.write_text(STAND_IN.format(version=version, check=0 if version.startswith("3.11.") else 1))
    path.chmod(0o755)
    return path


def _make(work: Path, python) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "install", f"PYTHON={python}"], cwd=work, capture_output=True, text=True, timeout=60)


def test_another_python_is_refused_with_one_line_before_a_venv_exists(tmp_path):
    work = _project(tmp_path)
    done = _make(work, _python(tmp_path, "3.12.1"))
    assert done.returncode != 0 and not (work / ".venv").exists()
    line = done.stderr.splitlines()[0]
    assert line.startswith("make: o2o needs Python 3.11") and "is Python 3.12.1" in line and "mujoco 2.3.3" in line
    done = _make(work, tmp_path / "no-such-python")
    assert done.returncode != 0 and "is not found" in done.stderr.splitlines()[0]


def test_a_failed_install_leaves_no_venv_and_a_venv_of_another_python_is_made_again(tmp_path):
    work = _project(tmp_path)
    done = _make(work, _python(tmp_path, "3.11.7"))
    assert done.returncode != 0 and "No matching distribution" in done.stderr
    assert "removed, so the next make starts clean" in done.stderr and not (work / ".venv").exists()

    # a .venv left by another Python (the trap: a broken 3.12 venv made the next 3.11 try fail too)
    (work / ".venv" / "bin").mkdir(parents=True)
    other = _python(tmp_path, "3.12.1")
    shutil.copy(other, work / ".venv" / "bin" / "python")
    done = _make(work, _python(tmp_path, "3.11.7"))
    assert "is not a Python 3.11 environment; making it again" in done.stderr
    assert not (work / ".venv").exists()  # made again, its install failed (stand-in pip), removed again
