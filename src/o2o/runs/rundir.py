"""The run directory: the unit of work of o2o.

    <run>/
      run.json        what the run is: {"kind": pretrain | train | finetune, "method": the algorithm or
                      method, "o2o_version"}; commands read the kind here (``run_info``)
      config.yaml     the resolved config (every default filled in); --resume checks against it
      metrics.csv     one row per logged step (see metrics.py)
      tb/             TensorBoard event files
      checkpoints/    ckpt_<step>/ directories and a `latest` pointer (see checkpoint.py)
      summary.json    final numbers of the run, written at its end
      .lock           held by the process training in the run (see lock.py)

Why the refusals: a new run never writes into a directory that holds something (an old run's
checkpoints would otherwise be mixed with the new one's), and a resumed run must have exactly the
config it was started with, or "resume" would quietly become a different experiment; only its budget
may be raised (``budget_keys``), which extends the run and is recorded in config.yaml.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from o2o.version import __version__
from o2o.config import diff_configs, to_dict
from o2o.errors import RunDirError, RunFinished
from o2o.runs.checkpoint import (
    CHECKPOINTS_DIRNAME,
    json_default,
    checkpoint_step,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_text_atomic,
)
from o2o.runs.lock import LOCK_FILE, RunLock, lock_run_dir

__all__ = ["FINETUNE", "PRETRAIN", "TRAIN", "RunDir", "budget_keys", "hold_runs", "resume_diffs", "run_finished", "run_info"]

# The kinds of run directory, and the command that makes (and resumes) each.
PRETRAIN, TRAIN, FINETUNE = "pretrain", "train", "finetune"
RUN_KINDS = (PRETRAIN, TRAIN, FINETUNE)
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
TB_DIRNAME = "tb"
_MAX_DIFFS_SHOWN = 5


def plain_config(config: Any) -> dict:
    """The config as it will read back from config.yaml (tuples become lists, and so on)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = to_dict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"a run's config must be a mapping or a config dataclass, got {type(config)}")
    return yaml.safe_load(yaml.safe_dump(_lists(config), sort_keys=False)) or {}


def budget_keys(config: Mapping) -> tuple[str, ...]:
    """The keys of a run's (plain) config that only say how long it trains, which ``--resume`` may raise
    to extend a run, finished or not: ``offline.steps`` (o2o pretrain) and ``online.iterations`` (o2o
    train, o2o finetune), except in a run whose schedule spans its length (an annealed learning rate,
    ``agent.anneal_lr``), where a longer run is another run."""
    keys = []
    if isinstance(config.get("offline"), Mapping):
        keys.append("offline.steps")
    if isinstance(config.get("online"), Mapping) and not (config.get("agent") or {}).get("anneal_lr"):
        keys.append("online.iterations")
    return tuple(keys)


def dotted_value(config: Mapping, key: str) -> Any:
    """The value at the dotted ``key`` (e.g. ``online.iterations``) of a nested config; None if absent."""
    for part in key.split("."):
        config = config.get(part) if isinstance(config, Mapping) else None
    return config


def resume_diffs(saved: Mapping, config: Mapping) -> tuple[list[str], list[str]]:
    """(the differences ``--resume`` refuses, ``"key: old -> new"`` each; the budget keys it raises,
    which it accepts: ``budget_keys``). A budget key lowered is a refused difference."""
    raised = []
    for key in budget_keys(saved):
        old, new = dotted_value(saved, key), dotted_value(config, key)
        if isinstance(old, int) and isinstance(new, int) and new > old:
            raised.append(key)
    diffs = [d for d in diff_configs(saved, config) if d.split(": ", 1)[0] not in raised]
    return diffs, raised


def refusal(path: Path, diffs: list[str]) -> str:
    """The line ``--resume`` refuses a different config with."""
    shown = "; ".join(diffs[:_MAX_DIFFS_SHOWN])
    more = f" (and {len(diffs) - _MAX_DIFFS_SHOWN} more)" if len(diffs) > _MAX_DIFFS_SHOWN else ""
    return (f"cannot resume '{path}': config differs: {shown}{more}; only a budget key ("
            f"{', '.join(budget_keys(read_config(path))) or 'none for this run'}) may be raised on resume: resume with "
            f"the run's own config ({path / CONFIG_FILE}) or start a new run with another --out")


def write_config(path: Path, config: Mapping) -> None:
    """Write a run's resolved config (plain) to ``path/config.yaml``."""
    header = f"# Resolved config of this run (o2o {__version__}). --resume refuses a different one, except a raised budget.\n"
    write_text_atomic(Path(path) / CONFIG_FILE, header + yaml.safe_dump(dict(config), sort_keys=False))


def _lists(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


@dataclasses.dataclass
class RunDir:
    """An open run directory. Build it with ``RunDir.create`` (to write) or ``RunDir.open`` (to read).

    ``resume_step`` is the step of the checkpoint a resumed run continues from (None for a new
    run); a ``MetricsWriter`` on this run drops the rows logged after it. A run built by ``create``
    holds the run's lock (``o2o.runs.lock``) until ``close`` (or the end of a ``with`` block, or of the
    process).
    """

    path: Path
    config: dict
    resume_step: int | None = None
    lock: RunLock | None = dataclasses.field(default=None, repr=False, compare=False)

    def close(self) -> None:
        """Release the run's lock (a no-op for a run opened for reading)."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- layout
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def tb_dir(self) -> Path:
        return self.path / TB_DIRNAME

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIRNAME

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    # ---------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | Path, config: Mapping | Any, *, kind: str, resume: bool = False) -> RunDir:
        """Start a new run of ``kind`` (pretrain | train | finetune) in ``path``, or with ``resume=True``
        reopen an interrupted one.

        ``config`` is the resolved config (a dict, or a config dataclass). A new run needs ``path``
        absent or empty. A resumed run needs ``path`` to hold a run of the same kind with the same
        config and at least one checkpoint; nothing is written before those checks pass. The returned
        run holds the run directory's lock: a directory another process trains in is refused.
        """
        if kind not in RUN_KINDS:
            raise ValueError(f"kind must be one of {RUN_KINDS}, got {kind!r}")
        path = Path(path)
        plain = plain_config(config)
        if resume:
            return cls._resume(path, plain, kind)
        _check_new(path)
        try:
            for sub in (TB_DIRNAME, CHECKPOINTS_DIRNAME):
                (path / sub).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirError(f"cannot create run directory '{path}' ({err}); choose another --out") from None
        lock = lock_run_dir(path)
        try:
            if (path / CONFIG_FILE).exists():  # another process started a run here since the check above
                _check_new(path)
            write_run_info(path, kind, plain)
            write_config(path, plain)
        except BaseException:
            lock.release()
            raise
        return cls(path=path, config=plain, lock=lock)

    @classmethod
    def _resume(cls, path: Path, config: dict, kind: str) -> RunDir:
        if not path.is_dir():
            raise RunDirError(f"cannot resume '{path}': no such directory; start a new run with --out {path}")
        require_kind(path, kind)  # a directory that holds no run gets no lock file
        lock = lock_run_dir(path)
        try:
            return cls._resume_locked(path, config, kind, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _resume_locked(cls, path: Path, config: dict, kind: str, lock: RunLock) -> RunDir:
        saved = read_config(path)
        diffs, raised = resume_diffs(saved, config)
        if diffs:
            raise RunDirError(refusal(path, diffs))
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise RunDirError(
                f"cannot resume '{path}': it has no checkpoint (it stopped before its first save); "
                f"delete it and start the run again with --out {path}"
            )
        if raised:  # the run goes on to the raised budget: its config says so from now on
            write_config(path, config)
            saved = config
        if not (path / RUN_FILE).is_file():  # a run started before o2o recorded its kind
            write_run_info(path, kind, saved)
        for sub in (TB_DIRNAME, CHECKPOINTS_DIRNAME):
            (path / sub).mkdir(exist_ok=True)
        return cls(path=path, config=saved, resume_step=checkpoint_step(ckpt), lock=lock)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run, for reading (aggregation, plots, evaluation of its checkpoints)."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"run directory '{path}' does not exist; check the path")
        return cls(path=path, config=read_config(path))

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, *, arrays: Any, host_state: Mapping, keep: int = 2) -> Path:
        """Atomically save ``ckpt_<step>`` and make it the latest; keeps the ``keep`` newest."""
        return save_checkpoint(self.checkpoints_dir, step, arrays=arrays, host_state=host_state, keep=keep)

    def load_checkpoint(self, *, template: Any = None, host_template: Any = None) -> tuple[Any, dict]:
        """``(arrays, host_state)`` of the latest checkpoint (see ``checkpoint.load_checkpoint``)."""
        return load_checkpoint(self.path, template=template, host_template=host_template)

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoints_dir)

    # ---------------------------------------------------------------- summary
    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` atomically (numpy scalars become numbers)."""
        text = json.dumps(dict(summary), default=json_default, indent=2)
        write_text_atomic(self.summary_path, text + "\n")
        return self.summary_path

    def read_summary(self) -> dict:
        if not self.summary_path.is_file():
            raise RunDirError(
                f"run '{self.path}' has no {SUMMARY_FILE}; it has not finished (resume it with "
                f"--resume {self.path})"
            )
        return read_summary(self.summary_path)


# summary.json: an object whose numbers that reports, pipelines and sweeps read are numbers (a run of an
# unconstrained task has a null cost limit)
SUMMARY_SHAPE = {"train_episodes?": float, "train_cumulative_cost?": float, "wall_time_s?": float,
                 "final_eval_normalized_return?": float, "final_eval_return?": float, "cost_limit?": (float, type(None))}


def read_summary(path: str | Path) -> dict:
    """A run's ``summary.json`` (``path``), refused with one line if it is not JSON of its structure."""
    from o2o.runs.jsonshape import read_json

    run = Path(path).parent
    return read_json(path, SUMMARY_SHAPE, f"restore it, or delete it and resume the run (--resume {run}) to write it again")


def run_finished(path: str | Path, *, group: bool = False) -> RunFinished:
    """What ``--resume`` of a run at its configured end with its summary.json written raises, before it
    changes anything there; ``group``: ``path`` holds the seed runs of one group (o2o pretrain --seeds)."""
    path = Path(path)
    if group:
        return RunFinished(f"the runs in '{path}' have finished: nothing to resume (their {SUMMARY_FILE} files are left as they are)")
    return RunFinished(f"run '{path}' has finished: nothing to resume (its results, {path / SUMMARY_FILE}, are left as they are)")


def hold_runs(paths) -> contextlib.ExitStack:
    """The locks of those of ``paths`` that hold a run (a config.yaml), held until the returned stack
    closes: a resume takes them before it loads data and builds its trainer, so that a run in use is
    refused at once. ``RunDir.create`` takes each again (re-entrant) and checks the rest."""
    stack = contextlib.ExitStack()
    try:
        for path in paths:
            if (Path(path) / CONFIG_FILE).is_file():
                stack.enter_context(lock_run_dir(path))
    except BaseException:
        stack.close()
        raise
    return stack


def _check_new(path: Path) -> None:
    """Refuse ``path`` for a new run unless it is absent or empty (a lock file alone counts as empty)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"'{path}' is a file, not a directory; choose another --out")
    if path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir()):
        if (path / CONFIG_FILE).exists():
            raise RunDirError(
                f"run directory '{path}' already exists and holds a run; pass --resume {path} "
                f"to continue it or choose another --out"
            )
        raise RunDirError(
            f"directory '{path}' exists and is not empty (it holds no o2o run); choose another "
            f"--out or empty it"
        )


RUN_INFO_SHAPE = {"kind": str, "method": str, "o2o_version": str}


def write_run_info(path: Path, kind: str, config: Mapping) -> None:
    """``run.json``: the run's kind, its method (fine-tuning) or algorithm, the o2o that started it."""
    name = config.get("method") if kind == FINETUNE else config.get("algo")
    info = {"kind": kind, "method": str(name or ""), "o2o_version": __version__}
    write_text_atomic(path / RUN_FILE, json.dumps(info, indent=1) + "\n")


def run_info(path: str | Path) -> dict:
    """What the run directory ``path`` holds: ``{"kind", "method", "o2o_version"}`` from its run.json; for
    a run started before o2o wrote run.json, read from its config.yaml (a fine-tuning config names its
    method, a pre-training config has an ``offline`` section), with ``o2o_version`` empty."""
    from o2o.runs.jsonshape import read_json

    path = Path(path)
    info_path = path / RUN_FILE
    if not info_path.is_file():
        saved = read_config(path)
        kind = FINETUNE if "method" in saved else PRETRAIN if "offline" in saved else TRAIN
        return {"kind": kind, "method": str(saved.get("method" if kind == FINETUNE else "algo") or ""), "o2o_version": ""}
    fix = "restore it (o2o writes it when a run starts and never changes it)"
    info = read_json(info_path, RUN_INFO_SHAPE, fix)
    if info["kind"] not in RUN_KINDS:
        raise RunDirError(f"'{info_path}' names kind '{info['kind']}', not one of {', '.join(RUN_KINDS)}; {fix}")
    return info


def require_kind(path: Path, kind: str) -> None:
    """Refuse to continue the run in ``path`` as a ``kind`` run when it is another kind, naming the command
    that continues it."""
    held = run_info(path)["kind"]
    if held != kind:
        raise RunDirError(f"'{path}' holds a {held} run, not a {kind} run; continue it with `o2o {held} --resume {path}`")


def read_config(path: Path) -> dict:
    """The saved config.yaml of the run directory ``path`` as a dict; one clear error if it is missing or unreadable."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise RunDirError(
            f"'{path}' holds no o2o run (no {CONFIG_FILE}); give the directory of a run made with --out"
        )
    try:
        data = yaml.safe_load(config_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RunDirError(
            f"'{config_path}' is not text (byte {err.start} is not UTF-8); restore it (it was written by o2o and "
            f"should not be edited)"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise RunDirError(
            f"'{config_path}' is not valid YAML{line}; restore it (it was written by o2o and should "
            f"not be edited)"
        ) from None
    if not isinstance(data, dict):
        raise RunDirError(f"'{config_path}' does not hold a mapping; restore it from the run's start")
    return data
