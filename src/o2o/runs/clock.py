"""A run's wall time across resumes.

A run stopped and continued (``--resume``, a relaunched sweep, a session's end) is timed in several
invocations. Each checkpoint records the run's wall time so far under ``wall_time_s`` in its host
state; the invocation that resumes from it adds its own, so ``summary.json``'s ``wall_time_s`` is
the whole run's. Work redone after an interruption (between the last checkpoint and the stop) is
counted once, by the invocation that redoes it; the lost part is not counted. A checkpoint written
before o2o recorded its time gives no starting value: the summary then counts the resuming
invocation only and says so in ``wall_time_note``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

WALL_KEY = "wall_time_s"


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
