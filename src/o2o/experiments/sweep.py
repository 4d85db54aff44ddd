"""Running a sweep: every planned run on a local process pool (default), one at a time in this process,
or on a Ray cluster; the index records each run so that a stopped sweep resumes where it stopped.

    <sweep>/
      index.sqlite      every run's config hash, status, attempts, error, wall time (index.py)
      spec.yaml         the spec the sweep was last launched with
      jax-cache/        XLA's persistent compilation cache, shared by the sweep's workers
      runs/<method>/<task>/seed<k>[-<variant hash>]/     ordinary run directories

A method with ``vectorize_seeds`` (kind pretrain) has its unfinished seeds of one task and variant
submitted as ONE job (``execute_group``): they train as one vectorised program on one worker, each
still into its own run directory and index row.

Local pool: ``workers`` spawned processes (default: one per core), each given ``threads`` cores
(default: cores // workers): its CPU affinity is pinned to its own cores and XLA / BLAS thread
counts are set in its environment before it imports JAX. A worker keeps its compiled updates
between runs, so a pool also saves the compile time a fresh process per run would pay.

A run stopped mid-way (Ctrl-C, a killed sweep) continues from its last checkpoint the next time the
sweep is launched; a run that raised is recorded as failed with its error and traceback and is run
again only with ``retry_failed``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from o2o.errors import ConfigError
from o2o.experiments.index import SPEC_COPY, SweepIndex, run_dir_of
from o2o.experiments.runners import get_kind
from o2o.runs.lock import delete_run_dir
from o2o.runs.rundir import read_summary
from o2o import stop
from o2o.stop import RunStopped

LOCK_FILE = ".sweep.lock"
JAX_CACHE_DIRNAME = "jax-cache"


# ------------------------------------------------------------------------------------ one run


def execute_run(job: dict) -> dict:
    """Train one planned run into its directory; never raises for a run's own failure.

    ``job``: run_id, kind, config (plain dict), run_dir. A directory with a checkpoint is resumed;
    one with ``summary.json`` has finished already (its sweep stopped before recording it) and is not
    run again; one left before its first checkpoint is started afresh."""
    start = time.perf_counter()
    run_dir = Path(job["run_dir"])
    result = {"run_id": job["run_id"], "worker": f"{socket.gethostname()}:{os.getpid()}", "resumed_from": None}
    try:
        if (run_dir / "summary.json").is_file():
            result.update(status="finished", summary=read_summary(run_dir / "summary.json"), recovered=True)
        else:
            kind = get_kind(job["kind"])
            cfg = kind.load(job["config"])
            result["resumed_from"] = _prepare(run_dir)
            summary = kind.run(cfg, run_dir, result["resumed_from"] is not None)
            result.update(status="finished", summary=summary)
    except RunStopped as err:  # the worker was asked to stop: the run saved a checkpoint and continues later
        result.update(status="interrupted", error=str(err))
    except Exception as err:  # noqa: BLE001 - a run's failure is recorded, the sweep goes on
        result.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    result["wall_time_s"] = time.perf_counter() - start
    return result


def resume_point(run_dir: Path) -> int | None:
    """The checkpoint step a stopped run continues from, None when it has none. A fine-tuning run
    stopped before its online stage's first checkpoint continues from its bridge's checkpoint
    (finished, or partial: ``bridge/partial/``): step 0."""
    from o2o.runs import checkpoint_step, latest_checkpoint
    from o2o.runs.partial import PARTIAL_DIRNAME

    if not run_dir.is_dir():
        return None
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        return checkpoint_step(ckpt)
    bridge = run_dir / "bridge"
    return 0 if any(latest_checkpoint(bridge / d) is not None for d in ("checkpoints", PARTIAL_DIRNAME)) else None


def _prepare(run_dir: Path) -> int | None:
    """``resume_point``; a directory left before its first checkpoint is removed (the run starts afresh)."""
    point = resume_point(run_dir)
    if point is None and run_dir.is_dir() and (run_dir / "config.yaml").is_file():
        delete_run_dir(run_dir)  # stopped before its first checkpoint: nothing to continue from
    return point


def execute_group(job: dict) -> list[dict]:
    """Train the runs of one vectorised group (``job["runs"]``: run_id, config, run_dir each; configs that
    differ only in their seed) as one program per resume point; one result per run, never raises.

    A run with ``summary.json`` has finished already and is recorded as such; the others are grouped by
    the checkpoint step they continue from (None: afresh), and each such group runs as one program
    (``RunKind.run_seeds``); a group's failure fails each of its runs. A run's wall time is its
    program's."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    results, by_step = [], {}
    for run in job["runs"]:
        start = time.perf_counter()
        run_dir = Path(run["run_dir"])
        result = {"run_id": run["run_id"], "worker": worker, "resumed_from": None}
        try:
            if (run_dir / "summary.json").is_file():
                result.update(status="finished", summary=read_summary(run_dir / "summary.json"), recovered=True,
                              wall_time_s=time.perf_counter() - start)
                results.append(result)
                continue
            result["resumed_from"] = _prepare(run_dir)
            by_step.setdefault(result["resumed_from"], []).append((run, result))
        except Exception as err:  # noqa: BLE001
            result.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(),
                          wall_time_s=time.perf_counter() - start)
            results.append(result)
    for step, members in by_step.items():
        start = time.perf_counter()
        try:
            kind = get_kind(job["kind"])
            cfgs = [kind.load(run["config"]) for run, _ in members]
            summaries = kind.run_seeds(cfgs, [Path(run["run_dir"]) for run, _ in members], step is not None)
            for (_, result), summary in zip(members, summaries):
                result.update(status="finished", summary=summary)
        except RunStopped as err:
            for _, result in members:
                result.update(status="interrupted", error=str(err))
        except Exception as err:  # noqa: BLE001 - the group's failure is each of its runs'
            for _, result in members:
                result.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        for _, result in members:
            result["wall_time_s"] = time.perf_counter() - start
            results.append(result)
    return results


def execute_job(job: dict) -> list[dict]:
    """One job of a backend: a single run (``execute_run``) or a vectorised group (``execute_group``)."""
    return execute_group(job) if "runs" in job else [execute_run(job)]


def job_run_ids(job: dict) -> list[str]:
    return [r["run_id"] for r in job["runs"]] if "runs" in job else [job["run_id"]]


# ------------------------------------------------------------------------------------ threads


def available_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps a worker's XLA and BLAS threads (read when JAX / NumPy are imported)."""
    eigen = "false" if threads == 1 else "true"
    xla = f"--xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}"
    user = os.environ.get("XLA_FLAGS", "")
    user = " ".join(f for f in user.split() if not f.startswith(("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads")))
    env = {"XLA_FLAGS": f"{user} {xla}".strip()}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[name] = str(threads)
    return env


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the sweep process dies (no orphan writing into a run dir)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _quiet_exit() -> None:
    """A worker told to stop exits with stderr silenced: the background thread of a TensorBoard writer
    reports its queue closing under it as an error while the interpreter exits."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    except OSError:
        pass
    raise SystemExit(128 + (stop.requested() or signal.SIGTERM))


def _init_worker(threads: int, cpus, extra_env: dict | None = None) -> None:
    os.environ.update(thread_env(threads))
    os.environ.update(extra_env or {})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle: it stops the workers
    # SIGTERM / SIGUSR1 (the sweep stopping its workers, a batch system's warning): the run in progress
    # checkpoints at the end of its current jitted call and the worker exits (o2o.stop)
    stop.install()
    _die_with_parent()
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except (OSError, AttributeError):  # pinning is an optimisation, never a reason to fail
            pass


# ------------------------------------------------------------------------------------ backends


class SequentialBackend:
    """One run at a time in this process (all threads to it): debugging, and the speed baseline."""

    name = "sequential"

    def __init__(self):
        self.slots = 1
        self._queue: deque = deque()
        self.env: dict = {}

    def start(self) -> None:
        cache = self.env.get("JAX_COMPILATION_CACHE_DIR")
        if cache:  # effective only if this process has compiled nothing yet (the CLI's case)
            import jax

            if not jax.config.jax_compilation_cache_dir:
                jax.config.update("jax_compilation_cache_dir", cache)

    def submit(self, job: dict) -> None:
        self._queue.append(job)

    def results(self):
        if self._queue:
            from o2o.loops.offline import DEFER_EVAL_ENV

            # the runs execute in this process: the sweep's variables hold while its job runs, then go
            saved = os.environ.get(DEFER_EVAL_ENV)
            if DEFER_EVAL_ENV in self.env:
                os.environ[DEFER_EVAL_ENV] = self.env[DEFER_EVAL_ENV]
            try:
                results = execute_job(self._queue.popleft())
            finally:
                if saved is None:
                    os.environ.pop(DEFER_EVAL_ENV, None)
                else:
                    os.environ[DEFER_EVAL_ENV] = saved
            yield from results

    def stop(self) -> None:
        self._queue.clear()


class LocalPool:
    """``workers`` spawned processes, each pinned to ``threads`` cores.

    The pool is hand-made rather than a ``ProcessPoolExecutor`` so that the sweep always knows which
    worker holds which run: a worker that dies fails only its own run (and is replaced), and stopping
    the pool can let idle workers exit and make busy ones stop (SIGTERM: the run checkpoints at the end
    of its current jitted call, ``o2o.stop``, then the worker exits), so that a stopped run's files are
    closed properly and it loses no work."""

    name = "local"

    def __init__(self, workers: int, threads: int, pin: bool = True):
        self.workers, self.threads, self.pin = workers, threads, pin
        self.slots = workers
        self._ctx = None
        self._workers: list[dict] = []  # {"proc", "jobs" (queue), "run_ids" (of the job held) or None, "cpus"}
        self._results = None
        self.env: dict = {}  # set by run_sweep: the compilation cache

    def start(self) -> None:
        import multiprocessing as mp

        self._ctx = mp.get_context("spawn")  # a fresh interpreter per worker: JAX is configured before import
        self._results = self._ctx.Queue()
        cpus = available_cpus()
        pin = self.pin and len(cpus) >= self.workers * self.threads
        self._workers = []
        for w in range(self.workers):
            self._workers.append({"cpus": cpus[w * self.threads:(w + 1) * self.threads] if pin else None})
            self._spawn(self._workers[-1])

    def _spawn(self, worker: dict) -> None:
        worker["jobs"] = self._ctx.Queue()
        worker["run_ids"] = None
        worker["proc"] = self._ctx.Process(
            target=_worker_loop, args=(worker["jobs"], self._results, self.threads, worker["cpus"], self.env),
            name="o2o-sweep-worker",
        )
        worker["proc"].start()

    def submit(self, job: dict) -> None:
        worker = next(w for w in self._workers if w["run_ids"] is None)  # the sweep submits only into a free slot
        worker["run_ids"] = job_run_ids(job)
        worker["jobs"].put(job)

    def results(self):
        import queue

        try:
            message = self._results.get(timeout=0.5)
        except queue.Empty:
            message = None
        if message is not None:
            pid, results = message
            for w in self._workers:
                if w["proc"].pid == pid:
                    w["run_ids"] = None
            yield from results
        for w in self._workers:
            if not w["proc"].is_alive() and w["run_ids"] is None:
                self._spawn(w)  # it exited when told to stop (its run checkpointed and came back interrupted)
        for w in self._workers:  # a worker that died (killed, out of memory) fails the runs it held
            if not w["proc"].is_alive() and w["run_ids"] is not None:
                run_ids = w["run_ids"]
                code = w["proc"].exitcode
                self._spawn(w)
                for run_id in run_ids:
                    yield {"run_id": run_id, "status": "failed", "worker": "", "resumed_from": None, "traceback": "",
                           "error": f"the worker process died (exit code {code}: killed, out of memory or crashed) during this run"}

    def stop(self) -> None:
        if not self._workers:
            return
        for w in self._workers:
            if w["run_ids"] is None:
                w["jobs"].put(None)  # an idle worker exits
            else:
                w["proc"].terminate()  # SIGTERM: the run checkpoints after its current jitted call, then exits
        deadline = time.monotonic() + 20
        for w in self._workers:
            w["proc"].join(max(0.0, deadline - time.monotonic()))
            if w["proc"].is_alive():  # stuck in a long C call (an XLA compile): do not wait for it
                w["proc"].kill()
                w["proc"].join()
        for q in [w["jobs"] for w in self._workers] + [self._results]:
            q.close()
            q.cancel_join_thread()
        self._workers = []


def _worker_loop(jobs, results, threads: int, cpus, extra_env: dict) -> None:
    """A pool worker: configure threads before anything imports JAX, then run jobs until told to stop."""
    _init_worker(threads, cpus, extra_env)
    while True:
        job = jobs.get()
        if job is None:
            return
        if stop.requested() is not None:  # told to stop while idle: hand the job back untouched
            worker = f"{socket.gethostname()}:{os.getpid()}"
            results.put((os.getpid(), [{"run_id": r, "status": "interrupted", "worker": worker, "resumed_from": None,
                                        "error": "its worker was told to stop before the run started"} for r in job_run_ids(job)]))
            _quiet_exit()
        results.put((os.getpid(), execute_job(job)))
        if stop.requested() is not None:
            _quiet_exit()


def check_ray_address(address: str) -> str:
    """Refuse an address no Ray cluster answers at, in seconds (``ray.init`` would wait minutes)."""
    if address == "auto":
        found = os.environ.get("RAY_ADDRESS")
        bootstrap = Path("/tmp/ray/ray_current_cluster")
        if not found and bootstrap.is_file():
            found = bootstrap.read_text().strip()
        if not found:
            raise ConfigError("--address auto: no Ray cluster is running on this machine; start one with "
                              "`ray start --head`, give its HOST:PORT, or drop --address to start a local Ray instance")
        address = found
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address '{address}' is malformed; write HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"cannot reach a Ray cluster at {address} ({reason}); start one there with "
                          f"`ray start --head --port {port}`, or drop --address to start a local Ray instance") from None
    return address


class RayBackend:
    """Runs as Ray tasks of ``threads`` CPUs each: on the cluster at ``address``, or on a local instance
    started here (``workers * threads`` CPUs), or on the instance this process already started.
    Run directories are written by the Ray workers: on a cluster the sweep directory must be on a
    file system every node shares, with o2o installed on every node."""

    name = "ray"

    def __init__(self, workers: int, threads: int, address: str | None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'o2o[ray]' (make test installs it)") from None
        self.workers, self.threads = workers, threads
        self.address = check_ray_address(address) if address else None
        self._owned = False
        self._refs: dict = {}
        self.slots = workers
        self.env: dict = {}

    def start(self) -> None:
        import ray

        import warnings

        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if not ray.is_initialized():
            kwargs = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
            with warnings.catch_warnings():  # Ray starts its processes with fork + exec: JAX's fork warning does not apply
                warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
                if self.address:
                    ray.init(address=self.address, **kwargs)
                else:
                    ray.init(num_cpus=self.workers * self.threads, include_dashboard=False, **kwargs)
            self._owned = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = max(1, cpus // self.threads)
        self._remote = ray.remote(execute_job).options(
            num_cpus=self.threads, max_retries=0, runtime_env={"env_vars": {**thread_env(self.threads), **self.env}}
        )

    def submit(self, job: dict) -> None:
        self._refs[self._remote.remote(job)] = job_run_ids(job)

    def results(self):
        import ray

        if not self._refs:
            return
        done, _ = ray.wait(list(self._refs), num_returns=1, timeout=0.5)
        for ref in done:
            run_ids = self._refs.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - the worker died; execute_job itself never raises
                results = [{"run_id": run_id, "status": "failed", "worker": "ray", "resumed_from": None,
                            "error": f"Ray task failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                            "traceback": str(err)} for run_id in run_ids]
            yield from results

    def stop(self) -> None:
        import ray

        for ref in list(self._refs):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        self._refs.clear()
        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = False


def make_backend(backend: str, *, workers: int | None = None, threads: int | None = None, address: str | None = None, pin: bool = True):
    """The backend, with every check that can fail done now (before the sweep writes or launches anything)."""
    cores = len(available_cpus())
    if workers is not None and workers <= 0:
        raise ConfigError(f"--workers must be > 0, got {workers}")
    if threads is not None and threads <= 0:
        raise ConfigError(f"--threads-per-worker must be > 0, got {threads}")
    if address and backend != "ray":
        raise ConfigError("--address is for --backend ray")
    if backend == "sequential":
        return SequentialBackend()
    workers = workers or cores
    threads = threads or max(1, cores // workers)
    if backend == "local":
        return LocalPool(workers, threads, pin)
    if backend == "ray":
        return RayBackend(workers, threads, address)
    raise ConfigError(f"unknown backend '{backend}'; choose local, ray or sequential")


# ------------------------------------------------------------------------------------ the sweep


@dataclass
class SweepOutcome:
    sweep_dir: Path
    counts: dict
    executed: list[str] = field(default_factory=list)  # run ids run (or continued) by this call
    kept: list[str] = field(default_factory=list)  # finished before this call: not run again
    failed: list = field(default_factory=list)  # (run_id, error) of every failed run of this launch's plan now
    wall_time_s: float = 0.0
    in_directory: int = 0  # runs the sweep directory's index holds (more than planned after launches with other --only)


class _Lock:
    """One sweep process per sweep directory (flock: released by the OS when the process dies)."""

    def __init__(self, sweep_dir: Path):
        import fcntl

        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(sweep_dir / LOCK_FILE, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            pid = self._file.read().strip() or "?"
            self._file.close()
            raise ConfigError(f"another o2o sweep (pid {pid}) is running on '{sweep_dir}'; wait for it or stop it first") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        self._file.close()


def sweep_holder(sweep_dir: Path) -> str | None:
    """The pid of the live ``o2o sweep`` process driving ``sweep_dir``, or None when none holds its lock
    (a run the index records as running is then one that a stopped or killed sweep left in flight).
    Probes with a shared lock taken and dropped at once; a sweep starting in that instant is refused
    with the usual one-line error and can be launched again."""
    import fcntl

    path = Path(sweep_dir) / LOCK_FILE
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "?"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


class SweepStopped(KeyboardInterrupt):
    """SIGTERM or SIGUSR1 to a sweep: it stops as on Ctrl-C, and `o2o sweep` exits 128 + ``signum`` as a run does."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupt(signum, frame):
    raise SweepStopped(signum)


def run_sweep(
    spec,
    sweep_dir: str | Path,
    *,
    backend,
    retry_failed: bool = False,
    progress: bool = True,
    defer_eval: bool = False,
    adopt: list | tuple = (),
    echo=print,
) -> SweepOutcome:
    """Run every planned run of ``spec`` that the index does not record as finished (nor as failed,
    unless ``retry_failed``). ``backend`` comes from ``make_backend`` (checked before anything is
    written). Ctrl-C, SIGTERM or SIGUSR1 stops the workers, marks their runs interrupted and re-raises
    ``KeyboardInterrupt``; launching the sweep again continues them from their checkpoints.
    ``defer_eval``: pre-training runs train without evaluating on the live task and keep every
    checkpoint (``o2o eval SWEEP_DIR --record`` evaluates them later, where the simulator is).
    ``adopt``: results archives whose finished runs of this spec are recorded as finished first
    (``o2o.experiments.archive.adopt_archive``), those outside ``--only`` too (``spec.adoptable``)."""
    from o2o.runs.checkpoint import write_text_atomic

    sweep_dir = Path(sweep_dir)
    lock = _Lock(sweep_dir)
    index = SweepIndex(sweep_dir)
    start = time.perf_counter()
    in_flight: set[str] = set()
    try:  # a killed sweep (SIGTERM, or a batch system's SIGUSR1 warning) stops like Ctrl-C
        old_term = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    except ValueError:  # not the main thread: leave the signals alone
        old_term = None
    try:
        launched_before = bool(index.records())
        index.register(spec.runs)
        adopted_patterns: set[str] = set()  # the --only of the archives whose runs outside this launch's --only were adopted
        if adopt:
            from o2o.experiments.archive import adopt_archive
            from o2o.experiments.index import read_archive_index
            planned_ids = {r.run_id for r in spec.runs}
            for archive in adopt:
                outside = [i for i in adopt_archive(archive, sweep_dir, index, spec.runs + spec.adoptable, echo=echo) if i not in planned_ids]
                if outside:
                    adopted_patterns |= set(json.loads(read_archive_index(archive)[0].get("only") or "[]") or outside)
        write_text_atomic(sweep_dir / SPEC_COPY, spec.text)
        meta = index.meta()
        # the --only patterns of the launches so far, so that a report says the sweep holds part of its spec;
        # empty once any launch planned the whole spec (an earlier launch without a record made before
        # --only existed counts as whole)
        earlier = json.loads(meta.get("only") or "[]")
        whole = not spec.only or (launched_before and not earlier)
        only = [] if whole else sorted(set(earlier) | set(spec.only) | adopted_patterns)
        index.set_meta(
            name=spec.name, spec_source=str(spec.path or ""), spec_sha256=spec.sha256, cli_overrides=json.dumps(list(spec.cli_overrides)),
            created_at=meta.get("created_at", time.strftime("%Y-%m-%d %H:%M:%S")), updated_at=time.strftime("%Y-%m-%d %H:%M:%S"),
            only=json.dumps(only),
        )
        run_ids = [r.run_id for r in spec.runs]
        for rec in index.records():  # finished in the index, but its directory lost its summary: run it again
            if rec.run_id in run_ids and rec.status == "finished" and not (run_dir_of(sweep_dir, rec.run_id) / "summary.json").is_file():
                echo(f"warning: {rec.run_id} is recorded finished but its summary.json is gone; running it again")
                index.reopen(rec.run_id)
        to_run, finished, skipped = index.plan(run_ids, retry_failed=retry_failed)
        outcome = SweepOutcome(sweep_dir, {}, kept=[r.run_id for r in finished])
        outcome.in_directory = len(index.records())
        by_id = {r.run_id: r for r in spec.runs}
        interrupted = [r.run_id for r in index.records() if r.run_id in to_run and r.status in ("running", "interrupted")]
        with_ckpt = sum(resume_point(run_dir_of(sweep_dir, r)) is not None for r in interrupted)
        stopped = ""
        if interrupted:
            fresh = len(interrupted) - with_ckpt
            stopped = (f" ({len(interrupted)} stopped mid-way: {with_ckpt} continue{'s' if with_ckpt == 1 else ''} from a checkpoint, "
                       f"{fresh} start{'s' if fresh == 1 else ''} again, stopped before a first checkpoint)")
        jobs = _jobs(to_run, by_id)  # a vectorised group's unfinished runs are one job
        grouped = sum(len(j) for j in jobs if len(j) > 1)
        vectorised = f" ({grouped} of them as {sum(len(j) > 1 for j in jobs)} vectorised seed groups)" if grouped else ""
        echo(f"sweep {spec.name}: {len(run_ids)} runs; {len(finished)} finished (kept, not run again), "
             f"{len(skipped)} failed (skipped; --retry-failed runs them), {len(to_run)} to run{vectorised}{stopped}"
             f"; backend {backend.name}, {backend.slots} at a time")
        for rec in skipped:
            echo(f"  failed earlier: {rec.run_id}: {rec.error}")
        if not to_run:
            outcome.counts = index.counts(run_ids)
            outcome.failed = [(r.run_id, r.error) for r in index.records() if r.status == "failed" and r.run_id in by_id]
            outcome.wall_time_s = time.perf_counter() - start
            return outcome

        queue = deque(jobs)
        open_jobs: dict[str, set] = {}  # the first run id of each job in flight -> its runs not yet returned
        job_of: dict[str, str] = {}
        # One persistent XLA compilation cache per sweep: a worker that starts after another compiled the
        # same update (a resumed sweep, a replaced worker, a second run kind) loads it instead of compiling.
        backend.env = {"JAX_COMPILATION_CACHE_DIR": str((sweep_dir / JAX_CACHE_DIRNAME).resolve())}
        if defer_eval:
            from o2o.loops.offline import DEFER_EVAL_ENV

            backend.env[DEFER_EVAL_ENV] = "1"
        backend.start()
        from o2o.progress import training_progress

        bar = training_progress(progress, remaining=False)
        with bar:
            task = bar.add_task(f"sweep {spec.name}", total=len(run_ids), completed=len(finished), status="")
            say = bar.console.print if progress else echo
            shown_at = -1e9
            while queue or in_flight:
                while queue and len(open_jobs) < backend.slots:
                    members = queue.popleft()
                    entries = [{"run_id": r, "config": by_id[r].config, "run_dir": str(run_dir_of(sweep_dir, r).resolve())} for r in members]
                    for r in members:  # in flight before it is marked running: a stop in between leaves no run marked running
                        in_flight.add(r)
                        index.mark_running(r, backend.name)
                        job_of[r] = members[0]
                    open_jobs[members[0]] = set(members)
                    kind = by_id[members[0]].kind
                    backend.submit({"kind": kind, **entries[0]} if len(entries) == 1 else {"kind": kind, "run_id": members[0], "runs": entries})
                for result in backend.results():
                    run_id = result["run_id"]
                    line = _record(index, result)  # recorded before it leaves in_flight (a stop in between: as above)
                    in_flight.discard(run_id)
                    key = job_of.pop(run_id, None)
                    if key in open_jobs:
                        open_jobs[key].discard(run_id)
                        if not open_jobs[key]:
                            del open_jobs[key]  # its worker is free again
                    outcome.executed.append(run_id)
                    say(line)
                if time.monotonic() - shown_at > 10.0 or not in_flight:  # where each run is, from its files
                    shown_at = time.monotonic()
                    status = ", ".join(f"{r} ({_position(run_dir_of(sweep_dir, r), by_id[r])})" for r in sorted(in_flight))
                    bar.update(task, completed=index.counts(run_ids)["finished"], status=f"running: {status}" if in_flight else "")
        backend.stop()
        outcome.counts = index.counts(run_ids)
        outcome.failed = [(r.run_id, r.error) for r in index.records() if r.status == "failed" and r.run_id in by_id]
        outcome.wall_time_s = time.perf_counter() - start
        return outcome
    except BaseException:  # Ctrl-C, SIGTERM, or a bug: the runs in flight keep their checkpoints
        index.mark_interrupted(in_flight)
        backend.stop()
        raise
    finally:
        for sig, handler in (old_term or {}).items():
            signal.signal(sig, handler)
        index.close()
        lock.release()


def _jobs(to_run: list[str], by_id: dict) -> list[list[str]]:
    """The runs to run as jobs, in plan order: a run alone, or the runs of one vectorised group
    (``PlannedRun.group``) together, at the place of its first."""
    jobs, groups = [], {}
    for run_id in to_run:
        group = by_id[run_id].group
        if not group:
            jobs.append([run_id])
        elif group in groups:
            groups[group].append(run_id)
        else:
            groups[group] = [run_id]
            jobs.append(groups[group])
    return jobs


def _record(index: SweepIndex, result: dict) -> str:
    run_id, wall = result["run_id"], result.get("wall_time_s")
    if result["status"] == "finished":
        # a run found finished (its summary written before the index knew, e.g. copied in from another
        # sweep) has no training time of this sweep's to record: None, shown as "-"
        index.mark_finished(run_id, wall_time_s=None if result.get("recovered") else (wall or 0.0),
                            resumed_from=result.get("resumed_from"), worker=result.get("worker", ""))
        s = result.get("summary", {})
        how = " (found finished: recorded)" if result.get("recovered") else (
            (" (continued from its bridge's checkpoint)" if result.get("resumed_from") == 0 else
             f" (continued from checkpoint {result['resumed_from']})") if result.get("resumed_from") is not None else "")
        if not result.get("recovered") and len(s.get("seed_group") or []) > 1:
            how += f" (one program with seeds {', '.join(map(str, s['seed_group']))})"
        numbers = ", ".join(
            f"{label} {s[key]:.1f}" for key, label in (("final_eval_return", "final eval return"), ("final_eval_cost", "cost"))
            if isinstance(s.get(key), (int, float))
        )
        took = "" if result.get("recovered") else f" in {wall:.1f} s"
        return f"finished {run_id}{took}{how}" + (f": {numbers}" if numbers else "")
    if result["status"] == "interrupted":  # its worker was told to stop: the run checkpointed (o2o.stop)
        index.mark_interrupted([run_id])
        return f"stopped {run_id}: {result.get('error')}; launching the sweep again continues it"
    index.mark_failed(run_id, result.get("error", "?"), result.get("traceback", ""), wall_time_s=wall, worker=result.get("worker", ""))
    return f"FAILED {run_id}: {result.get('error')}"


def _last_step(metrics: Path) -> int | None:
    """The step of the last row of a metrics.csv (read from its end), None when it has none."""
    if not metrics.is_file():
        return None
    with open(metrics, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        rows = [r for r in f.read().decode(errors="replace").splitlines()[1:] if r.strip()]
    try:
        return int(float(rows[-1].split(",", 1)[0])) if rows else None
    except ValueError:
        return None


def _bridge_steps(config: dict) -> int | None:
    """A fine-tuning run's bridge budget in gradient steps: OCR-CFT's stages (``bridge_stages``, the rule
    the bridge runs by), Marvel's VPA; None otherwise."""
    from o2o.bridge.ocr import bridge_stages
    from o2o.methods import get_method

    try:
        spec = get_method(str(config.get("method")))
    except ConfigError:
        return None
    if spec.family == "ocr-cft":
        ocr = config.get("ocr") or {}
        return sum(bridge_stages(spec, str(config.get("algo")), ocr.get("reeval_steps", 0), ocr.get("align_steps", 0)).values()) or None
    return (config.get("vpa") or {}).get("steps") if spec.vpa else None


def _position(run_dir: Path, run) -> str:
    """Where a run in flight is, read from the files it writes: its last metrics row's step over its budget
    ("3/10" iterations, "4000/10000" gradient steps), "bridge 30000/60000" (a fine-tuning run before its
    online phase: its bridge's gradient steps; "bridge" where they are not known) or "starting"."""
    last = _last_step(run_dir / "metrics.csv")
    if last is None:
        if not (run_dir / "bridge").is_dir():
            return "starting"
        done, total = _last_step(run_dir / "bridge" / "metrics.csv"), _bridge_steps(run.config)
        return f"bridge {done}/{total}" if done is not None and total else "bridge"
    section = "offline" if run.kind == "pretrain" else "online"
    total = (run.config.get(section) or {}).get("steps" if section == "offline" else "iterations")
    return f"{last}/{total}" if total else str(last)
