"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2021, "Offline Reinforcement Learning with Implicit Q-Learning").

Never queries the critic on an action outside the dataset:

    value:   L(psi) = E_{(s,a)~D}[ L2_tau( min_j Qbar_j(s,a) - V_psi(s) ) ],   L2_tau(u) = |tau - 1(u < 0)| u^2
    critic:  L(phi_i) = E_{(s,a,r,s')~D}[ (Q_i(s,a) - (r_scale r + gamma (1 - terminal) V_psi(s')))^2 ]
    actor:   L(theta) = -E_{(s,a)~D}[ min(exp(beta (min_j Qbar_j(s,a) - V_psi(s))), 100) log pi_theta(a|s) ]   (AWR)
    targets: phi_bar <- (1 - tau_polyak) phi_bar + tau_polyak phi

Order within a step as in the authors' code: V, then the actor (advantage with the new V), then Q (on
the new V(s')), then the target critics. Defaults are the paper's / CORL's MuJoCo settings: expectile
0.7, beta (inverse temperature) 3.0, advantage weights clipped at 100, 2x256, Adam 3e-4, tau 0.005,
batch 256. As in CORL and the OCR-CFT authors' code the actor's learning rate decays to 0 on a cosine
over the run (``actor_cosine_decay_steps``: None = the run's ``offline.steps``, 0 = constant);
observations are standardised by the pre-training loop (``offline.normalize_observations``).

The actor is CORL's and the OCR-CFT authors' ``GaussianPolicy`` (``o2o.nn.GaussianActor``): N(tanh(f(s)),
diag(std)^2) with a state-independent log std clipped to [-10, 2], no squashing of the density; acting
takes the mean, or a sample clipped to [-1, 1]. PPO has the same policy class, so O2PPO starts from this
actor as it is; SAC-family fine-tuning clones it (``o2o.bridge.ocr.clone_actor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from o2o.agents.common import adam
from o2o.nn import GAUSSIAN, CriticEnsemble, GaussianActor, ValueNet, gaussian_log_prob, gaussian_sample, polyak_update, shared_module

POLICY = GAUSSIAN  # the policy class (o2o.nn.policy_mode)


@dataclass(frozen=True)
class IQLConfig:
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of actor, critics and V"})
    num_critics: int = field(default=2, metadata={"help": "critics in the ensemble (min over them)"})
    critic_layer_norm: bool = field(default=False, metadata={"help": "LayerNorm in the critics and V"})
    actor_lr: float = field(default=3e-4, metadata={"help": "actor Adam learning rate"})
    critic_lr: float = field(default=3e-4, metadata={"help": "critic Adam learning rate"})
    value_lr: float = field(default=3e-4, metadata={"help": "value Adam learning rate"})
    actor_cosine_decay_steps: int | None = field(
        default=None, metadata={"help": "cosine-decay the actor lr to 0 over this many steps; None = the run's offline.steps (CORL), 0 = constant"}
    )
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    tau: float = field(default=0.005, metadata={"help": "Polyak rate of the target critics"})
    expectile: float = field(default=0.7, metadata={"help": "expectile tau of the value regression (0.9 for AntMaze)"})
    beta: float = field(default=3.0, metadata={"help": "inverse temperature of the advantage weights (10 for AntMaze)"})
    max_weight: float = field(default=100.0, metadata={"help": "upper clip of exp(beta * advantage)"})
    reward_scale: float = field(default=1.0, metadata={"help": "reward multiplier in the critic target"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})
    log_std_min: float = field(default=-10.0, metadata={"help": "lower bound of the actor's log std"})
    log_std_max: float = field(default=2.0, metadata={"help": "upper bound of the actor's log std"})


@flax.struct.dataclass
class IQLState:
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    value: TrainState
    config: IQLConfig = flax.struct.field(pytree_node=False)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: IQLConfig) -> IQLState:
    actor_key, critic_key, value_key = jax.random.split(key, 3)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    act = jnp.zeros((1, act_dim), jnp.float32)
    actor_def = shared_module(GaussianActor, tuple(cfg.hidden_dims), act_dim, cfg.log_std_min, cfg.log_std_max)
    actor_lr = cfg.actor_lr
    if cfg.actor_cosine_decay_steps:
        actor_lr = optax.cosine_decay_schedule(cfg.actor_lr, cfg.actor_cosine_decay_steps)
    actor = TrainState.create(apply_fn=actor_def.apply, params=actor_def.init(actor_key, obs), tx=adam(actor_lr))
    critic_def = shared_module(CriticEnsemble, tuple(cfg.hidden_dims), cfg.num_critics, cfg.critic_layer_norm)
    critic_params = critic_def.init(critic_key, obs, act)
    value_def = shared_module(ValueNet, tuple(cfg.hidden_dims), cfg.critic_layer_norm)
    return IQLState(
        actor=actor,
        critic=TrainState.create(apply_fn=critic_def.apply, params=critic_params, tx=adam(cfg.critic_lr)),
        target_critic_params=jax.tree_util.tree_map(jnp.copy, critic_params),
        value=TrainState.create(apply_fn=value_def.apply, params=value_def.init(value_key, obs), tx=adam(cfg.value_lr)),
        config=cfg,
    )


# ---------------------------------------------------------------- losses (pure functions)


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """mean |tau - 1(u < 0)| u^2 of u = Q - V: an asymmetric square that, for tau > 0.5, makes V an
    upper expectile of Q over the dataset's actions."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


def value_loss(value_params, apply_fn, observations, target_q, expectile: float) -> tuple[jax.Array, dict]:
    v = apply_fn(value_params, observations)
    loss = expectile_loss(target_q - v, expectile)
    return loss, {"value_loss": loss, "v_mean": v.mean()}


def critic_loss(critic_params, apply_fn, batch, target_q) -> tuple[jax.Array, dict]:
    q = apply_fn(critic_params, batch["observations"], batch["actions"])  # [num_critics, B]
    loss = ((q - target_q[None]) ** 2).mean(axis=1).sum()
    return loss, {"critic_loss": loss, "q_mean": q.mean()}


def critic_target(value: TrainState, batch, gamma: float, reward_scale: float = 1.0) -> jax.Array:
    """y = r_scale r + gamma (1 - terminal) V(s'): the critic bootstraps from V, never from Q at a new action."""
    next_v = value.apply_fn(value.params, batch["next_observations"])
    return reward_scale * batch["rewards"] + gamma * (1.0 - batch["terminals"]) * next_v


def awr_weights(advantage: jax.Array, beta: float, max_weight: float) -> jax.Array:
    """min(exp(beta * A), max_weight)."""
    return jnp.minimum(jnp.exp(beta * advantage), max_weight)


def awr_actor_loss(actor_params, apply_fn, observations, actions, weights) -> tuple[jax.Array, dict]:
    """-mean w log pi(a|s) over dataset actions (weights carry no gradient)."""
    mean, log_std = apply_fn(actor_params, observations)
    log_prob = gaussian_log_prob(actions, mean, log_std)
    loss = -(jax.lax.stop_gradient(weights) * log_prob).mean()
    return loss, {"actor_loss": loss, "awr_weight_mean": weights.mean(), "dataset_log_prob": log_prob.mean()}


# ---------------------------------------------------------------- acting


@partial(jax.jit, static_argnames=("deterministic",))
def actor_actions(actor: TrainState, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """Actions in [-1, 1]: the mean tanh(f(s)) when deterministic, else a sample clipped to [-1, 1]."""
    mean, log_std = actor.apply_fn(actor.params, observations)
    if deterministic:
        return mean
    return jnp.clip(gaussian_sample(key, mean, log_std), -1.0, 1.0)


def act(state, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    return actor_actions(state.actor, observations, key, deterministic)


# ---------------------------------------------------------------- update


def update(state: IQLState, batch: dict, key: jax.Array) -> tuple[IQLState, dict]:
    """One IQL step: V (expectile), actor (AWR), Q (on V(s')), target critics."""
    del key  # IQL samples nothing
    cfg = state.config
    obs = batch["observations"]
    target_q = state.critic.apply_fn(state.target_critic_params, obs, batch["actions"]).min(axis=0)

    grads, value_info = jax.grad(value_loss, has_aux=True)(
        state.value.params, state.value.apply_fn, obs, target_q, cfg.expectile
    )
    value = state.value.apply_gradients(grads=grads)

    advantage = target_q - value.apply_fn(value.params, obs)
    weights = awr_weights(advantage, cfg.beta, cfg.max_weight)
    grads, actor_info = jax.grad(awr_actor_loss, has_aux=True)(
        state.actor.params, state.actor.apply_fn, obs, batch["actions"], weights
    )
    actor = state.actor.apply_gradients(grads=grads)

    q_target = critic_target(value, batch, cfg.gamma, cfg.reward_scale)
    grads, critic_info = jax.grad(critic_loss, has_aux=True)(state.critic.params, state.critic.apply_fn, batch, q_target)
    critic = state.critic.apply_gradients(grads=grads)

    state = state.replace(
        actor=actor,
        critic=critic,
        value=value,
        target_critic_params=polyak_update(state.target_critic_params, critic.params, cfg.tau),
    )
    return state, {**value_info, **actor_info, **critic_info, "advantage_mean": advantage.mean()}
