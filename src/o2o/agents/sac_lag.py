"""SAC-Lagrangian: SAC with a cost critic and a Lagrange multiplier on the expected episode cost.

    max_pi min_{lambda >= 0}  J_r(pi) - lambda (J_c(pi) - kappa)

    reward critics: as SAC (twin, min, entropy in the backup, reward scaled)
    cost critic:    L(psi) = E[(Qc(s,a) - y_c)^2],   y_c = c + gamma_c (1 - terminal) agg_k Qcbar_k(s',a'),  a' ~ pi
    actor:          L(theta) = E[alpha log pi(a|s) - min_j Q_j(s,a) + lambda agg_k Qc_k(s,a)]  (optionally / (1 + lambda))

``agg`` over a cost ensemble is max (pessimistic for a cost) or mean, never min. The multiplier
``lagrange`` is a *signal*: the host-side controller (``o2o.lagrange``) sets it from measured episode
costs and passes it into ``update``; nothing about it is learned inside the jitted step. Costs are
not scaled (Marvel's released code and OSRL scale only rewards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents import sac
from o2o.agents.common import adam
from o2o.nn import CriticEnsemble, polyak_update, tanh_gaussian_sample, shared_module

act = sac.act
actor_actions = sac.actor_actions


@dataclass(frozen=True)
class SACLagConfig(sac.SACConfig):
    num_cost_critics: int = field(default=1, metadata={"help": "cost critics in the ensemble"})
    cost_reduce: Literal["max", "mean"] = field(default="max", metadata={"help": "cost ensemble reduction (never min)"})
    cost_critic_lr: float = field(default=3e-4, metadata={"help": "cost critic Adam learning rate"})
    cost_gamma: float | None = field(default=None, metadata={"help": "cost discount; None = gamma"})
    scale_actor_loss: bool = field(default=False, metadata={"help": "divide the actor loss by (1 + lambda) (Stooke et al. 2020)"})


@flax.struct.dataclass
class SACLagState:
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    temperature: TrainState
    cost_critic: TrainState
    target_cost_critic_params: Any
    config: SACLagConfig = flax.struct.field(pytree_node=False)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: SACLagConfig) -> SACLagState:
    key, cost_key = jax.random.split(key)
    actor, critic, target, temperature = sac.init_actor_critic(key, obs_dim, act_dim, cfg)
    cost_def = shared_module(CriticEnsemble, tuple(cfg.hidden_dims), cfg.num_cost_critics, cfg.critic_layer_norm)
    cost_params = cost_def.init(cost_key, jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)))
    cost_critic = TrainState.create(apply_fn=cost_def.apply, params=cost_params, tx=adam(cfg.cost_critic_lr))
    return SACLagState(
        actor=actor,
        critic=critic,
        target_critic_params=target,
        temperature=temperature,
        cost_critic=cost_critic,
        target_cost_critic_params=jax.tree_util.tree_map(jnp.copy, cost_params),
        config=cfg,
    )


def reduce_costs(qc: jax.Array, how: str) -> jax.Array:
    """Aggregate a cost ensemble [K, B] -> [B]: max (pessimistic) or mean; min would be optimistic."""
    return qc.max(axis=0) if how == "max" else qc.mean(axis=0)


def cost_critic_target(state: SACLagState, batch, key) -> jax.Array:
    cfg = state.config
    gamma_c = cfg.gamma if cfg.cost_gamma is None else cfg.cost_gamma
    mean, log_std = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    next_actions, _ = tanh_gaussian_sample(key, mean, log_std)
    next_qc = state.cost_critic.apply_fn(state.target_cost_critic_params, batch["next_observations"], next_actions)
    return batch["costs"] + gamma_c * (1.0 - batch["terminals"]) * reduce_costs(next_qc, cfg.cost_reduce)


def update_cost_critic(state: SACLagState, batch, key):
    target_qc = jax.lax.stop_gradient(cost_critic_target(state, batch, key))

    def loss_fn(params):
        qc = state.cost_critic.apply_fn(params, batch["observations"], batch["actions"])
        loss = ((qc - target_qc[None]) ** 2).mean(axis=1).sum()
        return loss, {"cost_critic_loss": loss, "qc_mean": qc.mean()}

    grads, info = jax.grad(loss_fn, has_aux=True)(state.cost_critic.params)
    cost_critic = state.cost_critic.apply_gradients(grads=grads)
    target = polyak_update(state.target_cost_critic_params, cost_critic.params, state.config.tau)
    return state.replace(cost_critic=cost_critic, target_cost_critic_params=target), info


def lagrangian_actor_loss(actor_params, state: SACLagState, batch, key, lagrange):
    """alpha log pi - min_j Q_j + lambda agg Qc   (online critics, re-parameterised a ~ pi)."""
    cfg = state.config
    mean, log_std = state.actor.apply_fn(actor_params, batch["observations"])
    actions, log_probs = tanh_gaussian_sample(key, mean, log_std)
    q = state.critic.apply_fn(state.critic.params, batch["observations"], actions).min(axis=0)
    qc = reduce_costs(state.cost_critic.apply_fn(state.cost_critic.params, batch["observations"], actions), cfg.cost_reduce)
    alpha = state.temperature.apply_fn(state.temperature.params)
    loss = (alpha * log_probs - q + lagrange * qc).mean()
    if cfg.scale_actor_loss:
        loss = loss / (1.0 + lagrange)
    return loss, {"actor_loss": loss, "entropy": -log_probs.mean(), "actor_qc": qc.mean(), "log_probs": log_probs}


def update(state: SACLagState, batch: dict, key: jax.Array, lagrange: jax.Array = 0.0) -> tuple[SACLagState, dict]:
    """One SAC-Lag step: reward critics, cost critic, actor (on the new critics), temperature."""
    critic_key, cost_key, actor_key = jax.random.split(key, 3)
    state, critic_info = sac.update_critic(state, batch, critic_key)
    state, cost_info = update_cost_critic(state, batch, cost_key)
    lagrange = jnp.asarray(lagrange, jnp.float32)

    def loss_fn(params, state, batch, key):
        return lagrangian_actor_loss(params, state, batch, key, lagrange)

    state, actor_info = sac.update_actor(state, batch, actor_key, loss_fn=loss_fn)
    state, temp_info = sac.update_temperature(state, actor_info.pop("log_probs"), batch["actions"].shape[-1])
    return state, {**critic_info, **cost_info, **actor_info, **temp_info, "lagrange": lagrange}
