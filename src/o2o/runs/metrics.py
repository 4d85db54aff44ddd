"""Metrics of a run: one CSV row per ``write`` (for scripts and plots) plus TensorBoard scalars, and
Weights & Biases when ``$O2O_WANDB_PROJECT`` asks for it (``runs.wandb_log``).

The CSV's columns are ``step`` and the union of every metric name logged so far, in the order they
first appeared; a row leaves the metrics it did not log empty. When a new name appears the file is
rewritten with the wider header (rare: a handful of times per run), so the CSV is always one valid
table. Values are written with ``repr(float)``, which round-trips exactly.

TensorBoard's (and W&B's) x-axis is the row's ``step``, or with ``x="env_steps"`` that metric's value:
an online run's CSV counts iterations but its curves are drawn against environment steps, an offline
run's (and a bridge's) against gradient steps, its own ``step``.

Why ``truncate_after``: a run resumed from its checkpoint at step S repeats the steps after S that
the interrupted process had already logged. Dropping those rows (and hiding those TensorBoard events
with ``purge_step``, in the x-axis' units: after the last kept row's x) makes a resumed run's
metrics.csv identical to an uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from o2o.errors import RunDirError
from o2o.runs.rundir import METRICS_FILE, TB_DIRNAME, RunDir

__all__ = ["MetricsWriter", "read_metrics_csv"]

STEP = "step"


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return [], []
    return rows[0], rows[1:]


def _replace_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically (a reader sees the old or the new file, never half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(header)
        writer.writerows(rows)
    return buf.getvalue()


class MetricsWriter:
    """Append metrics of a run to ``metrics.csv`` and ``tb/`` (and W&B).

    ``MetricsWriter(run)`` on a resumed ``RunDir`` first drops the rows logged after the checkpoint
    it resumes from. Given a plain path it touches nothing until the first ``write``.
    Steps should not decrease from one ``write`` to the next (several rows per step are fine).
    ``x``: the metric every row logs whose value is TensorBoard's and W&B's step (None: the row's
    ``step``); it must not decrease either. ``tensorboard`` and ``wandb`` (when ``$O2O_WANDB_PROJECT``
    asks for it) switch those two off.
    """

    def __init__(self, run: RunDir | str | Path, *, tensorboard: bool = True, wandb: bool = True, x: str | None = None):
        root = run.path if isinstance(run, RunDir) else Path(run)
        self.csv_path = root / METRICS_FILE
        self.tb_dir = root / TB_DIRNAME
        self._tensorboard = tensorboard
        self._wandb_enabled = wandb
        self._x = x
        self._tb = None
        self._root = root
        self._wandb = None  # the run's W&B run, opened at the first row when $O2O_WANDB_PROJECT is set (runs.wandb_log)
        self._purge_step: int | None = None
        self._file = None
        self._header, _ = _read_table(self.csv_path)
        if isinstance(run, RunDir) and run.resume_step is not None:
            self.truncate_after(run.resume_step)

    @property
    def header(self) -> list[str]:
        return list(self._header)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log ``metrics`` (name -> number; jax/numpy scalars welcome) at ``step``."""
        step = int(step)
        values = {}
        for name, value in metrics.items():
            if not isinstance(name, str) or not name or name == STEP:
                raise ValueError(f"metric name {name!r} is not allowed (a non-empty str other than 'step')")
            try:
                values[name] = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric '{name}' is not a number: {value!r}") from None

        new_names = [n for n in values if n not in self._header]
        if new_names:
            old_header, rows = _read_table(self.csv_path)
            self._header = (old_header or [STEP]) + new_names
            rows = [r + [""] * (len(self._header) - len(r)) for r in rows]
            self._replace_file(_format_table(self._header, rows))
        row = [str(step)] + [repr(values[n]) if n in values else "" for n in self._header[1:]]
        f = self._csv_file()
        csv.writer(f, lineterminator="\n").writerow(row)
        f.flush()  # a crashed process keeps its rows; fsync waits for flush()

        x = step
        if self._x is not None:
            if self._x not in values:
                raise ValueError(f"a row of this writer must log '{self._x}', its x-axis")
            x = int(values[self._x])
        tb = self._tb_writer()
        if tb is not None:
            for name, value in values.items():
                tb.add_scalar(name, value, global_step=x)
        wandb_run = self._wandb_run()
        if wandb_run is not None:
            wandb_run.log(x, values)

    def truncate_after(self, step: int) -> None:
        """Drop CSV rows with a step above ``step``; TensorBoard hides its later events too (those
        after the last kept row's x)."""
        step = int(step)
        header, rows = _read_table(self.csv_path)
        kept = [r for r in rows if int(r[0]) <= step]
        purge = step + 1
        if self._x is not None:
            column = header.index(self._x) if self._x in header else None
            xs = [int(float(r[column])) for r in kept if column is not None and column < len(r) and r[column] != ""]
            purge = max(xs) + 1 if xs else 0
        # The header an uninterrupted run would have: only names the kept rows actually logged.
        used = [i for i in range(1, len(header)) if any(i < len(r) and r[i] != "" for r in kept)]
        self._header = [STEP] + [header[i] for i in used] if kept else []
        kept = [[r[0]] + [r[i] if i < len(r) else "" for i in used] for r in kept]
        if self.csv_path.exists():
            self._replace_file(_format_table(self._header, kept))
        self._purge_step = purge
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def flush(self) -> None:
        """Push rows and events to disk (call before saving a checkpoint)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _csv_file(self):
        if self._file is None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.csv_path, "a", newline="")
        return self._file

    def _replace_file(self, text: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        _replace_text(self.csv_path, text)

    def _wandb_run(self):
        """The run's W&B run when ``$O2O_WANDB_PROJECT`` asks for one and this writer logs there (the
        run's own metrics: a bridge's writer does not)."""
        if self._wandb is None and self._wandb_enabled:
            from o2o.runs.wandb_log import WandbRun, wandb_project

            project = wandb_project()
            if project is not None:
                self._wandb = WandbRun(self._root, project)
        return self._wandb

    def _tb_writer(self):
        if not self._tensorboard:
            return None
        if self._tb is None:
            from tensorboardX import SummaryWriter  # imported on first use: it pulls in protobuf

            # Event files are named by the second they open in; the suffix keeps a run resumed within
            # the same second from overwriting the previous file.
            self._tb = SummaryWriter(
                logdir=str(self.tb_dir),
                purge_step=self._purge_step,
                filename_suffix=f".{uuid.uuid4().hex[:8]}",
            )
        return self._tb


def merge_metrics(run: RunDir | str | Path, step: int, metrics: Mapping[str, Any], *, tensorboard: bool = True) -> None:
    """Write ``metrics`` into the existing metrics.csv row of ``step`` (its last row at that step;
    a new row in step order if there is none), adding columns as needed; the file is replaced
    atomically. For values computed after training (``o2o eval --record``); TensorBoard gets them as
    scalars at ``step`` too."""
    root = run.path if isinstance(run, RunDir) else Path(run)
    path = root / METRICS_FILE
    step = int(step)
    values = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name or name == STEP:
            raise ValueError(f"metric name {name!r} is not allowed (a non-empty str other than 'step')")
        values[name] = float(value)
    header, rows = _read_table(path)
    header = header or [STEP]
    header = header + [n for n in values if n not in header]
    rows = [r + [""] * (len(header) - len(r)) for r in rows]
    at = [i for i, r in enumerate(rows) if int(r[0]) == step]
    if at:
        row = rows[at[-1]]
    else:
        row = [str(step)] + [""] * (len(header) - 1)
        pos = next((i for i, r in enumerate(rows) if int(r[0]) > step), len(rows))
        rows.insert(pos, row)
    for name, value in values.items():
        row[header.index(name)] = repr(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_text(path, _format_table(header, rows))
    if tensorboard:
        from tensorboardX import SummaryWriter

        with SummaryWriter(logdir=str(root / TB_DIRNAME), filename_suffix=f".{uuid.uuid4().hex[:8]}") as tb:
            for name, value in values.items():
                tb.add_scalar(name, value, global_step=step)


def read_metrics_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a metrics.csv (or of a run directory's): ``step`` as int64, the rest float64
    with NaN where a row did not log that metric."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise RunDirError(f"metrics file '{path}' does not exist; give a run directory or its metrics.csv")
    header, rows = _read_table(path)
    if not header:
        return {}
    if header[0] != STEP:
        raise RunDirError(f"'{path}' is not an o2o metrics file (first column is {header[0]!r}, not 'step')")
    columns: dict[str, np.ndarray] = {}
    try:
        columns[STEP] = np.array([int(r[0]) for r in rows], dtype=np.int64)
        for i, name in enumerate(header[1:], start=1):
            columns[name] = np.array(
                [float(r[i]) if i < len(r) and r[i] != "" else math.nan for r in rows], dtype=np.float64
            )
    except ValueError as err:
        raise RunDirError(f"'{path}' holds a value that is not a number ({err}); the file is corrupt") from None
    return columns
