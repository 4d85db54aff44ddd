"""Write an `o2o marvel` pipeline directory's report.md and curves.png from the runs that have finished
(a pipeline stopped part-way, or one whose report predates a change of the report); with --archive,
also copy each finished run's data (config.yaml, metrics.csv, summary.json, bridge/metrics.csv; no
checkpoints) into DIR/<stage>/<run>/, which `o2o report DIR/finetune/*` reads like the runs themselves.

    .venv/bin/python lab/marvel/pipeline_report.py runs/marvel-BallCircle [--methods marvel,from-scratch] [--archive DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from o2o.config import load_yaml
from o2o.data.registry import resolve_dataset
from o2o.experiments.archive import RUN_FILES
from o2o.experiments.pipeline import PipelineResult, write_report


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root", type=Path)
    p.add_argument("--methods", default=None, help="comma-separated, in this order (default: every finished method)")
    p.add_argument("--archive", type=Path, default=None, help="copy the finished runs' data (no checkpoints) here")
    args = p.parse_args()
    result = PipelineResult(root=args.root, dataset=Path())
    for run in sorted((args.root / "pretrain").iterdir()):
        algo, seed = run.name.rsplit("-s", 1)
        result.pretrained[(algo, int(seed))] = run
    finished: dict[str, dict[int, Path]] = {}
    for run in sorted((args.root / "finetune").iterdir()):
        if (run / "summary.json").exists():
            method, seed = run.name.rsplit("-s", 1)
            finished.setdefault(method, {})[int(seed)] = run
    order = args.methods.split(",") if args.methods else list(finished)
    result.finetuned = {m: finished[m] for m in order if m in finished}
    task = load_yaml(next(iter(next(iter(result.finetuned.values())).values())) / "config.yaml")["task"]
    if result.pretrained:
        result.dataset = resolve_dataset(load_yaml(next(iter(result.pretrained.values())) / "config.yaml")["dataset"])
    write_report(result, task)
    print(f"{result.report} ({', '.join(f'{m}: {len(r)} seeds' for m, r in result.finetuned.items())}), {result.figure}")
    if args.archive:
        runs = [*result.pretrained.values(), *(r for m in result.finetuned.values() for r in m.values())]
        for run in runs:
            dest = args.archive / run.parent.name / run.name
            for name in RUN_FILES:
                if (run / name).is_file():
                    (dest / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(run / name, dest / name)
        print(f"{args.archive}/ ({len(runs)} runs' data)")


if __name__ == "__main__":
    main()
