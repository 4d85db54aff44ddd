"""The claims table of the OCR-CFT comparisons (docs/results/ocr-cft.md) and issue #36's targets.

    .venv/bin/python lab/ocr/claims.py SWEEP_DIR [SWEEP_DIR ...] [--method M ...] [--per-seed]

SWEEP_DIR is an `o2o sweep` directory of finetune runs (e.g. runs/sweeps/o2td3-hopper-medium from
lab/ocr/o2td3-hopper-medium.yaml), or the results archive `o2o report` wrote of one
(docs/results/ocr/<page>/archive/<name>). For every method and task it prints, as a markdown table
with the mean and 95% t-interval over the finished seeds (D4RL-normalised evaluation score):
- **pre-trained**: the pre-trained run's own final evaluation (its summary.json; 10 episodes in the
  specs here), the same policy for every method of a seed;
- **offline**: the evaluation before any online step (iteration 0: the policy the method starts from,
  after re-evaluation / alignment where the method has them);
- **lowest, first 10%**: the lowest evaluation in the first 10% of the online env-step budget
  (iteration 0 excluded); **dip** = offline - that (the paper claims no dip for O2SAC / O2TD3 / O2PPO);
- **final** (the last evaluation) and **final - offline** (the paper claims improvement);
- **best** (max over evaluations after iteration 0; optimistic: it selects on the evaluation episodes);
- **online mean**: the mean of all evaluations after iteration 0 (the area under the curve over the
  budget, divided by it: what the policy scored *while* fine-tuning, dips included).
Then, per method and task, issue #36's targets counted over seeds: the lowest evaluation in the first
10% at least 95% of the pre-trained policy's score (target: 4 of 5 seeds), and the final score at least
10 points above it (target: 3 of 4 datasets, judged per dataset here by the seed mean).
With --per-seed it then prints every finished run's evaluations in step order (iteration 0 first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from o2o.experiments.aggregate import format_mean_ci
from o2o.experiments.report import finetune_stats
from o2o.runs import read_metrics_csv

KEY = "eval/normalized_return"
fmt = format_mean_ci


def run_stats(run: Path) -> dict | None:
    """A finished run's numbers (``o2o.experiments.report.finetune_stats``, the fine-tuning table of
    `o2o report`); None for an unfinished run."""
    if not (run / "summary.json").exists():
        return None
    return finetune_stats(run)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweeps", type=Path, nargs="+")
    p.add_argument("--method", action="append", default=None, help="only these methods (repeatable)")
    p.add_argument("--per-seed", action="store_true", help="also print each run's evaluations, iteration 0 first")
    args = p.parse_args(argv)
    all_stats: list[dict] = []
    finished: list[Path] = []
    targets: list[str] = []
    print("| method | task | seeds | pre-trained | offline | lowest, first 10% | dip | final | final - offline | best | online mean |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[Path]] = {}  # (method, task) -> its runs, pooled over the sweeps
    for sweep in args.sweeps:
        for method_dir in sorted((sweep / "runs").iterdir()):
            if args.method and method_dir.name not in args.method:
                continue
            for task_dir in sorted(method_dir.iterdir()):
                groups.setdefault((method_dir.name, task_dir.name), []).extend(task_dir.iterdir())
    for (method, task), runs in sorted(groups.items()):
        seeds = sorted(runs, key=lambda r: (len(r.name), r.name))
        stats = [s for s in (run_stats(r) for r in seeds) if s is not None]
        finished += [r for r in seeds if (r / "summary.json").exists()]
        if not stats:
            continue
        all_stats += stats
        col = {k: [s[k] for s in stats] for k in stats[0]}
        print(
            f"| {method} | {task} | {len(stats)} | {fmt(col['pretrained'])} | {fmt(col['start'])} | {fmt(col['lowest_early'])} | "
            f"{fmt(col['dip'])} | {fmt(col['final'])} | {fmt(col['gain'])} | {fmt(col['best'])} | {fmt(col['online_mean'])} |"
        )
        pre = np.asarray(col["pretrained"], float)
        if np.all(np.isfinite(pre)):
            held = int(np.sum(np.asarray(col["lowest_early"]) >= 0.95 * pre))
            above = float(np.mean(np.asarray(col["final"]) - pre))
            targets.append(f"| {method} | {task} | {held} of {len(stats)} | {above:+.1f} | "
                           f"{'met' if held >= 0.8 * len(stats) else 'not met'} | {'met' if above >= 10 else 'not met'} |")
    if targets:
        print("\n| method | task | seeds whose lowest early evaluation >= 95% of pre-trained | final - pre-trained (mean) | no-dip target | +10 target |")
        print("|---|---|---|---|---|---|")
        print("\n".join(targets))
    budgets = sorted({int(s["budget"]) for s in all_stats})
    print(f"\nonline budget(s): {budgets} env steps; D4RL-normalised scores ({KEY})")
    if args.per_seed:
        print("\nper seed, evaluations in step order (iteration 0 first):\n")
        for run in finished:
            scores = read_metrics_csv(run)[KEY]
            scores = scores[~np.isnan(scores)]
            print(f"    {run.parent.parent.name:<22} {run.parent.name:<10} {run.name:<7} " + " ".join(f"{x:5.1f}" for x in scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
