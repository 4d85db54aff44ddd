"""Raising a run's budget on resume (issue #39): ``online.iterations`` of o2o train / finetune and
``offline.steps`` of o2o pretrain may grow on --resume, finished run or not; any other difference, and
a lowered budget, is refused as before."""

from __future__ import annotations

import json

import numpy as np
import yaml

from o2o.runs import latest_checkpoint, read_metrics_csv
from o2o.runs.rundir import budget_keys, resume_diffs
from test_cli import one_error_line, run

TINY_TRAIN = ["--set", "agent.hidden_dims=[16]", "--set", "agent.batch_size=16", "--set", "online.iterations=2",
              "--set", "online.episodes_per_iteration=null", "--set", "online.steps_per_iteration=50",
              "--set", "online.updates_per_iteration=2", "--set", "online.eval_episodes=1", "--set", "online.warmup_steps=50",
              "--set", "online.update_after=50"]


def test_budget_keys_per_run_kind():
    assert budget_keys({"online": {"iterations": 2}, "agent": {}}) == ("online.iterations",)
    assert budget_keys({"offline": {"steps": 100}, "agent": {}}) == ("offline.steps",)
    assert budget_keys({"online": {"iterations": 2}, "agent": {"anneal_lr": True}}) == ()  # PPO's schedule spans the run
    saved = {"online": {"iterations": 2, "eval_every": 1}, "agent": {"actor_lr": 1e-3}}
    assert resume_diffs(saved, {"online": {"iterations": 3, "eval_every": 1}, "agent": {"actor_lr": 1e-3}}) == ([], ["online.iterations"])
    assert resume_diffs(saved, {"online": {"iterations": 1, "eval_every": 1}, "agent": {"actor_lr": 1e-3}}) == (["online.iterations: 2 -> 1"], [])
    assert resume_diffs(saved, {"online": {"iterations": 3, "eval_every": 2}, "agent": {"actor_lr": 1e-3}}) == (["online.eval_every: 1 -> 2"], ["online.iterations"])


def test_a_finished_train_run_extended_by_one_iteration_runs_exactly_one_more(capsys, tmp_path):
    out = tmp_path / "r"
    code, _, err = run(capsys, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(out), *TINY_TRAIN)
    assert code == 0, err
    before = read_metrics_csv(out / "metrics.csv")
    assert list(before["step"]) == [1, 2]

    # lowered, or another key changed along with it: refused, nothing touched
    code, _, err = run(capsys, "--no-progress", "train", "--resume", str(out), "--set", "online.iterations=1")
    assert code == 2 and "online.iterations: 2 -> 1" in one_error_line(err) and "may be raised" in err
    code, _, err = run(capsys, "--no-progress", "train", "--resume", str(out), "--set", "online.iterations=3", "--set", "agent.actor_lr=0.1")
    line = one_error_line(err)
    assert code == 2 and "agent.actor_lr" in line and "online.iterations" not in line.split("; only")[0]
    assert yaml.safe_load((out / "config.yaml").read_text())["online"]["iterations"] == 2

    code, _, err = run(capsys, "--no-progress", "train", "--resume", str(out), "--set", "online.iterations=3")
    assert code == 0, err
    after = read_metrics_csv(out / "metrics.csv")
    assert list(after["step"]) == [1, 2, 3]  # exactly one more iteration
    for k in before:  # the first two rows are the finished run's, untouched
        if not k.startswith("perf/"):
            np.testing.assert_array_equal(after[k][:2], before[k], err_msg=k)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["env_steps"] == 150
    assert yaml.safe_load((out / "config.yaml").read_text())["online"]["iterations"] == 3
    assert latest_checkpoint(out).name == "ckpt_3"
    # extended, it is finished at its new budget
    code, _, err = run(capsys, "--no-progress", "train", "--resume", str(out))
    assert code == 0 and "has finished" in err


def test_a_finished_pretrain_run_extended_trains_the_added_steps(capsys, tmp_path):
    out = tmp_path / "p"
    args = ["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", "BallCircle-dsrl-small", "--steps", "100", "--out", str(out),
            "--set", "offline.steps_per_call=100", "--set", "offline.eval_every=100", "--set", "offline.checkpoint_every=100",
            "--set", "offline.eval_episodes=1", "--set", "agent.hidden_dims=[32,32]", "--set", "agent.batch_size=64"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    code, _, err = run(capsys, "--no-progress", "pretrain", "--resume", str(out), "--set", "offline.steps=200")
    assert code == 0, err
    assert list(read_metrics_csv(out / "metrics.csv")["step"]) == [100, 200]
    assert json.loads((out / "summary.json").read_text())["steps"] == 200 and latest_checkpoint(out).name == "ckpt_200"
