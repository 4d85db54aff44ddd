"""SAC-Lagrangian: SAC with a cost critic and a Lagrange multiplier on the expected episode cost.

    max_pi min_{lambda >= 0}  J_r(pi) - lambda (J_c(pi) - kappa)

    reward critics: as SAC (twin, min, entropy in the backup, reward scaled)
    cost critic:    L(psi) = E[(Qc(s,a) - y_c)^2],   y_c = c + gamma_c (1 - terminal) agg_k Qcbar_k(s',a'),  a' ~ pi
    actor:          L(theta) = E[alpha log pi(a|s) - min_j Q_j(s,a)] + lambda w E[agg_k Qc_k(s,a)]  (optionally / (1 + lambda))

The cost term's weight ``w`` is 1 (``cost_term: raw``, the paper's loss) or the measured gradient balance
(``cost_term: balanced``, o2o's Marvel default)

    g_r = grad_theta E[alpha log pi - min_j Q_j],   g_c = grad_theta E[agg_k Qc_k],   w = b = ||g_r|| / ||g_c||

computed on the same minibatch and the same re-parameterised actions, held constant (no gradient
through b). With ``balanced`` the actor's step is g_r + lambda b g_c: the cost direction has lambda times
the length of the reward direction, whatever the scales of rewards, costs and critics, so lambda means
the same on every task and at every stage of training (lambda = 1: equal weight). With
``scale_actor_loss`` the step is divided by 1 + lambda (Stooke et al. 2020, FSRL, OmniSafe): lambda /
(1 + lambda) is then the cost direction's share. ``b`` is logged for every ``cost_term`` as
``grad_balance``: the raw multiplier at which the cost gradient is as long as the reward gradient.

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
POLICY = sac.POLICY


@dataclass(frozen=True)
class SACLagConfig(sac.SACConfig):
    num_cost_critics: int = field(default=1, metadata={"help": "cost critics in the ensemble"})
    cost_reduce: Literal["max", "mean"] = field(default="max", metadata={"help": "cost ensemble reduction (never min)"})
    cost_critic_lr: float = field(default=3e-4, metadata={"help": "cost critic Adam learning rate"})
    cost_gamma: float | None = field(default=None, metadata={"help": "cost discount; None = gamma"})
    scale_actor_loss: bool = field(default=False, metadata={"help": "divide the actor loss by (1 + lambda) (Stooke et al. 2020)"})
    cost_term: Literal["raw", "balanced"] = field(
        default="raw",
        metadata={"help": "actor's cost term: raw (lambda Qc, the paper's) or balanced (lambda b Qc, b = ||grad reward "
                  "term|| / ||grad Qc|| measured per minibatch: lambda in units of the reward gradient)"},
    )


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


def actor_objectives(actor_params, state: SACLagState, batch, key):
    """The actor's two objectives on one re-parameterised sample a ~ pi: the reward term
    E[alpha log pi - min_j Q_j] and the cost term E[agg Qc] (online critics), as a length-2 vector."""
    cfg = state.config
    mean, log_std = state.actor.apply_fn(actor_params, batch["observations"])
    actions, log_probs = tanh_gaussian_sample(key, mean, log_std)
    q = state.critic.apply_fn(state.critic.params, batch["observations"], actions).min(axis=0)
    qc = reduce_costs(state.cost_critic.apply_fn(state.cost_critic.params, batch["observations"], actions), cfg.cost_reduce)
    alpha = state.temperature.apply_fn(state.temperature.params)
    objectives = jnp.stack([(alpha * log_probs - q).mean(), qc.mean()])
    return objectives, {"entropy": -log_probs.mean(), "actor_qc": qc.mean(), "actor_q": q.mean(), "log_probs": log_probs}


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(tree)))


def lagrangian_actor_grads(actor_params, state: SACLagState, batch, key, lagrange):
    """Gradient of the Lagrangian actor loss (module docstring) from the two objectives' separate
    gradients (one forward pass, two pullbacks), and the gradient balance b."""
    cfg = state.config
    objectives, pullback, info = jax.vjp(lambda p: actor_objectives(p, state, batch, key), actor_params, has_aux=True)
    (g_reward,) = pullback(jnp.array([1.0, 0.0], objectives.dtype))
    (g_cost,) = pullback(jnp.array([0.0, 1.0], objectives.dtype))
    balance = _global_norm(g_reward) / (_global_norm(g_cost) + 1e-8)
    weight = lagrange * (jax.lax.stop_gradient(balance) if cfg.cost_term == "balanced" else 1.0)
    scale = 1.0 / (1.0 + lagrange) if cfg.scale_actor_loss else 1.0
    grads = jax.tree_util.tree_map(lambda gr, gc: scale * (gr + weight * gc), g_reward, g_cost)
    loss = scale * (objectives[0] + weight * objectives[1])
    return grads, {**info, "actor_loss": loss, "grad_balance": balance, "lagrange_effective": weight}


def lagrangian_actor_loss(actor_params, state: SACLagState, batch, key, lagrange):
    """The paper's loss alpha log pi - min_j Q_j + lambda agg Qc (optionally / (1 + lambda)): with
    ``cost_term: raw`` its gradient is what ``lagrangian_actor_grads`` returns."""
    cfg = state.config
    objectives, info = actor_objectives(actor_params, state, batch, key)
    loss = objectives[0] + lagrange * objectives[1]
    if cfg.scale_actor_loss:
        loss = loss / (1.0 + lagrange)
    return loss, {**info, "actor_loss": loss}


def update(state: SACLagState, batch: dict, key: jax.Array, lagrange: jax.Array = 0.0) -> tuple[SACLagState, dict]:
    """One SAC-Lag step: reward critics, cost critic, actor (on the new critics), temperature."""
    critic_key, cost_key, actor_key = jax.random.split(key, 3)
    state, critic_info = sac.update_critic(state, batch, critic_key)
    state, cost_info = update_cost_critic(state, batch, cost_key)
    lagrange = jnp.asarray(lagrange, jnp.float32)
    grads, actor_info = lagrangian_actor_grads(state.actor.params, state, batch, actor_key, lagrange)
    state = state.replace(actor=state.actor.apply_gradients(grads=grads))
    state, temp_info = sac.update_temperature(state, actor_info.pop("log_probs"), batch["actions"].shape[-1])
    return state, {**critic_info, **cost_info, **actor_info, **temp_info, "lagrange": lagrange}
