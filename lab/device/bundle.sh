#!/usr/bin/env bash
# Fill .devcarry/ (git-ignored) with what a bare GPU machine (Python 3.12) needs beside its own JAX and
# torch: the pure-Python wheels of o2o's and d3rlpy's dependencies, and the generated datasets.
# Then run there with `carry: [.devcarry]` and `source lab/device/setup.sh`.
#   lab/device/bundle.sh [DATASET ...]   (default: BallCircle-dsrl CarRun-dsrl Hopper-medium Hopper-medium-replay)
# A carry holds 64 MiB in all: the wheels take ~4 MiB; Walker2d-medium-replay alone is 42 MiB, so pick
# the datasets one device session needs. A dataset missing here is named, and the script stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.devcarry/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.devcarry/" >> .git/info/exclude; }
mkdir -p .devcarry/whl .devcarry/data
PIP=".venv/bin/python -m pip"
for p in gymnasium==0.28.1 jax-jumpy==1.0.0 farama-notifications==0.0.6 tensorboardX==2.6.5 d3rlpy==2.6.0 \
         structlog==26.1.0 dataclasses-json==0.6.7 marshmallow==3.26.2; do
  $PIP download -q --no-deps -d .devcarry/whl "$p"
done
$PIP wheel -q --no-deps -w .devcarry/whl gym==0.26.2   # d3rlpy imports gym; it ships as an sdist only
DATA="${O2O_DATA_DIR:-$HOME/.o2o/datasets}"
rm -f .devcarry/data/*
for d in "${@:-BallCircle-dsrl CarRun-dsrl Hopper-medium Hopper-medium-replay}"; do
  for f in $d; do
    [ -f "$DATA/$f.hdf5" ] || { echo "bundle.sh: no dataset '$f' in $DATA (o2o data list; docs/datasets.md says how to generate it)" >&2; exit 1; }
    cp "$DATA/$f.hdf5" "$DATA/$f.json" .devcarry/data/
  done
done
size=$(du -sm .devcarry | cut -f1)
echo ".devcarry: ${size} MiB"
[ "$size" -le 64 ] || { echo "bundle.sh: .devcarry is ${size} MiB, over the 64 MiB a device carry holds; bundle fewer datasets" >&2; exit 1; }
