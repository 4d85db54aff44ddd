"""O2TD3's online stage: TD3 with an MSE constraint to a reference policy (Luo, Xie, Wang & Huang, 2024,
OCR-CFT, eq. 20 with f = MSE(pi(s), pi_ref(s))).

    f(s)     = mean_d (pi(s)_d - pi_ref(s)_d)^2                                  (per sample)
    critic:  y = r_scale r + gamma (1 - terminal) (min_j Qbar_j(s', a~') - lambda f_bar(s')),
             a~' = clip(pibar(s') + clip(N(0, sigma^2), -c, c), -1, 1),  f_bar(s') = MSE(pibar(s'), pi_ref(s'))
    actor:   L(theta) = -E[Q_1(s, pi(s))] / E|Q_1(s, pi(s))| + lambda E[f(s)]   (every ``policy_delay``-th step)
    lambda:  exp(l), expectile-weighted dual on the per-dimension squared differences (pi(s)_d - pi_ref(s)_d)^2
             of the actor before its step, on actor steps only (``agents/cft.py``; as released)

The state is TD3's plus ``log_lambda``; the critic step, the delayed actor step and the Polyak updates are
TD3's ``delayed_update`` with this module's target and actor loss. Released-code quirk reproducible by a
flag: ``batch_mean_penalty`` (the critic's penalty is one batch-mean scalar instead of per sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents import cft, td3
from o2o.agents.td3 import TD3Config

actor_actions = td3.actor_actions
exploration_kwargs = td3.exploration_kwargs
act = td3.act
POLICY = td3.POLICY


@dataclass(frozen=True)
class O2TD3Config(TD3Config):
    init_lambda: float = field(default=1.0, metadata={"help": "lambda_0 of the MSE constraint (paper: 1)"})
    lambda_lr: float = field(default=5e-5, metadata={"help": "Adam learning rate of l = log lambda (paper: 5e-5)"})
    kappa: float = field(default=0.7, metadata={"help": "expectile of the dual loss: weight of a violated sample"})
    dual_every: int = field(default=1, metadata={"help": "one dual step per this many actor steps (released code: every actor step)"})
    normalize_q: bool = field(default=True, metadata={"help": "actor loss -Q / mean|Q| (paper) instead of -Q"})
    penalty_in_backup: bool = field(default=True, metadata={"help": "subtract lambda f(s') in the critic target"})
    batch_mean_penalty: bool = field(default=False, metadata={"help": "released-code quirk: one batch-mean penalty in the target"})


@flax.struct.dataclass
class O2TD3State:
    actor: TrainState
    target_actor_params: Any
    critic: TrainState
    target_critic_params: Any
    step: jax.Array
    log_lambda: TrainState
    config: Any = flax.struct.field(pytree_node=False)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: O2TD3Config) -> O2TD3State:
    s = td3.init(key, obs_dim, act_dim, cfg)
    return O2TD3State(
        actor=s.actor, target_actor_params=s.target_actor_params, critic=s.critic, target_critic_params=s.target_critic_params,
        step=s.step, log_lambda=cft.init_log_lambda(cfg.init_lambda, cfg.lambda_lr), config=cfg,
    )


def lagrange(state) -> jax.Array:
    return state.log_lambda.apply_fn(state.log_lambda.params)


def mse_to_reference(actions: jax.Array, reference_actions: jax.Array) -> jax.Array:
    """f per sample: the mean over action dimensions of the squared difference."""
    return ((actions - jax.lax.stop_gradient(reference_actions)) ** 2).mean(axis=-1)


def update(state: O2TD3State, batch: dict, key: jax.Array, reference_params=None, threshold=0.0) -> tuple[O2TD3State, dict]:
    cfg = state.config
    if reference_params is None:
        reference_params = state.actor.params
    lam = jax.lax.stop_gradient(lagrange(state))
    apply = state.actor.apply_fn

    def target_fn(state, batch, key):
        next_pi = apply(state.target_actor_params, batch["next_observations"])
        next_actions = td3.smoothed_target_actions(next_pi, key, cfg.policy_noise, cfg.noise_clip)
        next_q = state.critic.apply_fn(state.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
        if cfg.penalty_in_backup:
            f_next = mse_to_reference(next_pi, apply(reference_params, batch["next_observations"]))
            next_q = next_q - lam * (f_next.mean() if cfg.batch_mean_penalty else f_next)
        return cfg.reward_scale * batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * next_q

    def actor_loss(actor_params, state, batch):
        pi = apply(actor_params, batch["observations"])
        q = state.critic.apply_fn(state.critic.params, batch["observations"], pi)[0]
        q_term = q.mean() / jax.lax.stop_gradient(jnp.abs(q).mean() + 1e-8) if cfg.normalize_q else q.mean()
        f = mse_to_reference(pi, apply(reference_params, batch["observations"]))
        loss = -q_term + lam * f.mean()
        return loss, {"actor_loss": loss, "mse_reference": f.mean()}

    # the dual's constraint values: the actor before this step, per action dimension (as released)
    f_dims = (apply(state.actor.params, batch["observations"]) - apply(reference_params, batch["observations"])) ** 2
    actor_steps = state.step // cfg.policy_delay
    takes_dual = (state.step % cfg.policy_delay == 0) & (actor_steps % cfg.dual_every == 0)
    state, info = td3.delayed_update(state, batch, key, actor_loss, target_fn)
    log_lambda = jax.lax.cond(takes_dual, lambda ll: cft.dual_step(ll, f_dims, threshold, cfg.kappa), lambda ll: ll, state.log_lambda)
    state = state.replace(log_lambda=log_lambda)
    return state, {**info, "lambda": lagrange(state), "threshold": jnp.asarray(threshold, jnp.float32)}
