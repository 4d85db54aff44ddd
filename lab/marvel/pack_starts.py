"""Copy pre-trained runs into a folder of small fine-tuning starts (config, summary, the latest
checkpoint without what fine-tuning does not read: optimiser states, target networks, BEAR's VAE, which
load back as zeros; the file holds the actor, the critics and the observation statistics).

    .venv/bin/python lab/marvel/pack_starts.py OUT RUN_DIR [RUN_DIR ...]

`o2o finetune --pretrained OUT/<run name>` starts from one (the dataset it was trained on must be in the
data directory for VPA); `o2o pretrain --resume` refuses it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from flax import serialization

from o2o.runs.checkpoint import ARRAYS_FILE, LATEST, strip_checkpoint

READ = ("actor", "critic", "cost_critic")  # the parts bridge.pretrained.to_sac_lag copies
from o2o.runs.rundir import RunDir


def named_by_file_name(start: Path) -> None:
    """A dataset the run read from a path is named by its file name (``BallCircle-dsrl``): the start is
    fine-tuned on the machine that reads it, from its data directory (its summary keeps the checksum)."""
    config = start / "config.yaml"
    lines = config.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("dataset: ") and ("/" in line or line.rstrip().endswith(".hdf5")):
            lines[i] = f"dataset: {Path(line.split(':', 1)[1].strip()).stem}\n"
    config.write_text("".join(lines))
    summary = json.loads((start / "summary.json").read_text())
    if "/" in summary.get("dataset", ""):
        summary["dataset"] = Path(summary["dataset"]).stem
        (start / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


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
        named_by_file_name(dest)
        shutil.copytree(latest, dest / "checkpoints" / latest.name)
        (dest / "checkpoints" / LATEST).write_text(latest.name + "\n")
        ckpt = dest / "checkpoints" / latest.name
        agent = serialization.msgpack_restore((ckpt / ARRAYS_FILE).read_bytes())["agent"]
        unread = tuple(f"agent/{k}" for k in agent if k not in READ)
        kept, zeroed = strip_checkpoint(ckpt, (), f"fine-tuning start from {run}", optimiser_only=True, also=unread, drop=True)
        size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
        print(f"{dest}: {kept} arrays kept, {zeroed} dropped (read back as zeros), {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
