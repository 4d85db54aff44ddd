"""The tasks o2o knows: their env ids, sizes, horizons, cost limits and reference returns.

This module is pure data and must stay cheap to import (``o2o tasks`` lists it): it imports no
simulator. The dimensions here are checked against the real environments by ``tests/test_envs.py``.

Reference returns (what a normalised score is measured against):

- Bullet-Safety-Gym tasks: DSRL's per-task ``R_min`` / ``R_max`` (Liu et al., 2023, "Datasets and
  Benchmarks for Offline Safe Reinforcement Learning"), with DSRL's default cost limit kappa = 20
  and the largest episode cost found in the DSRL dataset (``dsrl_max_cost``, part of its file name).
- MuJoCo v4 tasks: D4RL's random / expert reference returns (Fu et al., 2020).
- Pendulum (a small smoke-test task, no published reference): ``ref_min_return`` is the mean return
  of a uniform-random policy measured here (-1255.5 over 200 episodes) and ``ref_max_return`` the
  return a trained SAC reaches (about -150), the same random/expert convention as D4RL.
"""

from __future__ import annotations

from dataclasses import dataclass

from o2o.errors import UnknownTaskError

#: DSRL's default cost threshold for every Bullet-Safety-Gym task.
DSRL_COST_LIMIT = 20.0


@dataclass(frozen=True)
class Task:
    """One environment and everything o2o needs to know about it without creating it."""

    name: str
    """Short name used across o2o, e.g. ``"BallCircle"``."""
    env_id: str
    """Gymnasium id, e.g. ``"SafetyBallCircle-v0"``."""
    family: str
    """``"bullet"`` (Bullet-Safety-Gym), ``"mujoco"`` (gymnasium MuJoCo v4) or ``"classic"``."""
    horizon: int
    """Time limit of an episode (the registered ``max_episode_steps``)."""
    obs_dim: int
    act_dim: int
    safe: bool
    """Whether the task has a cost signal (``info["cost"]`` is then 0 or 1 per step)."""
    cost_limit: float | None
    """Default episode-cost threshold kappa (DSRL's 20 for Bullet tasks); ``None`` if not safe."""
    ref_min_return: float
    ref_max_return: float
    ref_source: str
    """Where the reference returns come from: ``"DSRL"``, ``"D4RL"`` or ``"none"`` (our own)."""
    dsrl_max_cost: int | None = None
    """Largest episode cost in the DSRL dataset of this task (``None`` for non-DSRL tasks)."""


def _bullet(name: str, horizon: int, obs_dim: int, act_dim: int, r_min: float, r_max: float,
            max_cost: int) -> Task:
    return Task(name=name, env_id=f"Safety{name}-v0", family="bullet", horizon=horizon,
                obs_dim=obs_dim, act_dim=act_dim, safe=True, cost_limit=DSRL_COST_LIMIT,
                ref_min_return=r_min, ref_max_return=r_max, ref_source="DSRL",
                dsrl_max_cost=max_cost)


def _mujoco(name: str, obs_dim: int, act_dim: int, r_min: float, r_max: float) -> Task:
    return Task(name=name, env_id=f"{name}-v4", family="mujoco", horizon=1000, obs_dim=obs_dim,
                act_dim=act_dim, safe=False, cost_limit=None, ref_min_return=r_min,
                ref_max_return=r_max, ref_source="D4RL")


_TASKS: tuple[Task, ...] = (
    # name, horizon, obs, act, DSRL R_min, DSRL R_max, max episode cost in the DSRL data
    _bullet("BallRun", 100, 7, 2, 26.3398, 1327.4456, 80),
    _bullet("BallCircle", 200, 8, 2, 0.3831, 881.4634, 80),
    _bullet("CarRun", 200, 7, 2, 204.2873, 574.6533, 40),
    _bullet("CarCircle", 300, 8, 2, 3.4844, 534.3061, 100),
    _bullet("DroneRun", 200, 17, 4, 10.5570, 682.8330, 140),
    _bullet("DroneCircle", 300, 18, 4, 207.7942, 996.3892, 100),
    _bullet("AntRun", 200, 33, 8, 0.0018, 955.4819, 150),
    _bullet("AntCircle", 500, 34, 8, 0.0177, 460.7092, 200),
    # name, obs, act, D4RL random, D4RL expert
    _mujoco("Hopper", 11, 3, -20.272305, 3234.3),
    _mujoco("HalfCheetah", 17, 6, -280.178953, 12135.0),
    _mujoco("Walker2d", 17, 6, 1.629008, 4592.3),
    _mujoco("Ant", 27, 8, -325.6, 3879.7),
    Task(name="Pendulum", env_id="Pendulum-v1", family="classic", horizon=200, obs_dim=3,
         act_dim=1, safe=False, cost_limit=None, ref_min_return=-1255.5, ref_max_return=-150.0,
         ref_source="none"),
)

# Every accepted spelling, lower-cased: the short name and the env id.
_BY_KEY: dict[str, Task] = {}
for _task in _TASKS:
    _BY_KEY[_task.name.lower()] = _task
    _BY_KEY[_task.env_id.lower()] = _task


def list_tasks() -> list[Task]:
    """All known tasks: the 8 Bullet-Safety-Gym tasks, the 4 MuJoCo tasks, then Pendulum."""
    return list(_TASKS)


def get_task(name: str | Task) -> Task:
    """Look a task up by short name or env id, ignoring case (``"hopper"``, ``"Hopper-v4"``,
    ``"SafetyBallCircle-v0"``). A ``Task`` is returned as is."""
    if isinstance(name, Task):
        return name
    task = _BY_KEY.get(str(name).strip().lower())
    if task is None:
        known = ", ".join(t.name for t in _TASKS)
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {known}")
    return task
