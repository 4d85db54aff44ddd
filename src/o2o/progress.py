"""Progress display for long work: a rich bar on a terminal, plain timestamped lines in a log.

A rich ``Progress`` draws nothing while it runs when its output is not a terminal (a ``nohup`` log, a
sweep worker, CI): it prints one frame when it stops. A four-hour behaviour run or a fifty-minute
fine-tuning run then says nothing for hours. ``make_progress`` gives the bar on a terminal and, off a
terminal, a ``LineProgress`` with the same calls (``add_task``, ``update``, ``advance``, ``console``)
that prints one line per task every ``O2O_PROGRESS_EVERY`` seconds (default 60) and when it completes:

    [09:47:01] behaviour SAC Hopper: 65/150 (43%), 5:02 elapsed, ~6:35 left | steps 65000 | R 1080.2
"""

from __future__ import annotations

import os
import sys
import time

PROGRESS_EVERY_ENV = "O2O_PROGRESS_EVERY"


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class LineProgress:
    """Plain-text progress: one line per task at most every ``every`` seconds, and one at completion."""

    def __init__(self, every: float | None = None, file=None):
        from rich.console import Console

        if every is None:
            every = float(os.environ.get(PROGRESS_EVERY_ENV, "60"))
        self.every = every
        self.console = Console(file=file or sys.stdout, width=200, highlight=False, soft_wrap=True)
        self._tasks: dict[int, dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for tid, t in self._tasks.items():
            if not t["done"] and t["completed"] != t["printed"]:
                self._line(tid)
        return False

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        tid = len(self._tasks)
        now = time.monotonic()
        self._tasks[tid] = {"description": description, "total": total, "completed": completed, "start": now,
                            "start_completed": completed, "last": now, "printed": None, "done": False, "fields": fields}
        return tid

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None, total: float | None = None,
               description: str | None = None, **fields) -> None:
        t = self._tasks[task_id]
        if completed is not None:
            t["completed"] = completed
        if advance is not None:
            t["completed"] += advance
        if total is not None:
            t["total"] = total
        if description is not None:
            t["description"] = description
        t["fields"].update(fields)
        finished = t["total"] is not None and t["completed"] >= t["total"]
        if (finished and not t["done"]) or time.monotonic() - t["last"] >= self.every:
            t["done"] = finished
            self._line(task_id)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _line(self, task_id: int) -> None:
        t = self._tasks[task_id]
        now = time.monotonic()
        t["last"], t["printed"] = now, t["completed"]
        elapsed = now - t["start"]
        text = f"[{time.strftime('%H:%M:%S')}] {t['description']}: {t['completed']:g}"
        if t["total"]:
            text += f"/{t['total']:g} ({100 * t['completed'] / t['total']:.0f}%)"
        text += f", {_clock(elapsed)} elapsed"
        done_here = t["completed"] - t["start_completed"]
        if t["total"] and 0 < done_here and t["completed"] < t["total"]:
            text += f", ~{_clock(elapsed / done_here * (t['total'] - t['completed']))} left"
        status = str(t["fields"].get("status", "")).strip()
        if status:
            text += f" | {status}"
        self.console.print(text, markup=False)


def make_progress(enabled: bool, *columns):
    """A rich ``Progress`` with ``columns`` on a terminal; a ``LineProgress`` when stdout is not one; a
    disabled rich ``Progress`` (draws nothing) when not ``enabled``."""
    from rich.progress import Progress

    if enabled and not sys.stdout.isatty():
        return LineProgress()
    return Progress(*columns, disable=not enabled, transient=False)


def training_progress(enabled: bool, remaining: bool = True):
    """The training loops' bar (description, bar, n of N, elapsed, with ``remaining`` the time left,
    status) on a terminal, timestamped lines in a log (``make_progress``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    return make_progress(enabled, *columns, *([TimeRemainingColumn()] if remaining else []), TextColumn("{task.fields[status]}"))
