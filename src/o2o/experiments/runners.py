"""What a sweep can run: a small registry of run kinds, each a few functions around an existing loop.

    kind       what it runs                          built from
    train      o2o train --algo A  (online)          o2o.loops.online.run_online
    pretrain   o2o pretrain --algo A (offline)       o2o.loops.offline.run_pretrain (run_pretrain_seeds
                                                     for a method with vectorize_seeds)
    finetune   o2o finetune --method M (o2o)         o2o.loops.finetune.run_finetune

A kind builds a run's config exactly as its command does (presets, the method's config file, task,
seed), checks it (the strict config classes refuse unknown keys; ``check`` adds the value checks the
loop would otherwise make only once it starts), rebuilds it from its saved dict in a worker process
(configs are dynamic dataclasses, so workers receive plain dicts, never pickled classes), and trains
it into a run directory. Adding a kind is one ``register_kind`` call with five small functions (see
``finetune`` at the bottom: about 30 lines).

This module imports nothing heavy at import time: a spawned worker imports it before JAX is
configured (thread counts are set through environment variables that JAX reads on import).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from o2o.errors import ConfigError
from o2o.runconfig import load_run_config


@dataclass(frozen=True)
class MethodSpec:
    """One entry of a sweep spec's ``methods``."""

    name: str  # label in the index, run paths, tables and figures
    kind: str  # key of KINDS
    algo: str  # the algorithm (or recipe) the kind runs
    config_file: str | None  # YAML laid over the presets, resolved against the spec's folder
    overrides: tuple[tuple[str, Any], ...]  # dotted key -> value, in order
    tasks: tuple[str, ...] | None  # only these tasks (None: all of the sweep's)
    extra: dict  # kind-specific keys (``dataset`` for pretrain)
    vectorize_seeds: bool = False  # the sweep's seeds as one vectorised program (kinds with ``run_seeds``)


@dataclass(frozen=True)
class TaskSpec:
    """One entry of a sweep spec's ``tasks``."""

    name: str  # canonical task name (o2o tasks)
    overrides: tuple[tuple[str, Any], ...]
    extra: dict  # kind-specific keys (``dataset``)


@dataclass(frozen=True)
class RunKind:
    name: str
    algos: Callable[[], list[str]]  # the valid ``algo`` values, for checks and messages
    build: Callable[[MethodSpec, TaskSpec, int], Any]  # presets + method file + task + seed -> config
    check: Callable[[Any], None]  # value checks on the final config (raise ConfigError)
    load: Callable[[dict], Any]  # a config rebuilt from its plain dict (in the worker)
    run: Callable[[Any, Path, bool], dict]  # (config, run_dir, resume) -> summary
    method_keys: tuple[str, ...] = ()  # extra keys a method entry of this kind may carry
    task_keys: tuple[str, ...] = ()  # extra keys a task entry may carry for this kind
    # (configs differing only in seed, run_dirs, resume) -> summaries: the seeds as one vectorised program;
    # None: the kind cannot (``vectorize_seeds`` is refused for it)
    run_seeds: Callable[[list, list[Path], bool], list[dict]] | None = None


KINDS: dict[str, RunKind] = {}


def register_kind(kind: RunKind) -> None:
    KINDS[kind.name] = kind


def get_kind(name: str) -> RunKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown run kind '{name}'; choose one of: {', '.join(KINDS)}") from None


def completed_config(kind: str, saved: dict) -> dict:
    """A run config recorded by an earlier o2o, as this o2o reads it: the config keys added since then at
    their defaults. A new key's default keeps the behaviour from before the key existed (the project's
    rule for new options, docs/experiments.md), so a sweep, an archive or a run directory from before an
    option was added is still the same experiment. Unchanged when this o2o cannot read it (a key since
    removed or renamed): the difference is then reported as one."""
    from o2o.config import to_dict

    try:
        return to_dict(get_kind(kind).load(saved))
    except (ConfigError, KeyError, TypeError):
        return saved


# ---------------------------------------------------------------------------------------- train


def _train_algos() -> list[str]:
    from o2o.agents import ONLINE_AGENTS

    return list(ONLINE_AGENTS)


def _train_build(method: MethodSpec, task: TaskSpec, seed: int):
    from o2o.presets import resolve_train_config

    return resolve_train_config(method.algo, task.name, seed, config_file=method.config_file)


def _train_check(cfg) -> None:
    from o2o.agents import get_online_agent
    from o2o.envs import get_task

    spec = get_online_agent(cfg.algo)
    if getattr(spec, "on_policy", False):  # PPO: its own loop section (loops/onpolicy.py)
        from o2o.loops.onpolicy import check_config
    else:
        from o2o.loops.online import check_config
    check_config(cfg)
    if spec.safe and not get_task(cfg.task).safe:
        raise ConfigError(f"algorithm '{cfg.algo}' needs a task with costs; '{cfg.task}' has none")


def _train_load(d: dict):
    from o2o.runconfig import train_config_class
    return load_run_config(train_config_class(d["algo"]), d)


def _train_run(cfg, out: Path, resume: bool) -> dict:
    from o2o.loops.online import run_online

    return run_online(cfg, out, resume=resume, progress=False)


register_kind(RunKind("train", _train_algos, _train_build, _train_check, _train_load, _train_run))


# ---------------------------------------------------------------------------------------- pretrain


def _pretrain_algos() -> list[str]:
    from o2o.agents import OFFLINE_AGENTS

    return list(OFFLINE_AGENTS)


def _pretrain_build(method: MethodSpec, task: TaskSpec, seed: int):
    from o2o.config import load_yaml, update_from_dict
    from o2o.runconfig import pretrain_config_class
    from o2o.presets import preset_path

    dataset = task.extra.get("dataset") or method.extra.get("dataset")
    if not dataset:
        raise ConfigError(
            f"method '{method.name}' (pretrain) needs a dataset for task {task.name}: give the task as "
            f"{{name: {task.name}, dataset: NAME}} or the method a 'dataset' ('{{task}}' is replaced by the task)"
        )
    cfg = pretrain_config_class(method.algo)()
    for path in (preset_path(f"pretrain-{method.algo}"), method.config_file):
        if path is not None:
            cfg = update_from_dict(cfg, load_yaml(path))
    return update_from_dict(cfg, {"dataset": str(dataset).replace("{task}", task.name), "task": task.name, "seed": seed})


def _pretrain_check(cfg) -> None:
    from o2o.data.registry import resolve_dataset
    from o2o.loops.offline import check_offline_config

    check_offline_config(cfg.offline)
    path = resolve_dataset(cfg.dataset)  # a missing dataset is refused before anything is launched
    if not path.is_file():  # given as a path
        from o2o.errors import DatasetError

        raise DatasetError(f"{path}: no such dataset file")


def _pretrain_load(d: dict):
    from o2o.config import from_dict
    from o2o.runconfig import pretrain_config_class
    return from_dict(pretrain_config_class(d["algo"]), d)


def _pretrain_run(cfg, out: Path, resume: bool) -> dict:
    from o2o.loops.offline import run_pretrain

    return run_pretrain(cfg, out, resume=resume, progress=False)


def _pretrain_run_seeds(cfgs: list, outs: list[Path], resume: bool) -> list[dict]:
    import dataclasses

    from o2o.loops.offline import run_pretrain_seeds

    first = dataclasses.replace(cfgs[0], seed=0)
    if any(dataclasses.replace(c, seed=0) != first for c in cfgs):
        raise ConfigError("runs vectorised as one program must differ only in their seed")
    return run_pretrain_seeds(cfgs[0], [c.seed for c in cfgs], outs, resume=resume, progress=False)


register_kind(
    RunKind(
        "pretrain", _pretrain_algos, _pretrain_build, _pretrain_check, _pretrain_load, _pretrain_run,
        method_keys=("dataset",), task_keys=("dataset",), run_seeds=_pretrain_run_seeds,
    )
)


# ---------------------------------------------------------------------------------------- finetune


def _finetune_algos() -> list[str]:
    from o2o.methods import METHODS

    return list(METHODS)


def _finetune_build(method: MethodSpec, task: TaskSpec, seed: int):
    from o2o.loops.finetune import resolve_finetune_config

    # a pre-trained run per task (and seed): '{task}' and '{seed}' are replaced, e.g.
    # runs/sweeps/pre/runs/cpq/{task}/seed{seed}; the run must exist when the sweep is launched
    pretrained = task.extra.get("pretrained") or method.extra.get("pretrained")
    if pretrained:
        pretrained = str(pretrained).replace("{task}", task.name).replace("{seed}", str(seed))
    # kept as the spec writes it: a run's config hash must not depend on where the sweep is launched
    return resolve_finetune_config(method.algo, pretrained, task.name, seed, config_file=method.config_file, absolute_pretrained=False)


def _finetune_check(cfg) -> None:
    from o2o.loops.finetune import check_finetune_config

    check_finetune_config(cfg)


def _finetune_load(d: dict):
    from o2o.runconfig import finetune_config_class

    return load_run_config(finetune_config_class(d["method"]), d)


def _finetune_run(cfg, out: Path, resume: bool) -> dict:
    from o2o.loops.finetune import run_finetune

    return run_finetune(cfg, out, resume=resume, progress=False)


register_kind(
    RunKind(
        "finetune", _finetune_algos, _finetune_build, _finetune_check, _finetune_load, _finetune_run,
        method_keys=("pretrained",), task_keys=("pretrained",),
    )
)
