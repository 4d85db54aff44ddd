"""Make pre-training runs light enough to carry off a GPU machine: copy ROOT to DEST and zero, in the
copy, every checkpoint array but the policy's parameters and observation statistics
(``o2o.runs.checkpoint.strip_checkpoint``). The copy's checkpoints still load for evaluation
(``o2o eval DEST --record`` on a machine with the simulator), and are refused for fine-tuning and
resuming. Then DEST is packed as DEST.tar.gz (zeros compress to almost nothing).

    python3 lab/device/strip_runs.py runs/sweeps/offline-table-gpu /tmp/export/offline-table-gpu
"""

from __future__ import annotations

import shutil
import sys
import tarfile
from pathlib import Path

from o2o.runs.checkpoint import list_checkpoints, strip_checkpoint

KEEP = ("agent/actor/params", "obs_mean", "obs_std", "key")
NOTE = "policy parameters and observation statistics only: stripped by lab/device/strip_runs.py to leave a GPU machine"


def main(root: str, dest: str) -> None:
    src, out = Path(root), Path(dest)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("jax-cache", ".sweep.lock"))
    n = kept = zeroed = 0
    for ckdir in sorted(out.rglob("checkpoints")):
        for ckpt in list_checkpoints(ckdir):
            k, z = strip_checkpoint(ckpt, KEEP, NOTE)
            n, kept, zeroed = n + 1, kept + k, zeroed + z
    with tarfile.open(f"{out}.tar.gz", "w:gz") as tar:
        tar.add(out, arcname=out.name)
    size = Path(f"{out}.tar.gz").stat().st_size
    print(f"stripped {n} checkpoints ({kept} arrays kept, {zeroed} zeroed); {out}.tar.gz {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
