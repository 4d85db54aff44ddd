"""OCR-CFT end to end at a tiny budget: `o2o ocr` (dataset -> pre-training -> re-evaluation -> alignment ->
constrained fine-tuning, finished stages reused), `o2o finetune` for O2TD3 and O2PPO with resume, a
cross-class transfer, and a pre-trained run that does not fit the task refused before training.

The dataset is a small random Hopper file (shapes are what matters here, not learning)."""

import json
import shutil

import h5py
import numpy as np
import pytest
import yaml

from o2o.cli import main

PRETRAIN = {"offline": {"steps": 20, "steps_per_call": 10, "eval_every": 20, "eval_episodes": 1, "checkpoint_every": 20},
            "agent": {"hidden_dims": [16, 16], "batch_size": 32}}
BRIDGE = ["ocr.reeval_steps=100", "ocr.align_steps=100", "ocr.steps_per_call=50", "ocr.reeval_batch_size=32", "ocr.align_batch_size=32",
          "ocr.reference_every=50", "ocr.reference_episodes=1", "ocr.clone_steps=50"]
LOOP = ["online.iterations=2", "online.eval_every=1", "online.eval_episodes=1", "online.checkpoint_every=1"]
OFF_POLICY = ["online.steps_per_iteration=50", "online.update_after=0", "online.updates_per_iteration=40", "agent.batch_size=32"]
PPO = ["online.steps_per_iteration=64", "agent.minibatch_size=32", "agent.num_epochs=1"]


@pytest.fixture(scope="module")
def data(build_once):
    def build(root):
        rng = np.random.default_rng(0)
        n = 600
        with h5py.File(root / "Hopper-tiny.hdf5", "w") as f:
            f.create_dataset("observations", data=rng.normal(size=(n, 11)).astype(np.float32))
            f.create_dataset("next_observations", data=rng.normal(size=(n, 11)).astype(np.float32))
            f.create_dataset("actions", data=rng.uniform(-1, 1, (n, 3)).astype(np.float32))
            f.create_dataset("rewards", data=rng.uniform(0, 1, n).astype(np.float32))
            f.create_dataset("terminals", data=np.arange(n) % 150 == 149)
            f.create_dataset("timeouts", data=np.arange(n) % 100 == 99)

    return build_once("ocr-data", build) / "Hopper-tiny.hdf5"


@pytest.fixture(scope="module")
def pretrained(build_once, data):
    """``pretrained(algo)``: a tiny pre-training run of ``algo`` on the data, made once per test session."""
    from o2o.loops.offline import run_pretrain
    from o2o.presets import resolve_pretrain_config

    def get(algo):
        def build(root):
            run_pretrain(resolve_pretrain_config(algo, str(data), "Hopper", 0, layer=PRETRAIN), root / algo, progress=False)

        return build_once(f"ocr-{algo}", build) / algo

    return get


def _sets(items):
    return [x for kv in items for x in ("--set", kv)]


def _nested(items):
    out = {}
    for kv in items:
        key, value = kv.split("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def test_ocr_pipeline_end_to_end_and_reuses_finished_stages(data, tmp_path, capsys):
    budget = tmp_path / "budget.yaml"
    budget.write_text(yaml.safe_dump({"pretrain": PRETRAIN, "finetune": _nested(BRIDGE + LOOP + OFF_POLICY)}))
    root = tmp_path / "pipe"
    args = ["--no-progress", "ocr", "--task", "Hopper", "--dataset", str(data), "--methods", "o2sac",
            "--budget", str(budget), "--out", str(root)]
    assert main(args) == 0, capsys.readouterr().err
    assert "o2sac" in capsys.readouterr().out
    assert (root / "pretrain" / "cql-s0" / "summary.json").exists()  # o2sac's own offline algorithm
    run = root / "finetune" / "o2sac-s0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bridge"]["reeval"]["steps"] == 100 and summary["bridge"]["align"]["steps"] == 100
    assert summary["bridge"]["reference"]["chosen"] in ("offline", "aligned")
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "loss/lambda" in header and "loss/kl_reference" in header and "reference/updated" in header
    bridge = (run / "bridge" / "metrics.csv").read_text()
    assert "reeval_critic_loss" in bridge and "align_critic_loss" in bridge
    from tbevents import tb_scalars

    bridge_scalars = tb_scalars(run / "bridge" / "tb")  # the bridge's curves in TensorBoard, against bridge steps
    assert [s for s, _ in bridge_scalars["reeval_critic_loss"]][-1] == 100 and [s for s, _ in bridge_scalars["align_critic_loss"]][-1] == 200
    # the report's row: start, the lowest evaluation in the first 10% of the budget, the online mean, final
    from o2o.runs import read_metrics_csv

    m = read_metrics_csv(run / "metrics.csv")
    steps, score = m["env_steps"], m["eval/normalized_return"]
    ev = ~np.isnan(score)
    steps, score = steps[ev], score[ev]
    early = (steps > 0) & (steps <= 0.1 * steps.max())
    row = next(x for x in (root / "report.md").read_text().splitlines() if x.startswith("| o2sac | 1 |"))
    assert "Hopper & o2sac & 1 &" in (root / "results.tex").read_text() and (root / "curves.pdf").is_file()
    cells = [c.strip() for c in row.strip("|").split("|")]
    expected_low = f"{score[early].min():.1f}" if early.any() else "-"  # 2 evaluations after step 0: none in the first 10%
    assert cells[3] == f"{score[0]:.1f}" and cells[4] == expected_low and cells[5] == f"{score[steps > 0].mean():.1f}"
    assert cells[7] == f"{score[-1]:.1f}"
    stamp = (run / "summary.json").stat().st_mtime_ns
    assert main(args) == 0  # everything finished: reused, not re-run
    assert (run / "summary.json").stat().st_mtime_ns == stamp


def test_o2td3_finetune_resume_and_transfer_from_cql(pretrained, tmp_path, capsys):
    td3bc = pretrained("td3bc")
    out = tmp_path / "o2td3"
    args = ["--no-progress", "finetune", "--method", "o2td3", "--pretrained", str(td3bc), "--out", str(out),
            *_sets(BRIDGE + LOOP + OFF_POLICY + ["ocr.td3_align_rule=poster"])]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "o2td3" and summary["iterations"] == 2 and "mse_reference" in (out / "metrics.csv").read_text()
    assert main(["--no-progress", "finetune", "--resume", str(out)]) == 0  # finished: a no-op
    assert json.loads((out / "summary.json").read_text())["iterations"] == 2


def test_transfer_of_a_stochastic_actor_into_td3(pretrained, tmp_path, capsys):
    # a stochastic CQL actor into deterministic TD3: behaviour-cloned to its mode, then the same stages
    cql = pretrained("cql")
    out = tmp_path / "o2td3-from-cql"
    assert main(["--no-progress", "finetune", "--method", "o2td3", "--pretrained", str(cql), "--out", str(out),
                 *_sets(BRIDGE + LOOP + OFF_POLICY + ["ocr.replay=all"])]) == 0, capsys.readouterr().err


def test_o2ppo_finetune_from_iql(pretrained, tmp_path, capsys):
    iql = pretrained("iql")
    out = tmp_path / "o2ppo"
    assert main(["--no-progress", "finetune", "--method", "o2ppo", "--pretrained", str(iql), "--out", str(out), *_sets(BRIDGE + LOOP + PPO)]) == 0, \
        capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bridge"]["reeval"]["steps"] == 100 and "reeval_value_loss" in summary["bridge"]["reeval"]
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "aux/mix_weight" in header and "reference/updated" in header


def test_pretrained_run_for_another_action_space_is_refused(pretrained, tmp_path, capsys):
    cql = shutil.copytree(pretrained("cql"), tmp_path / "cql")  # changed below
    cfg = yaml.safe_load((cql / "config.yaml").read_text())
    cfg["task"] = "HalfCheetah"  # a run whose networks were made for Hopper's 11 observations / 3 actions
    (cql / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "x"
    assert main(["--no-progress", "finetune", "--method", "o2sac", "--pretrained", str(cql), "--out", str(out), *_sets(BRIDGE + LOOP)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("o2o: error:") and "different network size or task" in err[0]
    assert not out.exists()


def test_sweep_plans_o2ppo_and_o2td3_finetune_runs(pretrained, tmp_path, capsys):
    """A sweep checks each fine-tuning run with its own loop's rules: PPO's config has no replay buffer."""
    iql = pretrained("iql")
    td3bc = pretrained("td3bc")
    spec = tmp_path / "ocr.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "ocr", "seeds": 1, "tasks": ["Hopper"], "out": str(tmp_path / "sweep"),
        "methods": [{"name": "o2ppo", "kind": "finetune", "pretrained": str(iql), "set": _nested(PPO)},
                    {"name": "o2td3", "kind": "finetune", "pretrained": str(td3bc)}],
    }))
    assert main(["--no-progress", "sweep", str(spec), "--dry-run"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "o2ppo/Hopper/seed0" in out and "o2td3/Hopper/seed0" in out
    # and a bad value in a PPO run is still refused, naming the key
    spec.write_text(spec.read_text().replace("minibatch_size: 32", "minibatch_size: 0"))
    assert main(["--no-progress", "sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "minibatch_size" in err and "must be" in err, err


class Killed(Exception):
    """Stands for a SIGKILL: the run stops where it is."""


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


# killed in re-evaluation (steps 50, 100) or alignment (150, 200): the last time-based partial checkpoint
# is one call earlier; stopped by SIGTERM (o2o.stop): the checkpoint is at the call it stopped after
@pytest.mark.parametrize("how,kill_at", [("kill", 100), ("kill", 200), ("sigterm", 150)])
def test_o2sac_bridge_killed_mid_stage_continues_exactly_from_its_partial_checkpoint(pretrained, tmp_path, monkeypatch, capsys, how, kill_at):
    import os
    import signal

    from o2o.experiments.sweep import resume_point
    from o2o.runs import MetricsWriter, load_checkpoint, read_metrics_csv
    from o2o.runs.clock import CHECKPOINT_EVERY_S_ENV

    cql = pretrained("cql")
    args = lambda out: ["--no-progress", "finetune", "--method", "o2sac", "--pretrained", str(cql), "--out", str(out),  # noqa: E731
                        *_sets(BRIDGE + LOOP + OFF_POLICY)]
    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "0")
    assert main(args(tmp_path / "full")) == 0, capsys.readouterr().err

    # kill: a partial checkpoint after every call but a stage's last; sigterm: only the stop's
    monkeypatch.setenv(CHECKPOINT_EVERY_S_ENV, "1e-9" if how == "kill" else "0")
    write = MetricsWriter.write

    def killing_write(self, step, metrics):
        if step == kill_at and any(k.startswith("stage/") for k in metrics):
            if how == "kill":
                raise Killed
            os.kill(os.getpid(), signal.SIGTERM)
        return write(self, step, metrics)

    monkeypatch.setattr(MetricsWriter, "write", killing_write)
    out = tmp_path / "killed"
    if how == "kill":
        with pytest.raises(Killed):
            main(args(out))
    else:
        assert main(args(out)) == 128 + signal.SIGTERM
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("o2o: stopped by SIGTERM after bridge step 150 (align)") and f"o2o finetune --resume {out}" in err[-1]
    monkeypatch.setattr(MetricsWriter, "write", write)
    _, host = load_checkpoint(out / "bridge" / "partial")
    assert host["step"] == (kill_at - 50 if how == "kill" else kill_at) and host["stage"] == ("reeval" if kill_at == 100 else "align")
    assert resume_point(out) == 0  # a sweep continues it (does not remove the directory)
    assert main(["--no-progress", "finetune", "--resume", str(out)]) == 0, capsys.readouterr().err
    assert not (out / "bridge" / "partial").exists()  # superseded by the finished bridge

    a, b = (read_metrics_csv(d / "bridge" / "metrics.csv") for d in (tmp_path / "full", out))
    assert set(a) == set(b) and list(a["step"]) == [50, 100, 150, 200]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    (fa, ha), (fb, hb) = (load_checkpoint(d / "bridge" / "checkpoints") for d in (tmp_path / "full", out))
    fa, fb = _flat(fa), _flat(fb)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    assert ha["reeval"] == hb["reeval"] and ha["align"] == hb["align"] and ha["reference"] == hb["reference"]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "full", out))
    assert sa["final_eval_return"] == sb["final_eval_return"]
