#!/usr/bin/env bash
# Train sweeps on a GPU machine against a deadline, then strip them for the way back (one device call).
#   source lab/device/setup.sh   (first; .devcarry/ carried: lab/device/bundle.sh)
#   lab/device/sweeps_until.sh SECONDS SPEC GLOB [SPEC GLOB ...]
# Runs `o2o sweep SPEC --only GLOB --defer-eval --workers 1` for each pair in turn (GLOB '*' = all runs)
# until SECONDS have passed since the script started; the sweep in flight then gets SIGTERM, so each
# run checkpoints at the end of its current iteration and stops (a later launch continues it). Then
# every sweep touched is stripped (lab/device/strip_runs.py) into $OUT/<sweep>.tar.gz, and the
# log goes to $OUT/sweeps.log. Put the pairs in order of priority: the deadline cuts the last ones.
# An archive over 15 MiB comes back split into <sweep>.tar.gz.part-aa, -ab, ... (the device tool returns
# files of at most 16 MiB): cat them together and compare with the sha256 in the log.
# Back here: tar xzf <sweep>.tar.gz -C runs/sweeps; o2o eval runs/sweeps/<sweep> --record.
set -uo pipefail
if [ $# -lt 3 ] || [ $(( ($# - 1) % 2 )) -ne 0 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: lab/device/sweeps_until.sh SECONDS SPEC GLOB [SPEC GLOB ...]  (a GLOB for every SPEC; '*' = all runs)" >&2
  exit 2
fi
for ((i = 2; i <= $#; i += 2)); do
  [ -f "${!i}" ] || { echo "sweeps_until: no sweep spec '${!i}'" >&2; exit 2; }
done
deadline=$(( $(date +%s) + $1 )); shift
out="${OUT:-/tmp/out}"; mkdir -p "$out" /tmp/export
log="$out/sweeps.log"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true; } | tee -a "$log"
names=()
while [ $# -ge 2 ]; do
  spec=$1 glob=$2; shift 2
  name=$(sed -n 's/^name: *//p' "$spec" | head -1)
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -le 30 ]; then echo "sweeps_until: no time left for $spec --only '$glob'" | tee -a "$log"; continue; fi
  echo "== $(date -u +%T) o2o sweep $spec --only '$glob' (${left} s left)" | tee -a "$log"
  timeout -s TERM -k 40 "$left" python3 -m o2o.cli sweep "$spec" --only "$glob" --defer-eval --workers 1 2>&1 | tee -a "$log"
  echo "== $(date -u +%T) sweep exit ${PIPESTATUS[0]}" | tee -a "$log"
  case " ${names[*]-} " in *" $name "*) ;; *) names+=("$name");; esac
done
for name in "${names[@]}"; do
  [ -d "runs/sweeps/$name" ] || continue
  python3 -m o2o.cli sweep "runs/sweeps/$name" --status 2>&1 | tee -a "$log"
  python3 lab/device/strip_runs.py "runs/sweeps/$name" "/tmp/export/$name" 2>&1 | tee -a "$log"
  # the device tool brings back files of at most 16 MiB: a larger archive comes back in parts
  if [ "$(stat -c %s "/tmp/export/$name.tar.gz")" -le $((15 * 1024 * 1024)) ]; then
    cp "/tmp/export/$name.tar.gz" "$out/"
  else
    split -b 15M "/tmp/export/$name.tar.gz" "$out/$name.tar.gz.part-"
    echo "sweeps_until: $name.tar.gz is over 15 MiB, sent as $(ls "$out/$name.tar.gz.part-"* | wc -l) parts; here: cat $name.tar.gz.part-* > $name.tar.gz" | tee -a "$log"
  fi
  sha256sum "/tmp/export/$name.tar.gz" | tee -a "$log"
done
