"""The configs of o2o's run kinds, below the loops that run them: ``o2o train`` (off-policy and
on-policy agents) and ``o2o pretrain``. Built per algorithm, so that ``agent.*`` keys are checked
against that algorithm's own config. ``o2o.presets`` lays the YAML presets over them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache

from o2o.agents import get_offline_agent, get_online_agent
from o2o.lagrange import LagrangeConfig


@dataclass(frozen=True)
class OnlineConfig:
    iterations: int = field(default=100, metadata={"help": "collect -> control -> update iterations"})
    episodes_per_iteration: int | None = field(
        default=3, metadata={"help": "N episodes collected per iteration (None: use steps_per_iteration)"}
    )
    steps_per_iteration: int = field(default=1000, metadata={"help": "env steps per iteration when episodes_per_iteration is None"})
    updates_per_iteration: int = field(default=600, metadata={"help": "M gradient steps per iteration"})
    num_envs: int = field(default=1, metadata={"help": "env copies stepped together (one batched policy call)"})
    warmup_steps: int = field(default=0, metadata={"help": "env steps with uniform random actions before the policy acts"})
    update_after: int = field(default=0, metadata={"help": "env steps collected before gradient updates start"})
    replay_capacity: int = field(default=1_000_000, metadata={"help": "online replay buffer size"})
    eval_every: int = field(default=10, metadata={"help": "evaluate every E iterations (and after the last)"})
    eval_episodes: int = field(default=5, metadata={"help": "deterministic evaluation episodes"})
    checkpoint_every: int = field(default=25, metadata={"help": "checkpoint every C iterations (and at the end)"})
    cost_limit: float | None = field(default=None, metadata={"help": "episode cost limit kappa; None = the task's default"})


@lru_cache(maxsize=None)
def train_config_class(algo: str) -> type:
    """The top-level config of ``o2o train --algo ALGO``: task, seed, agent hyper-parameters, loop,
    multiplier controller. Built per algorithm so that ``agent.*`` keys are checked against that
    algorithm's own config."""
    spec = get_online_agent(algo)
    if spec.on_policy:  # PPO: no replay, its own loop section (loops/onpolicy.py)
        return onpolicy_train_config_class(algo)
    fields = [
        ("algo", str, field(default=algo, metadata={"help": "online algorithm"})),
        ("task", str, field(default="BallCircle", metadata={"help": "task name (o2o tasks)"})),
        ("seed", int, field(default=0, metadata={"help": "random seed"})),
        ("agent", spec.config_cls, field(default_factory=spec.config_cls, metadata={"help": "agent hyper-parameters"})),
        ("online", OnlineConfig, field(default_factory=OnlineConfig, metadata={"help": "training loop"})),
    ]
    if spec.safe:  # the cost multiplier's controller: safe agents only
        fields.append(("lagrange", LagrangeConfig, field(default_factory=LagrangeConfig, metadata={"help": "multiplier controller"})))
    return dataclasses.make_dataclass("TrainConfig", fields, frozen=True)


RETIRED_SECTIONS = ("lagrange",)  # sections an earlier o2o also wrote into configs that no longer have them


def without_retired_sections(config_cls: type, saved: dict) -> dict:
    """A saved config as this o2o reads it: a section an earlier o2o also wrote for run kinds that have
    none now (``lagrange`` of an unconstrained agent, which never used it) left out."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {k: v for k, v in saved.items() if k in names or k not in RETIRED_SECTIONS}


@dataclass(frozen=True)
class OnPolicyConfig:
    iterations: int = field(default=488, metadata={"help": "rollout -> update iterations (488 x 2048 ~ 1M env steps)"})
    steps_per_iteration: int = field(default=2048, metadata={"help": "env steps per rollout, all envs together (a multiple of num_envs)"})
    num_envs: int = field(default=1, metadata={"help": "env copies stepped together (one batched policy call)"})
    eval_every: int = field(default=10, metadata={"help": "evaluate every E iterations (and after the last)"})
    eval_episodes: int = field(default=5, metadata={"help": "deterministic evaluation episodes"})
    checkpoint_every: int = field(default=25, metadata={"help": "checkpoint every C iterations (and at the end)"})
    cost_limit: float | None = field(default=None, metadata={"help": "episode cost limit kappa (reported only); None = the task's default"})


@lru_cache(maxsize=None)
def onpolicy_train_config_class(algo: str) -> type:
    """The top-level config of ``o2o train --algo ppo``: task, seed, agent, loop (section ``online``
    as for the off-policy agents, so ``--set online.steps_per_iteration=...`` reads the same)."""
    spec = get_online_agent(algo)
    fields = [
        ("algo", str, field(default=algo, metadata={"help": "online algorithm"})),
        ("task", str, field(default="Hopper", metadata={"help": "task name (o2o tasks)"})),
        ("seed", int, field(default=0, metadata={"help": "random seed"})),
        ("agent", spec.config_cls, field(default_factory=spec.config_cls, metadata={"help": "agent hyper-parameters"})),
        ("online", OnPolicyConfig, field(default_factory=OnPolicyConfig, metadata={"help": "training loop"})),
    ]
    return dataclasses.make_dataclass("TrainConfig", fields, frozen=True)


@dataclass(frozen=True)
class OfflineConfig:
    steps: int = field(default=100_000, metadata={"help": "gradient steps in total"})
    steps_per_call: int = field(default=1000, metadata={
        "help": "gradient steps per jitted call (one metrics row each); a last call makes up the rest of `steps`"})
    eval_every: int = field(default=10_000, metadata={"help": "evaluate on the live task every N gradient steps (and at the end)"})
    eval_episodes: int = field(default=5, metadata={"help": "deterministic evaluation episodes"})
    checkpoint_every: int = field(default=25_000, metadata={"help": "checkpoint every N gradient steps (and at the end)"})
    normalize_observations: bool | None = field(default=None, metadata={"help": "standardise observations with the dataset's mean / std (+1e-3); None = yes for the unconstrained algorithms (CORL), no for the safe ones (OSRL)"})


@lru_cache(maxsize=None)
def pretrain_config_class(algo: str) -> type:
    spec = get_offline_agent(algo)
    fields = [
        ("algo", str, field(default=algo, metadata={"help": "offline algorithm"})),
        ("dataset", str, field(default="BallCircle-dsrl", metadata={"help": "dataset name (o2o data list) or path"})),
        ("task", str | None, field(default=None, metadata={"help": "task; None = the dataset's metadata"})),
        ("allow_other_task", bool, field(default=False, metadata={
            "help": "train on a dataset whose metadata names another task than `task` (its widths must still match)"})),
        ("seed", int, field(default=0, metadata={"help": "random seed"})),
        ("cost_limit", float | None, field(default=None, metadata={"help": "episode cost limit kappa; None = the task's default"})),
        ("agent", spec.config_cls, field(default_factory=spec.config_cls, metadata={"help": "agent hyper-parameters"})),
        ("offline", OfflineConfig, field(default_factory=OfflineConfig, metadata={"help": "training loop"})),
    ]
    return dataclasses.make_dataclass("PretrainConfig", fields, frozen=True)


def load_run_config(config_cls: type, saved: dict):
    """A run's saved config as ``config_cls`` (``o2o.config.from_dict``, strict), read the way this o2o
    reads it (``without_retired_sections``)."""
    from o2o.config import from_dict

    return from_dict(config_cls, without_retired_sections(config_cls, saved))


def family_section(family: str) -> tuple[str, type, str]:
    """A fine-tuning method family's config section: (name, dataclass, help). Marvel's family ("safe"):
    ``vpa``; OCR-CFT's: ``ocr``."""
    from o2o.bridge.config import OCRConfig, VPAConfig

    if family == "ocr-cft":
        return "ocr", OCRConfig, "OCR-CFT: re-evaluation, alignment, constraint, replay"
    return "vpa", VPAConfig, "value pre-alignment (methods with VPA)"


@lru_cache(maxsize=None)
def finetune_config_class(method: str) -> type:
    """``o2o finetune --method M``'s config: the online algorithm's training config plus the method,
    the pre-trained run and its family's section only (``family_section``)."""
    from o2o.methods import get_method

    spec = get_method(method)
    base = train_config_class(spec.algo)
    name, section, help_text = family_section(spec.family)
    extra = [
        ("method", str, field(default=method, metadata={"help": "offline-to-online method (o2o.methods)"})),
        ("pretrained", str | None, field(default=None, metadata={"help": "pre-trained run directory (o2o pretrain)"})),
        (name, section, field(default_factory=section, metadata={"help": help_text})),
    ]
    clean = []  # dataclasses.fields() returns Field objects already bound to names: rebuild clean ones
    for f in dataclasses.fields(base):
        kwargs = {"metadata": f.metadata}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = f.default_factory
        clean.append((f.name, f.type, field(**kwargs)))
    return dataclasses.make_dataclass("FinetuneConfig", clean + extra, frozen=True)
