"""The smaller traps of a first hour with o2o (issue #39, 9): a budget that is not a multiple of the
call size runs exactly, a run directory has no empty folders, a sweep's messages name the command
that continues it and a report it can write without touching docs/, and --title reaches the figures."""

from __future__ import annotations

import json

import numpy as np

from o2o.cli import main
from o2o.runs import latest_checkpoint, read_metrics_csv

TINY = ["--set", "offline.eval_episodes=1", "--set", "agent.hidden_dims=[32,32]", "--set", "agent.batch_size=64"]


def test_steps_that_do_not_divide_the_call_size_run_exactly(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", "BallCircle-dsrl-small", "--steps", "250", "--out", str(out),
                 "--set", "offline.steps_per_call=100", "--set", "offline.eval_every=100", "--set", "offline.checkpoint_every=100", *TINY]) == 0
    m = read_metrics_csv(out / "metrics.csv")
    assert list(m["step"]) == [100, 200, 250]  # a last call of 50
    assert np.isfinite(m["eval/return"][-1])  # the end is evaluated
    assert json.loads((out / "summary.json").read_text())["steps"] == 250 and latest_checkpoint(out).name == "ckpt_250"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoints", "tb"]  # no empty figures/

    # the seeds of one program too, and --steps 10 with the default call size (1000) is 10 steps
    group = tmp_path / "g"
    assert main(["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", "BallCircle-dsrl-small", "--steps", "10", "--seeds", "0", "1",
                 "--out", str(group), "--defer-eval", *TINY]) == 0
    for seed in ("seed0", "seed1"):
        assert json.loads((group / seed / "summary.json").read_text())["steps"] == 10 and latest_checkpoint(group / seed).name == "ckpt_10"


def _tiny_sweep(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: tiny\nseeds: 1\ntasks: [{name: BallCircle, dataset: BallCircle-dsrl-small}]\n"
                    "methods:\n  - {name: bc-safe, kind: pretrain, set: {offline.steps: 20, offline.steps_per_call: 10, "
                    "offline.eval_every: 20, offline.eval_episodes: 1, agent.hidden_dims: [8, 8]}}\n")
    return spec


def test_sweep_next_hint_and_interrupt_line_name_commands_that_work(tmp_path, capsys, monkeypatch):
    spec, out = _tiny_sweep(tmp_path), tmp_path / "sw"
    assert main(["--no-progress", "sweep", str(spec), "--out", str(out), "--backend", "sequential"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"next: o2o report {out} (writes {out}/report/report.md" in last and "docs/" not in last

    from o2o.experiments import sweep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    assert main(["--no-progress", "sweep", str(spec), "--out", str(out), "--only", "*/BallCircle/*", "--only", "bc-safe/*"]) == 130
    err = capsys.readouterr().err
    assert f"Continue with `o2o sweep {out} --only '*/BallCircle/*' --only 'bc-safe/*'`" in err


def test_report_title_reaches_the_figures(tmp_path, capsys, monkeypatch):
    spec, out = _tiny_sweep(tmp_path), tmp_path / "sw"
    assert main(["--no-progress", "sweep", str(spec), "--out", str(out), "--backend", "sequential"]) == 0
    from o2o.experiments import plots

    titles = []
    real = plots.plot_learning_curves
    monkeypatch.setattr(plots, "plot_learning_curves", lambda groups, png, *, title, **kw: titles.append(title) or real(groups, png, title=title, **kw))
    assert main(["report", str(out), "--out", str(tmp_path / "page.md"), "--title", "BC-Safe, tiny budget", "--no-archive"]) == 0
    assert titles == ["BC-Safe, tiny budget: BallCircle"]
    assert (tmp_path / "page.md").read_text().startswith("# BC-Safe, tiny budget")


def test_pretrain_help_quotes_the_gpu_measurement_of_seed_batching_that_the_docs_quote(capsys):
    """`pretrain --help` said seed batching was unmeasured on a GPU while docs/cli.md quoted 1.93x: both
    now give the measured 1.93x and where it was measured (docs/benchmarks.md)."""
    from pathlib import Path

    try:
        main(["pretrain", "--help"])
    except SystemExit:
        pass
    help_text = " ".join(capsys.readouterr().out.split())
    docs = Path(__file__).resolve().parents[1] / "docs"
    cli_md, bench_md = (docs / "cli.md").read_text(), (docs / "benchmarks.md").read_text()
    for text in (help_text, cli_md):
        assert "1.93x" in text and "Offline updates per second on a GPU" in text and "unmeasured" not in text
    assert "1.93x** the single-seed throughput" in bench_md
