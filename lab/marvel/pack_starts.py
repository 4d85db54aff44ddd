"""Copy pre-trained runs into a folder of small fine-tuning starts (config, summary, the latest
checkpoint with its optimiser states zeroed: networks and observation statistics only).

    .venv/bin/python lab/marvel/pack_starts.py OUT RUN_DIR [RUN_DIR ...]

`o2o finetune --pretrained OUT/<run name>` starts from one (the dataset it was trained on must be in the
data directory for VPA); `o2o pretrain --resume` refuses it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from o2o.runs.checkpoint import LATEST, strip_checkpoint
from o2o.runs.rundir import RunDir


def main(out: Path, runs: list[Path]) -> None:
    for run in runs:
        latest = RunDir.open(run).latest_checkpoint()
        if latest is None:
            sys.exit(f"{run}: no checkpoint")
        dest = out / run.parent.name / run.name if run.parent.name == "pretrain" else out / run.name
        if dest.exists():
            shutil.rmtree(dest)
        (dest / "checkpoints").mkdir(parents=True)
        for name in ("config.yaml", "summary.json"):
            shutil.copy2(run / name, dest / name)
        shutil.copytree(latest, dest / "checkpoints" / latest.name)
        (dest / "checkpoints" / LATEST).write_text(latest.name + "\n")
        kept, zeroed = strip_checkpoint(dest / "checkpoints" / latest.name, (), f"fine-tuning start from {run}", optimiser_only=True)
        size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
        print(f"{dest}: {kept} arrays kept, {zeroed} zeroed, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
