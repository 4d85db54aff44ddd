"""TD3 (Fujimoto, van Hoof & Meger, 2018, "Addressing Function Approximation Error in Actor-Critic Methods").

Twin Delayed DDPG: a deterministic actor, two critics and three fixes to DDPG's over-estimation.

    critic:  L(phi_i) = E[(Q_i(s,a) - y)^2],   i = 1, 2
             y = r_scale r + gamma (1 - terminal) min_j Qbar_j(s', a~'),                   (clipped double Q)
             a~' = clip(pibar(s') + clip(eps, -c, c), -1, 1),  eps ~ N(0, sigma^2)      (target policy smoothing)
    actor:   L(theta) = -E[Q_1(s, pi(s))]                          (deterministic policy gradient, first critic)
    delay:   the actor and both targets (pibar, Qbar; Polyak tau) update every d-th critic step
    acting:  a = clip(pi(s) + N(0, sigma_explore^2), -1, 1); uniform random actions for the first
             ``online.warmup_steps`` env steps (the paper's start_timesteps, owned by the loop)

Defaults are the paper's and its released code's (sfujimoto/TD3): 2x256 ReLU, Adam 3e-4, batch 256,
gamma 0.99, tau 0.005, sigma 0.2, c 0.5, d 2, exploration std 0.1.

The same state and update serve TD3+BC (``agents/td3bc.py``: this update with a behaviour-cloning term in
the actor loss), so a TD3+BC checkpoint loads into online TD3 as it is, and O2TD3 swaps in its own actor
loss and critic target through ``delayed_update``.

The gradient-step counter lives in the state and the delayed actor step is a ``lax.cond``, so K steps run
inside one jitted scan. The actor updates on steps 0, d, 2d, ... (the released code on steps d, 2d, ...:
it counts from 1). Only ``terminals`` stop bootstrapping; a time-limit truncation bootstraps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents.common import adam
from o2o.nn import DETERMINISTIC, CriticEnsemble, DeterministicActor, polyak_update

POLICY = DETERMINISTIC  # the policy class (o2o.nn.policy_mode)


@dataclass(frozen=True)
class TD3Config:
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of actor and critics"})
    num_critics: int = field(default=2, metadata={"help": "critics in the ensemble (min over them in the target)"})
    critic_layer_norm: bool = field(default=False, metadata={"help": "LayerNorm in the critics"})
    actor_lr: float = field(default=3e-4, metadata={"help": "actor Adam learning rate"})
    critic_lr: float = field(default=3e-4, metadata={"help": "critic Adam learning rate"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    tau: float = field(default=0.005, metadata={"help": "Polyak rate of the target actor and critics"})
    policy_noise: float = field(default=0.2, metadata={"help": "std of the target policy smoothing noise"})
    noise_clip: float = field(default=0.5, metadata={"help": "clip of the target policy smoothing noise"})
    policy_delay: int = field(default=2, metadata={"help": "actor and targets update every this many critic steps"})
    exploration_noise: float = field(default=0.1, metadata={"help": "std of the Gaussian exploration noise added to pi(s)"})
    reward_scale: float = field(default=1.0, metadata={"help": "reward multiplier in the critic target"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})


@flax.struct.dataclass
class TD3State:
    actor: TrainState
    target_actor_params: Any
    critic: TrainState
    target_critic_params: Any
    step: jax.Array  # int32: gradient steps taken (drives the policy delay)
    config: Any = flax.struct.field(pytree_node=False)  # TD3Config, or TD3BCConfig (same fields + alpha)


@lru_cache(maxsize=None)
def _cached(factory, *args):
    """One module definition / optimiser per argument tuple: TrainState keeps apply_fn and tx as static
    fields that jit compares by identity, so trainers share one compiled update only if they are the
    same objects."""
    return factory(*args)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg) -> TD3State:
    actor_key, critic_key = jax.random.split(key)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    act = jnp.zeros((1, act_dim), jnp.float32)
    actor_def = _cached(DeterministicActor, tuple(cfg.hidden_dims), act_dim)
    actor_params = actor_def.init(actor_key, obs)
    critic_def = _cached(CriticEnsemble, tuple(cfg.hidden_dims), cfg.num_critics, cfg.critic_layer_norm)
    critic_params = critic_def.init(critic_key, obs, act)
    # Targets start as copies (distinct buffers: the update donates its inputs).
    return TD3State(
        actor=TrainState.create(apply_fn=actor_def.apply, params=actor_params, tx=_cached(adam, cfg.actor_lr)),
        target_actor_params=jax.tree_util.tree_map(jnp.copy, actor_params),
        critic=TrainState.create(apply_fn=critic_def.apply, params=critic_params, tx=_cached(adam, cfg.critic_lr)),
        target_critic_params=jax.tree_util.tree_map(jnp.copy, critic_params),
        step=jnp.zeros((), jnp.int32),
        config=cfg,
    )


# ---------------------------------------------------------------- losses (pure functions)


def smoothed_target_actions(actions: jax.Array, key: jax.Array, noise_std: float, noise_clip: float) -> jax.Array:
    """clip(a + clip(N(0, sigma^2), -c, c), -1, 1)."""
    noise = jnp.clip(noise_std * jax.random.normal(key, actions.shape), -noise_clip, noise_clip)
    return jnp.clip(actions + noise, -1.0, 1.0)


def critic_target(state: TD3State, batch, key) -> jax.Array:
    """y = r_scale r + gamma (1 - terminal) min_j Qbar_j(s', clip(pibar(s') + clipped noise))."""
    cfg = state.config
    next_actions = state.actor.apply_fn(state.target_actor_params, batch["next_observations"])
    next_actions = smoothed_target_actions(next_actions, key, cfg.policy_noise, cfg.noise_clip)
    next_q = state.critic.apply_fn(state.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
    return cfg.reward_scale * batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * next_q


def critic_loss(critic_params, apply_fn, batch, target_q) -> tuple[jax.Array, dict]:
    q = apply_fn(critic_params, batch["observations"], batch["actions"])  # [num_critics, B]
    loss = ((q - target_q[None]) ** 2).mean(axis=1).sum()
    return loss, {"critic_loss": loss, "q_mean": q.mean()}


def td3_actor_loss(actor_params, state: TD3State, batch) -> tuple[jax.Array, dict]:
    """-mean Q_1(s, pi(s)) (the first critic, as in the paper)."""
    pi = state.actor.apply_fn(actor_params, batch["observations"])
    q = state.critic.apply_fn(state.critic.params, batch["observations"], pi)[0]
    loss = -q.mean()
    return loss, {"actor_loss": loss}


# ---------------------------------------------------------------- update and act


def delayed_update(
    state: TD3State,
    batch: dict,
    key: jax.Array,
    actor_loss: Callable[..., tuple[jax.Array, dict]],
    target_fn: Callable[[TD3State, dict, jax.Array], jax.Array] = critic_target,
) -> tuple[TD3State, dict]:
    """One critic step on ``target_fn``'s target; every ``policy_delay``-th step also an actor step on
    ``actor_loss(actor_params, state, batch) -> (loss, info)`` and the Polyak updates of both targets."""
    cfg = state.config
    target_q = jax.lax.stop_gradient(target_fn(state, batch, key))
    grads, critic_info = jax.grad(critic_loss, has_aux=True)(state.critic.params, state.critic.apply_fn, batch, target_q)
    state = state.replace(critic=state.critic.apply_gradients(grads=grads))

    def actor_step(state):
        grads, info = jax.grad(actor_loss, has_aux=True)(state.actor.params, state, batch)
        actor = state.actor.apply_gradients(grads=grads)
        return state.replace(
            actor=actor,
            target_actor_params=polyak_update(state.target_actor_params, actor.params, cfg.tau),
            target_critic_params=polyak_update(state.target_critic_params, state.critic.params, cfg.tau),
        ), info

    def no_actor_step(state):
        _, info = actor_loss(state.actor.params, state, batch)  # forward only, for honest metrics
        return state, info

    state, actor_info = jax.lax.cond(state.step % cfg.policy_delay == 0, actor_step, no_actor_step, state)
    return state.replace(step=state.step + 1), {**critic_info, **actor_info}


def update(state: TD3State, batch: dict, key: jax.Array) -> tuple[TD3State, dict]:
    """One TD3 gradient step: critics; every ``policy_delay``-th step also the actor and the targets."""
    return delayed_update(state, batch, key, td3_actor_loss)


@partial(jax.jit, static_argnames=("deterministic", "exploration_noise"))
def actor_actions(
    actor: TrainState, observations: jax.Array, key: jax.Array, deterministic: bool = False, exploration_noise: float = 0.1
) -> jax.Array:
    """pi(s) in [-1, 1]; with Gaussian exploration noise (clipped to the box) unless deterministic."""
    actions = actor.apply_fn(actor.params, observations)
    if deterministic:
        return actions
    return jnp.clip(actions + exploration_noise * jax.random.normal(key, actions.shape), -1.0, 1.0)


def exploration_kwargs(cfg) -> dict:
    """The config-dependent keyword arguments of ``actor_actions`` (the online loop passes them on)."""
    return {"exploration_noise": float(cfg.exploration_noise)}


def act(state: TD3State, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    return actor_actions(state.actor, observations, key, deterministic, state.config.exploration_noise)
