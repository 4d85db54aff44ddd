"""The one training driver: every stage of o2o runs through ``drive``.

A **stage** is a unit of training that advances in jitted calls: offline pre-training (one seed or
seeds as a batch axis), off-policy and on-policy online training, Marvel's VPA, OCR-CFT's
re-evaluation and alignment. It says where it is and what one call does; the driver does the rest,
the same way for all of them: the progress bar, the metrics rows, the checkpoint schedule (every N
units, at the end, every ``O2O_CHECKPOINT_EVERY_S`` seconds, on a stop signal), the finiteness check
before a save, divergence and stop handling.

    stage.position          units done so far (iterations, gradient steps)
    stage.next_position()   where the next call ends (named when it diverges)
    stage.where(position)   that position in messages ("iteration 7", "VPA step 200 of 2000")
    stage.step()            one call: one metrics row per run (seeds as a batch axis: one per seed)
    stage.status(rows)      the progress bar's status text
    stage.checkpoint(i)     run i's (arrays, host state): what its checkpoint holds

Where checkpoints go is the ``Checkpoints`` object's business: ``RunCheckpoints`` writes each run's
``checkpoints/`` (a run directory per seed), ``BridgeCheckpoints`` a bridge's ``bridge/partial/``.
``resume`` reads a stage's run directories back in. A bridge stage (``CallStage``) is K gradient steps
per call of a jitted update over the offline data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, Sequence

from o2o import stop
from o2o.errors import DivergedError, RunDirError
from o2o.loops.divergence import diverged, finite_checkpoint
from o2o.progress import training_progress
from o2o.runs.clock import CheckpointTimer, RunClock


class Stage(Protocol):
    @property
    def position(self) -> int: ...

    def next_position(self) -> int: ...

    def where(self, position: int) -> str: ...

    def step(self) -> list[dict[str, float]]: ...

    def status(self, rows: list[dict[str, float]]) -> str: ...

    def checkpoint(self, i: int) -> tuple[dict, dict]: ...


class Checkpoints(Protocol):
    where: Path  # the run (or group) directory named in messages

    def latest(self) -> Path | None: ...

    def after_call(self, stage: Stage, signum: int | None, final: bool, writers: Sequence) -> None: ...

    def stopped(self, signum: int, stage: Stage) -> stop.RunStopped | None: ...


def close_all(writers: Sequence) -> None:
    for writer in writers:
        writer.close()


def checked_snapshots(stage: Stage, runs: int, writers: Sequence, ckpts: Checkpoints, labels: Sequence[str] | None = None) -> list[tuple[dict, dict]]:
    """Every run's checkpoint, each checked to be finite before any is saved; a non-finite one ends the
    stage (``DivergedError`` naming the position, and the seed when there are several)."""
    saves = []
    for i in range(runs):
        arrays, host = stage.checkpoint(i)
        try:
            saves.append((finite_checkpoint(arrays), host))
        except DivergedError as err:
            close_all(writers)
            if labels is not None and len(labels) > 1:
                err = DivergedError(f"{labels[i]}: {err}")
            raise diverged(err, stage.where(stage.position), ckpts.where, ckpts.latest()) from None
    return saves


class RunCheckpoints:
    """The checkpoints of one run directory per run of a stage: at every ``every`` units, at ``end``,
    when the timer is due and, with ``on_signal``, when a stop signal arrived; a run stopped before
    ``total`` raises ``RunStopped``. ``keep``: the newest checkpoints kept per run; ``kept``: what a
    stop leaves when it saves nothing (``on_signal=False``)."""

    def __init__(self, rundirs, clocks: Sequence[RunClock], *, every: int, end: int, total: int, keep: int = 2,
                 timer: CheckpointTimer | None = None, on_signal: bool = True, labels: Sequence[str] | None = None,
                 kept: Callable[[Path | None], str] | None = None):
        self.rundirs, self.clocks = list(rundirs), list(clocks)
        self.every, self.end, self.total, self.keep = every, end, total, keep
        self.timer = timer if timer is not None else CheckpointTimer()
        self.on_signal, self.labels, self.kept = on_signal, labels, kept
        self.where = self.rundirs[0].path if len(self.rundirs) == 1 else self.rundirs[0].path.parent

    def latest(self) -> Path | None:
        return self.rundirs[0].latest_checkpoint()

    def after_call(self, stage: Stage, signum: int | None, final: bool, writers: Sequence) -> None:
        pos = stage.position
        if pos % self.every == 0 or pos == self.end or self.timer.due() or (signum is not None and self.on_signal):
            saves = checked_snapshots(stage, len(self.rundirs), writers, self, self.labels)
            for writer, rundir, clock, (arrays, host) in zip(writers, self.rundirs, self.clocks, saves):
                writer.flush()
                rundir.save_checkpoint(pos, arrays=arrays, host_state=clock.stamp(host), keep=self.keep)
            self.timer.saved()

    def stopped(self, signum: int, stage: Stage) -> stop.RunStopped | None:
        if stage.position >= self.total:
            return None
        last = self.latest()
        return stop.RunStopped(signum, f"{stage.where(stage.position)} of {self.total}", self.where,
                               saved=self.kept(last) if self.kept else None, resumable=last is not None)


def drive(stage: Stage, writers: Sequence, ckpts: Checkpoints, *, end: int, description: str, progress: bool,
          before: Callable[[], None] | None = None, after: Callable[[list[dict]], None] | None = None,
          bar_offset: int = 0) -> dict[str, float]:
    """Run ``stage`` until its position reaches ``end``, writing each call's rows to ``writers`` (one per
    run) and checkpointing through ``ckpts``. ``before()`` / ``after(rows)`` run around each call (they
    must derive what they change from the stage's counters, so that a resumed run sees the same values).
    The progress bar counts ``position - bar_offset`` of ``end - bar_offset``. Returns the
    last call's first row (empty when no call ran). The writers are closed on every way out but a
    normal end (the caller closes them then)."""
    last: dict[str, float] = {}
    total = end - bar_offset
    with training_progress(progress) as bar:
        tid = bar.add_task(description, total=total, completed=min(stage.position, end) - bar_offset, status="")
        while stage.position < end:
            if before is not None:
                before()
            at = stage.next_position()
            try:
                rows = stage.step()
            except DivergedError as err:
                close_all(writers)
                raise diverged(err, stage.where(at), ckpts.where, ckpts.latest()) from None
            if after is not None:
                after(rows)
            pos = stage.position
            for writer, row in zip(writers, rows):
                writer.write(pos, row)
            last = rows[0]
            bar.update(tid, completed=pos - bar_offset, status=stage.status(rows))
            signum = stop.requested()  # SIGTERM / SIGUSR1 / Ctrl-C under stop_on_signals (o2o.stop)
            ckpts.after_call(stage, signum, pos >= end, writers)
            if signum is not None:
                err = ckpts.stopped(signum, stage)
                if err is not None:
                    close_all(writers)
                    raise err
    return last


def resume(stage_restore: Callable[[list[tuple[dict, dict]]], None], templates: Sequence[tuple[dict, dict]], rundirs) -> list[dict]:
    """Read each run's latest checkpoint (into its ``templates[i]`` structure) and hand them to
    ``stage_restore``; a checkpoint stripped for export (only the policy, or no optimiser state) is
    refused. Returns the host states read."""
    from o2o.runs.checkpoint import OPTIMISER_STRIPPED_KEY, STRIPPED_KEY

    loaded = [rd.load_checkpoint(template=arrays, host_template=host) for rd, (arrays, host) in zip(rundirs, templates)]
    for rd, (_, host) in zip(rundirs, loaded):
        for key, what in ((STRIPPED_KEY, "only the policy"), (OPTIMISER_STRIPPED_KEY, "no optimiser state")):
            if host.get(key):
                raise RunDirError(f"cannot resume '{rd.path}': its latest checkpoint holds {what} ({host[key]})")
    stage_restore(loaded)
    return [host for _, host in loaded]


class BridgeCheckpoints:
    """The partial checkpoints of a fine-tuning bridge (VPA; OCR-CFT's re-evaluation and alignment) in
    ``bridge_dir/partial/`` (``o2o.runs.partial``): the state and RNG key after a call, its step and the
    stage's host state, saved when the timer is due (not at a stage's last call: its result is saved by
    the caller) and on a stop signal, which then ends the run (``RunStopped``). The state is also checked
    to be finite at a stage's last call. With ``resume``, ``point`` is the saved place (None: none)."""

    def __init__(self, bridge_dir: Path, *, resume: bool):
        import time

        from o2o.runs.checkpoint import latest_checkpoint, load_checkpoint
        from o2o.runs.partial import PARTIAL_DIRNAME

        self.dir = Path(bridge_dir) / PARTIAL_DIRNAME
        self.where = self.run_dir = Path(bridge_dir).parent
        self.point = load_checkpoint(self.dir, host_template={"step": 0, "wall_time_s": 0.0})[1] if resume and latest_checkpoint(self.dir) is not None else None
        self.timer = CheckpointTimer()
        self._start = time.perf_counter() - (self.point["wall_time_s"] if self.point else 0.0)

    @property
    def step(self) -> int:
        """The step it continues from (0: from the start)."""
        return self.point["step"] if self.point else 0

    def elapsed(self) -> float:
        """The bridge's wall time so far, the time before a resume included."""
        import time

        return time.perf_counter() - self._start

    def restore(self, state, key):
        """``(state, key)`` at the saved place, read into ``state``'s structure."""
        from flax.serialization import from_state_dict, to_state_dict

        from o2o.runs.checkpoint import load_checkpoint

        arrays, _ = load_checkpoint(self.dir, template={"agent": to_state_dict(state), "key": key})
        return from_state_dict(state, arrays["agent"]), arrays["key"]

    def latest(self) -> Path | None:
        from o2o.runs.checkpoint import latest_checkpoint

        return latest_checkpoint(self.dir)

    def after_call(self, stage: Stage, signum: int | None, final: bool, writers: Sequence) -> None:
        from o2o.runs.checkpoint import save_checkpoint

        save = (self.timer.due() and not final) or signum is not None
        if save or final:
            (arrays, host), = checked_snapshots(stage, 1, writers, self)
        if save:
            for writer in writers:
                writer.flush()
            save_checkpoint(self.dir, stage.position, arrays=arrays,
                            host_state={**host, "step": stage.position, "wall_time_s": self.elapsed()})
            self.timer.saved()

    def stopped(self, signum: int, stage: Stage) -> stop.RunStopped:
        return stop.RunStopped(signum, stage.where(stage.position), self.run_dir)


class CallStage:
    """A bridge stage: ``many(state, data, key, signals, num_steps=steps_per_call)`` (K gradient steps
    in one jitted call, ``o2o.agents.common.make_update_many``) from ``start`` to ``end``, over fixed
    data. A call's metrics (floats, plus ``extra``) are checked to be finite, kept as ``last`` and
    written as ``row(last)``; ``host(self)`` is what a partial checkpoint keeps besides the state and key;
    ``where(position)`` and ``status(last)`` are its messages."""

    def __init__(self, many, state, data, key, signals, *, start: int, steps_per_call: int, where: Callable[[int], str],
                 status: Callable[[dict], str], extra: dict | None = None, row: Callable[[dict], dict] | None = None,
                 host: Callable[[CallStage], dict] | None = None, last: dict | None = None):
        self.many, self.state, self.data, self.key, self.signals = many, state, data, key, signals
        self._position, self.steps_per_call = start, steps_per_call
        self._where, self._status, self.extra, self.row, self.host = where, status, extra or {}, row, host
        self.last = dict(last or {})

    @property
    def position(self) -> int:
        return self._position

    def next_position(self) -> int:
        return self._position + self.steps_per_call

    def where(self, position: int) -> str:
        return self._where(position)

    def step(self) -> list[dict[str, float]]:
        import jax

        from o2o.loops.divergence import check_losses

        self.key, sub = jax.random.split(self.key)
        self.state, m = self.many(self.state, self.data, sub, self.signals, num_steps=self.steps_per_call)
        self._position += self.steps_per_call
        metrics = {k: float(v) for k, v in jax.device_get(m).items()}
        check_losses(metrics)  # before the row is logged
        self.last = {**metrics, **self.extra}
        return [self.row(self.last) if self.row else self.last]

    def status(self, rows) -> str:
        return self._status(self.last)

    def checkpoint(self, i: int) -> tuple[dict, dict]:
        from flax.serialization import to_state_dict

        return {"agent": to_state_dict(self.state), "key": self.key}, (self.host(self) if self.host else {"last": self.last})
