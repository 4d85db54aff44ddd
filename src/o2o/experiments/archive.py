"""Results archives: what a report was computed from, small enough to commit beside the report.

A sweep directory holds every run's checkpoints (replay buffers included, for exact resume: hundreds of
MB per run), so it lives under ``runs/`` and is not kept with the code. A results page in ``docs/`` is
kept, but alone it cannot be re-derived, re-aggregated or plotted again once the sweep directory is
gone. ``o2o report --out PAGE.md`` therefore also writes, for each sweep it reads, an archive:

    <PAGE>/archive/<sweep name>/
      index.json          the sweep index (meta: name, spec source and sha256; every run's record)
      spec.yaml           the spec text the sweep ran
      runs/<run id>/      for each finished run: config.yaml, metrics.csv, summary.json,
                          bridge/metrics.csv (the bridge stages of a fine-tuning run),
                          diagnose_critic.json (`o2o diagnose-critic`, where run) and
                          pretrained_summary.json (the final evaluation of the run it started from)

About 5-50 kB per run. An archive is a sweep directory without checkpoints and without the SQLite
index: ``o2o report`` (and scripts such as ``lab/ocr/claims.py``) read it like
the sweep itself (``read_index`` falls back to index.json), so ``o2o report <archive> --out X.md``
gives back the same tables and figures. It cannot be resumed (no checkpoints): ``o2o sweep`` refuses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from o2o.experiments.index import ARCHIVE_INDEX, SPEC_COPY, is_archive, read_archive_index, read_index, run_dir_of

PRETRAINED_SUMMARY = "pretrained_summary.json"
RUN_FILES = ("config.yaml", "metrics.csv", "summary.json", "bridge/metrics.csv", "diagnose_critic.json")


def archive_sweep(sweep_dir: str | Path, dest: str | Path) -> dict:
    """Copy the index, spec and every finished run's small files of ``sweep_dir`` into ``dest``
    (replaced; refused if ``dest`` is an archive with finished runs the sweep directory lacks).
    Unfinished and failed runs keep their index record (so a report of the archive lists them as left
    out) but no files. Returns {"runs": finished runs copied, "bytes": total size}."""
    from o2o.config import load_yaml

    sweep_dir, dest = Path(sweep_dir), Path(dest)
    if sweep_dir.resolve() == dest.resolve() or dest.resolve() in sweep_dir.resolve().parents:
        from o2o.errors import ConfigError

        raise ConfigError(f"cannot archive '{sweep_dir}' into itself or a folder above it ('{dest}'); give --out elsewhere")
    meta, records = read_index(sweep_dir)
    if is_archive(dest):  # replacing an archive must not drop finished runs this sweep directory lacks
        have = {r.run_id for r in records if r.status == "finished"}
        lost = [r.run_id for r in read_archive_index(dest)[1] if r.status == "finished" and r.run_id not in have]
        if lost:
            from o2o.errors import ConfigError

            raise ConfigError(f"'{dest}' holds {len(lost)} finished runs that '{sweep_dir}' has not ({lost[0]}, ...); "
                              f"take them in first with `o2o sweep {sweep_dir} --adopt {dest}`, or report with --no-archive")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    copied = 0
    for rec in records:
        src = run_dir_of(sweep_dir, rec.run_id)
        if rec.status != "finished" or not (src / "summary.json").is_file():
            continue
        out = run_dir_of(dest, rec.run_id)
        for name in RUN_FILES:
            if (src / name).is_file():
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / name, out / name)
        pretrained = load_yaml(src / "config.yaml").get("pretrained")
        for candidate in ([Path(pretrained) / "summary.json", src / PRETRAINED_SUMMARY] if pretrained else []):
            if candidate.is_file():
                shutil.copy2(candidate, out / PRETRAINED_SUMMARY)
                break
        copied += 1
    if (sweep_dir / SPEC_COPY).is_file():
        shutil.copy2(sweep_dir / SPEC_COPY, dest / SPEC_COPY)
    entries = []
    for rec in records:
        d = dataclasses.asdict(rec)
        d.pop("traceback")  # the error line stays; tracebacks name this machine's paths and can be long
        entries.append(d)
    (dest / ARCHIVE_INDEX).write_text(json.dumps({"meta": meta, "runs": entries}, indent=1, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return {"runs": copied, "bytes": size}


def adopt_archive(archive: str | Path, sweep_dir: str | Path, index, planned_runs, echo=print) -> list[str]:
    """Record the finished runs of ``archive`` as finished runs of the sweep in ``sweep_dir`` (``index``;
    ``planned_runs``: the runs this launch plans plus, with --only, the spec's other runs the archive
    finished, registered here as they are adopted), copying their small files into the sweep's run directories,
    so the sweep runs only the rest. For a sweep continued on another machine, where the sweep directory
    of an earlier session is gone but its archive was kept.

    A run is adopted only where the spec plans the same run id with the same config hash (else the
    archive is of another experiment: refused before anything is copied). Runs the index already has
    finished, and runs whose directory exists here (this machine ran or is running them), are kept as they
    are. An adopted run has no checkpoints: it cannot be resumed, nor fine-tuned from."""

    archive, sweep_dir = Path(archive), Path(sweep_dir)
    finished = check_adoptable(archive, planned_runs)
    planned = {r.run_id: r for r in planned_runs}
    adopted = []
    for rec in finished:
        if rec.run_id not in planned:
            continue
        current = index.record(rec.run_id)
        dest = run_dir_of(sweep_dir, rec.run_id)
        if (current is not None and current.status == "finished") or dest.exists():
            continue
        index.register([planned[rec.run_id]])  # a run outside --only is not in the index yet
        shutil.copytree(run_dir_of(archive, rec.run_id), dest)
        index.mark_running(rec.run_id, worker=f"adopted from {archive}")
        index.mark_finished(rec.run_id, wall_time_s=rec.wall_time_s, resumed_from=rec.resumed_from, worker=f"adopted from {archive}")
        adopted.append(rec.run_id)
    unplanned = sum(r.run_id not in planned for r in finished)
    echo(f"adopted {len(adopted)} finished runs from {archive}" + (f" ({unplanned} not in this spec: ignored)" if unplanned else ""))
    return adopted


def check_adoptable(archive: str | Path, planned_runs) -> list:
    """The finished run records of ``archive`` (with their files), after checking that each one the spec
    plans has the planned config hash; a one-line ``ConfigError`` otherwise (nothing written)."""
    from o2o.errors import ConfigError

    archive = Path(archive)
    if not is_archive(archive):
        raise ConfigError(f"--adopt '{archive}' is not a results archive (no {ARCHIVE_INDEX}; `o2o report --out` writes one)")
    _, records = read_archive_index(archive)
    planned = {r.run_id: r for r in planned_runs}
    for rec in records:
        if rec.status == "finished":
            check_plain_tree(archive, run_dir_of(archive, rec.run_id))
    finished = [r for r in records if r.status == "finished" and (run_dir_of(archive, r.run_id) / "summary.json").is_file()]
    for rec in finished:
        run = planned.get(rec.run_id)
        if run is not None and run.config_hash != rec.config_hash:
            from o2o.config import diff_configs
            from o2o.experiments.runners import completed_config

            diffs = diff_configs(completed_config(rec.kind, rec.config), run.config) if rec.kind == run.kind else ["kind changed"]
            if not diffs:
                continue  # archived by an earlier o2o, before keys it lacks were added: the same experiment
            raise ConfigError(f"--adopt: run '{rec.run_id}' of '{archive}' has another config than the spec plans "
                              f"({'; '.join(diffs[:3]) or 'kind changed'}); it is not this experiment's run")
    return finished


def check_plain_tree(root: str | Path, path: str | Path) -> None:
    """A one-line ``ConfigError`` unless ``path`` (absent, or a folder under ``root``) and everything in it
    are plain folders and files inside ``root``: a symbolic link (or a device, a pipe) in an archive
    would bring its target, from anywhere on this machine, into the sweep and the next report."""
    from o2o.errors import ConfigError

    root, path = Path(root), Path(path)
    fix = "an archive holds plain files only: replace it by a copy of what it names, or remove it, and adopt again"
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = ()
    if not parts or ".." in parts:
        raise ConfigError(f"--adopt: '{path}' is not a folder inside the archive '{root}'; the archive's index.json is corrupt")
    here = root
    for part in parts:  # the run folder's own path, component by component
        here = here / part
        if here.is_symlink():
            raise ConfigError(f"--adopt: '{here}' is a symbolic link; {fix}")
        if not here.exists():
            return
    if not path.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"--adopt: '{path}' lies outside the archive '{root}'; {fix}")
    for folder, dirs, files in os.walk(path):  # os.walk does not descend into linked folders
        for name in dirs + files:
            item = Path(folder) / name
            if item.is_symlink():
                raise ConfigError(f"--adopt: '{item}' is a symbolic link; {fix}")
            if not (item.is_dir() or item.is_file()):
                raise ConfigError(f"--adopt: '{item}' is not a plain file or folder; {fix}")
