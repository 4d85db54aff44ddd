"""Deterministic evaluation shared by the online and offline loops."""

from __future__ import annotations

from typing import Callable

import numpy as np

# Evaluation episodes use their own seed stream, fixed per run: every evaluation of a run plays the
# same start states (common random numbers), so successive evaluations differ only by the policy.
EVAL_SEED_OFFSET = 100_003


def evaluation_metrics(task, policy: Callable[[np.ndarray], np.ndarray], num_episodes: int, seed: int, cost_limit) -> dict[str, float]:
    """Mean return (raw and normalised), and for a safe task the episode cost, C/kappa and safety."""
    from o2o.envs import evaluate_policy, is_safe, normalized_cost, normalized_return

    returns, costs, _ = evaluate_policy(task, policy, num_episodes, seed=seed + EVAL_SEED_OFFSET, num_envs=min(num_episodes, 5))
    out = {
        "eval/return": float(np.mean(returns)),
        "eval/return_std": float(np.std(returns)),
        "eval/normalized_return": float(normalized_return(task, np.mean(returns))),
    }
    if task.safe:
        out["eval/cost"] = float(np.mean(costs))
        if cost_limit is not None:
            out["eval/normalized_cost"] = float(normalized_cost(np.mean(costs), cost_limit))
            out["eval/safe"] = float(is_safe(np.mean(costs), cost_limit))
    return out
