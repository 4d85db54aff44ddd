"""The command line: bad input ends with one clear line and exit status 2, nothing overwritten."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from o2o.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("o2o: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_tasks_lists_every_task(capsys):
    code, out, _ = run(capsys, "tasks")
    assert code == 0
    for name in ("BallCircle", "CarRun", "AntCircle", "Hopper", "Walker2d", "HalfCheetah", "Ant"):
        assert name in out


def test_unknown_task(capsys, tmp_path):
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Hoppper", "--out", str(tmp_path / "r"))
    assert code == 2
    line = one_error_line(err)
    assert "unknown task 'Hoppper'" in line and "Hopper" in line
    assert not (tmp_path / "r").exists()


def test_wrong_config_key_and_type(capsys, tmp_path):
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(tmp_path / "r"), "--set", "agent.actr_lr=1e-4")
    assert code == 2
    line = one_error_line(err)
    assert "agent.actr_lr" in line and "actor_lr" in line
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(tmp_path / "r"), "--set", "agent.actor_lr=fast")
    assert code == 2
    assert "agent.actor_lr" in one_error_line(err)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("online:\n  iterations: [1, 2\n")
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--config", str(cfg))
    assert code == 2 and "bad.yaml" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def test_safe_algorithm_on_unconstrained_task(capsys, tmp_path):
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac-lag", "--task", "Hopper", "--out", str(tmp_path / "r"))
    assert code == 2 and "needs a task with costs" in one_error_line(err)


TINY = ["--set", "agent.hidden_dims=[16]", "--set", "agent.batch_size=16", "--set", "online.iterations=1",
        "--set", "online.episodes_per_iteration=null", "--set", "online.steps_per_iteration=50",
        "--set", "online.updates_per_iteration=2", "--set", "online.eval_episodes=1"]


def test_existing_run_and_resume_with_different_config(capsys, tmp_path):
    out = tmp_path / "r"
    code, stdout, _ = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(out), *TINY)
    assert code == 0 and stdout.strip().splitlines()[-1].startswith(f"outputs: {out}")
    before = (out / "metrics.csv").read_bytes()
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(out), *TINY)
    assert code == 2 and "already" in one_error_line(err) and "--resume" in err
    code, _, err = run(capsys, "--no-progress", "train", "--resume", str(out), "--set", "agent.actor_lr=0.1")
    assert code == 2
    line = one_error_line(err)
    assert "agent.actor_lr" in line and "0.1" in line
    assert (out / "metrics.csv").read_bytes() == before  # nothing overwritten
    code, stdout, _ = run(capsys, "eval", str(out), "--episodes", "1")
    assert code == 0 and "eval/return" in stdout


def write_dataset(path, n=20, obs=8, act=2, **replace):
    cols = {
        "observations": np.zeros((n, obs), np.float32),
        "next_observations": np.zeros((n, obs), np.float32),
        "actions": np.zeros((n, act), np.float32),
        "rewards": np.ones((n,), np.float32),
        "costs": np.zeros((n,), np.float32),
        "terminals": np.zeros((n,), bool),
        "timeouts": (np.arange(n) % 10 == 9),
    }
    cols.update(replace)
    with h5py.File(path, "w") as f:
        for k, v in cols.items():
            if v is not None:
                f.create_dataset(k, data=v)


@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing", "no such dataset file"),
        ("truncated", ""),
        ("no_key", "rewards"),
        ("lengths", ""),
        ("nan", "NaN"),
        ("inf", "inf"),
        ("shape", "BallCircle"),
    ],
)
def test_bad_dataset_files(capsys, tmp_path, case, expect):
    path = tmp_path / f"{case}.hdf5"
    if case == "truncated":
        write_dataset(path, n=2000)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "no_key":
        write_dataset(path, rewards=None)
    elif case == "lengths":
        write_dataset(path, rewards=np.ones(19, np.float32))
    elif case == "nan":
        write_dataset(path, rewards=np.where(np.arange(20) == 7, np.nan, 1.0).astype(np.float32))
    elif case == "inf":
        write_dataset(path, observations=np.where(np.arange(20)[:, None] == 3, np.inf, 0.0).repeat(8, 1).astype(np.float32))
    elif case == "shape":
        write_dataset(path, obs=11)
    code, _, err = run(capsys, "data", "inspect", str(path), "--task", "BallCircle")
    assert code == 2
    line = one_error_line(err)
    assert path.name in line and expect in line


def test_valid_dataset_inspects(capsys, tmp_path):
    path = tmp_path / "ok.hdf5"
    write_dataset(path)
    code, out, _ = run(capsys, "data", "inspect", str(path), "--task", "BallCircle")
    assert code == 0 and "episodes" in out and "safe episodes" in out


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "o2o.cli", "train", "--algo", "sac", "--task", "Nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("o2o: error: unknown task 'Nope'") and "Traceback" not in proc.stderr


def test_config_lists_offline_and_online_algorithms(capsys):
    code, out, _ = run(capsys, "config", "--algo", "cpq")
    assert code == 0
    keys = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"agent.cost_reduce", "agent.num_ood_actions", "offline.steps", "dataset"} <= keys
    code, out, _ = run(capsys, "config", "--algo", "iql", "--task", "Hopper")
    assert code == 0 and "agent.expectile" in out and '"Hopper"' in out
    code, _, err = run(capsys, "config", "--algo", "cpqq")
    assert code == 2
    assert "unknown algorithm 'cpqq'" in one_error_line(err)


def test_seed_lists_read_alike_in_every_command(capsys):
    from o2o.cli import _seed_list

    assert _seed_list("0,1,2") == _seed_list(["0", "1", "2"]) == _seed_list(["0,1", "2"]) == (0, 1, 2)
    code, _, err = run(capsys, "pretrain", "--algo", "bc-safe", "--dataset", "BallCircle-dsrl-small", "--seeds", "0,x")
    assert code == 2
    assert "--seeds must be integers" in one_error_line(err)


def test_closed_stdout_ends_quietly():
    """`o2o config | head -1`: the reader closes the pipe early; o2o stops without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "o2o.cli", "config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before o2o has written anything: every write of it meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert b"BrokenPipe" not in err, err.decode()
