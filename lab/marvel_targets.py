"""Issue #35's targets from `o2o marvel` pipeline directories (one per task).

    .venv/bin/python lab/marvel_targets.py runs/study-BallCircle runs/study-CarRun [--method marvel] [--scratch from-scratch]

Per task, from each fine-tuning run's metrics.csv and summary.json: Marvel's final evaluation within the
limit in at least 4 of 5 seeds (here: at least 80% of its seeds); Marvel's mean evaluation return at 25%
of the budget at least from-scratch's mean final return; Marvel's mean cumulative training cost at
most half of from-scratch's; Marvel's final DSRL-normalised return at least 0.1 above its start (mean
over seeds, and per seed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from o2o.runs import read_metrics_csv


def run_row(run: Path) -> dict:
    m = read_metrics_csv(run / "metrics.csv")
    s = json.loads((run / "summary.json").read_text())
    idx = np.flatnonzero(~np.isnan(m["eval/return"]))
    steps = m["step"][idx]
    quarter = idx[np.argmin(np.abs(steps - 0.25 * steps.max()))]
    return {
        "start_return": m["eval/return"][idx[0]], "start_norm": m["eval/normalized_return"][idx[0]], "start_cost": m["eval/cost"][idx[0]],
        "quarter_return": m["eval/return"][quarter], "quarter_step": int(m["step"][quarter]),
        "final_return": m["eval/return"][idx[-1]], "final_norm": m["eval/normalized_return"][idx[-1]], "final_cost": m["eval/cost"][idx[-1]],
        "safe": bool(m["eval/normalized_cost"][idx[-1]] <= 1.0), "cum_cost": s["train_cumulative_cost"],
        "violating": s["train_violating_episodes"], "episodes": s["train_episodes"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("pipelines", nargs="+", type=Path)
    p.add_argument("--method", default="marvel")
    p.add_argument("--scratch", default="from-scratch")
    args = p.parse_args()
    for root in args.pipelines:
        runs: dict[str, list[dict]] = {}
        for run in sorted((root / "finetune").iterdir()):
            if (run / "summary.json").exists():
                runs.setdefault(run.name.rsplit("-s", 1)[0], []).append({"seed": int(run.name.rsplit("-s", 1)[1]), **run_row(run)})
        print(f"## {root}")
        print("| method | seed | start return / cost | return at 25% (iteration) | final return / cost | safe | final - start norm. | cumulative training cost | episodes over the limit |")
        print("|---|---|---|---|---|---|---|---|---|")
        for method, rows in runs.items():
            for r in rows:
                print(f"| {method} | {r['seed']} | {r['start_return']:.1f} / {r['start_cost']:.1f} | {r['quarter_return']:.1f} ({r['quarter_step']}) | "
                      f"{r['final_return']:.1f} / {r['final_cost']:.1f} | {'yes' if r['safe'] else '**no**'} | {r['final_norm'] - r['start_norm']:+.3f} | "
                      f"{r['cum_cost']:.0f} | {r['violating']} of {r['episodes']} |")
        mean = lambda rows, k: float(np.mean([r[k] for r in rows]))
        print()
        print("| method | seeds | final return | final cost | safe seeds | final - start norm. | cumulative training cost |")
        print("|---|---|---|---|---|---|---|")
        for method, rows in runs.items():
            print(f"| {method} | {len(rows)} | {mean(rows, 'final_return'):.1f} | {mean(rows, 'final_cost'):.1f} | {sum(r['safe'] for r in rows)} of {len(rows)} | "
                  f"{mean(rows, 'final_norm') - mean(rows, 'start_norm'):+.3f} | {mean(rows, 'cum_cost'):.0f} |")
        if args.method in runs and args.scratch in runs:
            m, sc = runs[args.method], runs[args.scratch]
            safe = sum(r["safe"] for r in m)
            checks = [
                (f"{args.method} final evaluation within the limit in >= 80% of seeds", f"{safe} of {len(m)}", safe >= 0.8 * len(m)),
                (f"{args.method} return at 25% >= {args.scratch} final return", f"{mean(m, 'quarter_return'):.1f} vs {mean(sc, 'final_return'):.1f}",
                 mean(m, "quarter_return") >= mean(sc, "final_return")),
                (f"{args.method} cumulative training cost <= half of {args.scratch}'s", f"{mean(m, 'cum_cost'):.0f} vs {mean(sc, 'cum_cost'):.0f}",
                 mean(m, "cum_cost") <= 0.5 * mean(sc, "cum_cost")),
                (f"{args.method} final >= start + 0.1 DSRL-normalised reward (mean; seeds)",
                 f"{mean(m, 'final_norm') - mean(m, 'start_norm'):+.3f}; {sum(r['final_norm'] - r['start_norm'] >= 0.1 for r in m)} of {len(m)} seeds",
                 mean(m, "final_norm") - mean(m, "start_norm") >= 0.1),
            ]
            print()
            print("| target | measured | met |")
            print("|---|---|---|")
            for name, value, ok in checks:
                print(f"| {name} | {value} | {'yes' if ok else '**no**'} |")
        print()


if __name__ == "__main__":
    main()
