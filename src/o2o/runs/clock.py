"""A run's wall time across resumes.

A run stopped and continued (``--resume``, a relaunched sweep, a session's end) is timed in several
invocations. Each checkpoint records the run's wall time so far under ``wall_time_s`` in its host
state; the invocation that resumes from it adds its own, so ``summary.json``'s ``wall_time_s`` is
the whole run's. Work redone after an interruption (between the last checkpoint and the stop) is
counted once, by the invocation that redoes it; the lost part is not counted. A checkpoint written
before o2o recorded its time gives no starting value: the summary then counts the resuming
invocation only and says so in ``wall_time_note``.

``CheckpointTimer`` bounds the work such a stop loses: besides the config's step-based checkpoints
(``online.checkpoint_every``, ``offline.checkpoint_every``), a run also checkpoints at the end of the
first iteration that ends ``O2O_CHECKPOINT_EVERY_S`` seconds (default 600) after its last checkpoint.
A run that is killed outright (SIGKILL, out of memory, a session's or a job's end) then loses at most
about that long, whatever its step-based interval. It is not part of any config: checkpoints do not
change what a run computes (resume is exact from any iteration), so run and sweep identities (config
hashes) do not depend on it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

WALL_KEY = "wall_time_s"
CHECKPOINT_EVERY_S_ENV = "O2O_CHECKPOINT_EVERY_S"
DEFAULT_CHECKPOINT_EVERY_S = 600.0


def checkpoint_every_s() -> float | None:
    """Seconds between time-based checkpoints from ``$O2O_CHECKPOINT_EVERY_S`` (default 600); None when
    it is 0 (off). Anything but a number >= 0 is refused with a one-line error."""
    from o2o.errors import ConfigError

    raw = os.environ.get(CHECKPOINT_EVERY_S_ENV, "").strip()
    if not raw:
        return DEFAULT_CHECKPOINT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0.0 or value == float("inf"):
        raise ConfigError(f"{CHECKPOINT_EVERY_S_ENV}={raw!r}: expected a number of seconds >= 0 (0 turns time-based checkpoints off)")
    return value or None


class CheckpointTimer:
    """Says when a time-based checkpoint is due: ``due()`` after each iteration, ``saved()`` after any
    checkpoint (step-based or time-based). ``every_s``: seconds (None: off); default from the
    environment (``checkpoint_every_s``)."""

    def __init__(self, every_s: float | None = ..., *, clock=time.monotonic):
        self.every_s = checkpoint_every_s() if every_s is ... else every_s
        self._clock = clock
        self._last = clock()

    def due(self) -> bool:
        return self.every_s is not None and self._clock() - self._last >= self.every_s

    def saved(self) -> None:
        self._last = self._clock()


class RunClock:
    """``RunClock(host)`` with the host state of the checkpoint a run resumes from (None: a new run)."""

    def __init__(self, host: Mapping | None = None, *, resumed_from: int | None = None):
        self.before: float | None = 0.0 if host is None else host.get(WALL_KEY)
        self.resumed_from = resumed_from if host is not None else None
        self._start = time.perf_counter()

    @property
    def complete(self) -> bool:
        """False when the time before the resume is unknown (an older checkpoint)."""
        return self.before is not None

    def elapsed(self) -> float:
        """The run's wall time so far (this invocation only when ``complete`` is False)."""
        return (self.before or 0.0) + time.perf_counter() - self._start

    def stamp(self, host: Mapping) -> dict:
        """``host`` with the run's wall time so far, for a checkpoint (None stays None: still unknown)."""
        return {**host, WALL_KEY: self.elapsed() if self.complete else None}

    def summary(self) -> dict:
        """The summary's timing keys: ``wall_time_s``, and where resumed ``resumed_from``."""
        out: dict = {WALL_KEY: self.elapsed()}
        if self.resumed_from is not None:
            out["resumed_from"] = self.resumed_from
        if not self.complete:
            out["wall_time_note"] = (f"this invocation only (resumed at {self.resumed_from}): the checkpoint it "
                                     f"resumed from predates o2o's wall-time record")
        return out
