"""o2o sweep: spec checks before launch, the index's resume rules, failed runs, interruption and resume
on the local process pool (a real SIGINT), and the Ray backend on a local Ray instance."""

import dataclasses
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from o2o.cli import main
from o2o.errors import ConfigError
from o2o.experiments import runners, sweep as sweep_mod
from o2o.experiments.index import SweepIndex
from o2o.experiments.spec import PlannedRun, load_spec
from o2o.experiments.sweep import SequentialBackend, make_backend, run_sweep
from procs import metrics_rows, run_and_signal

TINY = """\
name: tiny
seeds: {seeds}
tasks: [Pendulum]
methods: [sac]
set:
  agent.hidden_dims: [16, 16]
  agent.batch_size: 32
  online.iterations: {iterations}
  online.steps_per_iteration: 100
  online.updates_per_iteration: 5
  online.warmup_steps: 50
  online.update_after: 50
  online.eval_every: 1
  online.eval_episodes: 1
  online.checkpoint_every: 1
"""


def write_spec(tmp_path, text, name="spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("o2o: error: ") and "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------ bad input


BAD_SPECS = [
    # (spec text, what the error must name)
    ("tasks: [Pendulum]\nmethods:\n  - sac\n  - name: fast\n    algo: sax\n", ["line 5", "methods[1].algo", "'sax'", "sac-lag"]),
    ("tasks: [Pendulum, Hoper]\nmethods: [sac]\n", ["line 1", "tasks[1]", "'Hoper'", "Hopper"]),
    ("tasks: [Pendulum]\nmethods: [sac]\nset:\n  online.iteratons: 3\n", ["line 4", "set.online.iteratons", "did you mean 'online.iterations'"]),
    ("tasks: [Pendulum]\nmethods: [sac]\ngrid:\n  agent.actr_lr: [1.0e-4, 3.0e-4]\n", ["line 4", "grid.agent.actr_lr", "agent.actor_lr"]),
    ("tasks: [Pendulum]\nmethods:\n  - name: sac\n    sett: {online.iterations: 2}\n", ["line 4", "methods[0].sett", "did you mean 'set'"]),
    ("seed: 3\ntasks: [Pendulum]\nmethods: [sac]\n", ["line 1", "'seed'", "did you mean 'seeds'"]),
    ("tasks: [Pendulum\nmethods: [sac]\n", ["not valid YAML", "line 2"]),
    ("tasks: [Pendulum]\nmethods: [sac-lag]\n", ["line 2", "needs a task with costs"]),
    ("tasks: [Pendulum]\nmethods: [sac]\nset: {online.iterations: 0}\n", ["online.iterations must be > 0"]),
]


@pytest.mark.parametrize("text,needles", BAD_SPECS)
def test_bad_spec_refused_before_anything_is_written(tmp_path, capsys, text, needles):
    spec = write_spec(tmp_path, text)
    code = main(["--no-progress", "sweep", str(spec), "--out", str(tmp_path / "sweep")])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (tmp_path / "sweep").exists()


def test_unreachable_ray_address_refused_quickly(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'o2o[ray]')")
    spec = write_spec(tmp_path, TINY.format(seeds=1, iterations=1))
    start = time.perf_counter()
    code = main(["--no-progress", "sweep", str(spec), "--out", str(tmp_path / "sweep"), "--backend", "ray", "--address", "127.0.0.1:1"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "cannot reach a Ray cluster at 127.0.0.1:1" in line
    assert time.perf_counter() - start < 15  # ray.init itself would wait minutes
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(ConfigError, match="malformed"):
        sweep_mod.check_ray_address("nohost")


def test_spec_plans_every_combination_and_grid_variants(tmp_path):
    spec = load_spec(write_spec(tmp_path, TINY.format(seeds=2, iterations=1) + "grid:\n  agent.actor_lr: [1.0e-4, 3.0e-4]\n"))
    assert len(spec.runs) == 4
    ids = [r.run_id for r in spec.runs]
    assert len(set(ids)) == 4 and all(i.startswith("sac/Pendulum/seed") for i in ids)
    lrs = sorted({r.config["agent"]["actor_lr"] for r in spec.runs})
    assert lrs == [1e-4, 3e-4]
    assert len({r.config_hash for r in spec.runs}) == 4
    assert all(r.config["online"]["iterations"] == 1 for r in spec.runs)


def test_pretrain_and_finetune_kinds_build_and_check_up_front(tmp_path):
    text = (
        "tasks: [{name: BallCircle, dataset: BallCircle-dsrl-small}]\n"
        "methods:\n"
        "  - {name: bc-safe, kind: pretrain, set: {offline.steps: 200, offline.steps_per_call: 100}}\n"
        "  - {name: from-scratch, kind: finetune, set: {online.iterations: 2}}\n"
    )
    spec = load_spec(write_spec(tmp_path, text))
    pre, fine = spec.runs
    assert (pre.kind, pre.config["algo"], pre.config["dataset"], pre.config["offline"]["steps"]) == ("pretrain", "bc-safe", "BallCircle-dsrl-small", 200)
    assert (fine.kind, fine.config["method"], fine.config["online"]["iterations"]) == ("finetune", "from-scratch", 2)
    assert runners.KINDS["pretrain"].load(pre.config).offline.steps == 200  # what a worker rebuilds
    ocr = load_spec(write_spec(tmp_path, "tasks: [Hopper]\nmethods:\n  - {name: sc, kind: finetune, algo: o2td3-scratch}\n", "ocr.yaml"))
    assert ocr.runs[0].config["method"] == "o2td3-scratch" and "ocr" in ocr.runs[0].config
    bad = [
        ("tasks: [BallCircle]\nmethods:\n  - {name: cpq, kind: pretrain, dataset: no-such-data}\n", ["line 3", "no dataset named 'no-such-data'"]),
        ("tasks: [BallCircle]\nmethods:\n  - {name: cpq, kind: pretrain}\n", ["line 3", "needs a dataset for task BallCircle"]),
        ("tasks: [BallCircle]\nmethods:\n  - name: mv\n    kind: finetune\n    algo: marvel\n    pretrained: /nowhere/{task}/s{seed}\n",
         ["line 3", "/nowhere/BallCircle/s0"]),
        ("tasks: [BallCircle]\nmethods:\n  - {name: x, kind: finetune, algo: marvl}\n", ["line 3", "'marvl'", "marvel"]),
        ("tasks: [BallCircle]\nmethods:\n  - {name: x, kind: finetun}\n", ["line 3", "unknown run kind 'finetun'"]),
        # OCR-CFT methods are checked by their own rules (they have no VPA stage)
        ("tasks: [Hopper]\nmethods:\n  - {name: sc, kind: finetune, algo: o2td3-scratch, set: {ocr.reference: bestt}}\n",
         ["line 3", "ocr.reference='bestt'", "best, interval"]),
    ]
    for text, needles in bad:
        with pytest.raises(ConfigError) as err:
            load_spec(write_spec(tmp_path, text, "bad.yaml"))
        for needle in needles:
            assert needle in str(err.value), (needle, str(err.value))


def test_only_plans_the_matching_runs_and_leaves_the_others_unbuilt(tmp_path, capsys):
    # CarRun's dataset does not exist: the whole spec is refused, but --only on BallCircle plans and runs
    text = (
        "name: part\nseeds: 2\n"
        "tasks: [{name: BallCircle, dataset: BallCircle-dsrl-small}, {name: CarRun, dataset: no-such-data}]\n"
        "methods:\n  - {name: bc-safe, kind: pretrain, set: {offline.steps: 20, offline.steps_per_call: 10, offline.eval_every: 20, "
        "offline.eval_episodes: 1, agent.hidden_dims: [8, 8]}}\n"
    )
    path = write_spec(tmp_path, text)
    with pytest.raises(ConfigError, match="no dataset named 'no-such-data'"):
        load_spec(path)
    spec = load_spec(path, only=["*/BallCircle/*"])
    assert [r.run_id for r in spec.runs] == ["bc-safe/BallCircle/seed0", "bc-safe/BallCircle/seed1"]
    assert [r.run_id for r in load_spec(path, only=["bc-safe/BallCircle/seed1"]).runs] == ["bc-safe/BallCircle/seed1"]
    with pytest.raises(ConfigError, match="--only 'bc-safe/Hopper/\\*' matches none of the 4 runs"):
        load_spec(path, only=["*/BallCircle/*", "bc-safe/Hopper/*"])
    # the command: a pattern that matches nothing is one line, exit 2, nothing written
    out = tmp_path / "sw"
    assert main(["sweep", str(path), "--out", str(out), "--only", "nope/*"]) == 2
    assert "matches none of the 4 runs" in one_error_line(capsys.readouterr().err) and not out.exists()
    assert main(["--no-progress", "sweep", str(path), "--out", str(out), "--only", "*/BallCircle/seed1", "--backend", "sequential"]) == 0
    assert _index_status(out) == {"bc-safe/BallCircle/seed1": ("finished", 1)}
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--only", "bc-safe/Ball*/seed0", "--backend", "sequential"]) == 0
    assert set(_index_status(out)) == {"bc-safe/BallCircle/seed0", "bc-safe/BallCircle/seed1"}
    # the progress counts this launch's runs only, not seed1 finished by the launch before
    printed = capsys.readouterr().out
    shown = re.findall(r"sweep part: (\d+)/(\d+)", printed)
    assert shown and shown[-1] == ("1", "1") and all(int(a) <= int(b) for a, b in shown), shown
    assert "sweep part: 1 finished, 0 failed, 0 not finished (of the 1 runs this launch planned; the sweep directory holds 2)" in printed
    # the report says the sweep holds part of its spec, with every launch's patterns
    assert main(["report", str(out), "--out", str(tmp_path / "page.md")]) == 0
    page = (tmp_path / "page.md").read_text()
    assert "only the runs matching `--only '*/BallCircle/seed1'`, `--only 'bc-safe/Ball*/seed0'`" in page
    capsys.readouterr()
    assert main(["sweep", str(out), "--status"]) == 0
    assert "part of its spec: the runs matching --only '*/BallCircle/seed1' --only 'bc-safe/Ball*/seed0'" in capsys.readouterr().out
    # a sweep that planned its whole spec once stays whole after a later --only launch
    whole = write_spec(tmp_path, text.replace(", {name: CarRun, dataset: no-such-data}", "").replace("seeds: 2", "seeds: 1"), "whole.yaml")
    assert main(["--no-progress", "sweep", str(whole), "--out", str(tmp_path / "w"), "--backend", "sequential"]) == 0
    assert main(["--no-progress", "sweep", str(whole), "--out", str(tmp_path / "w"), "--only", "*/seed0", "--backend", "sequential"]) == 0
    assert main(["report", str(tmp_path / "w"), "--out", str(tmp_path / "whole.md")]) == 0
    assert "--only" not in (tmp_path / "whole.md").read_text()
    # patterns that match every run of the spec make a partial sweep whole (sweeps_until.sh's final '*')
    two = write_spec(tmp_path, text.replace(", {name: CarRun, dataset: no-such-data}", ""), "two.yaml")
    assert load_spec(two, only=["*"]).only == () and load_spec(two, only=["*/seed0"]).only == ("*/seed0",)
    assert main(["--no-progress", "sweep", str(two), "--out", str(tmp_path / "t"), "--only", "*/seed0", "--backend", "sequential"]) == 0
    assert main(["--no-progress", "sweep", str(two), "--out", str(tmp_path / "t"), "--only", "*", "--backend", "sequential"]) == 0
    assert main(["report", str(tmp_path / "t"), "--out", str(tmp_path / "two.md")]) == 0
    assert "--only" not in (tmp_path / "two.md").read_text()
    capsys.readouterr()


# ------------------------------------------------------------------------------ the index


def planned(run_id, h="h0", seed=0):
    return PlannedRun(run_id, "sac", "Pendulum", seed, "", "train", {"seed": seed, "x": h}, h)


def test_index_resume_rules(tmp_path):
    runs = [planned(f"sac/Pendulum/seed{i}", seed=i) for i in range(5)]
    with SweepIndex(tmp_path) as index:
        index.register(runs)
        ids = [r.run_id for r in runs]
        assert index.plan(ids)[0] == ids  # all pending
        index.mark_running(ids[0])
        index.mark_finished(ids[0], wall_time_s=1.0, resumed_from=None)
        index.mark_running(ids[1])
        index.mark_failed(ids[1], "RuntimeError: boom", "Traceback ...")
        index.mark_running(ids[2])  # the sweep died with this one in flight: left 'running'
        index.mark_running(ids[3])
        index.mark_interrupted([ids[3]])
    with SweepIndex(tmp_path) as index:  # a new sweep process opens the same file
        to_run, finished, failed = index.plan(ids)
        assert to_run == [ids[2], ids[3], ids[4]]
        assert [r.run_id for r in finished] == [ids[0]]
        assert [(r.run_id, r.error) for r in failed] == [(ids[1], "RuntimeError: boom")]
        assert index.plan(ids, retry_failed=True)[0] == [ids[1], ids[2], ids[3], ids[4]]
        assert index.counts() == {"pending": 1, "running": 1, "finished": 1, "failed": 1, "interrupted": 1}
        assert index.record(ids[3]).status == "interrupted" and index.record(ids[3]).attempts == 1
        index.register(runs)  # registering the same runs again changes nothing
        assert index.record(ids[0]).status == "finished"
        with pytest.raises(ConfigError, match="already in .* with another config"):
            index.register([planned(ids[0], h="h1")])  # the spec changed under a finished run
        assert index.record(ids[0]).config_hash == "h0"


# ------------------------------------------------------------------------------ end to end, in process


def test_failed_run_is_reported_not_counted_and_can_be_retried(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, TINY.format(seeds=2, iterations=2)))
    sweep_dir = tmp_path / "sweep"
    blocker = sweep_dir / "runs" / "sac" / "Pendulum" / "seed1"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")  # RunDir.create refuses: this run fails at run time

    out = run_sweep(spec, sweep_dir, backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    assert out.counts["finished"] == 1 and out.counts["failed"] == 1
    assert [run_id for run_id, _ in out.failed] == ["sac/Pendulum/seed1"]
    assert "is a file, not a directory" in out.failed[0][1]
    with SweepIndex(sweep_dir) as index:
        rec = index.record("sac/Pendulum/seed1")
        assert rec.status == "failed" and "RunDirError" in rec.traceback

    # launched again: the finished run is kept, the failed one skipped (not retried silently)
    calls = []
    real_execute = sweep_mod.execute_run
    monkeypatch.setattr(sweep_mod, "execute_run", lambda job: calls.append(job["run_id"]) or real_execute(job))
    out = run_sweep(spec, sweep_dir, backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    assert calls == [] and out.kept == ["sac/Pendulum/seed0"] and out.counts["failed"] == 1

    blocker.unlink()
    out = run_sweep(spec, sweep_dir, backend=SequentialBackend(), retry_failed=True, progress=False, echo=lambda *_: None)
    assert calls == ["sac/Pendulum/seed1"]
    assert out.counts == {"pending": 0, "running": 0, "finished": 2, "failed": 0, "interrupted": 0}
    with SweepIndex(sweep_dir) as index:
        assert index.record("sac/Pendulum/seed1").attempts == 2
        assert index.record("sac/Pendulum/seed0").attempts == 1


def test_interrupted_sweep_resumes_without_rerunning_finished_runs(tmp_path, monkeypatch):
    """Ctrl-C in the middle of the second run: the first stays finished and is not run again; the
    second continues from its checkpoint; the metrics of the continued run match an uninterrupted one."""
    from o2o.loops.online import run_online
    from o2o.runs import read_metrics_csv

    spec = load_spec(write_spec(tmp_path, TINY.format(seeds=2, iterations=3)))
    sweep_dir = tmp_path / "sweep"
    real_run = runners.KINDS["train"].run
    started = []

    def interrupting_run(cfg, out, resume):
        started.append((out.name, resume))
        if out.name == "seed1" and not resume:
            def stop_after_two(trainer, metrics):
                if trainer.counters["iteration"] == 2:
                    raise KeyboardInterrupt
            return run_online(cfg, out, resume=resume, progress=False, after_iteration=stop_after_two)
        return real_run(cfg, out, resume)

    monkeypatch.setitem(runners.KINDS, "train", dataclasses.replace(runners.KINDS["train"], run=interrupting_run))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, sweep_dir, backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    with SweepIndex(sweep_dir) as index:
        assert index.record("sac/Pendulum/seed0").status == "finished"
        assert index.record("sac/Pendulum/seed1").status == "interrupted"
    summary0 = sweep_dir / "runs/sac/Pendulum/seed0/summary.json"
    mtime0 = summary0.stat().st_mtime_ns

    out = run_sweep(spec, sweep_dir, backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    assert started == [("seed0", False), ("seed1", False), ("seed1", True)]  # seed0 ran once
    assert out.kept == ["sac/Pendulum/seed0"] and out.executed == ["sac/Pendulum/seed1"]
    assert summary0.stat().st_mtime_ns == mtime0
    with SweepIndex(sweep_dir) as index:
        rec = index.record("sac/Pendulum/seed1")
        assert rec.status == "finished" and rec.resumed_from == 1 and rec.attempts == 2

    # the continued run equals an uninterrupted one
    fresh = run_online(runners.KINDS["train"].load(spec.runs[1].config), tmp_path / "fresh", progress=False)
    got = read_metrics_csv(sweep_dir / "runs/sac/Pendulum/seed1")
    want = read_metrics_csv(tmp_path / "fresh")
    assert fresh["env_steps"] == 300
    for key in ("eval/return", "loss/critic_loss", "env_steps"):
        assert list(got[key]) == list(want[key]), key


def test_runs_found_finished_are_recorded_without_a_wall_time(tmp_path, capsys):
    """A finished run directory the index does not know (copied in from another sweep, or an index
    lost) is recorded as finished, not run again, and with no wall time ("-"), not a made-up 0.0."""
    spec = load_spec(write_spec(tmp_path, TINY.format(seeds=1, iterations=1)))
    sweep_dir = tmp_path / "sweep"
    run_sweep(spec, sweep_dir, backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    with SweepIndex(sweep_dir) as index:
        assert index.record("sac/Pendulum/seed0").wall_time_s > 0
    (sweep_dir / "index.sqlite").unlink()
    out = run_sweep(spec, sweep_dir, backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    assert out.executed == ["sac/Pendulum/seed0"]  # "executed": read back from its summary, not trained
    with SweepIndex(sweep_dir) as index:
        rec = index.record("sac/Pendulum/seed0")
        assert rec.status == "finished" and rec.wall_time_s is None
    capsys.readouterr()
    assert main(["sweep", str(sweep_dir), "--status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "sac/Pendulum/seed0" in x)
    assert line.split()[1:4] == ["finished", "1", "-"]


def test_second_sweep_process_on_the_same_directory_is_refused(tmp_path):
    sweep_dir = tmp_path / "sweep"
    lock = sweep_mod._Lock(sweep_dir)
    try:
        code = subprocess.run(
            [sys.executable, "-c", f"from o2o.experiments.sweep import _Lock; from pathlib import Path; _Lock(Path({str(sweep_dir)!r}))"],
            capture_output=True, text=True,
        )
        assert code.returncode != 0 and f"pid {os.getpid()}" in code.stderr
    finally:
        lock.release()


# ------------------------------------------------------------------------------ local pool, real signal


def _index_status(sweep_dir: Path) -> dict[str, tuple[str, int]]:
    path = sweep_dir / "index.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        return {r: (s, a) for r, s, a in db.execute("SELECT run_id, status, attempts FROM runs")}


@pytest.mark.parametrize("step", ["mark_running", "mark_finished"])
def test_a_stop_between_index_updates_leaves_no_run_marked_running(tmp_path, monkeypatch, step):
    """A stop signal raises KeyboardInterrupt wherever the sweep's loop is. Right after the index marked
    a run running (before it was dispatched) the run ends interrupted; right after it was recorded
    finished, it stays finished; never 'running', which --status shows as a run still in flight."""
    spec = load_spec(write_spec(tmp_path, TINY.format(seeds=1, iterations=1)))
    real = getattr(SweepIndex, step)

    def then_stop(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(SweepIndex, step, then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "sweep", backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    assert _index_status(tmp_path / "sweep") == {"sac/Pendulum/seed0": ("interrupted" if step == "mark_running" else "finished", 1)}


def test_local_pool_interrupted_by_sigint_and_resumed(tmp_path):
    """The must-show in small: `o2o sweep` on a 2-worker pool, SIGINT once the first run has finished,
    then the same command again: it finishes without running the finished runs again."""
    spec = write_spec(tmp_path, TINY.format(seeds=3, iterations=4))
    sweep_dir = tmp_path / "sweep"
    cmd = [str(Path(sys.executable).parent / "o2o"), "--no-progress", "sweep", str(spec), "--out", str(sweep_dir), "--workers", "2"]
    # SIGINT as a terminal's Ctrl-C delivers it (a test run in the background would pass on "ignore SIGINT")
    rc, out, err = run_and_signal(cmd, lambda: any(s == "finished" for s, _ in _index_status(sweep_dir).values()), signal.SIGINT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    status = _index_status(sweep_dir)
    finished_first = {r for r, (s, _) in status.items() if s == "finished"}
    assert rc == 130, (out, err)
    assert "sweep interrupted" in err and "Traceback" not in err, err
    assert 1 <= len(finished_first) < 3, status
    assert all(s in ("finished", "interrupted", "pending") for s, _ in status.values()), status
    mtimes = {r: (sweep_dir / "runs" / r / "summary.json").stat().st_mtime_ns for r in finished_first}

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"{len(finished_first)} finished (kept, not run again)" in done.stdout
    status = _index_status(sweep_dir)
    assert all(s == "finished" for s, _ in status.values()), status
    for r in finished_first:
        assert status[r][1] == 1  # one attempt: never run again
        assert (sweep_dir / "runs" / r / "summary.json").stat().st_mtime_ns == mtimes[r]


def test_sigusr1_stops_a_sweep_whose_workers_checkpoint_where_they_are(tmp_path):
    """A batch system's warning (SIGUSR1) to the sweep: it stops its workers with SIGTERM, and each run in
    flight checkpoints at the end of its current iteration (o2o.stop), not at its last step-based
    checkpoint; launching the sweep again finishes it."""
    # no evaluation and no step-based checkpoint before the last iteration: only the stop's checkpoint
    spec = write_spec(tmp_path, TINY.format(seeds=2, iterations=150).replace("online.checkpoint_every: 1", "online.checkpoint_every: 150")
                      .replace("online.eval_every: 1", "online.eval_every: 150"))
    sweep_dir = tmp_path / "sweep"
    cmd = [str(Path(sys.executable).parent / "o2o"), "--no-progress", "sweep", str(spec), "--out", str(sweep_dir), "--workers", "2"]
    env = {**os.environ, "O2O_CHECKPOINT_EVERY_S": "0"}  # no time-based checkpoints: only the stop's
    runs = [sweep_dir / "runs" / "sac" / "Pendulum" / f"seed{k}" for k in (0, 1)]
    rc, out, err = run_and_signal(cmd, lambda: all(metrics_rows(r) >= 2 for r in runs), signal.SIGUSR1, env=env)
    assert rc == 128 + signal.SIGUSR1 and "sweep interrupted by SIGUSR1" in err and "Traceback" not in err, (out, err)
    status = _index_status(sweep_dir)
    assert all(s == "interrupted" for s, _ in status.values()), status
    from o2o.runs import checkpoint_step, latest_checkpoint

    steps = [checkpoint_step(latest_checkpoint(r)) for r in runs]
    assert all(2 <= k < 150 for k in steps), steps  # where each run was stopped, not a step-based checkpoint
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert all(f"continued from checkpoint {k}" in done.stdout for k in steps), done.stdout
    assert all(s == "finished" for s, _ in _index_status(sweep_dir).values())


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``signum`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_idle_worker_told_to_stop_hands_its_next_job_back_as_interrupted():
    """A pool worker that got SIGTERM while waiting for work does not start the job it is then given:
    it returns it as interrupted (the pool replaces the worker) and exits 128 + SIGTERM."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    worker = ctx.Process(target=sweep_mod._worker_loop, args=(jobs, results, 1, None, {}))
    worker.start()
    try:
        deadline = time.time() + 120  # until it has installed its SIGTERM handler (Linux: SigCgt in /proc)
        while time.time() < deadline and not _catches(worker.pid, signal.SIGTERM):
            time.sleep(0.1)
        os.kill(worker.pid, signal.SIGTERM)
        time.sleep(0.5)
        jobs.put({"kind": "train", "run_id": "sac/Pendulum/seed0", "config": {}, "run_dir": "/nonexistent"})
        pid, out = results.get(timeout=60)
        worker.join(timeout=60)
    finally:
        if worker.is_alive():
            worker.kill()
    assert pid == worker.pid and [r["status"] for r in out] == ["interrupted"] and "before the run started" in out[0]["error"]
    assert worker.exitcode == 128 + signal.SIGTERM


# ------------------------------------------------------------------------------ Ray


@pytest.mark.filterwarnings("ignore:os.fork")  # ray.init starts its processes with fork + exec: harmless
def test_ray_backend_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'o2o[ray]'; make test installs it)")
    spec = load_spec(write_spec(tmp_path, TINY.format(seeds=2, iterations=2)))
    # a one-CPU instance (the cheapest to start): the backend's slots follow the cluster's CPUs, not --workers
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        backend = make_backend("ray", workers=2, threads=1)
        out = run_sweep(spec, tmp_path / "sweep", backend=backend, progress=False, echo=lambda *_: None)
    finally:
        ray.shutdown()
    assert backend.slots == 1
    assert out.counts["finished"] == 2 and not out.failed
    with SweepIndex(tmp_path / "sweep") as index:
        workers = {r.worker for r in index.records()}
    assert all((tmp_path / "sweep/runs" / r.run_id / "summary.json").is_file() for r in spec.runs)
    assert all(w and str(os.getpid()) not in w for w in workers)  # ran in Ray worker processes


def test_status_tells_a_stopped_sweeps_running_runs_from_live_ones(tmp_path, capsys):
    """`--status` on a sweep whose process was killed: the runs the index still records as running show
    as interrupted, with how to continue; while a sweep process holds the directory they show as running."""
    spec = load_spec(write_spec(tmp_path, TINY.format(seeds=2, iterations=1)))
    sweep_dir = tmp_path / "sweep"
    lock = sweep_mod._Lock(sweep_dir)
    with SweepIndex(sweep_dir) as index:
        index.register(spec.runs)
        index.mark_running("sac/Pendulum/seed0", "local")

    def status_of(run_id):
        capsys.readouterr()
        assert main(["sweep", str(sweep_dir), "--status"]) == 0
        out = capsys.readouterr().out
        return next(x for x in out.splitlines() if run_id in x).split()[1], out

    try:
        st, out = status_of("sac/Pendulum/seed0")
        assert st == "running" and f"pid {os.getpid()}" in out.splitlines()[0]
    finally:
        lock.release()
    st, out = status_of("sac/Pendulum/seed0")
    assert st == "interrupted" and "no sweep process" in out.splitlines()[0]
    assert f"o2o sweep {sweep_dir}` continues them" in out
    assert status_of("sac/Pendulum/seed1")[0] == "pending"


def test_a_sweep_or_archive_recorded_before_a_config_key_existed_is_the_same_experiment(tmp_path):
    """o2o adds config keys whose defaults keep the behaviour from before (reward_cql_alpha, ...). A sweep
    index or a results archive recorded by an o2o without such a key is continued / adopted, not refused
    as another experiment; the key planned at another value than its default still is one."""
    import json

    from o2o.experiments.report import write_report
    from o2o.experiments.spec import config_hash

    def as_if_older(config):  # the config an o2o without agent.actor_lr recorded
        config = json.loads(json.dumps(config))
        del config["agent"]["actor_lr"]
        return config

    spec_path = write_spec(tmp_path, TINY.format(seeds=2, iterations=1))
    first = tmp_path / "first"
    quiet = dict(backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    run_sweep(load_spec(spec_path), first, **quiet)
    archive = write_report([first], tmp_path / "docs/tiny.md")["archives"][0]
    planned = {r.run_id: r for r in load_spec(spec_path).runs}

    db = sqlite3.connect(first / "index.sqlite")
    for run_id, run in planned.items():
        old = as_if_older(run.config)
        db.execute("UPDATE runs SET config_json=?, config_hash=? WHERE run_id=?",
                   (json.dumps(old, sort_keys=True), config_hash("train", old), run_id))
    db.commit()
    db.close()
    out = run_sweep(load_spec(spec_path), first, **quiet)
    assert out.executed == [] and sorted(out.kept) == sorted(planned)
    with SweepIndex(first) as index:  # recorded anew, complete
        assert {r.run_id: r.config_hash for r in index.records()} == {k: r.config_hash for k, r in planned.items()}

    index_json = archive / "index.json"
    data = json.loads(index_json.read_text())
    for rec in data["runs"]:
        rec["config"] = as_if_older(rec["config"])
        rec["config_hash"] = config_hash("train", rec["config"])
    index_json.write_text(json.dumps(data))
    out = run_sweep(load_spec(spec_path), tmp_path / "second", adopt=[archive], **quiet)
    assert out.executed == [] and sorted(out.kept) == sorted(planned)

    # another actor learning rate than the default the older o2o used: another experiment
    other = write_spec(tmp_path, TINY.format(seeds=2, iterations=1) + "  agent.actor_lr: 0.001\n", name="other.yaml")
    with pytest.raises(ConfigError, match=r"agent.actor_lr: 0.0003 -> 0.001"):
        run_sweep(load_spec(other), tmp_path / "third", adopt=[archive], **quiet)


def test_sweep_adopts_the_finished_runs_of_an_archive_and_runs_only_the_rest(tmp_path, capsys):
    """A sweep continued on a machine that lost its directory: `--adopt` takes the finished runs of the
    archive `o2o report` wrote (same run id and config hash), and only the others are trained."""
    import shutil

    from o2o.experiments.report import write_report

    first = tmp_path / "first"
    run_sweep(load_spec(write_spec(tmp_path, TINY.format(seeds=2, iterations=1))), first,
              backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    archive = write_report([first], tmp_path / "docs/tiny.md")["archives"][0]
    metrics0 = (first / "runs/sac/Pendulum/seed0/metrics.csv").read_text()
    shutil.rmtree(first)

    # another experiment (another budget) is refused before anything is written
    other = write_spec(tmp_path, TINY.format(seeds=3, iterations=2), name="other.yaml")
    capsys.readouterr()
    assert main(["sweep", str(other), "--out", str(tmp_path / "x"), "--adopt", str(archive), "--backend", "sequential"]) == 2
    assert "has another config than the spec plans" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()

    lines = []
    out = run_sweep(load_spec(write_spec(tmp_path, TINY.format(seeds=3, iterations=1), name="three.yaml")), tmp_path / "second",
                    backend=SequentialBackend(), progress=False, adopt=[archive], echo=lines.append)
    assert out.executed == ["sac/Pendulum/seed2"] and sorted(out.kept) == ["sac/Pendulum/seed0", "sac/Pendulum/seed1"]
    assert any("adopted 2 finished runs" in line for line in lines)
    assert (tmp_path / "second/runs/sac/Pendulum/seed0/metrics.csv").read_text() == metrics0
    # a report of a sweep directory that lacks some of the archive's finished runs does not overwrite it
    third = tmp_path / "elsewhere" / "first"  # the same sweep name, run again with one seed
    run_sweep(load_spec(write_spec(tmp_path, TINY.format(seeds=1, iterations=1), name="one.yaml")), third,
              backend=SequentialBackend(), progress=False, echo=lambda *_: None)
    with pytest.raises(ConfigError, match="holds 1 finished runs that .* has not .*--adopt"):
        write_report([third], tmp_path / "docs/tiny.md")
    assert (archive / "runs/sac/Pendulum/seed1/summary.json").is_file()
    with SweepIndex(tmp_path / "second") as index:
        rec = index.record("sac/Pendulum/seed0")
        assert rec.status == "finished" and rec.worker.startswith("adopted from") and rec.wall_time_s > 0


def test_progress_position_of_runs_in_flight(tmp_path):
    """The sweep's progress line says where each run in flight is, from the files the run writes."""
    from o2o.experiments.sweep import _position

    train = planned("sac/Pendulum/seed0")
    train = dataclasses.replace(train, config={"online": {"iterations": 10}})
    run_dir = tmp_path / "run"
    assert _position(run_dir, train) == "starting"
    (run_dir / "bridge").mkdir(parents=True)
    assert _position(run_dir, train) == "bridge"  # a fine-tuning run re-evaluating / aligning
    (run_dir / "metrics.csv").write_text("step,env_steps\n")
    assert _position(run_dir, train) == "bridge"  # header only
    (run_dir / "metrics.csv").write_text("step,env_steps\n" + "".join(f"{i},{1000 * i}.0\n" for i in range(4)) + "\n")
    assert _position(run_dir, train) == "3/10"
    o2sac = dataclasses.replace(train, config={"method": "o2sac", "algo": "o2sac", "online": {"iterations": 10},
                                               "ocr": {"reeval_steps": 50000, "align_steps": 10000}})
    bridge_dir = tmp_path / "o2sac"
    (bridge_dir / "bridge").mkdir(parents=True)
    (bridge_dir / "bridge" / "metrics.csv").write_text("step,reeval_critic_loss\n1000,0.5\n2000,0.4\n")
    assert _position(bridge_dir, o2sac) == "bridge 2000/60000"  # its bridge's gradient steps over their budget
    no_reeval = dataclasses.replace(o2sac, config={**o2sac.config, "method": "o2sac-no-reeval"})
    assert _position(bridge_dir, no_reeval) == "bridge 2000/10000"  # alignment only
    pre = dataclasses.replace(train, kind="pretrain", config={"offline": {"steps": 10000}})
    (run_dir / "metrics.csv").write_text("step,loss\n" + "".join(f"{i * 100},{0.1234567:.7f}\n" for i in range(1, 401)))
    assert (run_dir / "metrics.csv").stat().st_size > 4096  # read from the file's tail, a partial first line dropped
    assert _position(run_dir, pre) == "40000/10000"


def test_adopting_needs_no_dataset_for_the_runs_it_adopts(tmp_path, capsys):
    """A machine without a task's dataset continues a sweep from its archive: the adopted (finished) runs
    are never run, so their missing dataset is no error; a run of that task still to train is one."""
    import shutil

    from o2o.experiments.report import write_report
    from o2o.data.registry import EMBEDDED

    data = tmp_path / "data.hdf5"
    shutil.copy(EMBEDDED["BallCircle-dsrl-small"], data)
    text = ("name: adopt\nseeds: {seeds}\ntasks: [{{name: BallCircle, dataset: " + str(data) + "}}]\n"
            "methods:\n  - {{name: bc-safe, kind: pretrain, set: {{offline.steps: 20, offline.steps_per_call: 10, offline.eval_every: 20, "
            "offline.eval_episodes: 1, agent.hidden_dims: [8, 8]}}}}\n")
    first = tmp_path / "first" / "adopt"
    assert main(["--no-progress", "sweep", str(write_spec(tmp_path, text.format(seeds=1))), "--out", str(first), "--backend", "sequential"]) == 0
    archive = write_report([first], tmp_path / "docs/adopt.md")["archives"][0]
    data.unlink()  # the new machine lacks the dataset
    capsys.readouterr()
    second = tmp_path / "second"
    one = write_spec(tmp_path, text.format(seeds=1), name="one.yaml")
    assert main(["--no-progress", "sweep", str(one), "--out", str(second), "--adopt", str(archive), "--backend", "sequential"]) == 0
    assert "adopted 1 finished runs" in capsys.readouterr().out
    assert _index_status(second) == {"bc-safe/BallCircle/seed0": ("finished", 1)}
    # seed 1 is not in the archive: it would train here, so its missing dataset is the sweep's error
    two = write_spec(tmp_path, text.format(seeds=2), name="two.yaml")
    assert main(["--no-progress", "sweep", str(two), "--out", str(tmp_path / "third"), "--adopt", str(archive), "--backend", "sequential"]) == 2
    assert "data.hdf5: no such dataset file" in one_error_line(capsys.readouterr().err) and not (tmp_path / "third").exists()


def test_an_only_launch_adopts_the_archives_earlier_seeds_so_its_report_keeps_them(tmp_path, capsys):
    """One seed per session on fresh machines: `--only '*/seed1' --adopt ARCHIVE` takes in the archive's
    finished seed 0 too (adopted, never run; seed 2 stays unplanned), so the report of the sweep directory
    holds both seeds and may replace the archive (a report that lacked seed 0 would be refused)."""
    import shutil

    from o2o.experiments.report import write_report

    text = ("name: seeds\nseeds: 3\ntasks: [{name: BallCircle, dataset: BallCircle-dsrl-small}]\n"
            "methods:\n  - {name: bc-safe, kind: pretrain, set: {offline.steps: 20, offline.steps_per_call: 10, offline.eval_every: 20, "
            "offline.eval_episodes: 1, agent.hidden_dims: [8, 8]}}\n")
    spec = write_spec(tmp_path, text)
    first = tmp_path / "first" / "seeds"
    assert main(["--no-progress", "sweep", str(spec), "--out", str(first), "--only", "*/seed0", "--backend", "sequential"]) == 0
    archive = write_report([first], tmp_path / "docs/seeds.md")["archives"][0]
    shutil.rmtree(tmp_path / "first")  # the next session's machine is a fresh one
    second = tmp_path / "second" / "seeds"
    capsys.readouterr()
    assert main(["sweep", str(spec), "--out", str(second), "--only", "*/seed1", "--adopt", str(archive), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "1 runs planned" in dry and "1 more outside --only, finished in the --adopt archives" in dry and not second.exists()
    assert re.search(r"seed0 .* adopted from the archive at launch .* \[outside --only\]", dry) and "seed2" not in dry
    assert re.search(r"seed1 .* new", dry)
    assert main(["--no-progress", "sweep", str(spec), "--out", str(second), "--only", "*/seed1", "--adopt", str(archive),
                 "--backend", "sequential"]) == 0
    printed = capsys.readouterr().out
    assert "adopted 1 finished runs" in printed and "not in this spec" not in printed
    assert "sweep seeds: 1 finished, 0 failed, 0 not finished (of the 1 runs this launch planned; the sweep directory holds 2)" in printed
    assert _index_status(second) == {"bc-safe/BallCircle/seed0": ("finished", 1), "bc-safe/BallCircle/seed1": ("finished", 1)}
    assert write_report([second], tmp_path / "docs/seeds.md")["archives"][0] == archive
    assert sorted(p.name for p in (archive / "runs/bc-safe/BallCircle").iterdir()) == ["seed0", "seed1"]
    page = (tmp_path / "docs/seeds.md").read_text()
    assert "only the runs matching `--only '*/seed0'`, `--only '*/seed1'`" in page


# ------------------------------------------------------------------- the specs o2o ships resolve
REPO = Path(__file__).resolve().parents[1]


def _shipped_specs_without_inputs() -> list[Path]:
    """The shipped sweep specs that need no earlier run (fine-tuning specs need their pre-trained runs)."""
    import yaml

    specs = sorted((REPO / "lab").glob("*/*.yaml")) + sorted((REPO / "examples/sweeps").glob("*.yaml"))
    keep = []
    for path in specs:
        data = yaml.safe_load(path.read_text())
        # a sweep spec names its tasks; a budget file for `o2o marvel --budget` (marvel-budget.yaml) does not
        if "tasks" in data and all(not isinstance(m, dict) or m.get("kind", "train") != "finetune" for m in data.get("methods", [])):
            keep.append(path)
    return keep


@pytest.mark.parametrize("path", _shipped_specs_without_inputs(), ids=lambda p: p.name)
def test_every_shipped_sweep_spec_still_resolves(path, monkeypatch):
    # A spec recorded in docs/ is how a result is re-run: a config key renamed since, or a value the
    # loop now refuses, must fail here rather than on the machine that re-runs it. The datasets need
    # not be on this machine: only their existence check is left out.
    from o2o.loops.offline import check_offline_config

    pretrain = runners.KINDS["pretrain"]
    monkeypatch.setitem(runners.KINDS, "pretrain", dataclasses.replace(pretrain, check=lambda cfg: check_offline_config(cfg.offline)))
    spec = load_spec(path)
    assert spec.runs and all(run.config for run in spec.runs)
