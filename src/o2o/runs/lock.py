"""The run-directory lock: one process trains in a run directory at a time.

``<run>/.lock`` carries an exclusive OS advisory lock (``flock``) for as long as a process trains in the
run; the file holds the holder's pid, host and start time, so that a second process (a requeued batch
job, a second ``--resume``) is refused with one line naming the holder. The kernel drops the lock when
the holder's file is closed, which a process's end does however it ends (``kill -9`` included): a lock
is never stale, and the file itself is left in place (removing it could let two processes lock two
different files of one name).

Within one process the lock is re-entrant (fine-tuning locks its run before ``RunDir.create`` does);
each ``lock_run_dir`` is matched by one ``RunLock.release``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from o2o.errors import RunDirError, RunInUseError

__all__ = ["LOCK_FILE", "RunLock", "delete_run_dir", "lock_run_dir"]

LOCK_FILE = ".lock"

# resolved run path -> [open lock file, holders in this process]
_HELD: dict[Path, list] = {}


class RunLock:
    """One hold of a run directory's lock; ``release`` (or leaving a ``with`` block) gives it up."""

    def __init__(self, key: Path | None):
        self._key = key

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        entry = _HELD[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[key]
            entry[0].close()  # closing the file drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(f) -> str:
    try:
        f.seek(0)
        info = json.loads(f.read() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock_run_dir(path: str | Path) -> RunLock:
    """Lock the existing run directory ``path`` for this process; a ``RunInUseError`` naming the holder
    if another process holds it. A filesystem without locks (some network mounts) gets a warning on
    stderr and no lock."""
    path = Path(path)
    key = path.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return RunLock(key)
    try:
        f = open(path / LOCK_FILE, "a+")
    except OSError as err:
        raise RunDirError(f"cannot open the lock file of run directory '{path}' ({err}); check its permissions") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = _holder(f)
            f.close()
            raise RunInUseError(
                f"run directory '{path}' is in use by {holder}; wait for that process to end (or stop it), "
                f"or choose another run directory"
            ) from None
        f.close()
        print(f"o2o: warning: cannot lock run directory '{path}' ({err.strerror}); nothing stops a second "
              f"process from training in it", file=sys.stderr)
        return RunLock(None)
    f.seek(0)
    f.truncate()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n")
    f.flush()
    _HELD[key] = [f, 1]
    return RunLock(key)


def delete_run_dir(path: str | Path) -> None:
    """Delete the run directory ``path`` (one a pipeline or sweep starts again: it stopped before its first
    checkpoint) under its lock: a process still training in it, before its first checkpoint, is not
    deleted under but refused with ``RunInUseError`` naming it."""
    path = Path(path)
    if not path.is_dir():
        return
    with lock_run_dir(path):
        shutil.rmtree(path)
