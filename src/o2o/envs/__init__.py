"""Environments: the task registry, reproducible env creation, batched collection and scores.

The only o2o package that imports gymnasium, pybullet, Bullet-Safety-Gym or MuJoCo. Importing it is
cheap: ``registry`` and ``scores`` need NumPy only, and ``make_env``, ``Collector``, ``Rollout``
and ``evaluate_policy`` load gymnasium on first use (so ``o2o tasks`` starts fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from o2o.envs.registry import Task, get_task, list_tasks
from o2o.envs.scores import is_safe, normalized_cost, normalized_return

if TYPE_CHECKING:
    from o2o.envs.collector import Collector, Rollout, evaluate_policy
    from o2o.envs.make import SeededEnv, make_env

# Attributes loaded on first access (PEP 562) because their modules import gymnasium.
_LAZY = {
    "make_env": "o2o.envs.make",
    "SeededEnv": "o2o.envs.make",
    "Collector": "o2o.envs.collector",
    "Rollout": "o2o.envs.collector",
    "evaluate_policy": "o2o.envs.collector",
}

__all__ = ["Task", "get_task", "list_tasks", "normalized_return", "normalized_cost", "is_safe",
           *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'o2o.envs' has no attribute {name!r}")
