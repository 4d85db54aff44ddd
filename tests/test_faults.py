"""Faults from fault injection (issue #40): each ends with one line and exit status 2, and nothing is
written outside where the user pointed or lost from a run."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from o2o.errors import RunDirError
from test_cli import one_error_line, run, write_dataset

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.mark.parametrize("name", ["../../x", "sub/x", "/abs/x", "..", "."])
def test_data_import_name_stays_in_the_data_directory(capsys, tmp_path, monkeypatch, name):
    data = tmp_path / "work" / "data"
    monkeypatch.setenv("O2O_DATA_DIR", str(data))
    src = tmp_path / "src.hdf5"
    write_dataset(src)
    code, _, err = run(capsys, "data", "import", str(src), "--name", name)
    assert code == 2
    assert f"--name '{name}' is not a dataset name" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["src.hdf5"]
    code, out, _ = run(capsys, "data", "import", str(src), "--name", "ok")
    assert code == 0 and (data / "ok.hdf5").is_file()


def _hold_lock(run_dir, pid=4242, host="node7", started="2025-01-02T03:04:05+0000"):
    """The lock of ``run_dir`` held as another process would hold it: its own open file, flock'ed."""
    import fcntl
    import json

    f = open(run_dir / ".lock", "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": pid, "host": host, "started": started}))
    f.flush()
    return f


def _resumable_run(path, cfg):
    from o2o.config import to_dict
    from o2o.runs import RunDir

    with RunDir.create(path, to_dict(cfg)) as run:
        run.save_checkpoint(1, arrays={"x": np.zeros(1)}, host_state={})


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_a_run_directory_in_use_is_refused(capsys, tmp_path, command):
    from o2o.presets import resolve_pretrain_config, resolve_train_config

    run_dir = tmp_path / "run"
    if command == "train":
        _resumable_run(run_dir, resolve_train_config("sac", "Pendulum"))
    else:
        _resumable_run(run_dir, resolve_pretrain_config("cpq", "BallCircle-dsrl-small", None))
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    holder = _hold_lock(run_dir)
    try:
        code, _, err = run(capsys, "--no-progress", command, "--resume", str(run_dir))
    finally:
        holder.close()
    assert code == 2
    assert one_error_line(err) == (
        f"o2o: error: run directory '{run_dir}' is in use by pid 4242 on node7, started 2025-01-02T03:04:05+0000; "
        f"wait for that process to end (or stop it), or choose another run directory"
    )
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    from o2o.runs.lock import lock_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code = f"from o2o.runs.lock import lock_run_dir; lock_run_dir({str(run_dir)!r}); print('held', flush=True); import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"in use by pid {proc.pid} on "):
            lock_run_dir(run_dir)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    lock_run_dir(run_dir).release()
