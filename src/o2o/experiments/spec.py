"""Sweep specs: methods x tasks x seeds x config variants, every run's config built and checked up front.

    name: small                        # the sweep's name (default: the file's stem)
    out: runs/sweeps/small             # sweep directory (default runs/sweeps/<name>)
    seeds: 3                           # 3 -> seeds 0, 1, 2; or a list [0, 5, 7]
    tasks: [BallCircle, BallRun]       # or {name: BallCircle, set: {...}, dataset: NAME}
    methods:
      - sac                            # a bare name: kind train, algo = the name
      - name: sac-lag-fast             # label in the index, run paths and reports
        kind: train                    # train (default) | pretrain | ... (o2o.experiments.runners)
        algo: sac-lag                  # default: the name
        config: my.yaml                # laid over the presets; relative to the spec's folder
        set: {lagrange.dual_lr: 0.01}  # this method's overrides
        tasks: [BallCircle]            # only these of the sweep's tasks
      - name: iql                      # kind pretrain only: the sweep's seeds of each task / variant
        kind: pretrain                 # train as ONE vectorised program (seeds as a batch axis) on one
        vectorize_seeds: true          # worker; still one run directory and index row per seed
    set:                               # overrides for every run
      online.iterations: 4
    grid:                              # crossed: one variant per combination of values
      agent.actor_lr: [1.0e-4, 3.0e-4]

Override order, later wins: the kind's presets < the method's ``config`` < the sweep's ``set`` < the
task's ``set`` < the method's ``set`` < the ``grid`` variant < ``o2o sweep --set``.

Every error names the spec file, the line and the key (``sweep.yaml line 9 (methods[1].algo): ...``);
nothing is written or launched until every run's config has been built and checked.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from o2o.errors import ConfigError, O2OError
from o2o.experiments.runners import MethodSpec, TaskSpec, get_kind, KINDS

SPEC_KEYS = ("name", "description", "out", "seeds", "tasks", "methods", "set", "grid")
METHOD_KEYS = ("name", "kind", "algo", "config", "set", "tasks", "vectorize_seeds")
TASK_KEYS = ("name", "set")


@dataclass(frozen=True)
class PlannedRun:
    run_id: str  # the run's path under <sweep>/runs: <method>/<task>/seed<k>[-<variant hash>]
    method: str
    task: str
    seed: int
    variant: str  # "" or "agent.actor_lr=0.0001 ..." (the grid values of this run)
    kind: str
    config: dict  # the resolved config, plain (what the run directory's config.yaml holds)
    config_hash: str
    group: str = ""  # runs with the same non-empty group train as one vectorised program (vectorize_seeds)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: Path | None
    text: str  # the spec as written (stored in the sweep directory, quoted by reports)
    out: str
    description: str
    runs: tuple[PlannedRun, ...]
    cli_overrides: tuple[str, ...] = ()  # o2o sweep --set, part of every run's config
    only: tuple[str, ...] = ()  # o2o sweep --only: the runs planned are those matching these globs
    # run id -> the error of its config check, for the ``unchecked`` runs (finished in an --adopt archive)
    # whose check failed: harmless if the run is adopted (never run here), the sweep's error if not
    deferred: dict = field(default_factory=dict)
    # with --only: the spec's other runs that are finished in an --adopt archive. Adopted with the planned
    # runs (so the sweep directory, and the report that replaces the archive, keep them), never run.
    adoptable: tuple[PlannedRun, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def config_hash(kind: str, config: dict) -> str:
    """A run's identity: its kind and every resolved config value."""
    text = json.dumps({"kind": kind, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_plain_name(name: str, what: str, where, path: tuple) -> None:
    """A sweep's or a method's name is a folder name (of the report, of every run): letters, digits,
    '-', '_' and '.', not starting with '.' (no path separator, no NUL or other control character)."""
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name.startswith("."):
        raise where.error(path, f"{what} {name!r} may hold only letters, digits, '-', '_' and '.', and may not start with '.'")


def _variant_label(values: tuple[tuple[str, Any], ...]) -> str:
    from o2o.config import format_value

    return " ".join(f"{k}={format_value(v)}" for k, v in values)


# -------------------------------------------------------------------------------- YAML with lines


class _Where:
    """Line numbers of the spec's keys and items, so that errors can name them."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.lines: dict[tuple, int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            node = None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node, path: tuple) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[path + (key.value,)] = key.start_mark.line + 1
                self._walk(value, path + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, path + (i,))

    def __call__(self, *path) -> str:
        dotted = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
        for cut in range(len(path), -1, -1):  # the nearest line known
            if path[:cut] in self.lines:
                line = f" line {self.lines[path[:cut]]}"
                break
        else:
            line = ""
        return f"{self.source}{line}" + (f" ({dotted})" if dotted else "")

    def error(self, path: tuple, message: str) -> ConfigError:
        return ConfigError(f"{self(*path)}: {message}")


def _check_keys(mapping: dict, allowed, where: _Where, path: tuple, what: str) -> None:
    import difflib

    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise where.error(path + (key,), f"unknown {what} key '{key}'{hint}; valid keys: {', '.join(allowed)}")


def _overrides(value, where: _Where, path: tuple) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise where.error(path, f"'set' must be a mapping of dotted config keys to values, e.g. {{online.iterations: 4}}; got {type(value).__name__}")
    return tuple((str(k), v) for k, v in value.items())


# -------------------------------------------------------------------------------- loading


def load_spec(source: str | Path, *, cli_overrides: list[str] | tuple[str, ...] = (), only: list[str] | tuple[str, ...] = (),
              unchecked: frozenset = frozenset()) -> SweepSpec:
    """Read and check a sweep spec; build every run's config. Raises ``ConfigError`` naming the line.
    ``only``: glob patterns on run ids, ``unchecked``: run ids whose failed check is deferred (``parse_spec``)."""
    from o2o.config import load_yaml

    path = Path(source)
    data = load_yaml(path)  # malformed YAML, duplicated keys: named with their line
    return parse_spec(data, path.read_text(), source=str(path), base_dir=path.parent, default_name=path.stem,
                      cli_overrides=cli_overrides, only=only, unchecked=unchecked)


def parse_spec(
    data: dict,
    text: str,
    *,
    source: str = "<spec>",
    base_dir: Path = Path("."),
    default_name: str = "sweep",
    cli_overrides: list[str] | tuple[str, ...] = (),
    only: list[str] | tuple[str, ...] = (),
    unchecked: frozenset = frozenset(),
) -> SweepSpec:
    """The checked spec and its planned runs. ``only``: glob patterns (``fnmatch``) on run ids,
    ``<method>/<task>/seed<k>[-<variant hash>]``; the runs that match none are neither planned nor built
    (so a task whose dataset is not on this machine can be left out), and a pattern that matches no run
    of the spec is refused. ``unchecked``: run ids (the finished runs of ``--adopt`` archives) whose failed
    config check goes to ``SweepSpec.deferred`` instead of raising: a run adopted is never run here, so
    its dataset or pre-trained run need not be on this machine. Those outside ``only`` are built too, into
    ``SweepSpec.adoptable``: a launch that runs one seed keeps the archive's earlier ones."""
    where = _Where(source, text)
    _check_keys(data, SPEC_KEYS, where, (), "sweep spec")
    for required in ("methods", "tasks"):
        if not data.get(required):
            raise where.error((), f"the spec needs a non-empty '{required}' list")

    name = str(data.get("name") or default_name)
    _check_plain_name(name, "name", where, ("name",))
    seeds = _seeds(data.get("seeds", 1), where)
    tasks = _tasks(data["tasks"], where)
    methods = _methods(data["methods"], where, base_dir, {t.name for t in tasks})
    common = _overrides(data.get("set"), where, ("set",))
    grid = _grid(data.get("grid"), where)
    cli = _cli_overrides(cli_overrides)

    runs: list[PlannedRun] = []
    adoptable: list[PlannedRun] = []  # outside --only, finished in an --adopt archive
    seen: dict[str, tuple] = {}
    all_ids: list[str] = []
    matched: set[str] = set()
    deferred: dict[str, str] = {}
    for mi, method in enumerate(methods):
        kind = get_kind(method.kind)
        for task in tasks:
            if method.tasks is not None and task.name not in method.tasks:
                continue
            for variant in grid:
                label = _variant_label(variant)
                variant_hash = hashlib.sha256(label.encode()).hexdigest()[:8] if variant else ""
                for seed in seeds:
                    run_id = f"{method.name}/{task.name}/seed{seed}" + (f"-{variant_hash}" if variant else "")
                    if run_id in seen:
                        raise where.error(("methods", mi), f"run '{run_id}' is planned twice; give each method a distinct name and each seed once")
                    seen[run_id] = ()
                    all_ids.append(run_id)
                    outside = False
                    if only:
                        hits = [pattern for pattern in only if fnmatch.fnmatchcase(run_id, pattern)]
                        matched.update(hits)
                        outside = not hits
                        if outside and run_id not in unchecked:
                            continue
                    cfg = _build(kind, method, task, seed, where, mi)
                    layers = [
                        (("set",), common),
                        (("tasks", task.index, "set"), task.spec.overrides),
                        (("methods", mi, "set"), method.overrides),
                    ]
                    for path, overrides in layers:
                        cfg = _apply(cfg, overrides, where, path)
                    cfg = _apply(cfg, variant, where, ("grid",))
                    try:
                        from o2o.config import apply_overrides

                        cfg = apply_overrides(cfg, list(cli))
                    except ConfigError as err:
                        raise ConfigError(f"--set: {err}") from None
                    try:
                        kind.check(cfg)
                    except O2OError as err:
                        error = where.error(("methods", mi), f"method '{method.name}' on {task.name}: {err}")
                        if run_id not in unchecked:
                            raise error from None
                        deferred[run_id] = str(error)  # e.g. its dataset is not on this machine: fine if adopted
                    from o2o.config import to_dict

                    plain = to_dict(cfg)
                    group = f"{method.name}/{task.name}" + (f"/{variant_hash}" if variant else "") if method.vectorize_seeds else ""
                    (adoptable if outside else runs).append(
                        PlannedRun(run_id, method.name, task.name, seed, label, method.kind, plain, config_hash(method.kind, plain), group)
                    )
    for pattern in only:
        if pattern not in matched:
            raise ConfigError(f"--only '{pattern}' matches none of the {len(all_ids)} runs of {source} "
                              f"(run ids are <method>/<task>/seed<k>, e.g. '{all_ids[0]}')")
    if not runs:
        raise where.error(("methods",), "the spec plans no runs (every method's 'tasks' excludes every task)")
    return SweepSpec(
        name=name,
        path=None if source == "<spec>" else Path(source),
        text=text,
        out=str(data.get("out") or f"runs/sweeps/{name}"),
        description=str(data.get("description") or ""),
        runs=tuple(runs),
        cli_overrides=cli,
        only=tuple(only) if len(runs) < len(all_ids) else (),  # patterns that match every run plan the whole spec
        deferred=deferred,
        adoptable=tuple(adoptable),
    )


def _seeds(value, where: _Where) -> list[int]:
    if isinstance(value, bool):
        raise where.error(("seeds",), "seeds must be a count (3 -> 0, 1, 2) or a list of integers")
    if isinstance(value, int):
        if value <= 0:
            raise where.error(("seeds",), f"seeds must be a positive count, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        if len(set(value)) != len(value):
            raise where.error(("seeds",), f"seeds {value} lists a seed twice")
        return list(value)
    raise where.error(("seeds",), f"seeds must be a count (3 -> 0, 1, 2) or a list of non-negative integers, got {value!r}")


@dataclass(frozen=True)
class _IndexedTask:
    spec: TaskSpec
    index: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def overrides(self):
        return self.spec.overrides


def _tasks(value, where: _Where) -> list:
    from o2o.envs import get_task

    if not isinstance(value, list):
        raise where.error(("tasks",), "tasks must be a list of task names (or {name: T, set: {...}} entries)")
    task_keys = TASK_KEYS + tuple(k for kind in KINDS.values() for k in kind.task_keys)
    out, names = [], set()
    for i, item in enumerate(value):
        entry = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise where.error(("tasks", i), "a task entry is a name or a mapping with 'name'")
        _check_keys(entry, task_keys, where, ("tasks", i), "task")
        try:
            task = get_task(entry["name"]).name
        except O2OError as err:
            raise where.error(("tasks", i), str(err)) from None
        if task in names:
            raise where.error(("tasks", i), f"task {task} is listed twice")
        names.add(task)
        extra = {k: v for k, v in entry.items() if k not in TASK_KEYS}
        out.append(_IndexedTask(TaskSpec(task, _overrides(entry.get("set"), where, ("tasks", i, "set")), extra), i))
    return out


def _methods(value, where: _Where, base_dir: Path, task_names: set[str]) -> list[MethodSpec]:
    from o2o.envs import get_task

    if not isinstance(value, list):
        raise where.error(("methods",), "methods must be a list of method names or {name: ..., algo: ..., set: {...}} entries")
    out, names = [], set()
    for i, item in enumerate(value):
        entry = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise where.error(("methods", i), "a method entry is a name or a mapping with 'name'")
        kind_name = entry.get("kind", "train")
        if kind_name not in KINDS:
            raise where.error(("methods", i, "kind"), f"unknown run kind '{kind_name}'; choose one of: {', '.join(KINDS)}")
        kind = get_kind(kind_name)
        _check_keys(entry, METHOD_KEYS + kind.method_keys, where, ("methods", i), f"method ({kind_name})")
        name = entry["name"]
        _check_plain_name(name, "method name", where, ("methods", i, "name"))
        if name in names:
            raise where.error(("methods", i, "name"), f"method '{name}' is listed twice; give each entry its own name")
        names.add(name)
        algo = entry.get("algo", name)
        if algo not in kind.algos():
            at = ("methods", i, "algo") if "algo" in entry else ("methods", i, "name")
            raise where.error(at, f"unknown method '{algo}' for kind {kind_name}; known: {', '.join(kind.algos())}"
                              + ("" if "algo" in entry else " (a method named otherwise says which with 'algo: ...')"))
        config_file = entry.get("config")
        if config_file is not None:
            config_path = Path(config_file)
            if not config_path.is_absolute():
                config_path = base_dir / config_path
            if not config_path.is_file():
                raise where.error(("methods", i, "config"), f"config file '{config_path}' does not exist")
            config_file = str(config_path)
        only = entry.get("tasks")
        if only is not None:
            if not isinstance(only, list) or not all(isinstance(t, str) for t in only):
                raise where.error(("methods", i, "tasks"), "a method's tasks must be a list of task names")
            try:
                only = tuple(get_task(t).name for t in only)
            except O2OError as err:
                raise where.error(("methods", i, "tasks"), str(err)) from None
            missing = [t for t in only if t not in task_names]
            if missing:
                raise where.error(("methods", i, "tasks"), f"{', '.join(missing)} not among the sweep's tasks")
        vectorize = entry.get("vectorize_seeds", False)
        if not isinstance(vectorize, bool):
            raise where.error(("methods", i, "vectorize_seeds"), f"vectorize_seeds must be true or false, got {vectorize!r}")
        if vectorize and kind.run_seeds is None:
            raise where.error(("methods", i, "vectorize_seeds"),
                              f"vectorize_seeds is for methods of kind pretrain (seeds sharing one dataset, no environments "
                              f"in the update loop); method '{name}' is of kind {kind_name}: remove the key")
        extra = {k: entry[k] for k in kind.method_keys if k in entry}
        out.append(MethodSpec(name, kind_name, algo, config_file, _overrides(entry.get("set"), where, ("methods", i, "set")), only, extra,
                              vectorize))
    return out


def _grid(value, where: _Where) -> list[tuple[tuple[str, Any], ...]]:
    if not value:
        return [()]
    if not isinstance(value, dict):
        raise where.error(("grid",), "grid must be a mapping of dotted config keys to lists of values")
    keys, choices = [], []
    for key, values in value.items():
        if not isinstance(values, list) or not values:
            raise where.error(("grid", key), f"grid key '{key}' needs a non-empty list of values")
        keys.append(str(key))
        choices.append(values)
    return [tuple(zip(keys, combo)) for combo in itertools.product(*choices)]


def _cli_overrides(items) -> tuple[str, ...]:
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set '{item}' is malformed; write key=value, e.g. online.iterations=4")
    return tuple(items)


def _build(kind, method: MethodSpec, task, seed: int, where: _Where, mi: int):
    try:
        return kind.build(method, task.spec, seed)
    except O2OError as err:
        raise where.error(("methods", mi), f"method '{method.name}' on {task.name}: {err}") from None


def _apply(cfg, overrides, where: _Where, path: tuple):
    from o2o.config import replace_path

    for key, value in overrides:
        try:
            cfg = replace_path(cfg, key, value)
        except ConfigError as err:
            raise where.error(path + (key,), str(err)) from None
    return cfg
