#!/usr/bin/env bash
# Issue #39's reports: the pretrain -> fine-tune example sweeps (examples/sweeps/pretrain-then-finetune-1.yaml,
# -2.yaml) at a smaller budget (the sweeps' --set), then `o2o report` on both. Everything is written under
# the work directory ($1, else a new temp dir; O2O_DATA_DIR too). About 5 minutes on 2 busy cores.
#   bash lab/first-hour/report.sh [WORKDIR]
set -eu
O2O=${O2O:-/work/main/.venv/bin/o2o}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
W=${1:-$(mktemp -d)}
mkdir -p "$W" && cd "$W"
export O2O_DATA_DIR="$W/datasets" COLUMNS=200
START=$SECONDS
o2o() { echo "\$ o2o $*"; "$O2O" --no-progress "$@"; }

cp "$REPO"/examples/sweeps/pretrain-then-finetune-{1,2}.yaml "$REPO"/examples/sweeps/fresh-critics.yaml .
# step 1: BC-Safe, 2 seeds, 1000 steps (the example: 2000), evaluated every 250
o2o sweep pretrain-then-finetune-1.yaml --set offline.steps=1000 --set offline.steps_per_call=250 --set offline.eval_every=250 2>&1 | tail -n 3
# step 2: marvel, vpa-only, from-scratch from each seed's run; VPA 1000 steps (the example: 2000), 10 iterations of
# 1 episode (10 of 2), evaluated after each (as the example): an evaluation at 10% of the budget, so the tables have the dip
o2o sweep pretrain-then-finetune-2.yaml --set vpa.steps=1000 --set online.iterations=10 --set online.episodes_per_iteration=1 \
  --set online.eval_every=1 2>&1 | tail -n 3
o2o report runs/sweeps/pretrain-then-finetune-1 runs/sweeps/pretrain-then-finetune-2 --out reports/pretrain-then-finetune.md \
  --title "BC-Safe -> Marvel vs baselines, BallCircle, tiny budget" 2>&1 | tail -n 8
echo "\$ find reports -maxdepth 2 -not -path '*/archive/*' -type f"
find reports -maxdepth 2 -not -path '*/archive/*' -type f | sort | sed 's/^/    /'
echo "\$ cat reports/pretrain-then-finetune/results.tex"
cat reports/pretrain-then-finetune/results.tex

# the pipeline's own report (o2o marvel): BC-Safe -> Marvel and from-scratch, 2 seeds, a tiny budget file
cat > budget.yaml <<'EOF'
task: BallCircle
dataset: BallCircle-dsrl-small
offline_algo: bc-safe
methods: [marvel, from-scratch]
seeds: [0, 1]
pretrain: {offline: {steps: 500, steps_per_call: 250, eval_every: 500, eval_episodes: 2, checkpoint_every: 500}}
finetune:
  vpa: {init: fresh, steps: 500, steps_per_call: 250}
  online: {iterations: 10, episodes_per_iteration: 1, eval_every: 1, eval_episodes: 2, checkpoint_every: 5}
EOF
o2o marvel --budget budget.yaml --out runs/marvel-tiny 2>&1 | tail -n 2
echo "\$ ls runs/marvel-tiny; the report's tables"
ls runs/marvel-tiny | tr '\n' ' '; echo
grep '^|' runs/marvel-tiny/report.md
echo "wall time $((SECONDS - START)) s"
