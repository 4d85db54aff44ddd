"""Seeds as a batch axis for offline pre-training: S seeds of one config trained as one vectorised
program (``o2o pretrain --seeds``, ``run_pretrain_seeds``, a sweep method with ``vectorize_seeds``).

Every test trains TD3+BC with 32x32 networks on the embedded BallCircle-dsrl-small dataset, with one
agent config throughout, so the compiled updates are shared by the tests of this module."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from o2o.cli import main
from o2o.errors import ConfigError
from o2o.experiments import runners
from o2o.experiments.index import SweepIndex
from o2o.experiments.spec import load_spec
from o2o.experiments.sweep import SequentialBackend, run_sweep
from o2o.runs import load_checkpoint, read_metrics_csv

DATASET = "BallCircle-dsrl-small"
STEPS = 200
TINY = ["--steps", str(STEPS), "--set", "offline.steps_per_call=100", "--set", "offline.eval_every=200",
        "--set", "offline.checkpoint_every=100", "--set", "offline.eval_episodes=1",
        "--set", "agent.hidden_dims=[32,32]", "--set", "agent.batch_size=64"]
# Tolerance of a vectorised seed against its single-seed run. The two programs draw the same minibatches
# with the same keys and run the same arithmetic; vmap turns each matrix product into a batched one,
# whose float32 sums may be associated differently, so rounding differs in the last bits and grows
# over the updates. Measured on TD3+BC after 200 steps: at most 1e-6 absolute on parameters of size
# ~0.1-1 (CQL and CPQ alike, IQL up to 8e-6; BEAR-Lag's max over sampled actions amplifies it to ~1e-3). A wrong key
# derivation or initialisation gives differences of the size of the parameters themselves (checked
# below against the other seed), so rtol 1e-4 with atol 1e-5 tells the two apart by orders of magnitude.
RTOL, ATOL = 1e-4, 1e-5


def pretrain(*args) -> int:
    return main(["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", DATASET, *args, *TINY])


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("o2o: error: ") and "Traceback" not in err, err
    return lines[0]


def float_leaves(run_dir) -> dict:
    arrays, host = load_checkpoint(run_dir)

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}/"))
            elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
                out[f"{prefix}{k}"] = v
        return out

    return flat(arrays["agent"]), np.asarray(arrays["key"]), host


@pytest.fixture(scope="module")
def runs(build_once):
    """A group of seeds 0 and 1 (o2o pretrain --seeds 0 1) and the two single-seed runs."""

    def build(root):
        assert pretrain("--seeds", "0", "1", "--out", str(root / "group")) == 0
        for seed in (0, 1):
            assert pretrain("--seed", str(seed), "--out", str(root / f"single{seed}")) == 0

    return build_once("seed-batch", build)


# ------------------------------------------------------------------------------ (a) same numbers


def test_vectorised_seeds_match_single_seed_runs(runs):
    for seed in (0, 1):
        got, got_key, got_host = float_leaves(runs / "group" / f"seed{seed}")
        want, want_key, want_host = float_leaves(runs / f"single{seed}")
        assert got.keys() == want.keys() and len(got) > 10
        np.testing.assert_array_equal(got_key, want_key)  # the seed's key, split exactly as the single run splits it
        timing = {"wall_time_s"}  # the run's wall time so far (o2o.runs.clock): the only host entry that may differ
        assert {k: v for k, v in got_host.items() if k not in timing} == {k: v for k, v in want_host.items() if k not in timing}
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, err_msg=f"seed {seed}: {name}")
        g, w = read_metrics_csv(runs / "group" / f"seed{seed}"), read_metrics_csv(runs / f"single{seed}")
        assert list(g) == list(w)  # the same columns, in the same order
        np.testing.assert_array_equal(g["step"], w["step"])
        for col in (c for c in w if c.startswith("loss/")):
            np.testing.assert_allclose(g[col], w[col], rtol=RTOL, atol=ATOL, err_msg=f"seed {seed}: {col}")
    # the tolerance separates seeds: seed 0 of the group is far from seed 1's run
    got, _, _ = float_leaves(runs / "group" / "seed0")
    other, _, _ = float_leaves(runs / "single1")
    assert not all(np.allclose(got[n], other[n], rtol=RTOL, atol=ATOL) for n in other)


# ------------------------------------------------------------------------------ (b) ordinary run dirs


def test_group_writes_ordinary_run_dirs_that_eval_finetune_and_report_take(runs, capsys, tmp_path):
    from o2o.bridge.pretrained import load_pretrained

    capsys.readouterr()
    for seed in (0, 1):
        run = runs / "group" / f"seed{seed}"
        assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file() and (run / "tb").is_dir()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["seed"] == seed and summary["steps"] == STEPS and summary["seed_group"] == [0, 1]
        assert (run / "config.yaml").read_text() == (runs / f"single{seed}" / "config.yaml").read_text()
        assert load_pretrained(run).step == STEPS  # what o2o finetune --pretrained reads
    run = shutil.copytree(runs / "group" / "seed1", tmp_path / "seed1")  # o2o eval writes eval.json into the run
    assert main(["--no-progress", "eval", str(run), "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "eval/return" in out and json.loads((run / "eval.json").read_text())["steps"] == STEPS
    assert main(["--no-progress", "report", str(runs / "group"), "--out", str(tmp_path / "report.md")]) == 0
    assert "n=2" in capsys.readouterr().out


def test_group_resumes_all_seeds_from_their_checkpoints(runs, tmp_path, capsys):
    """Both seeds stopped after their checkpoint at step 100: --resume on the group's folder continues them
    as one program and ends where the uninterrupted group ended; seeds at different steps are refused."""
    group = tmp_path / "group"
    shutil.copytree(runs / "group", group)
    for seed in (0, 1):
        run = group / f"seed{seed}"
        (run / "checkpoints" / "latest").write_text("ckpt_100\n")
        (run / "summary.json").unlink()
    (group / "seed1" / "checkpoints" / "latest").write_text("ckpt_200\n")
    before = (group / "seed0" / "metrics.csv").read_text()
    code = main(["--no-progress", "pretrain", "--resume", str(group)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "different steps" in line and "seed0 at 100" in line and "seed1 at 200" in line
    assert (group / "seed0" / "metrics.csv").read_text() == before  # refused before anything was written

    (group / "seed1" / "checkpoints" / "latest").write_text("ckpt_100\n")
    assert main(["--no-progress", "pretrain", "--resume", str(group)]) == 0
    for seed in (0, 1):
        got, got_key, _ = float_leaves(group / f"seed{seed}")
        want, want_key, _ = float_leaves(runs / "group" / f"seed{seed}")
        np.testing.assert_array_equal(got_key, want_key)
        for name in want:  # the same program from the same state: the same numbers
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
        summary = json.loads((group / f"seed{seed}" / "summary.json").read_text())
        assert summary["steps"] == STEPS and summary["resumed_from"] == 100
        _, host = load_checkpoint(group / f"seed{seed}" / "checkpoints" / "ckpt_100")
        assert summary["wall_time_s"] > host["wall_time_s"] > 0  # the time before the resume is counted
        assert list(read_metrics_csv(group / f"seed{seed}")["step"]) == [100, 200]
    # one seed's directory on its own is an ordinary run: o2o pretrain --resume takes it
    assert main(["--no-progress", "pretrain", "--resume", str(group / "seed0")]) == 0


# ------------------------------------------------------------------------------ (c) sweep


SPEC = """\
name: vec
seeds: {seeds}
tasks: [{{name: BallCircle, dataset: {dataset}}}]
methods:
  - name: td3bc
    kind: pretrain
    vectorize_seeds: true
set:
  offline.steps: {steps}
  offline.steps_per_call: 100
  offline.eval_every: 200
  offline.checkpoint_every: 100
  offline.eval_episodes: 1
  agent.hidden_dims: [32, 32]
  agent.batch_size: 64
"""


def test_sweep_runs_a_vectorised_group_as_one_job_and_resumes_without_rerunning(tmp_path, monkeypatch, capsys):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC.format(dataset=DATASET, steps=STEPS, seeds=3))
    spec = load_spec(spec_path)
    assert [r.group for r in spec.runs] == ["td3bc/BallCircle"] * 3
    sweep_dir = tmp_path / "sweep"
    # the local pool: one worker process gets the whole group as one job
    code = main(["--no-progress", "sweep", str(spec_path), "--out", str(sweep_dir), "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(3 of them as 1 vectorised seed groups)" in out and "one program with seeds 0, 1, 2" in out
    with SweepIndex(sweep_dir) as index:
        recs = {r.run_id: r for r in index.records()}
    assert sorted(recs) == [f"td3bc/BallCircle/seed{k}" for k in range(3)]
    assert all(r.status == "finished" and r.attempts == 1 and r.wall_time_s > 0 for r in recs.values())
    assert len({r.worker for r in recs.values()}) == 1  # one worker ran them all
    for seed in range(3):
        summary = json.loads((sweep_dir / f"runs/td3bc/BallCircle/seed{seed}/summary.json").read_text())
        assert summary["seed"] == seed and summary["seed_group"] == [0, 1, 2] and summary["steps"] == STEPS

    calls = []
    real = runners.KINDS["pretrain"].run_seeds

    def recording(cfgs, outs, resume):
        calls.append(([c.seed for c in cfgs], resume))
        return real(cfgs, outs, resume)

    monkeypatch.setitem(runners.KINDS, "pretrain", dataclasses.replace(runners.KINDS["pretrain"], run_seeds=recording))
    quiet = dict(backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    again = run_sweep(spec, sweep_dir, **quiet)
    assert calls == [] and again.executed == [] and sorted(again.kept) == sorted(recs)

    # seeds 1 and 2 lost what made them finished: only they run again, as a smaller group, from their checkpoints
    for seed in (1, 2):
        (sweep_dir / f"runs/td3bc/BallCircle/seed{seed}/summary.json").unlink()
    again = run_sweep(spec, sweep_dir, **quiet)
    assert calls == [([1, 2], True)] and sorted(again.executed) == ["td3bc/BallCircle/seed1", "td3bc/BallCircle/seed2"]
    with SweepIndex(sweep_dir) as index:
        assert index.record("td3bc/BallCircle/seed0").attempts == 1
        for seed in (1, 2):
            rec = index.record(f"td3bc/BallCircle/seed{seed}")
            assert rec.status == "finished" and rec.attempts == 2 and rec.resumed_from == STEPS


# ------------------------------------------------------------------------------ (d) bad input


def test_bad_input_is_refused_with_one_line(tmp_path, capsys):
    code = pretrain("--seed", "0", "--seeds", "0", "1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--seed and --seeds are mutually exclusive" in one_error_line(capsys.readouterr().err)
    code = pretrain("--seeds", "0", "0", "--out", str(tmp_path / "x"))
    assert code == 2 and "lists a seed twice" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()

    train = "tasks: [Pendulum]\nmethods:\n  - name: sac\n    vectorize_seeds: true\n"
    spec = tmp_path / "train.yaml"
    spec.write_text(train)
    code = main(["--no-progress", "sweep", str(spec), "--out", str(tmp_path / "sweep")])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "line 4" in line and "methods[0].vectorize_seeds" in line and "kind pretrain" in line
    assert not (tmp_path / "sweep").exists()
    spec.write_text(SPEC.format(dataset=DATASET, steps=STEPS, seeds=2).replace("vectorize_seeds: true", "vectorize_seeds: yes please"))
    with pytest.raises(ConfigError, match=r"line 7 \(methods\[0\]\.vectorize_seeds\): vectorize_seeds must be true or false"):
        load_spec(spec)


def test_a_group_that_cannot_create_one_run_dir_leaves_nothing(tmp_path, capsys):
    (tmp_path / "g" / "seed1").mkdir(parents=True)
    (tmp_path / "g" / "seed1" / "stray.txt").write_text("x")
    code = pretrain("--seeds", "0", "1", "--out", str(tmp_path / "g"))
    assert code == 2 and "not empty" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "g" / "seed0").exists()
