#!/bin/bash
# Short fixed-seed runs of every run kind (issue #37's "behaviour unchanged" check):
#   lab/redesign/runs.sh OUT_DIR      then      python lab/redesign/compare.py OUT_A OUT_B
# Uses the o2o on PYTHONPATH / the active venv. ~6 min on 2 cores (a core free).
set -euo pipefail
OUT=$1; mkdir -p "$OUT"
O2O=${O2O:-o2o}
export XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
Q="--no-progress"
$O2O $Q train --algo sac-lag --task BallCircle --seed 0 --out "$OUT/train-sac-lag" \
  --set online.iterations=2 --set online.episodes_per_iteration=1 --set online.updates_per_iteration=50 \
  --set online.warmup_steps=200 --set online.update_after=200 --set online.eval_every=1 --set online.eval_episodes=1
$O2O $Q pretrain --algo cpq --dataset BallCircle-dsrl-small --seed 0 --steps 400 --out "$OUT/pretrain-cpq" \
  --set offline.steps_per_call=200 --set offline.eval_every=400 --set offline.eval_episodes=1
$O2O $Q pretrain --algo iql --dataset Hopper-medium --seed 0 --steps 400 --out "$OUT/pretrain-iql" \
  --set offline.steps_per_call=200 --set offline.eval_every=400 --set offline.eval_episodes=1
$O2O $Q pretrain --algo cql --dataset Hopper-medium --seed 0 --steps 200 --out "$OUT/pretrain-cql" \
  --set offline.steps_per_call=100 --set offline.eval_every=200 --set offline.eval_episodes=1
$O2O $Q finetune --method marvel --pretrained "$OUT/pretrain-cpq" --seed 0 --out "$OUT/finetune-marvel" \
  --set vpa.steps=200 --set vpa.steps_per_call=100 --set online.iterations=2 --set online.episodes_per_iteration=1 \
  --set online.updates_per_iteration=20 --set online.eval_every=1 --set online.eval_episodes=1
$O2O $Q finetune --method o2sac --pretrained "$OUT/pretrain-cql" --seed 0 --out "$OUT/finetune-o2sac" \
  --set ocr.reeval_steps=200 --set ocr.align_steps=200 --set ocr.steps_per_call=100 --set online.iterations=2 \
  --set online.steps_per_iteration=200 --set ocr.reference_every=200 --set ocr.reference_episodes=1 --set ocr.threshold_steps=400 \
  --set online.eval_every=1 --set online.eval_episodes=1
$O2O $Q demo --out "$OUT/demo" --set pretrain.offline.steps=400 --set pretrain.offline.steps_per_call=200 \
  --set pretrain.offline.eval_every=400 --set finetune.vpa.steps=200 --set finetune.vpa.steps_per_call=100 \
  --set finetune.online.iterations=2 --set finetune.online.eval_every=1 2>&1 | grep -v "wall time" || true
$O2O $Q finetune --method o2ppo --pretrained "$OUT/pretrain-iql" --seed 0 --out "$OUT/finetune-o2ppo" \
  --set ocr.reeval_steps=200 --set ocr.steps_per_call=100 --set online.iterations=2 --set online.steps_per_iteration=256 \
  --set ocr.reference_every=256 --set ocr.reference_episodes=1 --set online.eval_every=1 --set online.eval_episodes=1
$O2O $Q pretrain --algo cpq --dataset BallCircle-dsrl-small --seeds 0 1 --steps 400 --out "$OUT/pretrain-cpq-seeds" \
  --set offline.steps_per_call=200 --set offline.eval_every=400 --set offline.eval_episodes=1
