"""Soft Actor-Critic (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications").

    critic:      L(phi_i) = E[(Q_i(s,a) - y)^2],
                 y = r_scale * r + gamma (1 - terminal) (min_j Qbar_j(s',a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
    actor:       L(theta) = E[alpha log pi(a|s) - min_j Q_j(s,a)],  a ~ pi(.|s) re-parameterised
    temperature: L(alpha) = E[-alpha (log pi(a|s) + H_target)],  H_target = -|A|   (or alpha fixed)
    targets:     phi_bar <- (1 - tau) phi_bar + tau phi

``terminal`` is true termination only: time-limit truncation bootstraps (Pardo et al., 2018).
The agent is an immutable pytree; ``update`` is pure and jit/scan-able; hyper-parameters are the
static ``config`` field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents.common import adam
from o2o.nn import TANH_GAUSSIAN, CriticEnsemble, TanhGaussianActor, polyak_update, tanh_gaussian_mode, tanh_gaussian_sample, shared_module

POLICY = TANH_GAUSSIAN  # the policy class (o2o.nn.policy_mode)


@dataclass(frozen=True)
class SACConfig:
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of actor and critics"})
    num_critics: int = field(default=2, metadata={"help": "reward critics in the ensemble (min over them)"})
    critic_layer_norm: bool = field(default=False, metadata={"help": "LayerNorm in the critics"})
    actor_lr: float = field(default=3e-4, metadata={"help": "actor Adam learning rate"})
    critic_lr: float = field(default=3e-4, metadata={"help": "critic Adam learning rate"})
    temperature_lr: float = field(default=3e-4, metadata={"help": "temperature Adam learning rate"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    tau: float = field(default=0.005, metadata={"help": "Polyak rate of the target critics"})
    init_temperature: float = field(default=1.0, metadata={"help": "initial (or fixed) entropy temperature alpha"})
    auto_temperature: bool = field(default=True, metadata={"help": "tune alpha to reach the target entropy"})
    target_entropy: float | None = field(default=None, metadata={"help": "target entropy; None = -action_dim"})
    reward_scale: float = field(default=1.0, metadata={"help": "reward multiplier in the critic target"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})
    backup_entropy: bool = field(default=True, metadata={"help": "subtract alpha log pi in the critic target"})
    log_std_min: float = field(default=-5.0, metadata={"help": "lower bound of the actor's log std"})
    log_std_max: float = field(default=2.0, metadata={"help": "upper bound of the actor's log std"})


@flax.struct.dataclass
class SACState:
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    temperature: TrainState  # params: {"log_alpha": scalar}
    config: SACConfig = flax.struct.field(pytree_node=False)


class Temperature:
    """alpha = exp(log_alpha) as a tiny 'module' so it can sit in a TrainState."""

    @staticmethod
    def apply(params):
        return jnp.exp(params["log_alpha"])


def init_actor_critic(key: jax.Array, obs_dim: int, act_dim: int, cfg) -> tuple[TrainState, TrainState, Any, TrainState]:
    actor_key, critic_key = jax.random.split(key)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    act = jnp.zeros((1, act_dim), jnp.float32)
    actor_def = shared_module(TanhGaussianActor, tuple(cfg.hidden_dims), act_dim, cfg.log_std_min, cfg.log_std_max)
    actor = TrainState.create(apply_fn=actor_def.apply, params=actor_def.init(actor_key, obs), tx=adam(cfg.actor_lr))
    critic_def = shared_module(CriticEnsemble, tuple(cfg.hidden_dims), cfg.num_critics, cfg.critic_layer_norm)
    critic_params = critic_def.init(critic_key, obs, act)
    critic = TrainState.create(apply_fn=critic_def.apply, params=critic_params, tx=adam(cfg.critic_lr))
    temperature = TrainState.create(
        apply_fn=Temperature.apply,
        params={"log_alpha": jnp.asarray(jnp.log(cfg.init_temperature), jnp.float32)},
        tx=adam(cfg.temperature_lr),
    )
    # The target starts as a copy (a distinct buffer: the update donates its inputs).
    return actor, critic, jax.tree_util.tree_map(jnp.copy, critic_params), temperature


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: SACConfig) -> SACState:
    actor, critic, target, temperature = init_actor_critic(key, obs_dim, act_dim, cfg)
    return SACState(actor=actor, critic=critic, target_critic_params=target, temperature=temperature, config=cfg)


def target_entropy(cfg, act_dim: int) -> float:
    return -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy


# ---------------------------------------------------------------- losses (pure functions)


def reward_critic_target(state, batch, key) -> jax.Array:
    """y = r_scale r + gamma (1 - terminal) (min_j Qbar_j(s',a') - alpha log pi(a'|s'))."""
    cfg = state.config
    mean, log_std = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    next_actions, next_log_probs = tanh_gaussian_sample(key, mean, log_std)
    next_q = state.critic.apply_fn(state.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
    if cfg.backup_entropy:
        next_q = next_q - state.temperature.apply_fn(state.temperature.params) * next_log_probs
    return cfg.reward_scale * batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * next_q


def critic_loss(critic_params, apply_fn, batch, target_q) -> tuple[jax.Array, dict]:
    q = apply_fn(critic_params, batch["observations"], batch["actions"])  # [num_critics, B]
    loss = ((q - target_q[None]) ** 2).mean(axis=1).sum()
    return loss, {"critic_loss": loss, "q_mean": q.mean()}


def update_critic(state, batch, key):
    target_q = jax.lax.stop_gradient(reward_critic_target(state, batch, key))
    grads, info = jax.grad(critic_loss, has_aux=True)(state.critic.params, state.critic.apply_fn, batch, target_q)
    critic = state.critic.apply_gradients(grads=grads)
    target = polyak_update(state.target_critic_params, critic.params, state.config.tau)
    return state.replace(critic=critic, target_critic_params=target), info


def actor_loss(actor_params, state, batch, key) -> tuple[jax.Array, dict]:
    """alpha log pi(a|s) - min_j Q_j(s,a), a ~ pi re-parameterised."""
    mean, log_std = state.actor.apply_fn(actor_params, batch["observations"])
    actions, log_probs = tanh_gaussian_sample(key, mean, log_std)
    q = state.critic.apply_fn(state.critic.params, batch["observations"], actions).min(axis=0)
    alpha = state.temperature.apply_fn(state.temperature.params)
    loss = (alpha * log_probs - q).mean()
    return loss, {"actor_loss": loss, "entropy": -log_probs.mean(), "log_probs": log_probs}


def update_temperature(state, log_probs: jax.Array, act_dim: int):
    """L(alpha) = E[-alpha (log pi + H_target)]; skipped (alpha fixed) unless auto_temperature."""
    cfg = state.config
    if not cfg.auto_temperature:
        return state, {"temperature": state.temperature.apply_fn(state.temperature.params)}
    h_target = target_entropy(cfg, act_dim)

    def loss_fn(params):
        alpha = state.temperature.apply_fn(params)
        return (-alpha * (jax.lax.stop_gradient(log_probs) + h_target)).mean()

    grads = jax.grad(loss_fn)(state.temperature.params)
    temperature = state.temperature.apply_gradients(grads=grads)
    return state.replace(temperature=temperature), {"temperature": temperature.apply_fn(temperature.params)}


def update_actor(state, batch, key, loss_fn=actor_loss):
    grads, info = jax.grad(loss_fn, has_aux=True)(state.actor.params, state, batch, key)
    actor = state.actor.apply_gradients(grads=grads)
    return state.replace(actor=actor), info


# ---------------------------------------------------------------- update and act


def update(state: SACState, batch: dict, key: jax.Array) -> tuple[SACState, dict]:
    """One SAC gradient step: critic, then actor (on the new critic), then temperature."""
    critic_key, actor_key = jax.random.split(key)
    state, critic_info = update_critic(state, batch, critic_key)
    state, actor_info = update_actor(state, batch, actor_key)
    act_dim = batch["actions"].shape[-1]
    state, temp_info = update_temperature(state, actor_info.pop("log_probs"), act_dim)
    return state, {**critic_info, **actor_info, **temp_info}


@partial(jax.jit, static_argnames=("deterministic",))
def actor_actions(actor: TrainState, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """Actions in [-1, 1]: a sample of the tanh-Gaussian, or its mode tanh(mean) when deterministic.
    Takes only the actor so the per-env-step call flattens a small pytree."""
    mean, log_std = actor.apply_fn(actor.params, observations)
    if deterministic:
        return tanh_gaussian_mode(mean)
    return tanh_gaussian_sample(key, mean, log_std)[0]


def act(state, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    return actor_actions(state.actor, observations, key, deterministic)
