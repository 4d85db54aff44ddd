"""Online training: SAC learns Pendulum in a test budget; a resumed run equals an uninterrupted one."""

import json
import time

import numpy as np
import pytest
from procs import run_online_optimised

from o2o.config import to_dict
from o2o.loops.online import run_online
from o2o.presets import resolve_train_config
from o2o.runs import load_checkpoint, read_metrics_csv


def pendulum_overrides(**extra) -> list[str]:
    return [
        "agent.hidden_dims=[64, 64]",
        "agent.actor_lr=1e-3",
        "agent.critic_lr=1e-3",
        "agent.temperature_lr=1e-3",
        "online.episodes_per_iteration=null",
        "online.steps_per_iteration=200",
        "online.updates_per_iteration=200",
        "online.warmup_steps=1000",
        "online.update_after=1000",
        "online.eval_episodes=5",
    ] + [f"{k}={v}" for k, v in extra.items()]


def test_sac_learns_pendulum(tmp_path):
    """Random Pendulum policies score about -1200; SAC should reach well above -500 in 6k steps."""
    overrides = pendulum_overrides(**{"online.iterations": 30, "online.eval_every": 30, "online.checkpoint_every": 30})
    summary = run_online_optimised("sac", "Pendulum", 0, overrides, tmp_path / "run")
    assert summary["env_steps"] == 6000
    assert summary["final_eval_return"] > -500, summary


def _short(algo, task, mode_overrides):
    base = [
        "agent.hidden_dims=[32, 32]",
        "agent.batch_size=64",
        "online.iterations=4",
        "online.updates_per_iteration=20",
        "online.warmup_steps=100",
        "online.update_after=100",
        "online.eval_every=2",
        "online.eval_episodes=2",
        "online.checkpoint_every=2",
    ]
    return resolve_train_config(algo, task, 3, overrides=base + mode_overrides)


@pytest.mark.parametrize(
    "algo,task,mode",
    [
        # steps mode with 150 steps per iteration leaves Pendulum's 200-step episodes mid-way at a checkpoint
        ("sac", "Pendulum", ["online.episodes_per_iteration=null", "online.steps_per_iteration=150", "online.num_envs=2"]),
        # episodes mode with costs and a dual-ascent multiplier
        ("sac-lag", "BallCircle", ["online.episodes_per_iteration=1", "lagrange.dual_lr=0.05"]),
    ],
)
def test_resumed_run_equals_uninterrupted(tmp_path, algo, task, mode):
    cfg = _short(algo, task, mode)
    full = run_online(cfg, tmp_path / "full", progress=False)

    half = cfg.__class__(**{**cfg.__dict__, "online": cfg.online.__class__(**{**cfg.online.__dict__, "iterations": 2})})
    run_online(half, tmp_path / "resumed", progress=False)
    # the run is "interrupted" after iteration 2; continue it with the full config
    (tmp_path / "resumed" / "config.yaml").write_text((tmp_path / "full" / "config.yaml").read_text())
    t0 = time.perf_counter()
    resumed = run_online(cfg, tmp_path / "resumed", resume=True, progress=False)
    invocation = time.perf_counter() - t0

    a = read_metrics_csv(tmp_path / "full" / "metrics.csv")
    b = read_metrics_csv(tmp_path / "resumed" / "metrics.csv")
    skip = {"perf/env_steps_per_s", "perf/updates_per_s"}
    assert set(a) == set(b)
    for k in a:
        if k not in skip:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("env_steps", "updates", "train_cumulative_cost", "final_eval_return"):
        assert full[k] == resumed[k], k
    # the summary's wall time is the whole run's: the time recorded at the checkpoint it resumed
    # from (the first invocation's) plus the resuming invocation's
    _, host = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "ckpt_2")
    assert resumed["resumed_from"] == 2 and "resumed_from" not in full and "wall_time_note" not in resumed
    assert host["wall_time_s"] > 0
    assert host["wall_time_s"] < resumed["wall_time_s"] <= host["wall_time_s"] + invocation
