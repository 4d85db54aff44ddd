#!/usr/bin/env bash
# One seed of the O2SAC Walker2d experiment (docs/results.md, "OCR-CFT on Walker2d-medium and
# Walker2d-medium-replay: O2SAC ..."), on a 2-core machine: CQL on both datasets (two runs side by side),
# then the O2SAC / naive / scratch sweeps of both datasets side by side; ~2 h 15 min. Each sweep adopts
# the finished seeds from the archive beside its report, so a fresh machine keeps them.
# Needs the Walker2d-medium and -medium-replay datasets (docs/datasets.md, d4rl.medium_iteration=320).
# Usage: benchmarks/experiments/ocr-walker2d-sac-seed.sh SEED   (logs in runs/logs/)
set -euo pipefail
seed=${1:?usage: $0 SEED}
cd "$(dirname "$0")/../.."
O=${O2O:-.venv/bin/o2o}
E=benchmarks/experiments
A=docs/results
W=(--threads-per-worker 1 --no-pin)
mkdir -p runs/logs
$O sweep $E/offline-cql-more.yaml --only "cql-*/Walker2d/seed$seed" --adopt $A/offline-cql-more/archive/offline-cql-more \
    --workers 2 "${W[@]}" > runs/logs/cql-walker2d-seed$seed.log 2>&1
pids=()
for name in ocr-walker2d-sac ocr-walker2d-mr-sac; do
    $O sweep $E/$name.yaml --only "*/Walker2d/seed$seed" --adopt $A/$name/archive/$name \
        --workers 1 "${W[@]}" > runs/logs/$name-seed$seed.log 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for name in offline-cql-more ocr-walker2d-sac ocr-walker2d-mr-sac; do
    $O report runs/sweeps/$name --out $A/$name.md
done
exit $status
