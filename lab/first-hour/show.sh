#!/usr/bin/env bash
# Issue #39's first-hour traps, each with the command that showed it in the issue and what it prints
# now: `## trap N: ...`, `$ command`, the last lines it prints, `exit N`. Everything is written under
# the work directory ($1, else a new temp dir; the data directory too, through O2O_DATA_DIR).
# Tiny budgets: a few minutes on 2 busy cores.
#   bash lab/first-hour/show.sh [WORKDIR] 2>&1 | tee show.txt
set -u
O2O=${O2O:-/work/main/.venv/bin/o2o}
PY=${PY:-$(dirname "$O2O")/python}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
W=${1:-$(mktemp -d)}
mkdir -p "$W" && cd "$W" || exit 1
export O2O_DATA_DIR="$W/datasets"
export COLUMNS=200
echo "work directory: $W (O2O_DATA_DIR=$O2O_DATA_DIR); o2o: $O2O; repository: $REPO at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
START=$SECONDS

o2o() { "$O2O" --no-progress "$@"; }
quoted() {  # the command as one would type it (o2o for the full path)
  local a out=""
  for a in "$@"; do
    [ "$a" = "$O2O" ] && a=o2o
    [ "$a" = --no-progress ] && continue
    if [[ $a =~ [^A-Za-z0-9_./=:,+@%-] || -z $a ]]; then out+="'$a' "; else out+="$a "; fi
  done
  echo "${out% }"
}
# show [-n LINES] CMD...: the command, the last LINES (default 3) lines it prints, its exit status
show() {
  local n=3
  if [ "$1" = -n ]; then n=$2; shift 2; fi
  echo "\$ $(quoted "$@")"
  "$@" > .out 2>&1
  local rc=$?
  tail -n "$n" .out | sed 's/^/    /'
  echo "exit $rc"
}
# interrupt 'CONDITION' CMD...: start CMD as a terminal would (SIGINT at its default: a script's background
# job would ignore it), press Ctrl-C (SIGINT to its process group) once CONDITION holds, show what it printed
interrupt() {
  local cond=$1 i; shift
  echo "\$ $(quoted "$@")        # Ctrl-C once: $cond"
  setsid env --default-signal=INT "$@" > .out 2>&1 &
  local pid=$!
  for i in $(seq 1 1500); do eval "$cond" && break; kill -0 $pid 2>/dev/null || break; sleep 0.2; done
  kill -INT -- -$pid 2>/dev/null || kill -INT $pid
  wait $pid
  local rc=$?
  tail -n "${N:-2}" .out | sed 's/^/    /'
  echo "exit $rc"
}
rows() { [ -f "$1" ] && [ "$(wc -l < "$1")" -ge $((1 + $2)) ]; }  # a metrics.csv with >= N rows

OFF=(--set agent.hidden_dims=[32,32] --set agent.batch_size=64 --set offline.eval_episodes=1)

echo; echo "## trap 1: Ctrl-C on pretrain / finetune checkpoints and names the command that continues it"
interrupt '[ -e runs/cpqint/checkpoints/latest ]' \
  "$O2O" --no-progress pretrain --algo cpq --dataset BallCircle-dsrl-small --steps 1000 --out runs/cpqint \
  --set offline.steps_per_call=100 --set offline.checkpoint_every=100 --set offline.eval_every=1000 "${OFF[@]}"
ls runs/cpqint/checkpoints | tr '\n' ' ' | sed 's/^/    checkpoints: /'; echo
show o2o pretrain --resume runs/cpqint
show -n 1 o2o train --resume runs/cpqint
N=2 interrupt 'rows runs/ftint/metrics.csv 1' \
  "$O2O" --no-progress finetune --method marvel --pretrained runs/cpqint --out runs/ftint --set vpa.steps=200 --set vpa.steps_per_call=100 \
  --set online.iterations=4 --set online.episodes_per_iteration=1 --set online.eval_every=1 --set online.eval_episodes=1 \
  --set online.checkpoint_every=1
echo "    metrics rows: $(($(wc -l < runs/ftint/metrics.csv) - 1)); checkpoints: $(ls runs/ftint/checkpoints | tr '\n' ' ')"
show o2o finetune --resume runs/ftint

echo; echo "## trap 2: a dataset for another task is refused (its metadata names the task)"
show -n 1 o2o pretrain --algo cpq --dataset BallCircle-dsrl-small --task CarCircle --out runs/other
show -n 1 o2o data inspect BallCircle-dsrl-small --task CarCircle
echo "    runs/other exists: $([ -e runs/other ] && echo yes || echo no)"

echo; echo "## trap 3: an import records its task (NAME.json); Minari files and directories are read"
"$PY" - <<'EOF'
import json, os
import h5py, numpy as np
n = 400  # CarRun's widths (7, 2), no metadata at all
with h5py.File("mine.hdf5", "w") as f:
    for k, v in {"observations": np.zeros((n, 7), np.float32), "next_observations": np.zeros((n, 7), np.float32),
                 "actions": np.zeros((n, 2), np.float32), "rewards": np.ones(n, np.float32), "costs": np.zeros(n, np.float32),
                 "terminals": np.zeros(n, bool), "timeouts": np.arange(n) % 200 == 199}.items():
        f.create_dataset(k, data=v)
# a Minari dataset directory: data/main_data.hdf5 (episode groups), data/metadata.json (env_spec names the task)
os.makedirs("ballcircle-expert-v0/data", exist_ok=True)
rng = np.random.default_rng(0)
with h5py.File("ballcircle-expert-v0/data/main_data.hdf5", "w") as f:
    for i in range(3):
        g = f.create_group(f"episode_{i}")
        g.create_dataset("observations", data=rng.normal(size=(21, 8)).astype(np.float32))
        g.create_dataset("actions", data=rng.uniform(-1, 1, size=(20, 2)).astype(np.float32))
        g.create_dataset("rewards", data=rng.normal(size=20))
        g.create_dataset("terminations", data=np.zeros(20, bool))
        g.create_dataset("truncations", data=np.arange(20) == 19)
        g.create_dataset("infos/cost", data=np.zeros(20))
with open("ballcircle-expert-v0/data/metadata.json", "w") as f:
    json.dump({"total_episodes": 3, "total_steps": 60, "data_format": "hdf5",
               "env_spec": json.dumps({"id": "SafetyBallCircle-v0", "max_episode_steps": 200})}, f)
EOF
show -n 2 o2o data import mine.hdf5 --task CarRun --name CarRun-mine
echo "\$ ls \$O2O_DATA_DIR"; ls "$O2O_DATA_DIR" | sed 's/^/    /'
show -n 2 o2o pretrain --algo bc-safe --dataset CarRun-mine --steps 10 --out runs/carrun-mine --set offline.eval_episodes=1
show -n 1 o2o data inspect ballcircle-expert-v0
show -n 2 o2o data import ballcircle-expert-v0 --name ball-minari
show -n 2 o2o data import ballcircle-expert-v0/data/main_data.hdf5 --task BallCircle --name bare-minari
show -n 6 o2o data list

echo; echo "## trap 4: a missing, truncated or non-HDF5 file without --task: the real problem is named"
head -c 1000000 "$REPO/src/o2o/assets/BallCircle-dsrl-small.hdf5" > truncated.hdf5
printf 'observations,actions\n1,2\n' > text.hdf5
show -n 1 o2o pretrain --algo cpq --dataset nothere.hdf5 --out runs/r4
show -n 1 o2o pretrain --algo cpq --dataset truncated.hdf5 --out runs/r4
show -n 1 o2o pretrain --algo cpq --dataset text.hdf5 --out runs/r4

echo; echo "## trap 5: o2o marvel takes the demo's budget file; --dry-run prints the plan and an estimate"
show -n 6 o2o marvel --budget "$REPO/src/o2o/configs/pipeline-demo.yaml" --dry-run
show -n 5 o2o marvel --task BallCircle --dry-run

echo; echo "## trap 6: a finished run is extended by raising a budget key; other keys are refused as before"
PEND=(--set agent.hidden_dims=[16] --set agent.batch_size=16 --set online.episodes_per_iteration=null --set online.steps_per_iteration=200
      --set online.updates_per_iteration=10 --set online.eval_episodes=1 --set online.eval_every=1)
show -n 1 o2o train --algo sac --task Pendulum --out runs/x --set online.iterations=2 "${PEND[@]}"
show -n 2 o2o train --resume runs/x --set online.iterations=3
echo "    metrics rows: $(($(wc -l < runs/x/metrics.csv) - 1))"
show -n 1 o2o train --resume runs/x --set agent.actor_lr=0.1

echo; echo "## trap 7: values that cannot be right are refused"
show -n 1 o2o train --algo sac --task Pendulum --out runs/neg --set agent.actor_lr=-1
printf 'agent:\n  actor_lr: .nan\n' > nan.yaml
show -n 1 o2o train --algo sac --task Pendulum --out runs/nan --config nan.yaml
echo "    runs/neg or runs/nan exist: $(ls -d runs/neg runs/nan 2>/dev/null | wc -l)"

echo; echo "## trap 8: make install with Python 3.12: one line before anything is made, no .venv kept"
mkdir -p make && cp "$REPO/Makefile" "$REPO/pyproject.toml" make/
P312=""
for c in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
  if "$c" --version > /dev/null 2>&1; then P312=$(command -v "$c"); break; fi
done
if [ -z "$P312" ]; then  # no Python 3.12 here: a stand-in that says it is one
  printf '#!/bin/sh\n[ "$1" = --version ] && { echo "Python 3.12.0"; exit 0; }\nexit 1\n' > python3.12-fake && chmod +x python3.12-fake
  P312=$W/python3.12-fake; echo "(no python3.12 on this machine: a stand-in script that reports 3.12.0)"
else
  echo "(python3.12: $P312, $("$P312" --version 2>&1)); a copy of the Makefile and pyproject.toml in $W/make"
fi
show -n 3 make -C make install PYTHON="$P312"
echo "    make/.venv exists: $([ -e make/.venv ] && echo yes || echo no)"
echo "\$ grep -n 'requires-python\|mujoco==\|pybullet==' pyproject.toml"
grep -n 'requires-python\|mujoco==\|pybullet==' "$REPO/pyproject.toml" | sed 's/^/    /'

echo; echo "## trap 9a: --steps 10 with the default steps_per_call (1000) trains 10 steps"
show -n 2 o2o pretrain --algo bc-safe --dataset BallCircle-dsrl-small --steps 10 --out runs/s10 "${OFF[@]}"
echo "\$ ls runs/s10 runs/s10/checkpoints"; ls runs/s10 runs/s10/checkpoints | sed 's/^/    /'

echo; echo "## trap 9b: no empty figures/ in a run directory"
echo "\$ find runs -name figures -type d -empty | wc -l"; echo "    $(find runs -name figures -type d -empty | wc -l)"

echo; echo "## trap 9c: pretrain --help on seed batching agrees with docs/cli.md (1.93x on a GPU)"
echo "\$ o2o pretrain --help | grep -A2 'On a CPU'"; o2o pretrain --help | grep -A2 'On a CPU' | sed 's/^/    /'
echo "\$ grep -o 'On a CPU it does not pay[^|]*' docs/cli.md"; grep -o 'On a CPU it does not pay[^|]*' "$REPO/docs/cli.md" | sed 's/^/    /'

echo; echo "## trap 9d: Ctrl-C on a sweep names the command that continues it, --only flags included"
cat > tiny.yaml <<'EOF'
name: tiny
seeds: 1
tasks: [{name: BallCircle, dataset: BallCircle-dsrl-small}]
methods:
  - {name: bc-safe, kind: pretrain, set: {offline.steps: 1500, offline.steps_per_call: 100, offline.checkpoint_every: 100,
     offline.eval_every: 1500, offline.eval_episodes: 1, agent.hidden_dims: [32, 32]}}
  - {name: bc, kind: pretrain, set: {offline.steps: 100, offline.eval_every: 100, offline.eval_episodes: 1}}
EOF
N=1 interrupt '[ -e sw/runs/bc-safe/BallCircle/seed0/checkpoints/latest ]' \
  "$O2O" --no-progress sweep tiny.yaml --out sw --workers 1 --only 'bc-safe/*' --only '*/BallCircle/*'
CONT=$(grep -o 'Continue with `[^`]*`' .out | sed 's/Continue with `o2o //; s/`$//')

echo; echo "## trap 9e: the sweep's next: hint (the continue command above, run as printed)"
eval "show -n 2 o2o $CONT"

echo; echo "## trap 9f: --title reaches the figures"
show -n 2 o2o report sw --title "BC-Safe, tiny budget"
echo "\$ head -1 sw/report/report.md; the figure's title, read from its PDF"
head -1 sw/report/report.md | sed 's/^/    /'
for pdf in sw/report/report/*.pdf; do
  "$PY" - "$pdf" <<'EOF'
import re, sys, zlib
data = open(sys.argv[1], "rb").read()
text = b""
for m in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S):
    try:
        text += zlib.decompress(m.group(1))
    except zlib.error:
        pass
# matplotlib writes a line of text as [(Part) kerning (part)] TJ: join the parts of each line, unescape
lines = [re.sub(r"\\(.)", r"\1", b"".join(re.findall(rb"\(((?:[^()\\]|\\.)*)\)", t)).decode("latin-1"))
         for t in re.findall(rb"\[(.*?)\]\s*TJ", text, re.S)]
title = [x for x in lines if "tiny budget" in x]
print(f"    {sys.argv[1].split('/')[-1]}: {title[0] if title else 'no title with the --title text'}")
EOF
done

echo; echo "wall time $((SECONDS - START)) s"
