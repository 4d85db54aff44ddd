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


def test_non_finite_config_values_are_refused(capsys, tmp_path):
    for value, expect in (("nan", "must be a finite number, got nan"), ("1e400", "must be a finite number, got inf"),
                          ("-1e-4", "is a learning rate and must be > 0"), ("0", "is a learning rate and must be > 0")):
        code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out",
                           str(tmp_path / "r"), "--set", f"agent.actor_lr={value}")
        assert code == 2 and f"config key 'agent.actor_lr' {expect}" in one_error_line(err)
    config = tmp_path / "c.yaml"
    config.write_text("agent:\n  critic_lr: .nan\n")
    code, _, err = run(capsys, "train", "--algo", "sac", "--task", "Pendulum", "--config", str(config), "--out", str(tmp_path / "r"))
    assert code == 2 and "'agent.critic_lr' must be a finite number" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def _poisoned_update_many(monkeypatch, module, at_call: int, what: str):
    """``module._update_many`` whose ``at_call``-th call returns NaN losses (``what="loss"``) or, with
    finite losses, a NaN first leaf of the agent state (``what="state"``)."""
    import jax

    real = module._update_many
    calls = [0]

    def poisoned(update_fn, batch_size):
        many = real(update_fn, batch_size)

        def call(state, *args, **kwargs):
            state, metrics = many(state, *args, **kwargs)
            calls[0] += 1
            if calls[0] == at_call:
                if what == "loss":
                    metrics = {k: v * np.nan for k, v in metrics.items()}
                else:
                    leaves, tree = jax.tree_util.tree_flatten(state)
                    first = next(i for i, x in enumerate(leaves) if np.issubdtype(x.dtype, np.floating))
                    leaves[first] = leaves[first] * np.nan
                    state = jax.tree_util.tree_unflatten(tree, leaves)
            return state, metrics

        return call

    monkeypatch.setattr(module, "_update_many", poisoned)


@pytest.mark.parametrize("what", ["loss", "state"])
def test_offline_divergence_stops_and_keeps_the_last_finite_checkpoint(capsys, tmp_path, monkeypatch, what):
    import o2o.loops.offline as offline
    from test_pretrain import TINY, write

    _poisoned_update_many(monkeypatch, offline, 3, what)
    data, out = tmp_path / "d.hdf5", tmp_path / "run"
    write(data)
    code, _, err = run(capsys, "--no-progress", "pretrain", "--algo", "bc-safe", "--dataset", str(data), "--task", "BallCircle",
                       "--out", str(out), *TINY, "--steps", "50", "--set", "offline.checkpoint_every=10",
                       "--set", "offline.eval_every=1000")
    assert code == 2
    line = one_error_line(err)
    quantity = "loss/" if what == "loss" else "agent/"
    assert line.startswith(f"o2o: error: training diverged at step 30: {quantity}") and "is the last finite state" in line
    assert (out / "checkpoints" / "latest").read_text().strip() == "ckpt_20"
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("what", ["loss", "state"])
def test_online_divergence_stops_and_keeps_the_last_finite_checkpoint(capsys, tmp_path, monkeypatch, what):
    import o2o.loops.online as online
    from test_cli import TINY

    _poisoned_update_many(monkeypatch, online, 3, what)
    out = tmp_path / "run"
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(out), *TINY,
                       "--set", "online.iterations=5", "--set", "online.update_after=0", "--set", "online.warmup_steps=0",
                       "--set", "online.eval_every=100", "--set", "online.checkpoint_every=1")
    assert code == 2
    line = one_error_line(err)
    quantity = "loss/" if what == "loss" else "agent/"
    assert line.startswith(f"o2o: error: training diverged at iteration 3: {quantity}") and "ckpt_2, is the last finite state" in line
    assert (out / "checkpoints" / "latest").read_text().strip() == "ckpt_2"
    assert not (out / "summary.json").exists()


def test_finetune_records_the_pretrained_run_as_an_absolute_path(tmp_path, monkeypatch):
    import types

    import yaml

    import o2o.bridge.pretrained as pretrained_module
    from o2o.config import to_dict
    from o2o.loops.finetune import resolve_finetune_config
    from o2o.loops.online import upgrade_saved_config

    monkeypatch.setattr(pretrained_module, "load_pretrained", lambda path, **kw: types.SimpleNamespace(task="BallCircle"))
    monkeypatch.chdir(tmp_path)
    cfg = resolve_finetune_config("from-scratch", "runs/pre", "BallCircle", 0)
    assert cfg.pretrained == str(tmp_path / "runs" / "pre")
    sweep = resolve_finetune_config("from-scratch", "runs/pre", "BallCircle", 0, absolute_pretrained=False)
    assert sweep.pretrained == "runs/pre"  # a sweep's run identity does not depend on where it is launched

    # a run that recorded it relative resumes, from the directory it is relative to, under the absolute path
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({**to_dict(cfg), "pretrained": "runs/pre"}, sort_keys=False))
    upgrade_saved_config(run, cfg)
    assert yaml.safe_load((run / "config.yaml").read_text()) == to_dict(cfg)
    (run / "config.yaml").write_text(yaml.safe_dump({**to_dict(cfg), "pretrained": "runs/other"}, sort_keys=False))
    upgrade_saved_config(run, cfg)  # another run: left for the resume check to refuse
    assert yaml.safe_load((run / "config.yaml").read_text())["pretrained"] == "runs/other"


def _archive_with(tmp_path, run_id="sac/Pendulum/seed0"):
    """A results archive holding one finished run's files (``o2o report``'s layout)."""
    import json

    archive = tmp_path / "archive"
    run_dir = archive / "runs" / run_id
    run_dir.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        (run_dir / name).write_text("{}\n")
    (archive / "index.json").write_text(json.dumps({"meta": {}, "runs": [{"run_id": run_id, "status": "finished"}]}))
    return archive, run_dir


@pytest.mark.parametrize("case", ["file", "folder", "run_folder", "dotdot"])
def test_adopt_refuses_links_and_paths_outside_the_archive(capsys, tmp_path, case):
    from test_sweep import TINY, write_spec

    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("private")
    archive, run_dir = _archive_with(tmp_path)
    if case == "file":
        (run_dir / "metrics.csv").unlink()
        (run_dir / "metrics.csv").symlink_to(secret / "key")
        expect = f"'{run_dir / 'metrics.csv'}' is a symbolic link"
    elif case == "folder":
        (run_dir / "bridge").symlink_to(secret)
        expect = f"'{run_dir / 'bridge'}' is a symbolic link"
    elif case == "run_folder":
        import shutil

        shutil.rmtree(run_dir)
        run_dir.symlink_to(secret)
        expect = f"'{run_dir}' is a symbolic link"
    else:  # an index naming a run outside the archive
        (secret / "summary.json").write_text("{}\n")
        index = archive / "index.json"
        index.write_text(index.read_text().replace("sac/Pendulum/seed0", "../../secret"))
        expect = "is not a folder inside the archive"
    spec = write_spec(tmp_path, TINY.format(seeds=1, iterations=1))
    out = tmp_path / "sweep"
    code, _, err = run(capsys, "--no-progress", "sweep", str(spec), "--out", str(out), "--adopt", str(archive), "--backend", "sequential")
    assert code == 2
    line = one_error_line(err)
    assert line.startswith("o2o: error: --adopt: ") and expect in line
    assert not out.exists()


def test_resuming_a_finished_run_leaves_it_as_it_is(capsys, tmp_path):
    from test_cli import TINY

    run_dir = tmp_path / "run"
    assert run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(run_dir), *TINY)[0] == 0
    files = lambda: {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}  # noqa: E731
    before = files()
    code, out, err = run(capsys, "--no-progress", "train", "--resume", str(run_dir))
    assert code == 0 and out == ""
    assert err.strip() == (f"o2o: run '{run_dir}' has finished: nothing to resume (its results, {run_dir / 'summary.json'}, "
                           f"are left as they are)")
    assert files() == before


def test_eval_record_skips_a_run_in_use_in_a_folder_and_refuses_it_alone(capsys, tmp_path):
    from o2o.presets import resolve_pretrain_config

    run_dir = tmp_path / "sweep" / "run"
    _resumable_run(run_dir, resolve_pretrain_config("cpq", "BallCircle-dsrl-small", None))
    holder = _hold_lock(run_dir)
    try:
        code, out, _ = run(capsys, "--no-progress", "eval", str(tmp_path / "sweep"), "--record")
        assert code == 0 and f"skipped {run_dir}: run directory '{run_dir}' is in use by pid 4242" in out
        code, _, err = run(capsys, "--no-progress", "eval", str(run_dir), "--record")
        assert code == 2 and "is in use by pid 4242 on node7" in one_error_line(err)
    finally:
        holder.close()
