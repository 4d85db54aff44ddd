"""Config presets shipped with o2o (``o2o/configs/*.yaml``) and how a command resolves its config.

Resolution order (later wins): the dataclass defaults < ``<algo>.yaml`` < ``<algo>-<Task>.yaml``
< the user's ``--config FILE`` < ``--set key=value`` overrides. The resolved config is what the run
directory records.
"""

from __future__ import annotations

from pathlib import Path

from o2o.config import apply_overrides, load_yaml, update_from_dict
from o2o.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


def preset_path(name: str) -> Path | None:
    path = PRESET_DIR / f"{name}.yaml"
    return path if path.exists() else None


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_train_config(
    algo: str,
    task: str | None = None,
    seed: int | None = None,
    *,
    config_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
):
    """The ``TrainConfig`` of ``o2o train``: defaults, presets, the user's file, then overrides."""
    from o2o.envs import get_task
    from o2o.runconfig import train_config_class
    cls = train_config_class(algo)
    cfg = cls()
    user = load_yaml(config_file) if config_file else {}
    task_name = get_task(task or user.get("task") or cfg.task).name
    layers = [preset_path(algo), preset_path(f"{algo}-{task_name}")]
    for path, data in [(p, load_yaml(p)) for p in layers if p is not None] + [(config_file, user)]:
        try:
            cfg = update_from_dict(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    cfg = update_from_dict(cfg, {"algo": algo, "task": task_name})
    if seed is not None:
        cfg = update_from_dict(cfg, {"seed": seed})
    return apply_overrides(cfg, list(overrides))


def resolve_pretrain_config(
    algo: str,
    dataset: str,
    task: str | None = None,
    seed: int | None = None,
    *,
    steps: int | None = None,
    layer: dict | None = None,
    config_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
):
    """The ``PretrainConfig`` of ``o2o pretrain``: defaults < ``pretrain-<algo>.yaml`` < ``layer`` (a
    caller's budget, e.g. the pipeline's) < ``--config FILE`` < dataset/task/seed/steps < ``--set``."""
    from o2o.runconfig import pretrain_config_class
    cfg = pretrain_config_class(algo)()
    for path, data in [(preset_path(f"pretrain-{algo}"), None), ("budget", layer), (config_file, None)]:
        if path is None or (path == "budget" and not data):
            continue
        data = data if data is not None else load_yaml(path)
        try:
            cfg = update_from_dict(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    given = {"dataset": dataset, "task": task, "seed": seed}
    cfg = update_from_dict(cfg, {k: v for k, v in given.items() if v is not None})
    if steps is not None:
        cfg = update_from_dict(cfg, {"offline": {"steps": steps}})
    return apply_overrides(cfg, list(overrides))
