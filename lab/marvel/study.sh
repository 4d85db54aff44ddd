#!/bin/bash
# Issue #35's 5-seed study at the paper's online schedule (docs/results/marvel.md), as run on the 2-core
# development machine (each line a separate process; two or three at a time). BC-Safe starts, 10k steps,
# one per seed; VPA from fresh critics; 100 iterations of 5 episodes, 20 updates of 64 per iteration.
# Runs that finished are reused when a line is run again (the pipeline compares each stage's config).
set -euo pipefail
B="--offline-algo bc-safe --seeds 0,1,2,3,4 --set pretrain.offline.steps=10000 --set pretrain.offline.eval_every=10000 --set finetune.vpa.init=fresh"
O2O=${O2O:-o2o}
# set point 0.5 kappa (the preset; marvel-paper keeps its own, kappa): every method
$O2O marvel --task BallCircle --methods marvel,from-scratch,apid-only,warm-start,vpa-only --out runs/study-BallCircle-m50 $B
$O2O marvel --task CarRun --methods marvel,from-scratch,marvel-paper,apid-only,warm-start,vpa-only --out runs/study-CarRun-m50 $B
# the released rule (its own set point, kappa)
$O2O marvel --task BallCircle --methods marvel-paper --out runs/study-BallCircle $B
# set point 0.25 kappa (lagrange.limit_margin=0.75): a measured option
$O2O marvel --task BallCircle --methods marvel,from-scratch --out runs/study-BallCircle-m75 $B --set finetune.lagrange.limit_margin=0.75
$O2O marvel --task CarRun --methods marvel,from-scratch --out runs/study-CarRun-m75 $B --set finetune.lagrange.limit_margin=0.75
# reports (report.md, curves.png, the runs' data without checkpoints) and the targets
for s in BallCircle-m50 CarRun-m50 BallCircle CarRun BallCircle-m75 CarRun-m75; do
  python lab/marvel/pipeline_report.py runs/study-$s --archive docs/results/marvel/study-$s/runs
  cp runs/study-$s/report.md runs/study-$s/curves.png docs/results/marvel/study-$s/
done
python lab/marvel/targets.py runs/study-BallCircle-m75 runs/study-CarRun-m75
python lab/marvel/targets.py runs/study-BallCircle-m50 runs/study-CarRun-m50
