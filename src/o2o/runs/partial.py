"""Partial checkpoints of a fine-tuning bridge (OCR-CFT's re-evaluation and alignment, Marvel's VPA).

A bridge is a sequence of jitted calls on the offline data before the online stage; its result goes to
``RUN_DIR/bridge/checkpoints/`` when it finishes. While it runs, ``BridgeCheckpoints`` saves its place
in ``RUN_DIR/bridge/partial/`` (the agent state and RNG key after a call, the step and whatever the
bridge adds: its stage, the last metrics) every ``O2O_CHECKPOINT_EVERY_S`` seconds (``o2o.runs.clock``)
and when a stop signal arrived (``o2o.stop``, then ``RunStopped``); a resumed bridge restores it and
continues with the numbers an uninterrupted one has.

A bridge that diverges stops as a training loop does (``o2o.loops.divergence``): a call's loss that is
NaN or inf, checked before it is logged, or an agent state that is not finite when it is saved or at a
stage's last call, ends the run with one line naming the step and the quantity; nothing of that state
is saved (the latest partial checkpoint is the last finite one).

    ckpts = BridgeCheckpoints(bridge_dir, resume=resume)
    writer.truncate_after(ckpts.step)                 # rows after the place it continues from
    state, key = ckpts.restore(state, key)            # state: the template (after the bridge's setup)
    ... for each call: ckpts.check_losses(metrics, writer, f"VPA step {step}"); writer.write(step, metrics)
                       ckpts.after_call(step, state, key, writer, f"VPA step {step}", last=..., stage=...)
    ... save the finished bridge, then discard_partial(bridge_dir)
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

PARTIAL_DIRNAME = "partial"


def _state_dict(state):
    from flax.serialization import to_state_dict

    return to_state_dict(state)


class BridgeCheckpoints:
    """The partial checkpoints of the bridge in ``bridge_dir``; with ``resume``, the place it stopped at
    (``point``: the saved host state, None when there is none)."""

    def __init__(self, bridge_dir: Path, *, resume: bool):
        from o2o.runs.checkpoint import latest_checkpoint, load_checkpoint
        from o2o.runs.clock import CheckpointTimer

        self.dir = Path(bridge_dir) / PARTIAL_DIRNAME
        self.run_dir = Path(bridge_dir).parent
        self.point = load_checkpoint(self.dir, host_template={"step": 0, "wall_time_s": 0.0})[1] if resume and latest_checkpoint(self.dir) is not None else None
        self.timer = CheckpointTimer()
        self._start = time.perf_counter() - (self.point["wall_time_s"] if self.point else 0.0)

    @property
    def step(self) -> int:
        """The step it continues from (0: from the start)."""
        return self.point["step"] if self.point else 0

    def elapsed(self) -> float:
        """The bridge's wall time so far, the time before a resume included."""
        return time.perf_counter() - self._start

    def restore(self, state, key):
        """``(state, key)`` at the saved place, read into ``state``'s structure."""
        from flax.serialization import from_state_dict

        from o2o.runs.checkpoint import load_checkpoint

        arrays, _ = load_checkpoint(self.dir, template={"agent": _state_dict(state), "key": key})
        return from_state_dict(state, arrays["agent"]), arrays["key"]

    def check_losses(self, losses, writer, where: str) -> None:
        """Stop the bridge (``DivergedError``, ``writer`` closed) when one of a call's ``losses`` is NaN or
        inf; call it before the call's row is logged."""
        from o2o.errors import DivergedError
        from o2o.loops.divergence import check_losses

        try:
            check_losses(losses)
        except DivergedError as err:
            raise self._diverged(err, writer, where) from None

    def after_call(self, step: int, state, key, writer, where: str, *, final: bool = False, **host) -> None:
        """After a jitted call: save (when the timer is due, unless it was the bridge's or stage's
        ``final`` call, or when a stop signal arrived); on a stop signal also close ``writer`` and raise
        ``RunStopped``. The state is checked to be finite when it is saved and at a ``final`` call (the
        bridge's result is built from it). ``host``: what the bridge needs back on resume (JSON-able)."""
        from o2o import stop
        from o2o.errors import DivergedError
        from o2o.loops.divergence import finite_checkpoint
        from o2o.runs.checkpoint import save_checkpoint

        signum = stop.requested()
        save = (self.timer.due() and not final) or signum is not None
        if save or final:
            try:
                arrays = finite_checkpoint({"agent": _state_dict(state), "key": key})
            except DivergedError as err:
                raise self._diverged(err, writer, where) from None
        if save:
            writer.flush()
            save_checkpoint(self.dir, step, arrays=arrays, host_state={**host, "step": step, "wall_time_s": self.elapsed()})
            self.timer.saved()
        if signum is not None:
            writer.close()
            raise stop.RunStopped(signum, where, self.run_dir)


    def _diverged(self, err, writer, where: str):
        from o2o.loops.divergence import diverged
        from o2o.runs.checkpoint import latest_checkpoint

        writer.close()
        return diverged(err, where, self.run_dir, latest_checkpoint(self.dir))


def discard_partial(bridge_dir: Path) -> None:
    """Remove the partial checkpoints once the finished bridge is saved (it supersedes them)."""
    shutil.rmtree(Path(bridge_dir) / PARTIAL_DIRNAME, ignore_errors=True)
