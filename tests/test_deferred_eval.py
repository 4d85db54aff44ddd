"""Deferred evaluation: pre-train without the simulator (``--defer-eval``; a GPU node), carry the
checkpoints stripped to the policy (``strip_checkpoint``), and evaluate them afterwards with
``o2o eval DIR --record`` into the rows a live run has.

TD3+BC with 32x32 networks on the embedded BallCircle-dsrl-small dataset, as in test_seed_batch.py
(same agent config, so the compiled updates are shared)."""

import json
import os

import numpy as np
import pytest

from o2o.bridge.pretrained import load_pretrained
from o2o.cli import main
from o2o.errors import RunDirError
from o2o.experiments.spec import load_spec
from o2o.experiments.sweep import SequentialBackend, run_sweep
from o2o.runs import list_checkpoints, merge_metrics, read_metrics_csv
from o2o.runs.checkpoint import checkpoint_step, load_checkpoint, save_checkpoint, strip_checkpoint

DATASET = "BallCircle-dsrl-small"
TINY = ["--steps", "300", "--set", "offline.steps_per_call=100", "--set", "offline.eval_every=100",
        "--set", "offline.checkpoint_every=100", "--set", "offline.eval_episodes=1",
        "--set", "agent.hidden_dims=[32,32]", "--set", "agent.batch_size=64"]


def pretrain(*args) -> int:
    return main(["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", DATASET, *args, *TINY])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One live run and one deferred run of the same config and seed."""
    root = tmp_path_factory.mktemp("deferred")
    assert pretrain("--seed", "0", "--out", str(root / "live")) == 0
    assert pretrain("--seed", "0", "--out", str(root / "deferred"), "--defer-eval") == 0
    return root


def flat(tree, prefix="") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        elif isinstance(v, np.ndarray):
            out[f"{prefix}{k}"] = v
    return out


def eval_rows(run_dir) -> dict:
    m = read_metrics_csv(run_dir)
    if "eval/return" not in m:
        return {}
    keep = ~np.isnan(m["eval/return"])
    return {k: v[keep] for k, v in m.items() if k == "step" or k.startswith("eval/")}


def test_deferred_run_keeps_every_checkpoint_and_evaluates_nothing(runs):
    d = runs / "deferred"
    assert [checkpoint_step(c) for c in list_checkpoints(d / "checkpoints")] == [100, 200, 300]
    assert eval_rows(d) == {}
    summary = json.loads((d / "summary.json").read_text())
    assert summary["evaluation"] == "deferred" and not any(k.startswith("final_eval") for k in summary)
    # the live run of the same config prunes to its two newest checkpoints
    assert [checkpoint_step(c) for c in list_checkpoints(runs / "live" / "checkpoints")] == [200, 300]


def test_record_gives_the_rows_a_live_run_has(runs, capsys):
    d, live = runs / "deferred", runs / "live"
    assert main(["eval", str(d), "--record"]) == 0
    assert "recorded 3 evaluation(s) in 1 run(s)" in capsys.readouterr().out
    got, want = eval_rows(d), eval_rows(live)
    assert list(got["step"]) == list(want["step"]) == [100, 200, 300]
    assert set(got) == set(want)
    for k in want:  # same updates (deferral changes nothing in training), same evaluation episodes
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    summary = json.loads((d / "summary.json").read_text())
    live_summary = json.loads((live / "summary.json").read_text())
    assert summary["evaluation"] == "recorded"
    assert summary["final_eval_return"] == pytest.approx(live_summary["final_eval_return"], rel=1e-5)
    # the loss rows are untouched, and a second --record evaluates nothing again
    assert len(read_metrics_csv(d)["step"]) == 3
    assert main(["eval", str(d), "--record"]) == 0
    assert "recorded 0 evaluation(s)" in capsys.readouterr().out


def test_stripped_checkpoint_evaluates_but_is_refused_for_finetuning_and_resume(runs, tmp_path, capsys):
    import shutil

    d = tmp_path / "stripped"
    shutil.copytree(runs / "deferred", d)
    full, _ = load_checkpoint(d)
    for ckpt in list_checkpoints(d / "checkpoints"):
        kept, zeroed = strip_checkpoint(ckpt, ("agent/actor/params", "obs_mean", "obs_std", "key"), "test")
        assert kept > 0 and zeroed > kept
    arrays, host = load_checkpoint(d)
    assert host["stripped"] == "test"
    got, want = flat(arrays), flat(full)
    assert got.keys() == want.keys()
    actor = [k for k in want if k.startswith("agent/actor/params/")]
    others = [k for k in want if k.startswith(("agent/critic/", "agent/actor/opt_state/"))]
    assert actor and others
    for k in actor + ["obs_mean", "obs_std"]:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert any(np.any(want[k]) for k in others) and not any(np.any(got[k]) for k in others)
    # evaluation works from the policy alone and matches the full checkpoint's
    assert main(["eval", str(d), "--record"]) == 0
    np.testing.assert_allclose(eval_rows(d)["eval/return"], eval_rows(runs / "deferred")["eval/return"], rtol=1e-5)
    with pytest.raises(RunDirError, match="holds only the policy"):
        load_pretrained(d)
    capsys.readouterr()
    assert pretrain("--resume", str(d)) != 0
    assert "holds only the policy" in capsys.readouterr().err


def test_sweep_defer_eval_reaches_its_runs(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: defer\nseeds: 1\ntasks: [BallCircle]\nmethods:\n"
        "  - {name: td3bc, kind: pretrain, algo: td3bc, dataset: BallCircle-dsrl-small, set: {offline.steps: 200, "
        "offline.steps_per_call: 100, offline.eval_every: 100, offline.checkpoint_every: 100, offline.eval_episodes: 1, "
        "agent.hidden_dims: [32, 32], agent.batch_size: 64}}\n"
    )
    out = run_sweep(load_spec(spec), tmp_path / "sw", backend=SequentialBackend(), progress=False, defer_eval=True, echo=lambda *a: None)
    assert out.counts.get("finished") == 1
    assert "O2O_DEFER_EVAL" not in os.environ  # the sequential backend's runs took it; this process keeps nothing
    run = tmp_path / "sw" / "runs" / "td3bc" / "BallCircle" / "seed0"
    assert json.loads((run / "summary.json").read_text())["evaluation"] == "deferred"
    assert len(list_checkpoints(run / "checkpoints")) == 2


def test_merge_metrics_fills_a_row_or_inserts_one_in_step_order(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n100,1.0\n300,3.0\n")
    merge_metrics(tmp_path, 300, {"eval/return": 7.5}, tensorboard=False)
    merge_metrics(tmp_path, 200, {"eval/return": 5.0}, tensorboard=False)
    m = read_metrics_csv(tmp_path)
    assert list(m["step"]) == [100, 200, 300]
    np.testing.assert_array_equal(m["loss"], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(m["eval/return"], [np.nan, 5.0, 7.5])


def test_keep_more_checkpoints_than_exist(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, arrays={"x": np.ones(2)}, host_state={}, keep=5)
    assert [checkpoint_step(c) for c in list_checkpoints(tmp_path)] == [1, 2, 3]
    save_checkpoint(tmp_path, 4, arrays={"x": np.ones(2)}, host_state={}, keep=2)
    assert [checkpoint_step(c) for c in list_checkpoints(tmp_path)] == [3, 4]
