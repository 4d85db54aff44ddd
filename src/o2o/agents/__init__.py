"""Agents: one module per algorithm, each pure functions over an immutable pytree state.

Contract (every module): ``Config`` dataclass, ``init(key, obs_dim, act_dim, cfg) -> state``,
``update(state, batch, key, **signals) -> (state, metrics)`` (jit- and scan-able),
``act(state, obs, key, deterministic) -> actions`` and ``actor_actions(actor, obs, key, deterministic)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from o2o.agents import sac, sac_lag
from o2o.errors import ConfigError


@dataclass(frozen=True)
class AgentSpec:
    name: str
    module: ModuleType
    config_cls: type
    safe: bool  # has a cost critic and takes a Lagrange multiplier signal
    description: str


ONLINE_AGENTS: dict[str, AgentSpec] = {
    "sac": AgentSpec("sac", sac, sac.SACConfig, False, "Soft Actor-Critic (Haarnoja et al. 2018)"),
    "sac-lag": AgentSpec(
        "sac-lag", sac_lag, sac_lag.SACLagConfig, True, "SAC-Lagrangian: SAC + cost critic + multiplier"
    ),
}


def get_online_agent(name: str) -> AgentSpec:
    try:
        return ONLINE_AGENTS[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm '{name}'; choose one of: {', '.join(ONLINE_AGENTS)}") from None
