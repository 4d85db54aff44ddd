#!/usr/bin/env bash
# Steady-state pre-training speed on this machine's default JAX device: every offline algorithm at its
# preset hyper-parameters on its dataset, 3 seeds as one program (o2o pretrain --seeds), and CPQ also as
# one seed; evaluation deferred (no simulator needed). Prints updates/s per seed from the runs' own
# metrics (the last call's row; the first call holds the compilation).
#   source lab/device/setup.sh && bash lab/device/probe_offline.sh [STEPS]
set -uo pipefail
STEPS=${1:-3000}
OUT_DIR=${PROBE_DIR:-/tmp/probe}
probe() {  # label algo dataset seeds
  local t0=$(date +%s)
  python3 -m o2o.cli --no-progress pretrain --algo "$2" --dataset "$3" --steps "$STEPS" --seeds "$4" --defer-eval \
    --set offline.steps_per_call=$(( STEPS < 1000 ? STEPS : 1000 )) --set offline.checkpoint_every="$STEPS" --out "$OUT_DIR/$1" > "$OUT_DIR/$1.log" 2>&1 \
    || { echo "$1: FAILED"; tail -5 "$OUT_DIR/$1.log"; return; }
  python3 - "$OUT_DIR/$1" "$1" "$(( $(date +%s) - t0 ))" <<'PY'
import csv, pathlib, sys
root, label, wall = pathlib.Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
runs = sorted(root.glob("seed*")) or [root]
rows = list(csv.DictReader(open(runs[0] / "metrics.csv")))
rate = float(rows[-1]["perf/updates_per_s"])
print(f"{label:<24} {len(runs)} seed(s): {rate:8.1f} updates/s per seed, {rate * len(runs):8.1f} in all; "
      f"whole command {wall:.0f} s for {rows[-1]['step']} steps")
PY
}
mkdir -p "$OUT_DIR"
probe cpq-BallCircle-1seed cpq BallCircle-dsrl 0
probe cpq-BallCircle cpq BallCircle-dsrl 0,1,2
probe bear-lag-BallCircle bear-lag BallCircle-dsrl 0,1,2
probe bc-safe-BallCircle bc-safe BallCircle-dsrl 0,1,2
probe cql-Hopper-medium cql Hopper-medium 0,1,2
probe iql-Hopper-medium iql Hopper-medium 0,1,2
probe td3bc-Hopper-medium td3bc Hopper-medium 0,1,2
