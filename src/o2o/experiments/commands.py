"""Command-line front ends of the experiments layer (``o2o sweep``, ``o2o report``).

``add_parsers(sub, add_config_args)`` adds the sub-commands to the ``o2o`` parser; ``COMMANDS`` maps
each command name to its handler ``f(args) -> int``. Kept here so that the experiments layer owns its
commands and ``cli.py`` only wires them in.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

from o2o.errors import ConfigError


def add_parsers(sub, add_config_args) -> None:
    """Add this layer's sub-commands to ``sub`` (an argparse sub-parsers action)."""
    p = sub.add_parser(
        "sweep",
        help="run methods x tasks x seeds x config variants from a YAML spec (local pool or Ray); resumable",
        description="Run every run a sweep spec plans (docs/experiments.md). Every run's config is built and checked "
        "first: an unknown method, task or config key, or malformed YAML, is refused naming its line before anything "
        "is launched. Runs go to SWEEP_DIR/runs/<method>/<task>/seed<k>; SWEEP_DIR/index.sqlite records each run's "
        "config hash and status, so launching the same sweep again runs only what has not finished (stopped runs "
        "continue from their checkpoints; failed runs only with --retry-failed). Ctrl-C, SIGTERM or SIGUSR1 (a batch "
        "system's warning) stop it: each run in flight checkpoints at the end of its current iteration first (up to 20 s).",
    )
    p.add_argument("spec", metavar="SPEC.yaml|SWEEP_DIR", help="a sweep spec, or the directory of a sweep to continue")
    p.add_argument("--out", metavar="DIR", help="sweep directory (default: the spec's 'out', else runs/sweeps/<name>)")
    p.add_argument("--backend", choices=["local", "ray", "sequential"], default="local",
                   help="local: a process pool on this machine (default); ray: a Ray cluster (--address) or a local Ray "
                   "instance; sequential: one run at a time in this process")
    p.add_argument("--workers", type=int, help="parallel runs (default: one per core)")
    p.add_argument("--threads-per-worker", type=int, help="cores per run (default: cores // workers; sequential: all cores)")
    p.add_argument("--no-pin", action="store_true", help="do not pin each worker to its own cores")
    p.add_argument("--address", metavar="HOST:PORT", help="Ray cluster to run on (with --backend ray; 'auto' finds a local one)")
    p.add_argument("--retry-failed", action="store_true", help="run the runs that failed before again")
    p.add_argument("--defer-eval", action="store_true",
                   help="pre-training runs: no evaluation on the live task while training (a GPU node without the "
                   "simulator), every checkpoint kept; evaluate them afterwards with `o2o eval SWEEP_DIR --record`")
    p.add_argument("--adopt", metavar="ARCHIVE", action="append", default=[],
                   help="a results archive of this spec (`o2o report` writes PAGE/archive/<sweep>/): its finished runs with "
                   "the same config hash are recorded as finished and not run again (continue a sweep on a machine that lost "
                   "the sweep directory; those runs keep no checkpoints). With --only, the archive's finished runs outside the "
                   "patterns are adopted too (never run), so the report keeps them. Repeatable")
    p.add_argument("--only", metavar="GLOB", action="append", default=[],
                   help="run only the runs whose id (<method>/<task>/seed<k>) matches this glob, e.g. 'cql-*/Hopper/*' "
                   "(repeatable); the others are not built or checked, so a task whose dataset this machine lacks can be left "
                   "out, and a later launch without --only runs them")
    p.add_argument("--dry-run", action="store_true", help="check the spec and list the runs it plans; write nothing")
    p.add_argument("--status", action="store_true", help="show the index of SWEEP_DIR (every run's status, attempts, error)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override one config key of every run, e.g. --set online.iterations=4 (repeatable; part of each "
                   "run's config hash)")

    p = sub.add_parser(
        "report",
        help="tables (markdown + CSV) and learning-curve figures from a sweep or run directories",
        description="Aggregate finished runs over seeds and write a results page: DSRL-normalised reward and cost "
        "(unsafe agents marked), D4RL-normalised scores, cumulative training cost, final and best (labelled) with the "
        "budget each was measured at; one figure per task with reward and cost panels and the cost limit drawn. "
        "Failed or unfinished runs are listed and left out.",
    )
    p.add_argument("sources", nargs="+", metavar="SWEEP_DIR|RUN_DIR", help="sweep directories, run directories, or folders holding runs")
    p.add_argument("--out", metavar="FILE.md", help="results page (default: <sweep>/report/report.md or report/report.md); "
                   "figures and CSVs go to FILE/ beside it")
    p.add_argument("--aggregate", choices=["mean", "iqm"], default="mean",
                   help="mean: mean and 95%% t interval (default); iqm: interquartile mean and 95%% bootstrap interval (rliable)")
    p.add_argument("--title", help="the page's title")
    p.add_argument("--no-archive", action="store_true",
                   help="do not copy the sweeps' run data (config, metrics.csv, summary.json of every finished run; no "
                   "checkpoints) to FILE/archive/<sweep>/, from which the page can be made again once the sweep directory is gone")


# ------------------------------------------------------------------------------------ sweep


def _resolve_spec(args):
    """(spec, sweep_dir) from a spec file or from a sweep directory (its recorded spec)."""
    from o2o.experiments.index import INDEX_FILE, read_index
    from o2o.experiments.spec import load_spec, parse_spec
    from o2o.experiments.index import SPEC_COPY
    given = Path(args.spec)
    unchecked = _archived_finished(args.adopt)
    if given.is_dir():
        if not (given / INDEX_FILE).is_file():
            from o2o.experiments.index import is_archive
            if is_archive(given):
                raise ConfigError(f"'{given}' is a results archive (no checkpoints, no index.sqlite): it can be reported "
                                  "but not run; give the spec file to run the sweep again")
            raise ConfigError(f"'{given}' is a directory but not a sweep directory (no {INDEX_FILE}); give a spec file")
        meta, _ = read_index(given)
        overrides = args.overrides or json.loads(meta.get("cli_overrides", "[]"))
        source = Path(meta.get("spec_source", ""))
        copy = given / SPEC_COPY
        if source.is_file() and source.read_text() == copy.read_text():
            return load_spec(source, cli_overrides=overrides, only=args.only, unchecked=unchecked), Path(args.out or given), overrides
        from o2o.config import load_yaml

        spec = parse_spec(load_yaml(copy), copy.read_text(), source=str(copy), base_dir=source.parent if meta.get("spec_source") else given,
                          default_name=meta.get("name", given.name), cli_overrides=overrides, only=args.only, unchecked=unchecked)
        return spec, Path(args.out or given), overrides
    spec = load_spec(given, cli_overrides=args.overrides, only=args.only, unchecked=unchecked)
    return spec, Path(args.out or spec.out), args.overrides


def _archived_finished(archives) -> frozenset:
    """The run ids finished in the --adopt archives (their config checks may fail here: ``parse_spec``)."""
    from o2o.experiments.index import is_archive, read_archive_index
    ids = set()
    for archive in archives:
        if is_archive(archive):  # not one: check_adoptable says so
            ids |= {r.run_id for r in read_archive_index(archive)[1] if r.status == "finished"}
    return frozenset(ids)


def _check_adopt(spec, sweep_dir: Path, archives) -> set[str]:
    """Each --adopt archive must hold this spec's runs (``check_adoptable``), and a run whose config check
    failed but was deferred (finished in an archive) must be one that is adopted, i.e. never run here:
    else its check's error is the sweep's, before anything is written."""
    from o2o.experiments.archive import check_adoptable
    from o2o.experiments.index import run_dir_of
    adoptable = set()
    for archive in archives:
        adoptable |= {r.run_id for r in check_adoptable(archive, spec.runs + spec.adoptable)}
    for run_id, error in spec.deferred.items():
        local = run_dir_of(sweep_dir, run_id)
        if run_id not in adoptable or (local.exists() and not (local / "summary.json").is_file()):
            raise ConfigError(error)
    return adoptable


def cmd_sweep(args) -> int:
    from o2o.experiments.sweep import make_backend, run_sweep

    if args.status:
        return _sweep_status(Path(args.spec))
    if args.backend == "sequential" and "jax" not in sys.modules:
        # the runs execute in this process: its XLA threads are set here, before the spec's checks import JAX
        import os

        from o2o.experiments.sweep import available_cpus, thread_env

        os.environ.update(thread_env(args.threads_per_worker or len(available_cpus())))
    spec, sweep_dir, overrides = _resolve_spec(args)
    adoptable = _check_adopt(spec, sweep_dir, args.adopt)  # a wrong archive is refused before anything is written
    if args.dry_run:
        return _dry_run(spec, sweep_dir, adoptable)
    backend = make_backend(args.backend, workers=args.workers, threads=args.threads_per_worker, address=args.address, pin=not args.no_pin)
    try:
        outcome = run_sweep(spec, sweep_dir, backend=backend, retry_failed=args.retry_failed, progress=not args.no_progress,
                            defer_eval=args.defer_eval, adopt=args.adopt)
    except KeyboardInterrupt as err:
        import gc
        import signal

        gc.collect()  # the stopped pool's queues: release their semaphores now, not in a warning at exit
        signum = getattr(err, "signum", signal.SIGINT)  # SIGTERM / SIGUSR1: o2o.experiments.sweep.SweepStopped
        by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
        print(f"o2o: sweep interrupted{by}; the runs in flight checkpointed where they stopped (one whose iteration did not end "
              f"within 20 s keeps its last checkpoint). Continue with `{_continue_command(sweep_dir, args.only)}`", file=sys.stderr)
        return 128 + signum  # as a run: 130 for Ctrl-C, 143 for SIGTERM
    c = outcome.counts
    ran = len(outcome.executed)
    rate = f" ({ran / outcome.wall_time_s * 60:.2f} runs/min)" if ran and outcome.wall_time_s > 0 else ""
    planned = sum(c.values())
    whole = f" (of the {planned} runs this launch planned; the sweep directory holds {outcome.in_directory})" if outcome.in_directory != planned else ""
    print(f"sweep {spec.name}: {c['finished']} finished, {c['failed']} failed, "
          f"{c['pending'] + c['running'] + c['interrupted']} not finished{whole}; this call ran {ran} runs in {outcome.wall_time_s:.1f} s{rate}"
          + (f" and kept {len(outcome.kept)} finished ones" if outcome.kept else ""))
    for run_id, error in outcome.failed:
        print(f"  FAILED {run_id}: {error}  (traceback: o2o sweep {sweep_dir} --status; run again with --retry-failed)")
    print(f"outputs: {sweep_dir}/ (index.sqlite, spec.yaml, runs/); next: o2o report {sweep_dir} "
          f"(writes {sweep_dir / 'report' / 'report.md'}; --out FILE.md for another page)")
    return 1 if outcome.failed else 0


def _continue_command(sweep_dir: Path, only) -> str:
    """The command that continues a sweep launched with ``--only`` patterns ``only`` (the same part of it)."""
    return f"o2o sweep {shlex.quote(str(sweep_dir))}" + "".join(f" --only {shlex.quote(p)}" for p in only)


def _dry_run(spec, sweep_dir: Path, adoptable: set[str] = frozenset()) -> int:
    from o2o.experiments.index import INDEX_FILE, read_index
    from o2o.experiments.index import run_dir_of
    status = {}
    if (sweep_dir / INDEX_FILE).is_file():
        _, records = read_index(sweep_dir)
        status = {r.run_id: (r.status, r.config_hash) for r in records}
    outside = {r.run_id for r in spec.adoptable}
    print(f"sweep {spec.name}: {len(spec.runs)} runs planned -> {sweep_dir}/runs/"
          + (f"; {len(outside)} more outside --only, finished in the --adopt archives" if outside else ""))
    for run in spec.runs + spec.adoptable:
        st, h = status.get(run.run_id, ("new", run.config_hash))
        if h != run.config_hash:
            st = "CONFIG DIFFERS from the recorded run (refused at launch)"
        elif st != "finished" and run.run_id in adoptable and not run_dir_of(sweep_dir, run.run_id).exists():
            st = "adopted from the archive at launch (finished there; not run)"
        if run.run_id in outside:
            st += " [outside --only]"
        print(f"  {run.run_id:<40} {run.kind:<9} hash {run.config_hash}  {st}" + (f"  [{run.variant}]" if run.variant else "")
              + (f"  (one program with the other seeds of {run.group})" if run.group else ""))
    print("outputs: none written (dry run)")
    return 0


def _sweep_status(sweep_dir: Path) -> int:
    from o2o.experiments.index import read_index
    from o2o.experiments.sweep import sweep_holder

    meta, records = read_index(sweep_dir)
    holder = sweep_holder(sweep_dir)
    live = f"a sweep process (pid {holder}) is driving it now" if holder else "no sweep process is driving it now"
    print(f"sweep {meta.get('name', sweep_dir.name)} in {sweep_dir} (spec {meta.get('spec_source') or 'spec.yaml'}, "
          f"sha256 {meta.get('spec_sha256', '?')[:12]}; last launched {meta.get('updated_at', '?')}; {live})")
    only = json.loads(meta.get("only") or "[]")
    if only:  # launching it again without them plans (and checks) the whole spec
        flags = " ".join(f"--only {shlex.quote(p)}" for p in only)
        print(f"  part of its spec: the runs matching {flags}; continue it with `{_continue_command(sweep_dir, only)}`")
    print(f"  {'run':<40} {'status':<12} {'attempts':>8} {'wall s':>8}  {'continued from':>14}  error")
    counts: dict[str, int] = {}
    for r in records:
        if r.status == "running" and not holder:
            # the index says running, but no sweep holds the directory: the sweep that ran it was killed
            r = dataclasses.replace(r, status="interrupted")
        counts[r.status] = counts.get(r.status, 0) + 1
        wall = f"{r.wall_time_s:.1f}" if r.wall_time_s is not None else "-"
        cont = "-" if r.resumed_from is None else f"ckpt {r.resumed_from}"
        print(f"  {r.run_id:<40} {r.status:<12} {r.attempts:>8} {wall:>8}  {cont:>14}  {r.error or ''}")
    print("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for r in records:
        if r.status == "failed" and r.traceback:
            print(f"\ntraceback of {r.run_id}:\n" + "\n".join(r.traceback.rstrip().splitlines()[-12:]))
    if counts.get("interrupted"):
        print(f"  interrupted: stopped mid-way (the sweep that ran them ended); `o2o sweep {sweep_dir}` continues them from their "
              "last checkpoints")
    print(f"outputs: none written ({sweep_dir / 'index.sqlite'} read)")
    return 0


# ------------------------------------------------------------------------------------ report


def cmd_report(args) -> int:
    from o2o.experiments.index import INDEX_FILE
    from o2o.experiments.report import write_report

    first = Path(args.sources[0])
    out = Path(args.out) if args.out else ((first / "report" / "report.md") if (first / INDEX_FILE).is_file() else Path("report/report.md"))
    command = "o2o report " + " ".join(shlex.quote(s) for s in args.sources) + f" --out {shlex.quote(str(out))}"
    if args.aggregate != "mean":
        command += f" --aggregate {args.aggregate}"
    written = write_report(args.sources, out, how=args.aggregate, title=args.title, command=command, archive=not args.no_archive)
    for g in written["results"]:
        line = f"{g.task:<12} {g.method:<24} n={g.n}  final norm. return {g.final_norm_return.fmt(3)}"
        if g.final_norm_cost is not None:
            line += f"  norm. cost {g.final_norm_cost.fmt(2)}{'  UNSAFE' if g.unsafe else ''}"
        print(line)
    if written["excluded"]:
        print(f"left out: {len(written['excluded'])} runs (failed or unfinished; listed in the page)")
    figs = ", ".join(p.name for p in written["figures"])
    arch = "".join(f", run data in {a}/" for a in written["archives"])
    print(f"outputs: {written['markdown']} (+ {written['csv']}, {written['latex'].name}, figures {figs} and their PDFs in "
          f"{written['csv'].parent}/{arch})")
    return 0


COMMANDS = {"sweep": cmd_sweep, "report": cmd_report}
