#!/usr/bin/env bash
# Issue #40's closing demonstration: every case the fault-injection pass found, run as a user would,
# each with its command, the last lines it printed and its exit status, and checks that nothing was
# lost or written where it should not be.
#   lab/faults/show.sh [TMP_DIR]          (O2O=/path/to/o2o to use another o2o)
# Everything is made under TMP_DIR (default: a new mktemp folder): runs, bad files, archives. As root, the
# full-disk case uses a 400 KiB tmpfs (mounted under TMP_DIR, unmounted at the end); otherwise an
# injected ENOSPC. Bad inputs come from lab/faults/build.py (the builders of tests/test_faults.py).
# About 8.5 minutes on 2 cores (505 s; 685 s while other jobs shared them). The last line counts the
# cases that behaved as the issue asks; the exit status is 0 when all did.
set -u
O2O=${O2O:-/work/main/.venv/bin/o2o}
PY=${PY:-$(dirname "$O2O")/python}
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD="$PY $HERE/build.py"
T=${1:-$(mktemp -d /tmp/o2o-faults.XXXXXX)}
mkdir -p "$T" && T=$(cd "$T" && pwd)
export O2O_DATA_DIR=$T/data
export XLA_FLAGS=${XLA_FLAGS:---xla_cpu_multi_thread_eigen=false}
Q=--no-progress
START=$SECONDS

CASES=0; PASSED=0; FAILS=0; CURRENT=""; FAILED_LIST=""
finish_case() {
  if [ -n "$CURRENT" ]; then
    CASES=$((CASES + 1))
    if [ "$FAILS" = 0 ]; then PASSED=$((PASSED + 1)); echo "=> as asked"
    else echo "=> NOT as asked ($FAILS check(s) failed)"; FAILED_LIST="$FAILED_LIST
   $CURRENT"; fi
  fi
  CURRENT=""; FAILS=0
}
case_() { finish_case; CURRENT="$*"; echo; echo "## case: $*"; }
shown() { sed -e "s|$O2O|o2o|g" -e "s|$PY|python|g" -e "s|$T|\$T|g"; }
fail() { echo "  check FAILED: $*"; FAILS=$((FAILS + 1)); }
check() {  # check DESCRIPTION COMMAND...: a condition that must hold
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "  check: $what: ok"; else fail "$what"; fi
}
# show EXPECTED_EXIT COMMAND...: print "$ COMMAND" (or $SHOWN), run it, print the last lines of its
# stdout and stderr and "exit N". Exit 2 must come with exactly one stderr line "o2o: error: ...";
# no output may hold a traceback.
show() {
  local want=$1; shift
  echo "\$ ${SHOWN:-$*}" | shown
  "$@" >"$T/.stdout" 2>"$T/.stderr"; RC=$?
  grep -v '^[[:space:]]*$' "$T/.stdout" | tail -n "${TAIL:-2}" | shown
  grep -v '^[[:space:]]*$' "$T/.stderr" | tail -n 4 | shown
  echo "exit $RC"
  [ "$RC" = "$want" ] || fail "exit $RC, expected $want"
  if grep -q "Traceback" "$T/.stdout" "$T/.stderr"; then fail "a traceback"; fi
  if [ "$want" = 2 ]; then
    local n; n=$(grep -cv '^[[:space:]]*$' "$T/.stderr")
    { [ "$n" = 1 ] && grep -q '^o2o: error: ' "$T/.stderr"; } || fail "$n stderr lines, expected one 'o2o: error:' line"
  fi
  unset SHOWN
  return 0
}
absent() { [ ! -e "$1" ]; }
files_of() { (cd "$1" && find . -type f ! -name .lock -print0 | sort -z | xargs -0 sha256sum); }
latest() { cat "$1/checkpoints/latest" 2>/dev/null; }
sweep_spec() {  # sweep_spec FILE ITERATIONS [METHODS]: a tiny SAC-on-Pendulum sweep
  cat >"$1" <<EOF
name: tiny
seeds: 1
tasks: [Pendulum]
methods: ${3:-[sac]}
set:
  agent.hidden_dims: [16]
  agent.batch_size: 16
  online.iterations: $2
  online.steps_per_iteration: 50
  online.updates_per_iteration: 2
  online.warmup_steps: 50
  online.update_after: 50
  online.eval_every: $2
  online.eval_episodes: 1
  online.checkpoint_every: $2
EOF
}
TINY=(--set "agent.hidden_dims=[16]" --set agent.batch_size=16 --set online.episodes_per_iteration=null
      --set online.steps_per_iteration=50 --set online.updates_per_iteration=2 --set online.eval_episodes=1)
CPQ_TINY=(--set offline.steps_per_call=50 --set offline.eval_episodes=1 --set "agent.hidden_dims=[32,32]" --set agent.batch_size=64
          --set agent.num_ood_actions=2 --set "agent.vae_hidden_dims=[32,32]")

echo "o2o: $O2O ($("$PY" -c 'import o2o; print(o2o.__version__)' 2>/dev/null || echo '?')); T=$T"
echo "-- a tiny finished run, copied by the cases that tamper with a run"
show 0 "$O2O" $Q train --algo sac --task Pendulum --out "$T/base" "${TINY[@]}" --set online.iterations=1
mkdir -p "$T/bad"
$BUILD dataset "$T/bad/ok.hdf5"
copy() { rm -rf "$T/$1"; cp -r "$T/base" "$T/$1"; echo "$T/$1"; }

# ---------------------------------------------------------------------------------------------------
case_ "1. o2o demo --out DIR where DIR holds other files (a bad key; a good config; --out .)"
mkdir -p "$T/x/keep"; echo a >"$T/x/keep/f"
show 2 "$O2O" $Q demo --out "$T/x" --set pretrain.bogus=1
check "DIR and its file kept" grep -qx a "$T/x/keep/f"
show 2 "$O2O" $Q demo --out "$T/x"
check "DIR and its file kept" grep -qx a "$T/x/keep/f"
SHOWN="cd \$T/x && o2o $Q demo --out ." show 2 bash -c "cd '$T/x' && '$O2O' $Q demo --out ."
check "the working directory kept, nothing added" test "$(ls -A "$T/x")" = keep

# ---------------------------------------------------------------------------------------------------
case_ "2. o2o sweep --adopt ARCHIVE holding symbolic links (file, folder, run folder) or a run outside it (..)"
sweep_spec "$T/spec.yaml" 1
for kind in file folder run_folder dotdot; do
  $BUILD archive "$T/archive-$kind" $kind "$T/secret-$kind"
  show 2 "$O2O" $Q sweep "$T/spec.yaml" --out "$T/sweep-adopt-$kind" --adopt "$T/archive-$kind" --backend sequential
  check "nothing written (no sweep folder)" absent "$T/sweep-adopt-$kind"
done

# ---------------------------------------------------------------------------------------------------
case_ "3. divergence: CPQ at lr 1e30, SAC at critic lr 1e6 and 4e5, a NaN learning rate"
show 2 "$O2O" $Q pretrain --algo cpq --dataset BallCircle-dsrl-small --steps 100 --out "$T/cpq-1e30" "${CPQ_TINY[@]}" \
  --set offline.checkpoint_every=50 --set offline.eval_every=100 --set agent.actor_lr=1e30 --set agent.critic_lr=1e30
check "no checkpoint of the diverged state" absent "$T/cpq-1e30/checkpoints/latest"
check "no summary" absent "$T/cpq-1e30/summary.json"
show 2 "$O2O" $Q pretrain --resume "$T/cpq-1e30"
DIV=(--set online.warmup_steps=0 --set online.update_after=0 --set online.eval_every=100 --set online.checkpoint_every=1)
show 2 "$O2O" $Q train --algo sac --task Pendulum --out "$T/sac-1e6" "${TINY[@]}" --set online.iterations=30 "${DIV[@]}" \
  --set agent.critic_lr=1e6 --set online.updates_per_iteration=5
check "no summary" absent "$T/sac-1e6/summary.json"
show 2 "$O2O" $Q train --algo sac --task Pendulum --out "$T/sac-4e5" "${TINY[@]}" --set online.iterations=20 "${DIV[@]}" \
  --set agent.critic_lr=4e5 --set online.updates_per_iteration=5
check "the last finite checkpoint kept (ckpt_1)" test "$(latest "$T/sac-4e5")" = ckpt_1
check "no summary" absent "$T/sac-4e5/summary.json"
show 0 "$O2O" $Q eval "$T/sac-4e5" --episodes 1
show 2 "$O2O" $Q train --resume "$T/sac-4e5"
check "still ckpt_1" test "$(latest "$T/sac-4e5")" = ckpt_1
show 2 "$O2O" $Q train --algo sac --task Pendulum --out "$T/nan-lr" --set agent.actor_lr=.nan
printf 'agent:\n  critic_lr: 1e400\n' >"$T/inf.yaml"
show 2 "$O2O" $Q train --algo sac --task Pendulum --config "$T/inf.yaml" --out "$T/nan-lr"
check "nothing written" absent "$T/nan-lr"

# ---------------------------------------------------------------------------------------------------
case_ "4. two o2o train --resume D at once"
D=$(copy lock-run)
echo "\$ o2o $Q train --resume \$T/lock-run --set online.iterations=30 &   # the first" | shown
"$O2O" $Q train --resume "$D" --set online.iterations=30 >"$T/first.out" 2>&1 &
FIRST=$!
for _ in $(seq 600); do  # until the first holds the run's lock (its pid in the lock file)
  grep -q "\"pid\": $FIRST," "$D/.lock" 2>/dev/null && break
  kill -0 $FIRST 2>/dev/null || break
  sleep 0.1
done
show 2 "$O2O" $Q train --resume "$D" --set online.iterations=30
wait $FIRST; rc=$?
echo "(the first:)"; grep -v '^[[:space:]]*$' "$T/first.out" | tail -n 1 | shown; echo "exit $rc"
[ "$rc" = 0 ] || fail "the first exited $rc"
steps=$(cut -d, -f1 "$D/metrics.csv" | tail -n +2 | tr '\n' ' ')
echo "metrics.csv steps: $steps"
check "metrics.csv holds steps 1..30, each once" test "$steps" = "$(seq 1 30 | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------------
case_ "5.1 an HDF5 column that is an external link to a non-HDF5 file"
$BUILD extlink "$T/bad/ext.hdf5" "$T/bad/notes.txt"
show 2 "$O2O" data inspect "$T/bad/ext.hdf5"

case_ "5.2 a huge declared shape (a few kB declaring 200M rows)"
$BUILD huge "$T/bad/huge.hdf5" | shown
show 2 /usr/bin/time -f 'max RSS %M kB' -o "$T/rss.txt" "$O2O" data inspect "$T/bad/huge.hdf5"
grep '^max RSS' "$T/rss.txt"
check "under 1 GB of memory (it would need 6.4 GB for the observations)" \
  test "$(sed -n 's/^max RSS \([0-9]*\) kB$/\1/p' "$T/rss.txt")" -lt 1000000

case_ "5.3 malformed o2o_metadata JSON"
$BUILD metadata "$T/bad/meta.hdf5" '{"task": '
show 2 "$O2O" data inspect "$T/bad/meta.hdf5"
show 2 "$O2O" $Q pretrain --algo bc --dataset "$T/bad/meta.hdf5" --out "$T/meta-run"
check "nothing written" absent "$T/meta-run"

n=4
for spoil in "meta.json|[1, 2]" 'meta.json|{"format": 1, "step": 1, "arrays_bytes": "12"}' \
             'host_state.json|"counters"' "host_state.json|drop:collector"; do
  file=${spoil%%|*}; content=${spoil#*|}
  case_ "5.$n a checkpoint's $file of the wrong structure: $content"
  D=$(copy "json-$n")
  $BUILD ckpt_json "$D" "$file" "$content"
  show 2 "$O2O" $Q train --resume "$D"
  n=$((n + 1))
done

case_ "5.8 NaN weights in a checkpoint (size and CRC made to match)"
D=$(copy nan-weights)
$BUILD nan_weights "$D"
show 2 "$O2O" $Q eval "$D"
show 2 "$O2O" $Q train --resume "$D"

case_ "5.9 a binary config.yaml (given with --config; a run's own)"
$BUILD binary "$T/bad/binary.yaml"
show 2 "$O2O" $Q train --algo sac --task Pendulum --config "$T/bad/binary.yaml" --out "$T/bin-run"
check "nothing written" absent "$T/bin-run"
D=$(copy bin-config)
$BUILD binary "$D/config.yaml"
show 2 "$O2O" $Q eval "$D"
show 2 "$O2O" $Q train --resume "$D"

case_ "5.10 a full disk during a checkpoint write"
FULL=(--set online.iterations=30 --set online.steps_per_iteration=200 --set online.checkpoint_every=1)
mkdir -p "$T/smallfs"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=400k tmpfs "$T/smallfs" 2>/dev/null; then
  trap 'umount "$T/smallfs" 2>/dev/null' EXIT
  echo "\$ mount -t tmpfs -o size=400k tmpfs \$T/smallfs" | shown
  show 2 "$O2O" $Q train --algo sac --task Pendulum --out "$T/smallfs/run" "${TINY[@]}" "${FULL[@]}"
else  # not root: ENOSPC injected into the checkpoint writer at the 14th checkpoint
  echo "(not root, or no tmpfs: ENOSPC injected into the checkpoint writer)"
  cat >"$T/enospc.py" <<'EOF'
import errno, os, sys
import o2o.runs.checkpoint as checkpoint
from o2o.cli import main
real, writes = checkpoint._write_file, []
def write_until_full(path, data):
    writes.append(path.name)
    if path.name == "arrays.msgpack" and writes.count("arrays.msgpack") == 14:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    real(path, data)
checkpoint._write_file = write_until_full
sys.exit(main(sys.argv[1:]))
EOF
  SHOWN="python \$T/enospc.py $Q train --algo sac --task Pendulum --out \$T/smallfs/run ..." \
    show 2 "$PY" "$T/enospc.py" $Q train --algo sac --task Pendulum --out "$T/smallfs/run" "${TINY[@]}" "${FULL[@]}"
fi
K=$(latest "$T/smallfs/run")
echo "latest checkpoint: $K; checkpoints/: $(ls "$T/smallfs/run/checkpoints" | tr '\n' ' ')"
check "a complete previous checkpoint kept" test -f "$T/smallfs/run/checkpoints/$K/meta.json"
check "no partial checkpoint left" test "$(ls "$T/smallfs/run/checkpoints" | grep -cv '^ckpt_[0-9]*$\|^latest$')" = 0
mountpoint -q "$T/smallfs" && { echo "\$ mount -o remount,size=4m \$T/smallfs" | shown; mount -o remount,size=4m "$T/smallfs"; }
show 0 "$O2O" $Q train --resume "$T/smallfs/run"
check "the run finished (ckpt_30)" test "$(latest "$T/smallfs/run")" = ckpt_30

case_ "5.11 o2o sweep --adopt with an index.json whose run_id is an integer"
$BUILD archive "$T/archive-int" int_run_id "$T/secret-int"
show 2 "$O2O" $Q sweep "$T/spec.yaml" --out "$T/sweep-int" --adopt "$T/archive-int" --backend sequential
check "nothing written" absent "$T/sweep-int"

case_ "5.12 o2o sweep --adopt with an index.json whose meta is a list and runs an object"
$BUILD archive "$T/archive-meta" meta_list "$T/secret-meta"
show 2 "$O2O" $Q sweep "$T/spec.yaml" --out "$T/sweep-meta" --adopt "$T/archive-meta" --backend sequential
check "nothing written" absent "$T/sweep-meta"

case_ "5.13 a NUL in a sweep's method name"
sweep_spec "$T/nul.yaml" 1 '
  - {name: "mine\0", algo: sac}'
show 2 "$O2O" $Q sweep "$T/nul.yaml" --out "$T/sweep-nul" --backend sequential
check "nothing written (no index.sqlite)" absent "$T/sweep-nul"

case_ "5.14 o2o report on a garbage summary.json"
D=$(copy garbage-summary)
echo 'garbage{' >"$D/summary.json"
show 2 "$O2O" report "$D" --out "$T/report.md"
check "no report written" absent "$T/report.md"

case_ "5.15 a negative hidden width"
show 2 "$O2O" $Q train --algo sac --task Pendulum --out "$T/neg" --set "agent.hidden_dims=[16,-4]"
check "nothing written" absent "$T/neg"

# ---------------------------------------------------------------------------------------------------
case_ "6. o2o data import --name ../../x (or an absolute path)"
show 2 "$O2O" data import "$T/bad/ok.hdf5" --name ../../x
show 2 "$O2O" data import "$T/bad/ok.hdf5" --name "$T/abs-x"
check "nothing outside the data directory" test -z "$(ls -d "$(dirname "$T")"/x.* "$T"/abs-x* 2>/dev/null)"
check "nothing in it either" absent "$T/data"
show 0 "$O2O" data import "$T/bad/ok.hdf5" --name ok
check "a plain name lands in the data directory" test -f "$T/data/ok.hdf5"

# ---------------------------------------------------------------------------------------------------
case_ "7. a relative --pretrained, the run stopped in VPA, resumed from another directory"
mkdir -p "$T/w"
SHOWN="cd \$T/w && o2o $Q pretrain --algo cpq --dataset BallCircle-dsrl-small --steps 200 --out runs/cpq_ref ..." \
  show 0 bash -c "cd '$T/w' && '$O2O' $Q pretrain --algo cpq --dataset BallCircle-dsrl-small --steps 200 --out runs/cpq_ref \
    ${CPQ_TINY[*]} --set offline.eval_every=200 --set offline.checkpoint_every=200"
FT=(--set vpa.steps=2000 --set vpa.steps_per_call=50 --set vpa.batch_size=64 --set online.iterations=1
    --set online.episodes_per_iteration=1 --set online.updates_per_iteration=20 --set online.eval_every=1
    --set online.eval_episodes=1 --set agent.batch_size=64 --set "agent.hidden_dims=[32,32]")
SHOWN="cd \$T/w && o2o $Q finetune --method marvel --pretrained runs/cpq_ref --out \$T/ft ...   # SIGTERM at VPA's 2nd row" \
  show 143 bash -c "cd '$T/w' && exec $BUILD send TERM '$T/ft/bridge/metrics.csv' 2 '$O2O' $Q finetune --method marvel \
    --pretrained runs/cpq_ref --out '$T/ft' ${FT[*]}"
grep '^pretrained:' "$T/ft/config.yaml" | shown
SHOWN="cd / && o2o $Q finetune --resume \$T/ft" show 0 bash -c "cd / && '$O2O' $Q finetune --resume '$T/ft'"
check "finished" test -f "$T/ft/summary.json"

# ---------------------------------------------------------------------------------------------------
case_ "8.1 --resume of a finished run"
D=$(copy finished)
files_of "$D" >"$T/before.sha"
show 0 "$O2O" $Q train --resume "$D"
files_of "$D" >"$T/after.sha"
check "summary.json, metrics and checkpoints byte-identical" cmp "$T/before.sha" "$T/after.sha"

case_ "8.2 SIGTERM to a sweep (a run exits 143)"
sweep_spec "$T/long.yaml" 150
SHOWN="o2o $Q sweep \$T/long.yaml --out \$T/sweep-term --workers 1   # SIGTERM at its run's 2nd metrics row" \
  show 143 $BUILD send TERM "$T/sweep-term/runs/sac/Pendulum/seed0/metrics.csv" 2 "$O2O" $Q sweep "$T/long.yaml" \
    --out "$T/sweep-term" --workers 1
K=$(latest "$T/sweep-term/runs/sac/Pendulum/seed0")
echo "the run's latest checkpoint: $K"
check "the run checkpointed where it stopped" test -n "$K"

case_ "8.3 SIGINT (Ctrl-C) to a run"
SHOWN="o2o $Q train --algo sac --task Pendulum --out \$T/ctrl-c ... --set online.iterations=200   # SIGINT at the 2nd metrics row" \
  show 130 $BUILD send INT "$T/ctrl-c/metrics.csv" 2 "$O2O" $Q train --algo sac --task Pendulum --out "$T/ctrl-c" "${TINY[@]}" \
    --set online.iterations=200 --set online.checkpoint_every=100 --set online.eval_every=100
K=$(latest "$T/ctrl-c")
echo "latest checkpoint: $K; last metrics row: $(tail -n 1 "$T/ctrl-c/metrics.csv" | cut -d, -f1)"
check "a checkpoint where it stopped" test "$K" = "ckpt_$(tail -n 1 "$T/ctrl-c/metrics.csv" | cut -d, -f1)"

finish_case
echo
echo "## summary: $CASES cases, $PASSED as the issue asks, $((CASES - PASSED)) not, in $((SECONDS - START)) s${FAILED_LIST:+; not as asked:}$FAILED_LIST"
[ "$PASSED" = "$CASES" ]
