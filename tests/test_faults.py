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


def _resumable_run(path, cfg, kind):
    from o2o.config import to_dict
    from o2o.runs import RunDir

    with RunDir.create(path, to_dict(cfg), kind=kind) as run:
        run.save_checkpoint(1, arrays={"x": np.zeros(1)}, host_state={})


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_a_run_directory_in_use_is_refused(capsys, tmp_path, command):
    from o2o.presets import resolve_pretrain_config, resolve_train_config

    run_dir = tmp_path / "run"
    if command == "train":
        _resumable_run(run_dir, resolve_train_config("sac", "Pendulum"), "train")
    else:
        _resumable_run(run_dir, resolve_pretrain_config("cpq", "BallCircle-dsrl-small", None), "pretrain")
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
    _resumable_run(run_dir, resolve_pretrain_config("cpq", "BallCircle-dsrl-small", None), "pretrain")
    holder = _hold_lock(run_dir)
    try:
        code, out, _ = run(capsys, "--no-progress", "eval", str(tmp_path / "sweep"), "--record")
        assert code == 0 and f"skipped {run_dir}: run directory '{run_dir}' is in use by pid 4242" in out
        code, _, err = run(capsys, "--no-progress", "eval", str(run_dir), "--record")
        assert code == 2 and "is in use by pid 4242 on node7" in one_error_line(err)
    finally:
        holder.close()


# ----- bad inputs (issue #40 item 5): each answered by one line and exit status 2 ------------------------


def test_a_dataset_with_an_external_link_is_refused(capsys, tmp_path):
    import h5py

    (tmp_path / "notes.txt").write_text("not hdf5")
    path = tmp_path / "d.hdf5"
    write_dataset(path, rewards=None)
    with h5py.File(path, "a") as f:
        f["rewards"] = h5py.ExternalLink(str(tmp_path / "notes.txt"), "/data")
    code, _, err = run(capsys, "data", "inspect", str(path))
    assert code == 2
    assert one_error_line(err) == (f"o2o: error: {path}: 'rewards' is an external link to '{tmp_path / 'notes.txt'}' (/data); "
                                   "o2o reads only self-contained files, copy the linked data into the file")


@pytest.mark.parametrize("case", ["one_column", "all_columns"])
def test_a_huge_declared_shape_is_refused_before_it_is_read(capsys, tmp_path, monkeypatch, case):
    """A file of a few kB declaring 200M rows: refused from the declared shapes, never allocated."""
    import h5py

    path = tmp_path / "huge.hdf5"
    rows = 200_000_000
    if case == "one_column":  # observations declare 200M rows, the other columns 20
        write_dataset(path, observations=None)
        with h5py.File(path, "a") as f:
            f.create_dataset("observations", shape=(rows, 8), dtype="f4", chunks=(1 << 16, 8), compression="gzip")
        expect = f"columns have different lengths (observations={rows}, next_observations=20"
    else:  # every column declares 200M rows, none is written
        with h5py.File(path, "w") as f:
            for key, width in (("observations", 8), ("next_observations", 8), ("actions", 2)):
                f.create_dataset(key, shape=(rows, width), dtype="f4", chunks=(1 << 16, width), compression="gzip")
            for key in ("rewards", "costs", "terminals", "timeouts"):
                f.create_dataset(key, shape=(rows,), dtype="f4", chunks=(1 << 16,), compression="gzip")
        expect = f"column 'observations' declares shape ({rows}, 8) but the file stores only part of it"
    assert path.stat().st_size < 100_000
    read = []
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: read.append(self.name))
    code, _, err = run(capsys, "data", "inspect", str(path))
    assert code == 2 and expect in one_error_line(err)
    assert read == []


def test_a_declared_size_beyond_memory_is_refused(tmp_path, monkeypatch):
    import o2o.data.hdf5 as hdf5
    from o2o.errors import DatasetError

    path = tmp_path / "d.hdf5"
    write_dataset(path)
    monkeypatch.setattr(hdf5, "_available_memory", lambda: 1000)
    with pytest.raises(DatasetError, match=r"declares 0.0 GB of columns, more than the 0.0 GB of memory available"):
        hdf5.load_hdf5(path)
    monkeypatch.setattr(hdf5, "_available_memory", lambda: 10**6)
    assert hdf5.load_hdf5(path).num_transitions == 20


@pytest.mark.parametrize("stored, problem", [
    ('{"task": ', "Expecting value: line 1 column 10"),
    ("[" * 100_000, "maximum recursion depth exceeded"),
    ('"BallCircle"', "a JSON str, not an object"),
    ("[1, 2]", "a JSON list, not an object"),
])
def test_malformed_o2o_metadata_is_refused(capsys, tmp_path, stored, problem):
    import h5py

    path = tmp_path / "d.hdf5"
    write_dataset(path)
    with h5py.File(path, "a") as f:
        f.attrs["o2o_metadata"] = stored
    expect = f"o2o: error: {path}: attribute 'o2o_metadata' is not a JSON object ({problem}"
    code, _, err = run(capsys, "data", "inspect", str(path))
    assert code == 2 and one_error_line(err).startswith(expect)
    # pre-training reads the task from the metadata before the loader runs
    code, _, err = run(capsys, "--no-progress", "pretrain", "--algo", "bc", "--dataset", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and one_error_line(err).startswith(expect)
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def tiny_online_run(tmp_path_factory):
    """A finished one-iteration SAC run on Pendulum (copied by each test that tampers with it)."""
    from o2o.cli import main
    from test_cli import TINY

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(run_dir), *TINY]) == 0
    return run_dir


def test_a_checkpoint_holding_every_replay_row_still_loads_and_resumes(capsys, tmp_path, tiny_online_run):
    """Checkpoints hold the replay buffer's written rows; one written by an earlier o2o holds all of its
    capacity (zeros after the written rows) and is read the same."""
    import shutil

    from o2o.config import load_yaml
    from o2o.runs.checkpoint import checkpoint_step, latest_checkpoint, load_checkpoint, save_checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_online_run, run_dir)
    capacity = load_yaml(run_dir / "config.yaml")["online"]["replay_capacity"]
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    arrays, host = load_checkpoint(ckpt)
    written = int(arrays["buffer"]["size"])
    assert 0 < written < capacity and all(len(v) == written for v in arrays["buffer"]["data"].values())
    for name, rows in arrays["buffer"]["data"].items():
        full = np.zeros((capacity, *rows.shape[1:]), rows.dtype)
        full[:written] = rows
        arrays["buffer"]["data"][name] = full
    shutil.rmtree(ckpt)
    save_checkpoint(run_dir / "checkpoints", checkpoint_step(ckpt), arrays=arrays, host_state=host)
    code, _, err = run(capsys, "--no-progress", "eval", str(run_dir), "--episodes", "1")
    assert code == 0, err
    code, _, err = run(capsys, "--no-progress", "train", "--resume", str(run_dir), "--set", "online.iterations=2")
    assert code == 0, err
    resumed, _ = load_checkpoint(run_dir)
    assert len(resumed["buffer"]["data"]["rewards"]) == int(resumed["buffer"]["size"]) > written


@pytest.mark.parametrize("file, content, problem", [
    ("meta.json", "[1, 2]", "the file is an array, expected an object"),
    ("meta.json", '{"format": 1, "step": 1, "arrays_bytes": "12"}', "'arrays_bytes' is a string, expected an integer"),
    ("host_state.json", '"counters"', "the file is a string, expected an object"),
    ("host_state.json", "drop:collector", "'collector' is missing"),
    ("host_state.json", "set:iteration", "'counters/iteration' is a string, expected a number"),
])
def test_checkpoint_json_of_the_wrong_structure_is_refused(capsys, tmp_path, tiny_online_run, file, content, problem):
    import json
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_online_run, run_dir)
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    if content.startswith(("drop:", "set:")):
        host = json.loads((ckpt / file).read_text())
        if content.startswith("drop:"):
            del host[content[5:]]
        else:
            host["counters"][content[4:]] = "1"
        content = json.dumps(host)
    (ckpt / file).write_text(content)
    code, _, err = run(capsys, "--no-progress", "train", "--resume", str(run_dir))
    assert code == 2
    assert one_error_line(err).startswith(f"o2o: error: '{ckpt / file}' does not have the structure o2o writes ({problem}); "
                                          "resume from an earlier checkpoint")


def _tamper_arrays(ckpt, change):
    """Rewrite ``ckpt``'s arrays with ``change(flat_state_dict)`` applied, with a matching size and CRC (a
    checkpoint altered on purpose, which the CRC check cannot catch)."""
    import json
    import zlib

    from flax import serialization

    state = serialization.msgpack_restore((ckpt / "arrays.msgpack").read_bytes())
    change(state)
    data = serialization.msgpack_serialize(state)
    (ckpt / "arrays.msgpack").write_bytes(data)
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, "arrays_bytes": len(data), "arrays_crc32": zlib.crc32(data)}))


def test_nan_weights_in_a_checkpoint_are_refused_at_load(capsys, tmp_path, tiny_online_run):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_online_run, run_dir)
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()

    def poison(state):
        params = state["agent"]["actor"]["params"]["params"]["Dense_0"]
        params["kernel"] = np.array(params["kernel"])
        params["kernel"][0, 0] = np.nan

    _tamper_arrays(ckpt, poison)
    expect = (f"o2o: error: checkpoint '{ckpt}' holds NaN or inf in 'agent/actor/params/params/Dense_0/kernel' (o2o never "
              f"saves a diverged state, so the file was altered or damaged); resume from an earlier checkpoint")
    for command in (["eval", str(run_dir)], ["train", "--resume", str(run_dir)]):
        code, _, err = run(capsys, "--no-progress", *command)
        assert code == 2 and one_error_line(err).startswith(expect), command


def test_a_binary_config_yaml_is_refused(capsys, tmp_path, tiny_online_run):
    import shutil

    binary = bytes(range(128, 256)) * 4
    config = tmp_path / "c.yaml"
    config.write_bytes(binary)
    code, _, err = run(capsys, "train", "--algo", "sac", "--task", "Pendulum", "--config", str(config), "--out", str(tmp_path / "r"))
    assert code == 2
    assert one_error_line(err) == f"o2o: error: config file '{config}' is not text (byte 0 is not UTF-8); give a YAML text file"
    assert not (tmp_path / "r").exists()

    run_dir = tmp_path / "run"  # a run whose own config.yaml was overwritten
    shutil.copytree(tiny_online_run, run_dir)
    (run_dir / "config.yaml").write_bytes(binary)
    for command in (["eval", str(run_dir)], ["train", "--resume", str(run_dir)], ["export", str(run_dir), "--out", str(tmp_path / "p.npz")]):
        code, _, err = run(capsys, "--no-progress", *command)
        assert code == 2 and "config.yaml' is not text (byte 0 is not UTF-8)" in one_error_line(err), command


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoint(capsys, tmp_path, monkeypatch):
    import errno

    import o2o.runs.checkpoint as checkpoint
    from test_cli import TINY

    real_write = checkpoint._write_file
    writes = []

    def write_until_full(path, data):
        writes.append(path.name)
        if path.name == "arrays.msgpack" and writes.count("arrays.msgpack") == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "_write_file", write_until_full)
    out = tmp_path / "run"
    args = ["--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(out), *TINY,
            "--set", "online.iterations=3", "--set", "online.checkpoint_every=1"]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert one_error_line(err) == (
        f"o2o: error: cannot write checkpoint ckpt_2 in '{out / 'checkpoints'}' (No space left on device); the latest "
        f"checkpoint, ckpt_1, is kept; free space (or fix the file system) and continue the run with --resume")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt_1", "latest"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "ckpt_1"
    monkeypatch.setattr(checkpoint, "_write_file", real_write)  # space freed: the run continues from ckpt_1
    code, _, _ = run(capsys, "--no-progress", "train", "--resume", str(out))
    assert code == 0 and (out / "checkpoints" / "latest").read_text().strip() == "ckpt_3"


@pytest.mark.parametrize("index, problem", [
    ({"meta": {}, "runs": [{"run_id": 5, "status": "finished"}]}, "'runs[0]/run_id' is an integer, expected a string"),
    ({"meta": [], "runs": {"run_id": "sac/Pendulum/seed0"}}, "'meta' is an array, expected an object"),
    ({"meta": {"only": "{\"a\": 1}"}, "runs": []}, "'meta/only' is an object, expected an array"),
])
def test_adopt_refuses_an_index_with_wrong_types(capsys, tmp_path, index, problem):
    import json

    from test_sweep import TINY, write_spec

    archive, _ = _archive_with(tmp_path)
    (archive / "index.json").write_text(json.dumps(index))
    spec = write_spec(tmp_path, TINY.format(seeds=1, iterations=1))
    out = tmp_path / "sweep"
    code, _, err = run(capsys, "--no-progress", "sweep", str(spec), "--out", str(out), "--adopt", str(archive), "--backend", "sequential")
    assert code == 2
    assert one_error_line(err) == (f"o2o: error: '{archive / 'index.json'}' does not have the structure o2o writes ({problem}); "
                                   "restore it from where the archive was committed (`o2o report --out` writes it)")
    assert not out.exists()


@pytest.mark.parametrize("name", ["mine\\0", "mi/../ne", ".hidden", "tab\\tbed"])
def test_a_method_name_that_is_no_folder_name_is_refused_before_anything_is_written(capsys, tmp_path, name):
    from test_sweep import TINY, write_spec

    text = TINY.format(seeds=1, iterations=1).replace("methods: [sac]", f'methods:\n  - {{name: "{name}", algo: sac}}')
    spec = write_spec(tmp_path, text)
    out = tmp_path / "sweep"
    code, _, err = run(capsys, "--no-progress", "sweep", str(spec), "--out", str(out), "--backend", "sequential")
    assert code == 2
    shown = repr(name.replace("\\0", "\0").replace("\\t", "\t"))
    assert one_error_line(err).endswith(f"(methods[0].name): method name {shown} may hold only letters, digits, '-', '_' and '.', "
                                        "and may not start with '.'")
    assert not out.exists()


@pytest.mark.parametrize("summary, problem", [
    ("garbage{", "is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    ("[1, 2]", "does not have the structure o2o writes (the file is an array, expected an object)"),
    ('{"train_episodes": "many"}', "does not have the structure o2o writes ('train_episodes' is a string, expected a number)"),
])
def test_report_refuses_a_garbage_summary(capsys, tmp_path, tiny_online_run, summary, problem):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_online_run, run_dir)
    (run_dir / "summary.json").write_text(summary)
    code, _, err = run(capsys, "report", str(run_dir), "--out", str(tmp_path / "report.md"))
    assert code == 2
    assert one_error_line(err) == (f"o2o: error: '{run_dir / 'summary.json'}' {problem}; restore it, or delete it and resume "
                                   f"the run (--resume {run_dir}) to write it again")
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("width", ["-4", "0"])
def test_a_negative_or_zero_hidden_width_is_refused(capsys, tmp_path, width):
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(tmp_path / "r"),
                       "--set", f"agent.hidden_dims=[16, {width}]")
    assert code == 2
    assert one_error_line(err) == (f"o2o: error: config key 'agent.hidden_dims[1]' is a layer width and must be > 0, got {width}; "
                                   "give a value > 0")
    config = tmp_path / "c.yaml"
    config.write_text(f"agent:\n  vae_hidden_dims: [{width}, 400]\n")
    code, _, err = run(capsys, "--no-progress", "pretrain", "--algo", "cpq", "--dataset", "BallCircle-dsrl-small", "--config", str(config),
                       "--out", str(tmp_path / "r"))
    assert code == 2 and f"config key 'agent.vae_hidden_dims[0]' is a layer width and must be > 0, got {width}" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_a_diverged_bridge_stops_and_keeps_its_last_finite_partial_checkpoint(tmp_path, monkeypatch):
    """Every bridge stage (VPA, OCR-CFT's re-evaluation and alignment) runs through the driver with
    BridgeCheckpoints: a NaN loss (checked before its row is logged) or a NaN state (at a save, or a
    stage's last call) ends the bridge with the divergence line; the last finite partial checkpoint stays."""
    import jax

    from o2o.errors import DivergedError
    from o2o.loops.driver import BridgeCheckpoints, CallStage, drive
    from o2o.runs import MetricsWriter
    from o2o.runs.checkpoint import latest_checkpoint

    monkeypatch.setenv("O2O_CHECKPOINT_EVERY_S", "1e-9")  # a partial checkpoint after every call
    bridge = tmp_path / "run" / "bridge"
    bridge.mkdir(parents=True)

    def stage(outcomes, start, where):
        calls = iter(outcomes)  # per call: (loss, the critic's value after it)

        def many(state, data, key, signals, num_steps):
            loss, value = next(calls)
            return {"critic": np.full(3, value, np.float32)}, {"vpa_critic_loss": np.float32(loss)}

        return CallStage(many, {"critic": np.ones(3, np.float32)}, None, jax.random.PRNGKey(0), {}, start=start, steps_per_call=50,
                         where=where, status=lambda m: "")

    ckpts = BridgeCheckpoints(bridge, resume=False)
    kept = f"nothing of that state was saved in '{tmp_path / 'run'}' (its latest checkpoint, ckpt_50, is the last finite state)"
    with pytest.raises(DivergedError) as err:
        drive(stage([(0.5, 1.0), (float("nan"), 1.0), (0.5, 1.0)], 0, lambda p: f"VPA step {p} of 150"),
              [MetricsWriter(bridge, tensorboard=False)], ckpts, end=150, description="VPA", progress=False)
    assert str(err.value).startswith(f"training diverged at VPA step 100 of 150: vpa_critic_loss is nan; {kept}")
    assert latest_checkpoint(ckpts.dir).name == "ckpt_50"
    with pytest.raises(DivergedError) as err:  # the stage's last call: no timed save there, the state is still checked
        drive(stage([(0.5, np.inf)], 100, lambda p: f"bridge step {p} (align)"),
              [MetricsWriter(bridge, tensorboard=False)], ckpts, end=150, description="align", progress=False)
    assert str(err.value).startswith(f"training diverged at bridge step 150 (align): agent/critic holds NaN or inf; {kept}")
    assert latest_checkpoint(ckpts.dir).name == "ckpt_50"


@pytest.fixture(scope="module")
def tiny_cpq(tmp_path_factory):
    """A 200-step CPQ run on the embedded BallCircle dataset (a start for fine-tuning)."""
    from o2o.loops.offline import run_pretrain
    from o2o.presets import resolve_pretrain_config

    out = tmp_path_factory.mktemp("cpq") / "cpq"
    layer = {"offline": {"steps": 200, "steps_per_call": 100, "eval_every": 200, "eval_episodes": 1, "checkpoint_every": 200},
             "agent": {"hidden_dims": [32, 32], "batch_size": 64, "num_ood_actions": 2, "vae_hidden_dims": [32, 32]}}
    run_pretrain(resolve_pretrain_config("cpq", "BallCircle-dsrl-small", seed=0, layer=layer), out, progress=False)
    return out


def test_a_diverged_vpa_stops_the_finetuning_run_with_one_line(capsys, tmp_path, monkeypatch, tiny_cpq):
    import o2o.bridge.vpa as vpa

    real = vpa._vpa_many
    calls = [0]

    def poisoned(batch_size):
        many = real(batch_size)

        def call(*args, **kwargs):
            state, metrics = many(*args, **kwargs)
            calls[0] += 1
            return state, ({k: v * np.nan for k, v in metrics.items()} if calls[0] == 2 else metrics)

        return call

    monkeypatch.setattr(vpa, "_vpa_many", poisoned)
    out = tmp_path / "ft"
    code, _, err = run(capsys, "--no-progress", "finetune", "--method", "marvel", "--pretrained", str(tiny_cpq), "--out", str(out),
                       "--set", "vpa.steps=150", "--set", "vpa.steps_per_call=50", "--set", "vpa.batch_size=64")
    assert code == 2
    line = one_error_line(err)
    assert line.startswith("o2o: error: training diverged at VPA step 100 of 150: vpa_") and " is nan; " in line
    assert not (out / "bridge" / "checkpoints").exists() and not any((out / "checkpoints").iterdir())
    assert (out / "bridge" / "metrics.csv").read_text().count("\n") == 2  # the header and step 50


def test_a_checkpointless_run_in_use_is_not_deleted_by_a_sweep_or_pipeline(tmp_path):
    """Sweeps and pipelines start a run that stopped before its first checkpoint again by deleting its
    folder: under its lock, so a run still training towards its first checkpoint is refused, not wiped."""
    from o2o.config import to_dict
    from o2o.errors import RunInUseError
    from o2o.experiments.pipeline import _stage_state
    from o2o.experiments.sweep import _prepare
    from o2o.presets import resolve_train_config
    from o2o.runs import RunDir

    cfg = resolve_train_config("sac", "Pendulum")
    run_dir = tmp_path / "run"
    RunDir.create(run_dir, to_dict(cfg), kind="train").close()  # config.yaml, no checkpoint
    holder = _hold_lock(run_dir)
    try:
        for start_again in (_prepare, lambda path: _stage_state(path, cfg)):
            with pytest.raises(RunInUseError, match=f"run directory '{run_dir}' is in use by pid 4242 on node7"):
                start_again(run_dir)
            assert (run_dir / "config.yaml").is_file()
    finally:
        holder.close()
    assert _prepare(run_dir) is None and not run_dir.exists()  # no holder: deleted, started afresh


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_to_a_sweep_exits_128_plus_the_signal_like_a_run(capsys, tmp_path, monkeypatch, signum):
    """A sweep stopped by SIGTERM (preemption, scancel) or SIGUSR1 (a batch system's warning) exits 128 +
    signal as a run does (143 for SIGTERM), not 130; Ctrl-C stays 130. The signal arrives right after the
    sweep has installed its handlers, so no run trains."""
    from o2o.experiments.index import SweepIndex
    from test_sweep import TINY, write_spec

    monkeypatch.setattr(SweepIndex, "register", lambda self, runs: os.kill(os.getpid(), signum))
    spec = write_spec(tmp_path, TINY.format(seeds=1, iterations=1))
    before = signal.getsignal(signum)
    code, _, err = run(capsys, "--no-progress", "sweep", str(spec), "--out", str(tmp_path / "sweep"), "--backend", "sequential")
    assert code == 128 + signum
    assert f"o2o: sweep interrupted by {signal.Signals(signum).name}; " in err and "Traceback" not in err
    assert signal.getsignal(signum) is before  # the sweep's handler is gone again
