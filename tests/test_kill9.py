"""kill -9 at any moment, inside checkpoint writes included: `--resume` continues bit-identical.

A killed process cannot clean up, so what is on disk is whatever the moment left: a half-written
checkpoint file in its temporary directory, a complete checkpoint whose ``latest`` pointer was not yet
replaced, metrics rows written after the last checkpoint. Each case kills a real `o2o` process with
SIGKILL, resumes the run in this process and compares it with an uninterrupted run of the same config:
every metrics column but the timings, the summary's numbers and the final checkpoint's arrays, byte for
byte. The kill inside a write is made by a wrapper around the checkpoint module's file writer (it
writes half the bytes, then SIGKILLs its own process); the kills at random moments come from this
process, after a random number of metrics rows and a random delay (seeded: the same moments every run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from o2o.cli import main
from o2o.runs import latest_checkpoint, read_metrics_csv
from procs import metrics_rows

# the file writer of o2o.runs.checkpoint, wrapped: the KILL_NTH-th write of a file named KILL_NAME
# (a substring of the name) writes half its bytes, then the process SIGKILLs itself
KILLER = """
import os, signal, sys
import o2o.runs.checkpoint as ck
name, nth, seen = os.environ["KILL_NAME"], int(os.environ["KILL_NTH"]), [0]
write = ck._write_file
def killing_write(path, data):
    if name in os.path.basename(str(path)):
        seen[0] += 1
        if seen[0] == nth:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return write(path, data)
ck._write_file = killing_write
from o2o.cli import main
sys.exit(main(sys.argv[1:]))
"""

TRAIN = ["train", "--algo", "sac", "--task", "Pendulum", "--seed", "3"] + [x for kv in [
    "agent.hidden_dims=[32,32]", "agent.batch_size=64", "online.iterations=6", "online.episodes_per_iteration=null",
    "online.steps_per_iteration=100", "online.updates_per_iteration=20", "online.warmup_steps=100", "online.update_after=100",
    "online.eval_every=2", "online.eval_episodes=1", "online.checkpoint_every=1"] for x in ("--set", kv)]
PRETRAIN = ["pretrain", "--algo", "bc-safe", "--dataset", "BallCircle-dsrl-small", "--seed", "3", "--steps", "600"] + [
    x for kv in ["agent.hidden_dims=[32,32]", "agent.batch_size=64", "offline.steps_per_call=100", "offline.eval_every=300",
                 "offline.eval_episodes=1", "offline.checkpoint_every=100"] for x in ("--set", kv)]
KINDS = {"train": TRAIN, "pretrain": PRETRAIN}


@pytest.fixture(autouse=True)
def _step_checkpoints_only(monkeypatch):
    monkeypatch.setenv("O2O_CHECKPOINT_EVERY_S", "0")  # the step-based checkpoints only: the same in every run


@pytest.fixture(scope="module")
def reference(build_once):
    """An uninterrupted run of each kind."""

    def build(root):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("O2O_CHECKPOINT_EVERY_S", "0")
            for kind, args in KINDS.items():
                assert main(["--no-progress", *args, "--out", str(root / kind)]) == 0

    return build_once("kill9-reference", build)


def _env(**extra):
    env = {**os.environ, "O2O_CHECKPOINT_EVERY_S": "0", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent / "src"), env.get("PYTHONPATH", "")])
    return env


def _resume_and_compare(kind: str, run: Path, reference: Path) -> None:
    if not (run / "summary.json").exists():  # a run that finished before the kill landed is compared as it is
        assert main(["--no-progress", KINDS[kind][0], "--resume", str(run)]) == 0
    ref = reference / kind
    a, b = read_metrics_csv(ref / "metrics.csv"), read_metrics_csv(run / "metrics.csv")
    assert sorted(a) == sorted(b)
    for k in a:
        if not k.startswith("perf/") and "time" not in k:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, run))
    for k, v in sa.items():
        if isinstance(v, (int, float)) and "time" not in k and "per_s" not in k and k != "resumed_from":
            assert sb[k] == v, k
    ca, cb = latest_checkpoint(ref), latest_checkpoint(run)
    assert ca.name == cb.name and (ca / "arrays.msgpack").read_bytes() == (cb / "arrays.msgpack").read_bytes()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp_")]  # the half-written temporaries went


@pytest.mark.parametrize("kind, name, nth", [
    ("train", "arrays.msgpack", 2),  # inside the second checkpoint's arrays
    ("train", "latest", 4),  # the fourth checkpoint complete, its `latest` pointer half-written
    ("pretrain", "host_state.json", 3),  # inside the third checkpoint's host state
    ("pretrain", "meta.json", 1),  # inside the first checkpoint's last file: no checkpoint yet
])
def test_kill9_inside_a_checkpoint_write_resumes_bit_identical(reference, tmp_path, kind, name, nth):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILLER, "--no-progress", *KINDS[kind], "--out", str(run)],
                          env=_env(KILL_NAME=name, KILL_NTH=str(nth)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if name == "meta.json" and nth == 1:
        assert latest_checkpoint(run) is None  # killed before any checkpoint was complete
        assert main(["--no-progress", KINDS[kind][0], "--resume", str(run)]) == 2  # nothing to resume: one line
        return
    _resume_and_compare(kind, run, reference)


@pytest.mark.parametrize("kind", ["train", "pretrain"])
def test_kill9_at_random_moments_resumes_bit_identical(reference, tmp_path, kind):
    rng = random.Random(f"kill9-{kind}")
    run = tmp_path / "run"
    total_rows = metrics_rows(reference / kind)
    for attempt in range(3):  # kill, resume in a subprocess, kill again: a run killed more than once
        done = metrics_rows(run)
        rows, delay = done + rng.randint(1, max(1, total_rows - done - 1)), rng.uniform(0.0, 0.5)
        args = [*KINDS[kind], "--out", str(run)] if not run.exists() else [KINDS[kind][0], "--resume", str(run)]
        proc = subprocess.Popen([sys.executable, "-m", "o2o.cli", "--no-progress", *args], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and metrics_rows(run) < rows:
                time.sleep(0.05)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        if proc.returncode == 0:  # it finished before the kill landed
            break
        assert proc.returncode == -signal.SIGKILL, err
        if latest_checkpoint(run) is None:  # killed before the first checkpoint: nothing to continue, start again
            import shutil

            shutil.rmtree(run)
    if latest_checkpoint(run) is None:
        assert main(["--no-progress", *KINDS[kind], "--out", str(run)]) == 0
    _resume_and_compare(kind, run, reference)
