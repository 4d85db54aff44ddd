"""``o2o train``, ``o2o pretrain`` and ``o2o finetune`` as Python functions (docs/api.md).

Each takes the command's options as keyword arguments and returns ``(run_dir, summary)``: the run
directory and the summary written to its ``summary.json``. The commands call these same functions
and only print, so a run started here and one started on the command line are the same run.

``$O2O_WANDB_PROJECT`` (``o2o --wandb``) also logs the runs' metrics to Weights & Biases (``o2o.runs.wandb_log``).

Config overrides are a dict of dotted keys (``{"online.iterations": 2, "agent.hidden_dims": [64, 64]}``)
or ``--set``-style strings (``["online.iterations=2"]``). Bad input raises ``o2o.errors.O2OError``
(the command line prints it as its one ``o2o: error:`` line).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from o2o.errors import ConfigError, O2OError, RunDirError
from o2o.runs.wandb_log import check_wandb

Overrides = Mapping[str, object] | Sequence[str] | None


def override_strings(overrides: Overrides) -> list[str]:
    """``--set``-style ``key=value`` strings from a dict of dotted keys (values written as JSON, which
    the config parser reads as YAML) or from such strings."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a dict or a list of 'key=value' strings, got the string '{overrides}'")
    return [str(item) for item in overrides]


def _saved_config(run: Path, command: str) -> dict:
    """The saved config of the run ``command`` (pretrain | train | finetune) is asked to resume; a run of
    another kind is refused, naming the command that continues it."""
    from o2o.config import load_yaml
    from o2o.runs.rundir import require_kind

    if not (run / "config.yaml").exists():
        raise RunDirError(f"cannot resume '{run}': no config.yaml there (is it a run directory of `o2o {command}`?)")
    require_kind(run, command)
    return load_yaml(run / "config.yaml")


def train(algo: str | None = None, task: str | None = None, *, seed: int | None = None, out: str | Path | None = None,
          resume: str | Path | None = None, config: str | Path | None = None, overrides: Overrides = None,
          progress: bool = True) -> tuple[Path, dict]:
    """``o2o train``: an online agent (``sac``, ``sac-lag``, ``td3``, ``ppo``) from scratch on ``task``
    into ``out`` (default ``runs/<algo>-<task>-s<seed>``); or, with ``resume=RUN_DIR``, continue that
    run exactly (``task``, ``seed``, ``config`` and ``overrides`` then change its saved config, which
    the run directory refuses unless they agree). Returns (run directory, summary)."""
    from o2o.config import apply_overrides, load_yaml, update_from_dict
    from o2o.loops.online import run_online
    from o2o.runconfig import load_run_config, train_config_class
    from o2o.presets import resolve_train_config

    check_wandb()
    sets = override_strings(overrides)
    if resume:
        run = Path(resume)
        saved = _saved_config(run, "train")
        cfg = load_run_config(train_config_class(algo or saved.get("algo")), saved)
        if config:
            cfg = update_from_dict(cfg, load_yaml(config))
        for key, value in (("task", task), ("seed", seed)):
            if value is not None:
                cfg = update_from_dict(cfg, {key: value})
        cfg = apply_overrides(cfg, sets)
    else:
        if not algo:
            raise O2OError("o2o train needs --algo (sac, sac-lag, td3 or ppo) or --resume DIR")
        cfg = resolve_train_config(algo, task, seed, config_file=config, overrides=sets)
        run = Path(out or f"runs/{cfg.algo}-{cfg.task}-s{cfg.seed}")
    return run, run_online(cfg, run, resume=bool(resume), progress=progress)


def pretrain(algo: str | None = None, dataset: str | None = None, *, task: str | None = None, steps: int | None = None,
             seed: int | None = None, seeds: Sequence[int] | None = None, out: str | Path | None = None,
             resume: str | Path | None = None, defer_eval: bool = False, config: str | Path | None = None,
             overrides: Overrides = None, progress: bool = True) -> tuple[Path, dict]:
    """``o2o pretrain``: offline pre-training of ``algo`` (``cpq``, ``bear-lag``, ``bc-safe``, ``bc``,
    ``cql``, ``iql``, ``td3bc``) on ``dataset`` (a name in the data directory or a path) into ``out``
    (default ``runs/pretrain-<algo>-<dataset>-s<seed>``); ``resume=RUN_DIR`` continues a run.

    ``seeds=[0, 1, 2]`` trains the seeds as one vectorised program into ``out/seed<k>`` (default
    ``runs/pretrain-<algo>-<dataset>``) and returns (that folder, ``{"seed<k>": summary}``); a
    ``resume`` folder of such runs continues all of them. ``defer_eval``: no evaluation on the live
    task while training (``o2o eval DIR --record`` later). Returns (run directory, summary)."""
    from o2o.config import apply_overrides, from_dict, load_yaml
    from o2o.loops.offline import run_pretrain, run_pretrain_seeds
    from o2o.runconfig import pretrain_config_class
    from o2o.presets import resolve_pretrain_config

    check_wandb()
    sets = override_strings(overrides)
    seeds = list(seeds) if seeds else None
    live_eval = not defer_eval
    if seed is not None and seeds:
        raise O2OError("--seed and --seeds are mutually exclusive: --seed S trains one run, --seeds S1 S2 ... trains several as one program")
    if seeds and len(set(seeds)) != len(seeds):
        raise O2OError(f"--seeds {' '.join(map(str, seeds))} lists a seed twice")
    if resume:
        if seeds:
            raise O2OError("--resume takes the seeds from the run directories it continues; drop --seeds")
        run = Path(resume)
        group = seed_group_dirs(run)
        if group:
            saved = {s: load_yaml(path / "config.yaml") for s, path in group.items()}
            first = next(iter(saved.values()))
            for s, conf in saved.items():
                if {**conf, "seed": None} != {**first, "seed": None}:
                    raise O2OError(f"cannot resume '{run}' as one group: {group[s]} has another config than "
                                   f"{next(iter(group.values()))}; resume each with o2o pretrain --resume DIR/seed<k>")
            cfg = apply_overrides(from_dict(pretrain_config_class(first.get("algo", "")), first), sets)
            summaries = run_pretrain_seeds(cfg, list(group), list(group.values()), resume=True, progress=progress, live_eval=live_eval)
            return run, {path.name: summary for path, summary in zip(group.values(), summaries)}
        saved = _saved_config(run, "pretrain")
        cfg = apply_overrides(from_dict(pretrain_config_class(saved.get("algo", "")), saved), sets)
        return run, run_pretrain(cfg, run, resume=True, progress=progress, live_eval=live_eval)
    if not algo or not dataset:
        raise O2OError("o2o pretrain needs --algo and --dataset (or --resume DIR)")
    cfg = resolve_pretrain_config(algo, dataset, task, seeds[0] if seeds else seed, steps=steps, config_file=config, overrides=sets)
    if seeds:
        root = Path(out or f"runs/pretrain-{cfg.algo}-{Path(cfg.dataset).stem}")
        outs = [root / f"seed{s}" for s in seeds]
        summaries = run_pretrain_seeds(cfg, seeds, outs, progress=progress, live_eval=live_eval)
        return root, {path.name: summary for path, summary in zip(outs, summaries)}
    run = Path(out or f"runs/pretrain-{cfg.algo}-{Path(cfg.dataset).stem}-s{cfg.seed}")
    return run, run_pretrain(cfg, run, progress=progress, live_eval=live_eval)


def seed_group_dirs(path: Path) -> dict[int, Path]:
    """``{seed: run dir}`` of a folder written by ``o2o pretrain --seeds`` (its seed<k>/ run directories)."""
    import re

    if not path.is_dir() or (path / "config.yaml").exists():
        return {}
    found = {int(m.group(1)): p for p in path.iterdir() if (m := re.fullmatch(r"seed(\d+)", p.name)) and (p / "config.yaml").is_file()}
    return dict(sorted(found.items()))


def finetune(method: str | None = None, pretrained: str | Path | None = None, *, task: str | None = None,
             seed: int | None = None, out: str | Path | None = None, resume: str | Path | None = None,
             config: str | Path | None = None, overrides: Overrides = None, progress: bool = True) -> tuple[Path, dict]:
    """``o2o finetune``: offline-to-online fine-tuning of the pre-trained run ``pretrained`` with
    ``method`` (``marvel``, ``warm-start``, ``from-scratch``, ..., ``o2sac``, ``o2td3``, ``o2ppo`` and
    their ablations; ``o2o config --method M`` lists its keys) into ``out`` (default
    ``runs/<method>-<task>-s<seed>``); ``resume=RUN_DIR`` continues a run. Returns (run directory,
    summary)."""
    from o2o.config import apply_overrides
    from o2o.loops.finetune import resolve_finetune_config, run_finetune
    from o2o.runconfig import finetune_config_class

    check_wandb()
    sets = override_strings(overrides)
    if resume:
        run = Path(resume)
        saved = _saved_config(run, "finetune")
        from o2o.runconfig import load_run_config

        cfg = apply_overrides(load_run_config(finetune_config_class(saved["method"]), saved), sets)
    else:
        if not method:
            raise O2OError("o2o finetune needs --method (e.g. marvel) or --resume DIR")
        cfg = resolve_finetune_config(method, str(pretrained) if pretrained else None, task, seed, config_file=config, overrides=sets)
        run = Path(out or f"runs/{cfg.method}-{cfg.task}-s{cfg.seed}")
    return run, run_finetune(cfg, run, resume=bool(resume), progress=progress)


def export_policy(run_dir: str | Path, out: str | Path, *, checkpoint: int | str | Path | None = None):
    """``o2o export``: the deterministic policy of ``run_dir`` (latest checkpoint, or ``checkpoint``)
    as plain arrays in the .npz file ``out``, for ``o2o.export.numpy_policy`` (NumPy only). Returns
    the loaded policy (``o2o.load_policy``'s) and the file written."""
    from o2o.export import write_policy
    from o2o.loops.policy import load_policy

    out = Path(out)
    if out.suffix != ".npz":
        raise O2OError(f"the export is a NumPy .npz file: give --out a name ending in .npz, not '{out.name}'")
    policy = load_policy(run_dir, checkpoint)
    try:
        return policy, write_policy(policy, out)
    except ValueError as err:
        raise O2OError(f"cannot export '{run_dir}' ({policy.algo}): {err}; o2o export writes o2o's MLP actors") from None
