"""Agents: one module per algorithm, each pure functions over an immutable pytree state.

Contract (every module): ``Config`` dataclass, ``init(key, obs_dim, act_dim, cfg) -> state``,
``update(state, batch, key, **signals) -> (state, metrics)`` (jit- and scan-able),
``act(state, obs, key, deterministic) -> actions`` and ``actor_actions(actor, obs, key, deterministic)``
(PPO's takes ``ppo.policy_of(state)``: the actor with its observation statistics). An on-policy agent
(``AgentSpec.on_policy``: PPO) trains in ``loops/onpolicy.py`` from whole rollouts instead of replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from o2o.agents import o2sac, o2td3, ppo, sac, sac_lag, td3
from o2o.errors import ConfigError


@dataclass(frozen=True)
class AgentSpec:
    name: str
    module: ModuleType
    config_cls: type
    safe: bool  # has a cost critic and takes a Lagrange multiplier signal
    description: str
    on_policy: bool = False  # learns from its own fresh rollouts (PPO): trained by loops/onpolicy.py, no replay


ONLINE_AGENTS: dict[str, AgentSpec] = {
    "sac": AgentSpec("sac", sac, sac.SACConfig, False, "Soft Actor-Critic (Haarnoja et al. 2018)"),
    "sac-lag": AgentSpec(
        "sac-lag", sac_lag, sac_lag.SACLagConfig, True, "SAC-Lagrangian: SAC + cost critic + multiplier"
    ),
    "td3": AgentSpec("td3", td3, td3.TD3Config, False, "Twin Delayed DDPG (Fujimoto et al. 2018)"),
    "ppo": AgentSpec("ppo", ppo, ppo.PPOConfig, False, "Proximal Policy Optimization, clip (Schulman et al. 2017)", on_policy=True),
    # OCR-CFT's constrained online agents (fine-tuning only: o2o finetune --method o2sac | o2td3)
    "o2sac": AgentSpec("o2sac", o2sac, o2sac.O2SACConfig, False, "SAC + KL constraint to a reference policy (OCR-CFT)"),
    "o2td3": AgentSpec("o2td3", o2td3, o2td3.O2TD3Config, False, "TD3 + MSE constraint to a reference policy (OCR-CFT)"),
}


def get_online_agent(name: str) -> AgentSpec:
    try:
        return ONLINE_AGENTS[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm '{name}'; choose one of: {', '.join(ONLINE_AGENTS)}") from None


# ------------------------------------------------------------------------------------------------
# Offline (pre-training) agents. Same contract as the online ones; they learn from a fixed dataset.

from o2o.agents import bc, bear_lag, cpq, cql, iql, td3bc  # noqa: E402


@dataclass(frozen=True)
class OfflineAgentSpec:
    name: str
    module: ModuleType
    config_cls: type
    safe: bool  # a safe-RL method: respects a cost limit (cost critic, or cost-filtered data)
    filter_safe_episodes: bool  # trains on the episodes with cost <= cost_limit only (bc.filter_safe_trajectories)
    description: str


OFFLINE_AGENTS: dict[str, OfflineAgentSpec] = {
    "bc": OfflineAgentSpec("bc", bc, bc.BCConfig, False, False, "Behaviour cloning (max likelihood, tanh-Gaussian)"),
    "bc-safe": OfflineAgentSpec(
        "bc-safe", bc, bc.BCConfig, True, True, "BC on the episodes whose cost is within the limit (DSRL's BC-Safe)"
    ),
    "cql": OfflineAgentSpec("cql", cql, cql.CQLConfig, False, False, "Conservative Q-Learning on SAC (Kumar et al. 2020)"),
    "iql": OfflineAgentSpec("iql", iql, iql.IQLConfig, False, False, "Implicit Q-Learning (Kostrikov et al. 2021)"),
    "td3bc": OfflineAgentSpec("td3bc", td3bc, td3bc.TD3BCConfig, False, False, "TD3+BC (Fujimoto & Gu 2021)"),
    "cpq": OfflineAgentSpec(
        "cpq", cpq, cpq.CPQConfig, True, False, "Constraints Penalized Q-learning (Xu et al. 2022)"
    ),
    "bear-lag": OfflineAgentSpec(
        "bear-lag", bear_lag, bear_lag.BEARLagConfig, True, False, "BEAR + cost critic + PID Lagrangian (OSRL's BEARL)"
    ),
}


def get_offline_agent(name: str) -> OfflineAgentSpec:
    try:
        return OFFLINE_AGENTS[name]
    except KeyError:
        raise ConfigError(f"unknown offline algorithm '{name}'; choose one of: {', '.join(OFFLINE_AGENTS)}") from None
