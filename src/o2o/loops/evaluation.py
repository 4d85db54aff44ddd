"""Metrics shared by the loops: training rollouts counted into a run's counters (online loops) and
deterministic evaluation (online and offline loops)."""

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


def record_rollout(counters: dict, rollout, collect_time: float, cost_limit) -> dict[str, float]:
    """Count a collected rollout into the run's counters (env steps, episodes, cumulative training cost,
    episodes over the limit) and return its training metrics. Shared by the off- and on-policy loops."""
    counters["env_steps"] += int(rollout.num_steps)
    counters["episodes"] += len(rollout.episode_returns)
    counters["cumulative_cost"] += float(np.sum(rollout.costs))
    metrics = {"perf/env_steps_per_s": rollout.num_steps / max(collect_time, 1e-9)}
    if len(rollout.episode_returns):
        metrics["train/episode_return"] = float(np.mean(rollout.episode_returns))
        metrics["train/episode_cost"] = float(np.mean(rollout.episode_costs))
        metrics["train/episode_length"] = float(np.mean(rollout.episode_lengths))
        if cost_limit is not None:
            counters["violating_episodes"] += int(np.sum(rollout.episode_costs > cost_limit))
    return metrics
