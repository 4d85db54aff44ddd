"""Which task a dataset is for (issue #39): the task its metadata names is checked against --task,
an import records it beside the file, Minari files and dataset directories say theirs through
``env_spec``, and a broken file is reported as what it is before any question about its task."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from test_cli import one_error_line, run, write_dataset

TINY = ["--steps", "100", "--set", "offline.steps_per_call=100", "--set", "offline.eval_every=100",
        "--set", "offline.checkpoint_every=100", "--set", "offline.eval_episodes=1",
        "--set", "agent.hidden_dims=[32,32]", "--set", "agent.batch_size=64"]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    monkeypatch.setenv("O2O_DATA_DIR", str(root))
    return root


def test_a_dataset_for_another_task_is_refused_unless_allowed(capsys, tmp_path):
    args = ["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", "BallCircle-dsrl-small", "--task", "CarCircle"]
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "refused"), *TINY)
    line = one_error_line(err)
    assert code == 2 and "is a dataset for task BallCircle (its metadata says so), not CarCircle" in line
    assert "--set allow_other_task=true" in line and not (tmp_path / "refused").exists()

    code, _, err = run(capsys, "data", "inspect", "BallCircle-dsrl-small", "--task", "CarCircle")
    assert code == 2 and "is a dataset for task BallCircle" in one_error_line(err)
    code, out, _ = run(capsys, "data", "inspect", "BallCircle-dsrl-small", "--task", "BallCircle")
    assert code == 0 and "valid for task BallCircle" in out

    out_dir = tmp_path / "allowed"
    code, out, err = run(capsys, *args, "--out", str(out_dir), *TINY, "--set", "allow_other_task=true")
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["task"] == "CarCircle" and summary["steps"] == 100


def test_import_records_the_task_so_pretrain_and_list_know_it(capsys, tmp_path, data_dir):
    src = tmp_path / "mine.hdf5"
    write_dataset(src, n=200, obs=7, act=2)  # CarRun's widths, and no metadata at all
    code, out, err = run(capsys, "data", "import", str(src), "--task", "CarRun", "--name", "CarRun-mine")
    assert code == 0, err
    record = json.loads((data_dir / "CarRun-mine.json").read_text())
    assert record["task"] == "CarRun" and record["num_transitions"] == 200 and record["recipe"] == "imported"
    code, out, _ = run(capsys, "data", "list")
    assert code == 0 and "task CarRun" in next(x for x in out.splitlines() if "CarRun-mine" in x)
    code, out, _ = run(capsys, "data", "inspect", "CarRun-mine")
    assert code == 0 and "task: CarRun" in out

    from o2o.loops.offline import OfflineData
    from o2o.presets import resolve_pretrain_config

    assert OfflineData(resolve_pretrain_config("td3bc", "CarRun-mine")).task.name == "CarRun"  # no --task needed

    # without --task the import says that nothing records the task, and pretrain asks for it
    code, out, err = run(capsys, "data", "import", str(src), "--name", "anonymous")
    assert code == 0 and "does not say which task" in err and json.loads((data_dir / "anonymous.json").read_text())["task"] is None
    code, out, _ = run(capsys, "data", "list")
    assert "task ?" in next(x for x in out.splitlines() if "anonymous" in x)
    code, _, err = run(capsys, "--no-progress", "pretrain", "--algo", "td3bc", "--dataset", "anonymous", "--out", str(tmp_path / "r"))
    assert code == 2 and "does not say which task it is for; pass --task" in one_error_line(err)


def write_minari_dir(root, env_id="SafetyBallCircle-v0", episodes=3, length=20):
    """A Minari dataset directory: data/main_data.hdf5 (episode groups) and data/metadata.json (env_spec)."""
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with h5py.File(data / "main_data.hdf5", "w") as f:
        for i in range(episodes):
            g = f.create_group(f"episode_{i}")
            g.create_dataset("observations", data=rng.normal(size=(length + 1, 8)).astype(np.float32))
            g.create_dataset("actions", data=rng.uniform(-1, 1, size=(length, 2)).astype(np.float32))
            g.create_dataset("rewards", data=rng.normal(size=length))
            g.create_dataset("terminations", data=np.zeros(length, bool))
            g.create_dataset("truncations", data=np.arange(length) == length - 1)
            g.create_dataset("infos/cost", data=np.zeros(length))
    (data / "metadata.json").write_text(json.dumps({"total_episodes": episodes, "total_steps": episodes * length, "data_format": "hdf5",
                                                    "env_spec": json.dumps({"id": env_id, "max_episode_steps": 200})}))
    return root


def test_a_minari_directory_is_read_with_its_task_and_imported(capsys, tmp_path, data_dir):
    minari = write_minari_dir(tmp_path / "ballcircle-expert-v0")
    code, out, err = run(capsys, "data", "inspect", str(minari))
    assert code == 0, err
    assert "transitions: 60" in out and "task: BallCircle" in out and str(minari / "data" / "main_data.hdf5") in out
    code, _, err = run(capsys, "data", "inspect", str(minari), "--task", "CarCircle")
    assert code == 2 and "is a dataset for task BallCircle" in one_error_line(err)

    code, out, err = run(capsys, "data", "import", str(minari), "--name", "ball-minari")
    assert code == 0, err
    assert json.loads((data_dir / "ball-minari.json").read_text())["task"] == "BallCircle"
    # the main file alone (no metadata.json beside it) imports too, and lists as readable
    code, out, err = run(capsys, "data", "import", str(minari / "data" / "main_data.hdf5"), "--name", "bare-minari", "--task", "BallCircle")
    assert code == 0, err
    code, out, _ = run(capsys, "data", "list")
    for name in ("ball-minari", "bare-minari"):
        row = next(x for x in out.splitlines() if name in x)
        assert "unreadable" not in row and "60 transitions" in row and "task BallCircle" in row


@pytest.mark.parametrize("case,expect", [
    ("missing", "no such dataset file"),
    ("truncated", "is truncated or corrupt"),
    ("text", "is not an HDF5 file"),
])
def test_a_broken_dataset_file_without_task_names_the_real_problem(capsys, tmp_path, case, expect):
    path = tmp_path / f"{case}.hdf5"
    if case == "truncated":
        write_dataset(path, n=5000)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "text":
        path.write_text("observations,actions\n1,2\n")
    code, _, err = run(capsys, "--no-progress", "pretrain", "--algo", "td3bc", "--dataset", str(path), "--out", str(tmp_path / "r"))
    line = one_error_line(err)
    assert code == 2 and expect in line and str(path) in line and "pass --task" not in line
