"""Compare the runs of lab/redesign/runs.sh made before and after a refactor: every metrics.csv (and
bridge/metrics.csv) must hold the same numbers, time columns aside.

    python lab/redesign/compare.py BEFORE_DIR AFTER_DIR
"""

import csv
import sys
from pathlib import Path

TIME = ("time", "wall", "per_s", "fps", "sps", "seconds")


def rows(path: Path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if not any(t in k for t in TIME)} for r in csv.DictReader(f)]


def main(a: str, b: str) -> int:
    a, b = Path(a), Path(b)
    files = sorted(p.relative_to(a) for p in a.rglob("metrics.csv"))
    bad = 0
    for rel in files:
        ra, rb = rows(a / rel), rows(b / rel) if (b / rel).exists() else None
        if rb is None:
            print(f"MISSING  {rel}")
            bad += 1
            continue
        diffs = [(i, k, r1[k], r2.get(k)) for i, (r1, r2) in enumerate(zip(ra, rb)) for k in r1 if r1[k] != r2.get(k)]
        same = not diffs and len(ra) == len(rb)
        bad += not same
        print(f"{'same    ' if same else 'DIFFERS '} {rel}  ({len(ra)} rows, {len(ra[0]) if ra else 0} columns)"
              + ("" if same else f"  first: {diffs[:2]} rows {len(ra)} vs {len(rb)}"))
    print(f"{len(files) - bad} of {len(files)} metrics files identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
