"""Normalised scores as DSRL and D4RL define them. Light to import: NumPy only.

DSRL (Liu et al., 2023):  R_norm = (R - R_min) / (R_max - R_min)
                          C_norm = (C + eps) / (kappa + eps),  eps = 1 if kappa == 0 else 0
                          an agent is safe iff C_norm <= 1.
D4RL (Fu et al., 2020):   score  = 100 (R - R_random) / (R_expert - R_random).

Every function takes a scalar (and returns a Python scalar) or an array (and returns an array),
with undiscounted episode returns R and episode costs C.
"""

from __future__ import annotations

import numpy as np

from o2o.envs.registry import Task, get_task


def _like_input(value: np.ndarray, reference: object) -> float | bool | np.ndarray:
    """Return a Python scalar when the caller passed a scalar, the array otherwise."""
    return value.item() if np.ndim(reference) == 0 else value


def normalized_return(task: Task | str, episode_return: float | np.ndarray) -> float | np.ndarray:
    """Normalise an episode return with the task's reference returns.

    DSRL tasks give a fraction (0 = ``R_min``, 1 = ``R_max``); D4RL tasks, and our own references
    (Pendulum), give D4RL's percentage (0 = random, 100 = expert).
    """
    task = get_task(task)
    fraction = (np.asarray(episode_return, dtype=np.float64) - task.ref_min_return) / (
        task.ref_max_return - task.ref_min_return)
    score = fraction if task.ref_source == "DSRL" else 100.0 * fraction
    return _like_input(score, episode_return)


def normalized_cost(episode_cost: float | np.ndarray, cost_limit: float) -> float | np.ndarray:
    """DSRL's normalised cost (C + eps) / (kappa + eps); eps = 1 only for kappa = 0, so that a
    zero limit still gives a finite score (and a zero-cost episode scores exactly 1, still safe)."""
    if cost_limit is None or cost_limit < 0:
        raise ValueError(f"cost_limit must be a non-negative number, got {cost_limit!r}")
    eps = 1.0 if cost_limit == 0 else 0.0
    score = (np.asarray(episode_cost, dtype=np.float64) + eps) / (cost_limit + eps)
    return _like_input(score, episode_cost)


def is_safe(episode_cost: float | np.ndarray, cost_limit: float) -> bool | np.ndarray:
    """DSRL's safety criterion: normalised cost <= 1, i.e. episode cost <= kappa."""
    safe = np.asarray(normalized_cost(episode_cost, cost_limit)) <= 1.0
    return _like_input(safe, episode_cost)
