"""The sweep index: one SQLite file per sweep directory recording every run's config hash and status.

    <sweep>/index.sqlite
      runs(run_id, method, task, seed, variant, kind, config_hash, config_json, status, attempts,
           error, traceback, resumed_from, wall_time_s, started_at, finished_at, worker)
      meta(key, value)                 name, spec text and its sha256, created / updated times

A run's status moves pending -> running -> finished | failed (| interrupted). Only the process that
drives the sweep writes the index (workers return their results to it), so there is one writer.

Resume rules (``plan``): finished runs are never run again; running / interrupted runs (the sweep
stopped while they were in flight) and pending runs are run, continuing from their last checkpoint
when their run directory has one; failed runs are run again only when asked (``retry_failed``). A
run whose config differs from the one recorded under the same run id is refused: the spec changed
under a sweep that already ran, and reusing the directory would mix two experiments. A config
recorded by an earlier o2o is compared as this o2o reads it (``runners.completed_config``: keys added
since at their defaults), and recorded anew when it is the same.

Also the layout of a sweep directory (``spec.yaml``, ``runs/<run id>/``) and the reading of a results
archive's ``index.json`` (``o2o.experiments.archive`` writes it), so that ``read_index`` reads both.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from o2o.errors import ConfigError

INDEX_FILE = "index.sqlite"
ARCHIVE_INDEX = "index.json"  # an archive's index (o2o.experiments.archive)
SPEC_COPY = "spec.yaml"
RUNS_DIRNAME = "runs"
STATUSES = ("pending", "running", "finished", "failed", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    task TEXT NOT NULL,
    seed INTEGER NOT NULL,
    variant TEXT NOT NULL,
    kind TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config_json TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    traceback TEXT,
    resumed_from INTEGER,
    wall_time_s REAL,
    started_at REAL,
    finished_at REAL,
    worker TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class RunRecord:
    run_id: str
    method: str
    task: str
    seed: int
    variant: str
    kind: str
    config_hash: str
    config: dict
    status: str
    attempts: int
    error: str | None
    traceback: str | None
    resumed_from: int | None
    wall_time_s: float | None
    started_at: float | None
    finished_at: float | None
    worker: str | None


class SweepIndex:
    """The index of the sweep in ``sweep_dir`` (created on first use)."""

    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / INDEX_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; each write below is one statement or an explicit transaction
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.executescript(_SCHEMA)

    @classmethod
    def open_existing(cls, sweep_dir: str | Path) -> "SweepIndex":
        if not (Path(sweep_dir) / INDEX_FILE).is_file():
            raise ConfigError(f"'{sweep_dir}' is not a sweep directory (no {INDEX_FILE}); give the directory `o2o sweep` wrote")
        return cls(sweep_dir)

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ meta
    def set_meta(self, **values: str) -> None:
        with self._tx():
            for k, v in values.items():
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, str(v)))

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    # ------------------------------------------------------------------ runs
    def records(self) -> list[RunRecord]:
        cur = self._db.execute("SELECT * FROM runs ORDER BY rowid")
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            d = dict(zip(names, row))
            d["config"] = json.loads(d.pop("config_json"))
            out.append(RunRecord(**d))
        return out

    def record(self, run_id: str) -> RunRecord | None:
        return next((r for r in self.records() if r.run_id == run_id), None)

    def register(self, runs) -> None:
        """Add the planned runs not yet in the index (status pending). A run id already recorded with
        another config hash is refused before anything is written."""
        known = {r.run_id: r for r in self.records()}
        upgraded = []  # recorded by an earlier o2o without the config keys added since, at their defaults
        for run in runs:
            old = known.get(run.run_id)
            if old is not None and old.config_hash != run.config_hash:
                from o2o.config import diff_configs
                from o2o.experiments.runners import completed_config

                diffs = diff_configs(completed_config(old.kind, old.config), run.config) if old.kind == run.kind else ["kind changed"]
                if not diffs:
                    upgraded.append(run)
                    continue
                raise ConfigError(
                    f"run '{run.run_id}' is already in {self.path} with another config ({'; '.join(diffs[:3]) or 'kind changed'}); "
                    "the spec changed under a sweep that already ran: give the sweep another name or --out"
                )
        with self._tx():
            for run in upgraded:
                self._db.execute("UPDATE runs SET config_hash=?, config_json=? WHERE run_id=?",
                                 (run.config_hash, json.dumps(run.config, sort_keys=True), run.run_id))
            for run in runs:
                if run.run_id not in known:
                    self._db.execute(
                        "INSERT INTO runs(run_id, method, task, seed, variant, kind, config_hash, config_json, status) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                        (run.run_id, run.method, run.task, run.seed, run.variant, run.kind, run.config_hash,
                         json.dumps(run.config, sort_keys=True)),
                    )

    def plan(self, run_ids, *, retry_failed: bool = False) -> tuple[list[str], list[RunRecord], list[RunRecord]]:
        """``(to_run, finished, failed_skipped)`` among ``run_ids``, by the resume rules above."""
        by_id = {r.run_id: r for r in self.records()}
        to_run, finished, failed = [], [], []
        for run_id in run_ids:
            rec = by_id[run_id]
            if rec.status == "finished":
                finished.append(rec)
            elif rec.status == "failed" and not retry_failed:
                failed.append(rec)
            else:
                to_run.append(run_id)
        return to_run, finished, failed

    def mark_running(self, run_id: str, worker: str = "") -> None:
        self._db.execute(
            "UPDATE runs SET status='running', attempts=attempts+1, started_at=?, worker=?, error=NULL, traceback=NULL "
            "WHERE run_id=?",
            (time.time(), worker, run_id),
        )

    def mark_finished(self, run_id: str, *, wall_time_s: float | None, resumed_from: int | None, worker: str = "") -> None:
        self._db.execute(
            "UPDATE runs SET status='finished', finished_at=?, wall_time_s=?, resumed_from=?, worker=?, error=NULL, "
            "traceback=NULL WHERE run_id=?",
            (time.time(), wall_time_s, resumed_from, worker, run_id),
        )

    def mark_failed(self, run_id: str, error: str, traceback: str = "", *, wall_time_s: float | None = None, worker: str = "") -> None:
        self._db.execute(
            "UPDATE runs SET status='failed', finished_at=?, error=?, traceback=?, wall_time_s=?, worker=? WHERE run_id=?",
            (time.time(), error, traceback[-8000:], wall_time_s, worker, run_id),
        )

    def mark_interrupted(self, run_ids) -> None:
        with self._tx():
            for run_id in run_ids:
                self._db.execute("UPDATE runs SET status='interrupted' WHERE run_id=? AND status='running'", (run_id,))

    def reopen(self, run_id: str) -> None:
        """Mark a run to be run again (its directory lost what made it finished)."""
        self._db.execute("UPDATE runs SET status='interrupted' WHERE run_id=?", (run_id,))

    def counts(self, run_ids=None) -> dict[str, int]:
        """Runs per status: of the whole index, or of ``run_ids`` only (a launch with ``--only``)."""
        if run_ids is None:
            rows = self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
            return {s: 0 for s in STATUSES} | dict(rows)
        wanted = set(run_ids)
        out = {s: 0 for s in STATUSES}
        for rec in self.records():
            if rec.run_id in wanted:
                out[rec.status] = out.get(rec.status, 0) + 1
        return out

    def _tx(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *_):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()


def read_index(sweep_dir: str | Path) -> tuple[dict[str, str], list[RunRecord]]:
    """The meta data and run records of a sweep directory, or of its results archive
    (``o2o.experiments.archive``: index.json instead of the SQLite file), for reports; read only."""
    path = Path(sweep_dir) / INDEX_FILE
    if not path.is_file():
        if is_archive(sweep_dir):
            return read_archive_index(sweep_dir)
        raise ConfigError(f"'{sweep_dir}' is not a sweep directory (no {INDEX_FILE})")
    with closing(SweepIndex(sweep_dir)) as index:
        return index.meta(), index.records()


def run_dir_of(sweep_dir: str | Path, run_id: str) -> Path:
    return Path(sweep_dir) / RUNS_DIRNAME / run_id


def is_archive(path: str | Path) -> bool:
    return (Path(path) / ARCHIVE_INDEX).is_file()


# index.json as archive_sweep writes it: the sweep index's meta (text values; "only" a JSON list of run-id
# patterns) and its run records, of which only the id and status are always present
_OPTIONAL = lambda kind: (kind, type(None))  # noqa: E731
INDEX_SHAPE = {
    "meta": {"*": str},
    "runs": [{
        "run_id": str, "status": str, "method?": _OPTIONAL(str), "task?": _OPTIONAL(str), "seed?": _OPTIONAL(int),
        "variant?": _OPTIONAL(str), "kind?": _OPTIONAL(str), "config_hash?": _OPTIONAL(str), "config?": _OPTIONAL(dict),
        "attempts?": _OPTIONAL(int), "error?": _OPTIONAL(str), "resumed_from?": _OPTIONAL(int),
        "wall_time_s?": _OPTIONAL(float), "started_at?": _OPTIONAL(float), "finished_at?": _OPTIONAL(float),
        "worker?": _OPTIONAL(str),
    }],
}


def read_archive_index(path: str | Path):
    """(meta, records) of an archive, the same types ``read_index`` returns for a sweep directory; an
    index.json of another structure is a one-line ``ConfigError``."""
    from o2o.errors import ConfigError
    from o2o.runs.jsonshape import check_json, read_json

    index = Path(path) / ARCHIVE_INDEX
    fix = "restore it from where the archive was committed (`o2o report --out` writes it)"
    data = read_json(index, INDEX_SHAPE, fix, ConfigError)
    if "only" in data["meta"]:
        try:
            only = json.loads(data["meta"]["only"])
        except (ValueError, RecursionError):
            only = data["meta"]["only"]
        check_json({"meta": {"only": only}}, {"meta": {"only": [str]}}, str(index), fix, ConfigError)
    fields = {f.name for f in dataclasses.fields(RunRecord)}
    records = [RunRecord(**{k: r.get(k) for k in fields}) for r in data["runs"]]
    return dict(data["meta"]), records
