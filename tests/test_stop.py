"""Graceful stop on SIGTERM / SIGUSR1 (o2o.stop): a training run checkpoints at the end of its current
iteration, says how to continue and exits 128 + signal; continued, it finishes as if never stopped."""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from o2o import stop
from o2o.loops.online import run_online
from o2o.presets import resolve_train_config
from o2o.runs import latest_checkpoint, read_metrics_csv
from procs import metrics_rows, run_and_signal


def test_signals_set_the_flag_only_inside_the_block():
    before = signal.getsignal(signal.SIGUSR1)
    with stop.stop_on_signals():
        assert stop.requested() is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested() == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() == signal.SIGUSR1  # the first signal is the one reported
    assert stop.requested() is None and signal.getsignal(signal.SIGUSR1) is before


def _config(iterations):
    return resolve_train_config("sac", "Pendulum", 2, overrides=[
        "agent.hidden_dims=[32, 32]", "agent.batch_size=64", f"online.iterations={iterations}",
        "online.episodes_per_iteration=null", "online.steps_per_iteration=150", "online.updates_per_iteration=20",
        "online.warmup_steps=100", "online.update_after=100", "online.eval_every=2", "online.eval_episodes=1",
        "online.checkpoint_every=5",
    ])


def test_online_run_stopped_by_sigterm_checkpoints_there_and_continues_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("O2O_CHECKPOINT_EVERY_S", "0")  # only the step-based checkpoints and the stop's
    cfg = _config(5)
    full = run_online(cfg, tmp_path / "full", progress=False)

    def term_at_3(trainer, metrics):
        if trainer.counters["iteration"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with stop.stop_on_signals(), pytest.raises(stop.RunStopped, match="stopped by SIGTERM after iteration 3 of 5") as err:
        run_online(cfg, tmp_path / "stopped", progress=False, after_iteration=term_at_3)
    assert err.value.signum == signal.SIGTERM and err.value.run_dir == tmp_path / "stopped"
    assert latest_checkpoint(tmp_path / "stopped").name == "ckpt_3"
    resumed = run_online(cfg, tmp_path / "stopped", resume=True, progress=False)
    assert resumed["resumed_from"] == 3 and resumed["final_eval_return"] == full["final_eval_return"]
    a, b = (read_metrics_csv(d / "metrics.csv") for d in (tmp_path / "full", tmp_path / "stopped"))
    for k in a:
        if not k.startswith("perf/"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cli_train_stopped_by_sigterm_says_how_to_continue(tmp_path):
    """`o2o train` as a batch system runs it: SIGTERM mid-run -> checkpoint, one line, exit 143; then --resume."""
    out = tmp_path / "run"
    o2o = str(Path(sys.executable).parent / "o2o")
    sets = ["agent.hidden_dims=[32,32]", "agent.batch_size=64", "online.iterations=200", "online.episodes_per_iteration=null",
            "online.steps_per_iteration=100", "online.updates_per_iteration=20", "online.warmup_steps=100",
            "online.update_after=100", "online.eval_every=100", "online.eval_episodes=1", "online.checkpoint_every=100"]
    args = [o2o, "--no-progress", "train", "--algo", "sac", "--task", "Pendulum", "--out", str(out)]
    rc, _, err = run_and_signal(args + [x for kv in sets for x in ("--set", kv)], lambda: metrics_rows(out) >= 2, signal.SIGTERM, timeout=300)
    assert rc == 128 + signal.SIGTERM, err
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1 and lines[0].startswith("o2o: stopped by SIGTERM after iteration ") and f"o2o train --resume {out}" in lines[0], err
    step = int(lines[0].split("after iteration ")[1].split()[0])
    assert latest_checkpoint(out).name == f"ckpt_{step}" and 2 <= step < 200  # the stop's checkpoint, mid-run
    rows = read_metrics_csv(out / "metrics.csv")["step"]
    assert rows[-1] == step


def test_cli_pretrain_stopped_by_sigterm_checkpoints_and_resumes(tmp_path, monkeypatch, capsys):
    from o2o.cli import main
    from o2o.loops.offline import OfflineTrainer

    monkeypatch.setenv("O2O_CHECKPOINT_EVERY_S", "0")
    step_seeds = OfflineTrainer.step_seeds

    def term_after_100(self):
        rows = step_seeds(self)
        if self.counters["steps"] == 100:
            os.kill(os.getpid(), signal.SIGTERM)
        return rows

    monkeypatch.setattr(OfflineTrainer, "step_seeds", term_after_100)
    out = tmp_path / "td3bc"
    args = ["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", "BallCircle-dsrl-small", "--steps", "300", "--out", str(out),
            "--set", "offline.steps_per_call=100", "--set", "offline.eval_every=300", "--set", "offline.checkpoint_every=300",
            "--set", "offline.eval_episodes=1", "--set", "agent.hidden_dims=[32,32]", "--set", "agent.batch_size=64"]
    assert main(args) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"o2o: stopped by SIGTERM after step 100 of 300; checkpoint saved in {out}; continue with `o2o pretrain --resume {out}`"]
    assert latest_checkpoint(out).name == "ckpt_100"
    assert main(["--no-progress", "pretrain", "--resume", str(out)]) == 0
    assert latest_checkpoint(out).name == "ckpt_300" and (out / "summary.json").is_file()

    # deferred evaluation: every checkpoint becomes an evaluation row, so a stop adds none; before the
    # first step-based one there is nothing to continue from, and the line says so
    deferred = tmp_path / "deferred"
    assert main([str(deferred) if a == str(out) else a for a in args] + ["--defer-eval"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keeps only its step-based checkpoints (every offline.checkpoint_every = 300 steps): none yet" in err[0]
    assert err[0].endswith("start it again with the same command") and latest_checkpoint(deferred) is None


def _pretrain_args(out, steps=300):
    return ["--no-progress", "pretrain", "--algo", "td3bc", "--dataset", "BallCircle-dsrl-small", "--steps", str(steps), "--out", str(out),
            "--set", "offline.steps_per_call=100", "--set", f"offline.eval_every={steps}", "--set", f"offline.checkpoint_every={steps}",
            "--set", "offline.eval_episodes=1", "--set", "agent.hidden_dims=[32,32]", "--set", "agent.batch_size=64"]


def _signal_after_step(monkeypatch, step, *signums):
    from o2o.loops.offline import OfflineTrainer

    step_seeds = OfflineTrainer.step_seeds

    def signal_after(self):
        rows = step_seeds(self)
        if self.counters["steps"] == step:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return rows

    monkeypatch.setattr(OfflineTrainer, "step_seeds", signal_after)


def test_ctrl_c_on_pretrain_checkpoints_and_names_the_pretrain_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C takes SIGTERM's path: a checkpoint where it stopped, `o2o pretrain --resume DIR`, exit 130."""
    from o2o.cli import main

    monkeypatch.setenv("O2O_CHECKPOINT_EVERY_S", "0")
    _signal_after_step(monkeypatch, 100, signal.SIGINT)
    out = tmp_path / "td3bc"
    assert main(_pretrain_args(out)) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"o2o: stopped by SIGINT after step 100 of 300; checkpoint saved in {out}; continue with `o2o pretrain --resume {out}`"
    assert latest_checkpoint(out).name == "ckpt_100"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back
    monkeypatch.undo()
    assert main(["--no-progress", "pretrain", "--resume", str(out)]) == 0
    assert latest_checkpoint(out).name == "ckpt_300" and (out / "summary.json").is_file()


def test_second_ctrl_c_interrupts_at_once_and_names_the_run_kind(tmp_path, monkeypatch, capsys):
    """Two Ctrl-C in a row: no wait for the step's end; the line names `o2o pretrain --resume DIR`, not train."""
    from o2o.cli import main

    monkeypatch.setenv("O2O_CHECKPOINT_EVERY_S", "0")
    _signal_after_step(monkeypatch, 100, signal.SIGINT, signal.SIGINT)
    out = tmp_path / "td3bc"
    assert main(_pretrain_args(out)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"o2o: interrupted; continue from the run's last checkpoint with `o2o pretrain --resume {out}`"


def test_a_background_job_that_ignores_ctrl_c_keeps_ignoring_it():
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop.stop_on_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
