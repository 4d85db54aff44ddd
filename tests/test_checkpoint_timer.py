"""Time-based checkpoints (O2O_CHECKPOINT_EVERY_S): when they are due, the setting's bad values, and
that a run killed between its step-based checkpoints continues exactly from a time-based one."""

import numpy as np
import pytest

from o2o.cli import main
from o2o.errors import ConfigError
from o2o.loops.online import run_online
from o2o.presets import resolve_train_config
from o2o.runs import CheckpointTimer, latest_checkpoint, read_metrics_csv
from o2o.runs.clock import CHECKPOINT_EVERY_S_ENV, DEFAULT_CHECKPOINT_EVERY_S, checkpoint_every_s


def test_timer_is_due_once_the_interval_passed_since_the_last_checkpoint():
    now = [0.0]
    timer = CheckpointTimer(10.0, clock=lambda: now[0])
    now[0] = 9.9
    assert not timer.due()
    now[0] = 10.0
    assert timer.due()
    timer.saved()  # a checkpoint (of either kind) restarts the interval
    now[0] = 19.0
    assert not timer.due()
    now[0] = 1e6
    assert not CheckpointTimer(None, clock=lambda: now[0]).due()  # off


def test_setting_default_off_and_bad_values(monkeypatch):
    monkeypatch.delenv(CHECKPOINT_EVERY_S_ENV, raising=False)
    assert checkpoint_every_s() == DEFAULT_CHECKPOINT_EVERY_S
    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "90.5")
    assert checkpoint_every_s() == 90.5
    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "0")
    assert checkpoint_every_s() is None
    for bad in ("ten", "-1", "nan", "inf"):
        monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, bad)
        with pytest.raises(ConfigError, match=CHECKPOINT_EVERY_S_ENV):
            checkpoint_every_s()


def test_cli_refuses_a_malformed_setting_before_anything_is_written(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "soon")
    out = tmp_path / "run"
    code = main(["--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1 and CHECKPOINT_EVERY_S_ENV in lines[0] and lines[0].startswith("o2o: error:")
    assert not out.exists()


class Killed(Exception):
    """Stands for a SIGKILL: the run stops where it is, without unwinding into a checkpoint."""


def _config(iterations: int):
    return resolve_train_config("sac", "Pendulum", 5, overrides=[
        "agent.hidden_dims=[32, 32]", "agent.batch_size=64", f"online.iterations={iterations}",
        "online.episodes_per_iteration=null", "online.steps_per_iteration=150", "online.updates_per_iteration=20",
        "online.warmup_steps=100", "online.update_after=100", "online.eval_every=2", "online.eval_episodes=1",
        "online.checkpoint_every=5",  # step-based: only at the end of this 5-iteration run
    ])


def test_run_killed_between_step_based_checkpoints_continues_exactly_from_a_time_based_one(tmp_path, monkeypatch):
    cfg = _config(5)
    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "0")
    full = run_online(cfg, tmp_path / "full", progress=False)

    # every iteration ends "after the interval": a time-based checkpoint each time; killed during iteration 4
    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "1e-9")

    def kill_at_4(trainer, metrics):
        if trainer.counters["iteration"] == 4:
            raise Killed

    with pytest.raises(Killed):
        run_online(cfg, tmp_path / "killed", progress=False, after_iteration=kill_at_4)
    assert latest_checkpoint(tmp_path / "killed").name == "ckpt_3"  # not a multiple of checkpoint_every=5
    resumed = run_online(cfg, tmp_path / "killed", resume=True, progress=False)
    assert resumed["resumed_from"] == 3

    a = read_metrics_csv(tmp_path / "full" / "metrics.csv")
    b = read_metrics_csv(tmp_path / "killed" / "metrics.csv")
    assert set(a) == set(b)
    for k in a:
        if not k.startswith("perf/"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert full["final_eval_return"] == resumed["final_eval_return"] and full["updates"] == resumed["updates"]

    # off: the same kill leaves nothing to continue from
    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "0")
    with pytest.raises(Killed):
        run_online(cfg, tmp_path / "off", progress=False, after_iteration=kill_at_4)
    assert latest_checkpoint(tmp_path / "off") is None


def test_pretraining_checkpoints_on_time_too_but_a_deferred_run_keeps_only_its_step_based_ones(tmp_path, monkeypatch):
    """A deferred-evaluation run turns each checkpoint into an evaluation row later, so it has none
    but those of offline.checkpoint_every."""
    from o2o.runs import list_checkpoints

    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "1e-9")
    args = ["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", "BallCircle-dsrl-small", "--steps", "300",
            "--set", "offline.steps_per_call=100", "--set", "offline.eval_every=300", "--set", "offline.checkpoint_every=300",
            "--set", "offline.eval_episodes=1", "--set", "agent.hidden_dims=[32,32]", "--set", "agent.batch_size=64"]
    assert main([*args, "--out", str(tmp_path / "live")]) == 0
    assert main([*args, "--out", str(tmp_path / "deferred"), "--defer-eval"]) == 0
    steps = lambda run: [int(p.name.split("_")[1]) for p in list_checkpoints(run / "checkpoints")]  # noqa: E731
    assert steps(tmp_path / "live") == [200, 300]  # time-based at 100 and 200, the last two kept
    assert steps(tmp_path / "deferred") == [300]
