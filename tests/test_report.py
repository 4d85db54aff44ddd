"""o2o report: aggregation against hand-computed means and intervals, tables and figures from a sweep
whose runs are written by hand (known numbers), a failed run left out and listed."""

import csv
import json
import math

import numpy as np
import pytest
import yaml

from o2o.cli import main
from o2o.errors import O2OError
from o2o.experiments.aggregate import bootstrap_ci, iqm, mean_ci, stratified_bootstrap_ci
from o2o.experiments.index import SweepIndex
from o2o.experiments.report import collect, write_report
from o2o.experiments.spec import PlannedRun

# ------------------------------------------------------------------------------ aggregation


def test_mean_and_t_interval_against_hand_computation():
    # mean 2.5; s = sqrt(5/3) = 1.2909944; t_{0.975, 3} = 3.1824463; half width = 3.1824463 * 1.2909944 / 2 = 2.0542601
    mean, low, high = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == pytest.approx(2.5)
    assert low == pytest.approx(0.4457399, abs=1e-6) and high == pytest.approx(4.5542601, abs=1e-6)
    # per column (a curve): the second column is constant, its interval has no width
    mean, low, high = mean_ci(np.array([[0.5, 1.0], [0.6, 1.0], [0.7, 1.0]]))
    # t_{0.975, 2} = 4.3026527; s = 0.1; half = 4.3026527 * 0.1 / sqrt(3) = 0.2484138
    np.testing.assert_allclose(mean, [0.6, 1.0])
    np.testing.assert_allclose(low, [0.6 - 0.2484138, 1.0], atol=1e-6)
    np.testing.assert_allclose(high, [0.6 + 0.2484138, 1.0], atol=1e-6)


def test_iqm_trims_a_quarter_at_each_end():
    assert iqm(np.array([1, 2, 3, 4, 5, 6, 7, 100.0])) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm(np.array([0, 0, 0, 0, 10.0])) == pytest.approx(0.0)  # int(1.25) = 1 cut per side
    assert iqm(np.array([1.0, 2.0, 9.0])) == pytest.approx(4.0)  # n = 3: nothing to cut, the mean


def test_bootstrap_interval_against_hand_computation():
    # Two seeds 0 and 1: a resample's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles of the bootstrap distribution are 0 and 1.
    est, low, high = bootstrap_ci(np.array([0.0, 1.0]), np.mean)
    assert (est, low, high) == (0.5, 0.0, 1.0)
    est, low, high = bootstrap_ci(np.full(4, 3.0))
    assert est == low == high == 3.0
    a = bootstrap_ci(np.array([0.1, 0.5, 0.2, 0.9, 0.4]), seed=3)
    assert a == bootstrap_ci(np.array([0.1, 0.5, 0.2, 0.9, 0.4]), seed=3)  # reproducible
    assert a[1] <= a[0] <= a[2]


def test_stratified_bootstrap_resamples_within_tasks():
    # Task A's seeds all score 0, task B's all 1: every stratified resample pools {0, 0, 1, 1}, whose
    # IQM is (0 + 1) / 2, so the interval has no width. (An unstratified bootstrap would vary.)
    est, low, high = stratified_bootstrap_ci([np.zeros(2), np.ones(2)], iqm)
    assert (est, low, high) == (0.5, 0.5, 0.5)


# ------------------------------------------------------------------------------ a hand-written sweep

HEADER = ["step", "env_steps", "updates", "train/cumulative_cost", "train/violating_episodes",
          "eval/return", "eval/normalized_return", "eval/cost", "eval/normalized_cost"]


def write_run(path, *, algo, task, seed, evals, cum_cost, safe=True, cost_limit=20.0):
    """A run directory with two evaluations: ``evals`` = [(nret, ncost) at 1000 steps, (nret, ncost) at 2000]."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"algo": algo, "task": task, "seed": seed}))
    rows = []
    for step in (1, 2, 3, 4):
        row = {"step": step, "env_steps": 500 * step, "updates": 100 * step, "train/cumulative_cost": cum_cost * step / 4,
               "train/violating_episodes": step}
        if step in (2, 4):
            nret, ncost = evals[step // 2 - 1]
            row |= {"eval/return": 1000 * nret, "eval/normalized_return": nret}
            if safe:
                row |= {"eval/cost": cost_limit * ncost, "eval/normalized_cost": ncost}
        rows.append([repr(float(row[k])) if k in row and k != "step" else (str(step) if k == "step" else "") for k in HEADER])
    (path / "metrics.csv").write_text("\n".join([",".join(HEADER)] + [",".join(r) for r in rows]) + "\n")
    (path / "summary.json").write_text(json.dumps({"algo": algo, "task": task, "seed": seed, "cost_limit": cost_limit if safe else None,
                                                   "train_episodes": 10}))


SPEC_TEXT = "name: hand\nseeds: 4\ntasks: [BallCircle, Pendulum]\nmethods: [sac, sac-lag]\n"


@pytest.fixture
def hand_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    runs = []
    # (method, task, seed): (eval at 1000, eval at 2000), cumulative training cost
    table = {
        ("sac-lag", "BallCircle", 0): ([(0.7, 0.2), (0.5, 0.5)], 100.0),
        ("sac-lag", "BallCircle", 1): ([(0.8, 0.2), (0.6, 0.5)], 200.0),
        ("sac-lag", "BallCircle", 2): ([(0.9, 0.2), (0.7, 0.8)], 300.0),
        ("sac", "BallCircle", 0): ([(0.1, 2.0), (0.9, 1.2)], 900.0),
        ("sac", "BallCircle", 1): ([(0.2, 2.0), (0.9, 1.5)], 900.0),
        ("sac", "BallCircle", 2): ([(0.3, 2.0), (0.9, 1.2)], 1200.0),
        ("sac", "Pendulum", 0): ([(-50.0, 0), (-10.0, 0)], 0.0),
        ("sac", "Pendulum", 1): ([(-40.0, 0), (30.0, 0)], 0.0),
    }
    for (method, task, seed), (evals, cum) in table.items():
        run_id = f"{method}/{task}/seed{seed}"
        write_run(sweep / "runs" / run_id, algo=method, task=task, seed=seed, evals=evals, cum_cost=cum, safe=task == "BallCircle")
        runs.append(PlannedRun(run_id, method, task, seed, "", "train", {"seed": seed}, f"h{len(runs)}"))
    runs.append(PlannedRun("sac-lag/BallCircle/seed3", "sac-lag", "BallCircle", 3, "", "train", {"seed": 3}, "hf"))
    with SweepIndex(sweep) as index:
        index.register(runs)
        for r in runs[:-1]:
            index.mark_running(r.run_id)
            index.mark_finished(r.run_id, wall_time_s=1.0, resumed_from=None)
        index.mark_running("sac-lag/BallCircle/seed3")
        index.mark_failed("sac-lag/BallCircle/seed3", "FloatingPointError: critic loss is NaN", "Traceback ...")
        index.set_meta(name="hand", spec_source="specs/hand.yaml", spec_sha256="abc123def4567890")
    (sweep / "spec.yaml").write_text(SPEC_TEXT)
    # a run dir of the failed run with numbers that would change every mean if it were counted
    write_run(sweep / "runs/sac-lag/BallCircle/seed3", algo="sac-lag", task="BallCircle", seed=3,
              evals=[(100.0, 100.0), (100.0, 100.0)], cum_cost=1e6)
    return sweep


def read_csv(path):
    with open(path) as f:
        return {(r["task"], r["method"]): r for r in csv.DictReader(f)}


def test_report_numbers_match_hand_computation(hand_sweep, tmp_path):
    written = write_report([hand_sweep], tmp_path / "docs" / "hand.md", command="o2o report sweep --out docs/hand.md")
    rows = read_csv(written["csv"])
    lag = rows[("BallCircle", "sac-lag")]
    assert lag["n"] == "3" and lag["seeds"] == "0 1 2"  # the failed seed 3 is not counted
    # final normalised return 0.5, 0.6, 0.7: mean 0.6, half width t_{0.975,2} * 0.1 / sqrt(3) = 0.2484138
    assert float(lag["final_norm_return"]) == pytest.approx(0.6)
    assert float(lag["final_norm_return_low"]) == pytest.approx(0.6 - 0.2484138, abs=1e-6)
    assert float(lag["final_norm_return_high"]) == pytest.approx(0.6 + 0.2484138, abs=1e-6)
    # best: the seed-mean curve is 0.8 at 1000 steps, 0.6 at 2000: best 0.8 at 1000 (not the final)
    assert float(lag["best_norm_return"]) == pytest.approx(0.8) and lag["best_at"] == "1000"
    assert lag["final_budget_min"] == lag["final_budget_max"] == "2000" and lag["final_updates"] == "400"
    # cost: 0.5, 0.5, 0.8 -> mean 0.6 (safe); cumulative training cost 100, 200, 300 -> mean 200
    assert float(lag["final_norm_cost"]) == pytest.approx(0.6) and lag["unsafe"] == "0"
    assert float(lag["final_cost"]) == pytest.approx(12.0)
    assert float(lag["cum_train_cost"]) == pytest.approx(200.0)
    # t_{0.975,2} * 100 / sqrt(3) = 248.41377
    assert float(lag["cum_train_cost_high"]) == pytest.approx(448.41377, abs=1e-4)
    sac = rows[("BallCircle", "sac")]
    assert float(sac["final_norm_cost"]) == pytest.approx(1.3) and sac["unsafe"] == "1"  # mean C/kappa > 1
    assert float(sac["final_norm_return_low"]) == float(sac["final_norm_return_high"]) == pytest.approx(0.9)
    pend = rows[("Pendulum", "sac")]
    # -10 and 30: mean 10; s = 28.284271; t_{0.975,1} = 12.7062047; half = 12.7062047 * 20 = 254.124095
    assert float(pend["final_norm_return"]) == pytest.approx(10.0)
    assert float(pend["final_norm_return_high"]) == pytest.approx(264.124095, abs=1e-5)
    assert pend["final_norm_cost"] == "" and pend["unsafe"] == ""

    page = written["markdown"].read_text()
    assert "| BallCircle | sac | 3 | 2000 env steps, 400 updates" in page and "✗ unsafe" in page
    assert "| BallCircle | sac-lag | 3 |" in page and "| ✓ |" in page
    assert page.count("specs/hand.yaml") >= 4  # the page, tables and figures name the spec
    assert "abc123def456" in page and SPEC_TEXT.strip().splitlines()[0] in page
    assert "**Final**" in page and "**Best**" in page
    assert "sac-lag/BallCircle/seed3 | failed | FloatingPointError: critic loss is NaN" in page
    for png in written["figures"]:
        assert png.stat().st_size > 10_000 and f"]({png.parent.name}/{png.name})" in page
    assert {p.name for p in written["figures"]} == {"BallCircle.png", "Pendulum.png"}


def test_iqm_report_and_plain_run_dirs(hand_sweep, tmp_path, capsys):
    # run directories given directly: grouped by their config's algo and task
    code = main(["report", str(hand_sweep / "runs/sac/BallCircle"), "--out", str(tmp_path / "r.md"), "--aggregate", "iqm"])
    out = capsys.readouterr().out
    assert code == 0 and "BallCircle   sac" in out and "UNSAFE" in out
    rows = read_csv(tmp_path / "r" / "results.csv")
    assert list(rows) == [("BallCircle", "sac")] and rows[("BallCircle", "sac")]["aggregate"] == "iqm"
    assert float(rows[("BallCircle", "sac")]["final_norm_cost"]) == pytest.approx(1.3)  # n = 3: IQM = mean
    assert "interquartile mean" in (tmp_path / "r.md").read_text()


def test_report_refuses_what_holds_no_finished_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(O2OError, match="holds no run directories"):
        collect([tmp_path / "empty"])
    with SweepIndex(tmp_path / "failed_only") as index:
        index.register([PlannedRun("sac/Pendulum/seed0", "sac", "Pendulum", 0, "", "train", {}, "h")])
        index.mark_running("sac/Pendulum/seed0")
        index.mark_failed("sac/Pendulum/seed0", "RuntimeError: boom")
    with pytest.raises(O2OError, match="no finished runs to report.*RuntimeError: boom"):
        collect([tmp_path / "failed_only"])


def test_format_mean_ci_by_hand():
    from o2o.experiments.aggregate import format_mean_ci

    # [1, 2, 3]: mean 2, sem 1/sqrt(3), t_{0.975, 2} = 4.3027 -> half-width 2.4841
    assert format_mean_ci([1.0, 2.0, 3.0], digits=3) == "2.000 ± 2.484"
    assert format_mean_ci([7.25]) == "7.2"


def write_finetune_run(path, *, method, seed, scores, pretrained, every=1000):
    """A fine-tuning run on Hopper with evaluations ``scores`` at env steps 0, every, 2 every, ..."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"method": method, "task": "Hopper", "seed": seed, "pretrained": str(pretrained)}))
    head = ["step", "env_steps", "eval/return", "eval/normalized_return"]
    rows = [[str(i), repr(float(i * every)), repr(10.0 * s), repr(float(s))] for i, s in enumerate(scores)]
    rows.insert(2, ["1", "1500.0", "", ""])  # a training row without evaluation
    (path / "metrics.csv").write_text("\n".join([",".join(head)] + [",".join(r) for r in rows]) + "\n")
    (path / "summary.json").write_text(json.dumps({"method": method, "task": "Hopper", "seed": seed, "cost_limit": None}))


def test_finetune_table_against_hand_computation(tmp_path):
    """The fine-tuning table: start, the lowest evaluation in the first 10% of the budget (step 0 left
    out), the dip, final - start, best and the online mean, per run by hand, then over seeds."""
    from o2o.experiments.report import finetune_stats

    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "summary.json").write_text(json.dumps({"final_eval_normalized_return": 30.0}))
    # 11 evaluations at 0, 1k, ..., 10k env steps (budget 10k: the first 10% is the 1k evaluation only)
    a = [40.0, 25.0, 20.0, 50.0, 60.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0]
    b = [40.0, 35.0, 10.0, 30.0, 40.0, 50.0, 50.0, 50.0, 50.0, 50.0, 60.0]
    write_finetune_run(tmp_path / "ft/runs/o2td3/Hopper/seed0", method="o2td3", seed=0, scores=a, pretrained=pre)
    write_finetune_run(tmp_path / "ft/runs/o2td3/Hopper/seed1", method="o2td3", seed=1, scores=b, pretrained=pre)
    s = finetune_stats(tmp_path / "ft/runs/o2td3/Hopper/seed0")
    assert s["pretrained"] == 30.0 and s["start"] == 40.0 and s["budget"] == 10000
    assert s["lowest_early"] == 25.0 and s["dip"] == 15.0  # not 20.0 (at 2k: after the first 10%)
    assert s["final"] == 70.0 and s["gain"] == 30.0 and s["best"] == 70.0
    assert s["online_mean"] == pytest.approx(sum(a[1:]) / 10)
    written = write_report([tmp_path / "ft/runs/o2td3/Hopper"], tmp_path / "r.md", command="o2o report")
    page = written["markdown"].read_text()
    assert "## Fine-tuning from a pre-trained policy" in page
    row = next(x for x in page.splitlines() if x.startswith("| Hopper | o2td3 | 2 | 10000 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # pre-trained 30 (both), start 40 (both): no interval; lowest 25 and 35 -> mean 30, dip 15 and 5 -> 10
    assert cells[4] == "30.0" and cells[5] == "40.0"
    assert cells[6].startswith("30.0 [") and cells[7].startswith("10.0 [") and cells[8].startswith("65.0 [")
    # a run that did not start from a pre-trained run (no `pretrained` in its config) gets no row
    assert finetune_stats(tmp_path / "ft/runs/o2td3/Hopper/seed0", {"task": "Hopper"}, {"env_steps": np.zeros(1)}) is None


def test_archive_remakes_the_report_without_the_sweep_directory(hand_sweep, tmp_path):
    """`o2o report --out` copies the sweep's finished runs (no checkpoints) beside the page; once the sweep
    directory is gone, a report of that archive gives the same numbers and still lists the failed run."""
    import shutil

    from o2o.experiments.index import ARCHIVE_INDEX
    (hand_sweep / "runs/sac/Pendulum/seed0/checkpoints").mkdir()
    (hand_sweep / "runs/sac/Pendulum/seed0/checkpoints/big.bin").write_bytes(b"x" * 10_000)
    first = write_report([hand_sweep], tmp_path / "docs" / "hand.md")
    archive = tmp_path / "docs/hand/archive/sweep"
    assert first["archives"] == [archive] and (archive / ARCHIVE_INDEX).is_file() and (archive / "spec.yaml").is_file()
    assert not list(archive.rglob("big.bin"))  # checkpoints stay behind
    assert not (archive / "runs/sac-lag/BallCircle/seed3").exists()  # the failed run's files are not copied
    assert "hand/archive/sweep/" in first["markdown"].read_text()
    before = first["csv"].read_text()
    shutil.rmtree(hand_sweep)
    assert main(["sweep", str(archive)]) == 2  # an archive cannot be run: clear error
    again = write_report([archive], tmp_path / "again.md")
    assert again["csv"].read_text() == before
    page = again["markdown"].read_text()
    assert "specs/hand.yaml" in page and "abc123def456" in page
    assert "sac-lag/BallCircle/seed3 | failed | FloatingPointError: critic loss is NaN" in page


def test_archive_keeps_the_pretrained_score_of_finetuning_runs(tmp_path):
    import shutil

    from o2o.experiments.archive import archive_sweep
    from o2o.experiments.report import finetune_stats

    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "summary.json").write_text(json.dumps({"final_eval_normalized_return": 30.0}))
    sweep = tmp_path / "ft"
    write_finetune_run(sweep / "runs/o2td3/Hopper/seed0", method="o2td3", seed=0, scores=[40.0, 20.0, 50.0], pretrained=pre)
    with SweepIndex(sweep) as index:
        index.register([PlannedRun("o2td3/Hopper/seed0", "o2td3", "Hopper", 0, "", "finetune", {}, "h")])
        index.mark_running("o2td3/Hopper/seed0")
        index.mark_finished("o2td3/Hopper/seed0", wall_time_s=1.0, resumed_from=None)
    archive_sweep(sweep, tmp_path / "arch")
    shutil.rmtree(pre)
    shutil.rmtree(sweep)
    assert finetune_stats(tmp_path / "arch/runs/o2td3/Hopper/seed0")["pretrained"] == 30.0


def test_step_tick_labels():
    from o2o.experiments.plots import step_label

    assert [step_label(x) for x in (0, 30, 20000, 125000, 1_500_000, -2000)] == ["0", "30", "20k", "125k", "1.5M", "-2k"]


def test_best_counts_only_evaluations_within_the_limit_and_cost_intervals_stay_non_negative(hand_sweep, tmp_path):
    written = write_report([hand_sweep], tmp_path / "page.md")
    rows = read_csv(written["csv"])
    # sac on BallCircle: seed-mean normalised cost 2.0 at 1000 and 1.3 at 2000 steps: no evaluation within the
    # limit, so no best (the unconstrained best, 0.9 at 2000, cost 1.3 times the limit, is not one)
    sac = rows[("BallCircle", "sac")]
    assert math.isnan(float(sac["best_norm_return"])) and sac["best_at"] == ""
    assert "- (no evaluation within the limit)" in next(x for x in written["markdown"].read_text().splitlines()
                                                        if x.startswith("| BallCircle | sac |"))
    # sac-lag: 0.2 then 0.6 times the limit: both count, the best is 0.8 at 1000
    assert float(rows[("BallCircle", "sac-lag")]["best_norm_return"]) == pytest.approx(0.8)
    # the unconstrained task keeps its best, 10.0 at 2000 (mean of -10 and 30)
    assert rows[("Pendulum", "sac")]["best_at"] == "2000"
    # a cost whose t interval crosses 0 is clipped there: normalised costs 0, 0, 0.15 -> mean 0.05, s = 0.0866025,
    # half-width t_{0.975,2} s / sqrt(3) = 4.30265 * 0.0866025 / 1.7320508 = 0.2151 -> [0, 0.2651]
    from o2o.experiments.report import estimate

    est = estimate([0.0, 0.0, 0.15], "mean", lowest=0.0)
    assert est.value == pytest.approx(0.05) and est.low == 0.0 and est.high == pytest.approx(0.05 + 4.30265 * 0.0866025 / 3 ** 0.5, abs=1e-4)
    assert estimate([0.0, 0.0, 0.15], "mean").low < 0  # unclipped, the t interval leaves the valid range


def test_latex_tables_and_pdf_figures_beside_the_page(hand_sweep, tmp_path):
    written = write_report([hand_sweep], tmp_path / "page.md", title="Hand_made & checked")
    tex = written["latex"].read_text()
    assert written["latex"] == tmp_path / "page" / "results.tex" and "results.tex" in written["markdown"].read_text()
    assert tex.count("\\begin{tabular}") == 2 and tex.count("\\begin{table}") == tex.count("\\end{table}") == 2
    rows = [x for x in tex.splitlines() if x.endswith("\\\\") and "&" in x]
    lag = next(x for x in rows if x.startswith("BallCircle & sac-lag"))
    # final normalised return 0.6 [0.352, 0.848] (t interval, hand-computed above); cost 0.6; best 0.8 @ 1,000
    assert lag == ("BallCircle & sac-lag & 3 & 0.600 {\\scriptsize [0.352, 0.848]} & 0.60 {\\scriptsize [0.17, 1.03]} & "
                   "0.800 {\\scriptsize [0.552, 1.048]} @ 1,000 \\\\")
    sac = next(x for x in rows if x.startswith("BallCircle & sac &"))
    assert "\\textbf{1.30" in sac and sac.endswith("& -- \\\\")  # unsafe cost in bold; no best within the limit
    assert any(x.startswith("Pendulum & sac & 2 & 10.0") for x in rows)
    for png in written["figures"]:
        pdf = png.with_suffix(".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_offline_and_online_runs_of_a_task_get_a_figure_each_in_their_own_units(tmp_path, monkeypatch):
    """Pre-training curves are in gradient steps, fine-tuning ones in env steps: never one axis for both."""
    from o2o.experiments import plots

    online = tmp_path / "runs" / "online"
    write_run(online, algo="sac-lag", task="BallCircle", seed=0, evals=[(0.5, 0.5), (0.6, 0.5)], cum_cost=10.0)
    offline = tmp_path / "runs" / "offline"
    offline.mkdir(parents=True)
    (offline / "config.yaml").write_text(yaml.safe_dump({"algo": "cpq", "task": "BallCircle", "seed": 0, "dataset": "BallCircle-dsrl"}))
    header = ["step", "eval/return", "eval/normalized_return", "eval/cost", "eval/normalized_cost"]
    rows = [",".join(header), "1000,300.0,0.3,10.0,0.5", "2000,400.0,0.4,12.0,0.6"]
    (offline / "metrics.csv").write_text("\n".join(rows) + "\n")
    (offline / "summary.json").write_text(json.dumps({"algo": "cpq", "task": "BallCircle", "seed": 0, "cost_limit": 20.0}))
    drawn = []
    real = plots.plot_learning_curves
    monkeypatch.setattr(plots, "plot_learning_curves", lambda groups, png, **kw: drawn.append((sorted(groups), kw["x_label"], png.name)) or real(groups, png, **kw))
    written = write_report([online, offline], tmp_path / "page.md", archive=False)
    assert sorted(drawn) == [(["cpq"], "gradient steps", "BallCircle-offline.png"), (["sac-lag"], "environment steps", "BallCircle-online.png")]
    page = written["markdown"].read_text()
    assert "![BallCircle (offline)](page/BallCircle-offline.png)" in page and "![BallCircle (online)](page/BallCircle-online.png)" in page


def write_safe_finetune_run(path, *, method, seed, rewards, costs, cum_cost, violating, every=1000, limit=20.0):
    """A fine-tuning run on BallCircle with DSRL-normalised ``rewards`` and raw ``costs`` evaluated at env
    steps 0, every, 2 every, ..."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"method": method, "task": "BallCircle", "seed": seed, "pretrained": "pre"}))
    head = ["step", "env_steps", "eval/return", "eval/normalized_return", "eval/cost", "eval/normalized_cost"]
    rows = [[str(i), repr(float(i * every)), repr(900.0 * r), repr(float(r)), repr(float(c)), repr(c / limit)]
            for i, (r, c) in enumerate(zip(rewards, costs))]
    (path / "metrics.csv").write_text("\n".join([",".join(head)] + [",".join(r) for r in rows]) + "\n")
    (path / "summary.json").write_text(json.dumps({
        "method": method, "task": "BallCircle", "seed": seed, "cost_limit": limit, "train_cumulative_cost": cum_cost,
        "train_violating_episodes": violating, "train_episodes": 50}))


def test_safe_finetune_table_start_dip_quarter_and_safe_seeds_by_hand(tmp_path):
    """Safe-task fine-tuning numbers per run by hand (start, lowest in the first 10%, reward at the
    evaluation nearest 25% of the budget, final, gain, costs), then over seeds: the seeds within the limit
    are counted and a cost's interval never reaches below 0."""
    from o2o.experiments.report import collect, safe_finetune_stats, safe_finetune_table

    # 11 evaluations at 0, 1k, ..., 10k env steps: the first 10% of the budget holds the 1k evaluation only
    a = dict(rewards=[0.5, 0.3, 0.2, 0.6, 0.7, 0.6, 0.7, 0.8, 0.8, 0.8, 0.9], costs=[0, 30, 5, 0, 0, 0, 0, 0, 0, 0, 2])
    b = dict(rewards=[0.4, 0.4, 0.1, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6], costs=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25])
    write_safe_finetune_run(tmp_path / "marvel-s0", method="marvel", seed=0, cum_cost=1000.0, violating=10, **a)
    write_safe_finetune_run(tmp_path / "marvel-s1", method="marvel", seed=1, cum_cost=3000.0, violating=30, **b)
    runs, _ = collect([tmp_path / "marvel-s0", tmp_path / "marvel-s1"])
    s = safe_finetune_stats(runs[0].metrics, runs[0].summary)
    assert s["start"] == 0.5 and s["lowest_early"] == 0.3  # 1k is the first 10% of 10k; 0.2 at 2k is not
    assert s["quarter"] == 0.2 and s["quarter_at"] == 2000.0  # 2.5k is as near 2k as 3k: the earlier one
    assert s["final"] == 0.9 and s["gain"] == pytest.approx(0.4) and s["final_cost"] == 2.0 and s["safe"] == 1.0
    assert s["start_cost"] == 0.0 and s["cum_cost"] == 1000.0 and s["violating"] == 10.0
    t = safe_finetune_stats(runs[1].metrics, runs[1].summary)
    assert t["final_cost"] == 25.0 and t["safe"] == 0.0
    table = safe_finetune_table(runs)
    row = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert row[:4] == ["BallCircle", "marvel", "2", "10000"]
    assert row[4] == "0.450 [-0.185, 1.085]"  # start: mean of 0.5 and 0.4, t interval with 1 degree of freedom
    assert row[9].startswith("13.5 [0.0, ")  # final cost 2 and 25: the interval is clipped at 0
    assert row[10] == "1 of 2"  # seeds whose final policy is within the limit
    assert row[12].startswith("2000 [0, ")  # cumulative training cost, clipped at 0
    per_seed = safe_finetune_table(runs, per_seed=True).splitlines()
    assert [c.strip() for c in per_seed[3].strip("|").split("|")][10] == "**no**"
    # the same numbers in the report's safe-finetune.csv and in the LaTeX table of results.tex
    out = write_report([tmp_path / "marvel-s0", tmp_path / "marvel-s1"], tmp_path / "page.md")
    (csv_row,) = list(csv.DictReader(out["safe_finetune_csv"].open()))
    assert csv_row["method"] == "marvel" and csv_row["seeds"] == "2" and float(csv_row["start"]) == pytest.approx(0.45)
    assert float(csv_row["start_low"]) == pytest.approx(-0.185, abs=5e-4) and float(csv_row["final_cost_low"]) == 0.0
    assert float(csv_row["lowest_early"]) == pytest.approx(0.35) and csv_row["final_within_limit"] == "1"
    tex = out["latex"].read_text()
    (tex_row,) = [x for x in tex.splitlines() if x.startswith("BallCircle & marvel & 2 & 0.450")]
    assert tex_row.startswith("BallCircle & marvel & 2 & 0.450 {\\scriptsize [-0.185, 1.085]} & 0.350 ") and "& 1 of 2 & 2000 " in tex_row
    assert "Fine-tuning on safe tasks" in tex and tex.count("\\begin{table}") == tex.count("\\end{table}") == 2


def test_a_count_of_training_episodes_over_the_limit_keeps_its_interval_within_0_and_the_episodes_run(tmp_path):
    """The issue's `2.0 [-23.4, 27.4] of 12`: 0 and 4 of 12 training episodes over the limit; the t interval
    (1 degree of freedom: 2 +- 12.706 * 2.828 / 1.414) is clipped to [0, 12] in both safe-task tables."""
    from o2o.experiments.report import estimate

    assert estimate([0.0, 4.0], "mean").fmt(1) == "2.0 [-23.4, 27.4]"
    assert estimate([0.0, 4.0], "mean", lowest=0.0, highest=12.0).fmt(1) == "2.0 [0.0, 12.0]"
    for seed, violating in ((0, 0), (1, 4)):
        run = tmp_path / f"marvel-s{seed}"
        write_safe_finetune_run(run, method="marvel", seed=seed, rewards=[0.5, 0.6, 0.7], costs=[0, 0, 0], cum_cost=100.0, violating=violating)
        lines = (run / "metrics.csv").read_text().splitlines()
        (run / "metrics.csv").write_text("\n".join([lines[0] + ",train/cumulative_cost,train/violating_episodes"]
                                                   + [f"{x},100.0,{violating}" for x in lines[1:]]) + "\n")
        summary = json.loads((run / "summary.json").read_text()) | {"train_episodes": 12}
        (run / "summary.json").write_text(json.dumps(summary))
    md = write_report([tmp_path / "marvel-s0", tmp_path / "marvel-s1"], tmp_path / "page.md")["markdown"].read_text()
    safe_row = next(x for x in md.splitlines() if x.startswith("| BallCircle | marvel | 2 | 2000 env steps"))
    assert safe_row.endswith("| 2.0 [0.0, 12.0] of 12 |")
    finetune_row = next(x for x in md.splitlines() if x.startswith("| BallCircle | marvel | 2 | 2000 |"))
    assert finetune_row.endswith("| 2.0 [0.0, 12.0] |")
    assert "those of the training episodes over the limit at the episodes run" in md
    # no evaluation in the first 10% (0, 1k, 2k): '-' over seeds and per seed, never 'nan'
    from o2o.experiments.report import collect, safe_finetune_table

    runs, _ = collect([tmp_path / "marvel-s0", tmp_path / "marvel-s1"])
    per_seed = safe_finetune_table(runs, per_seed=True)
    assert "nan" not in per_seed and [c.strip() for c in per_seed.splitlines()[2].strip("|").split("|")][6] == "-"
    assert finetune_row.split("|")[7].strip() == "-"


def test_a_long_figure_title_is_wrapped_to_the_figure(tmp_path, monkeypatch):
    import matplotlib.figure

    from o2o.experiments.plots import plot_learning_curves

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("algo: sac\n")
    (run / "metrics.csv").write_text("step,env_steps,eval/return,eval/cost\n" + "".join(f"{i},{i * 1000},{i},{0}\n" for i in range(5)))
    titles = []
    real = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", lambda fig, text, **kw: titles.append(text) or real(fig, text, **kw))
    title = "O2TD3 with ocr.actor_after_align best on Hopper-medium (generated), five seeds at a reduced budget"
    plot_learning_curves({"m": [run]}, tmp_path / "f.png", title=title, cost_metric=None)
    lines = titles[-1].splitlines()
    assert len(lines) >= 3 and all(len(line) <= 58 for line in lines)  # one panel: 58 characters a line
    assert " ".join(lines[:-1]) == title and lines[-1] == "(mean and 95% t CI over seeds)"
