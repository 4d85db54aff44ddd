"""Issue #35's targets from `o2o marvel` pipeline directories (one or more per task: the finished runs of
every directory given are pooled).

    .venv/bin/python lab/marvel/targets.py runs/study-BallCircle runs/study-CarRun [--method marvel] [--scratch from-scratch]

Per task, from each fine-tuning run's numbers (``o2o.experiments.report.safe_finetune_stats``): Marvel's
final evaluation within the limit in at least 4 of 5 seeds (here: at least 80% of its seeds); Marvel's
mean evaluation return at 25% of the budget at least from-scratch's mean final return; Marvel's mean
cumulative training cost at most half of from-scratch's; Marvel's final DSRL-normalised return at least
0.1 above its start (mean over seeds, and per seed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from o2o.experiments.report import collect, safe_finetune_rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("pipelines", nargs="+", type=Path)
    p.add_argument("--method", default="marvel")
    p.add_argument("--scratch", default="from-scratch")
    args = p.parse_args()
    found: dict[tuple[str, str, int], Path] = {}
    for root in args.pipelines:
        for run in sorted((root / "finetune").iterdir()):
            if (run / "summary.json").exists():
                method, seed = run.name.rsplit("-s", 1)
                found[(root.name, method, int(seed))] = run
    runs, _ = collect(list(found.values()))
    by_task: dict[str, dict[str, dict[int, dict]]] = {}
    for r in safe_finetune_rows(runs):
        by_task.setdefault(r["task"], {}).setdefault(r["method"], {})[r["seed"]] = r
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))
    for task, methods in by_task.items():
        print(f"## {task}")
        if args.method not in methods or args.scratch not in methods:
            print(f"(needs runs of {args.method} and {args.scratch})\n")
            continue
        m, sc = list(methods[args.method].values()), list(methods[args.scratch].values())
        safe = sum(int(r["safe"]) for r in m)
        gains = [r["gain"] for r in m]
        checks = [
            (f"{args.method} final evaluation within the limit in >= 80% of seeds", f"{safe} of {len(m)}", safe >= 0.8 * len(m)),
            (f"{args.method} reward at 25% >= {args.scratch} final reward (DSRL-normalised)",
             f"{mean(m, 'quarter'):.3f} vs {mean(sc, 'final'):.3f}", mean(m, "quarter") >= mean(sc, "final")),
            (f"{args.method} cumulative training cost <= half of {args.scratch}'s",
             f"{mean(m, 'cum_cost'):.0f} vs {mean(sc, 'cum_cost'):.0f} ({mean(m, 'cum_cost') / mean(sc, 'cum_cost'):.0%})",
             mean(m, "cum_cost") <= 0.5 * mean(sc, "cum_cost")),
            (f"{args.method} final >= start + 0.1 DSRL-normalised reward (mean; seeds)",
             f"{np.mean(gains):+.3f}; {sum(g >= 0.1 for g in gains)} of {len(m)} seeds", np.mean(gains) >= 0.1),
        ]
        print(f"{args.method}: seeds {sorted(methods[args.method])}; {args.scratch}: seeds {sorted(methods[args.scratch])}\n")
        print("| target | measured | met |")
        print("|---|---|---|")
        for name, value, ok in checks:
            print(f"| {name} | {value} | {'yes' if ok else '**no**'} |")
        print()


if __name__ == "__main__":
    main()
