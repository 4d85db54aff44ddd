#!/usr/bin/env bash
# Fill .devcarry/ (git-ignored) with what a bare GPU machine (Python 3.12) needs beside its own JAX and
# torch: the pure-Python wheels of o2o's and d3rlpy's dependencies, and the generated datasets.
# Then run there with `carry: [.devcarry]` and `source benchmarks/device/setup.sh`.
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
for d in BallCircle-dsrl CarRun-dsrl Hopper-medium Hopper-medium-replay; do
  cp "$DATA/$d.hdf5" "$DATA/$d.json" .devcarry/data/
done
du -sh .devcarry
