"""Stopping a run gracefully on a signal: checkpoint at the end of the current iteration, then exit.

Batch systems warn a job before they kill it: SLURM sends SIGTERM (at preemption, at the time limit,
on ``scancel``) and kills it ``KillWait`` seconds later (30 by default); ``#SBATCH --signal=USR1@120``
asks for SIGUSR1 two minutes before the end. While ``stop_on_signals()`` is active, SIGTERM, SIGUSR1
and a first Ctrl-C (SIGINT) only set a flag (a second Ctrl-C interrupts at once: ``KeyboardInterrupt``);
every training loop (online, offline, the fine-tuning bridges) checks it after each jitted call, saves
a checkpoint there and raises ``RunStopped``. The run then continues exactly from that
point (``--resume``, a relaunched sweep), losing nothing. A jitted call in progress is not
interrupted: the checkpoint comes when it returns (on a GPU well within seconds; on a CPU an iteration
of thousands of updates can take minutes, after which a batch system's kill, if it comes first, leaves
the last time-based checkpoint: ``o2o.runs.clock``).

    with stop_on_signals():
        run_online(cfg, out)          # raises RunStopped(signum, where, run_dir) after a checkpoint
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_requested: list[int] = []  # the signal received, if any (a list: set from the handler without `global`)


class RunStopped(Exception):
    """A run stopped on a signal after saving a checkpoint (not a failure: it continues on resume)."""

    def __init__(self, signum: int, where: str, run_dir: str | Path, *, saved: str | None = None, resumable: bool = True):
        """``saved``: what was kept, when it is not a checkpoint of the point it stopped at; ``resumable``:
        False when there is nothing to continue from (the run must start again)."""
        self.signum, self.where, self.run_dir, self.resumable = signum, where, Path(run_dir), resumable
        super().__init__(f"stopped by {signal.Signals(signum).name} after {where}; {saved or f'checkpoint saved in {self.run_dir}'}")


def _handler(signum, frame) -> None:
    if not _requested:
        _requested.append(signum)


def _interrupt_handler(signum, frame) -> None:
    """Ctrl-C: the first asks for a graceful stop like SIGTERM, a second one interrupts at once."""
    if _requested:
        raise KeyboardInterrupt
    import sys

    print("\no2o: Ctrl-C: stopping with a checkpoint at the end of the current step (Ctrl-C again: stop now, "
          "keeping the last checkpoint)", file=sys.stderr, flush=True)
    _handler(signum, frame)


def requested() -> int | None:
    """The signal that asked the run to stop (None: none did, or no handler is installed)."""
    return _requested[0] if _requested else None


def clear() -> None:
    _requested.clear()


def install() -> None:
    """Make SIGTERM and SIGUSR1 set the flag (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _handler)


@contextmanager
def stop_on_signals():
    """SIGTERM, SIGUSR1 and a first Ctrl-C ask the training loops to stop gracefully while the block runs;
    the previous handlers come back after it. Outside the main thread (where Python cannot set handlers) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (*SIGNALS, signal.SIGINT)}
    clear()
    install()
    if old[signal.SIGINT] is not signal.SIG_IGN:  # a job started in the background ignores Ctrl-C: keep it so
        signal.signal(signal.SIGINT, _interrupt_handler)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        clear()
