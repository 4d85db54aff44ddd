"""O2SAC's online stage: SAC with a KL constraint to a reference policy (Luo, Xie, Wang & Huang, 2024,
"Optimistic Critic Reconstruction and Constrained Fine-Tuning for General Offline-to-Online RL", eq. 20
with f = KL(pi || pi_ref)).

    f(s, a)  = log pi(a|s) - max(log pi_ref(a|s), -50),  a ~ pi(.|s)      (one-sample KL(pi || pi_ref))
    critic:  y = r_scale r + gamma (1 - terminal) (min_j Qbar_j(s',a') - alpha log pi(a'|s') - lambda f(s',a'))
    actor:   L(theta) = E[alpha log pi(a|s) - min_j Q_j(s,a) + lambda f(s,a)],  a ~ pi re-parameterised
    alpha:   SAC's temperature loss (starts at the re-evaluation alpha: ``ocr.reeval_alpha``)
    lambda:  exp(l), expectile-weighted dual on f every ``dual_every`` steps (``agents/cft.py``)
    targets: Polyak tau

Signals per update: ``reference_params`` (pi_ref's actor parameters; the host replaces them by the
"best so far" or interval rule) and ``threshold`` (tau_t, one value per gradient step). Both log
densities are computed from the same pre-tanh sample u, so the tanh Jacobian cancels exactly in f and
no atanh of a saturated action is ever taken. The paper's 10 gradient steps per env step with lambda
updated once per env step is ``online.updates_per_iteration = 10 x steps_per_iteration`` and
``agent.dual_every = 10``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents import cft, sac
from o2o.agents.sac import SACConfig
from o2o.nn import polyak_update
from o2o.nn.networks import gaussian_log_prob, log_det_tanh

act = sac.act
actor_actions = sac.actor_actions
POLICY = sac.POLICY


@dataclass(frozen=True)
class O2SACConfig(SACConfig):
    init_lambda: float = field(default=1.0, metadata={"help": "lambda_0 of the KL constraint (paper: 1)"})
    lambda_lr: float = field(default=5e-5, metadata={"help": "Adam learning rate of l = log lambda (paper: 5e-5)"})
    kappa: float = field(default=0.7, metadata={"help": "expectile of the dual loss: weight of a violated sample"})
    dual_every: int = field(default=10, metadata={"help": "one dual step per this many gradient steps (= updates per env step)"})
    log_ref_min: float = field(default=-50.0, metadata={"help": "lower clamp of log pi_ref(a|s) in f"})
    penalty_in_backup: bool = field(default=True, metadata={"help": "subtract lambda f(s',a') in the critic target"})


@flax.struct.dataclass
class O2SACState:
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    temperature: TrainState
    log_lambda: TrainState  # params: {"log_lambda": scalar}
    step: jax.Array  # int32 gradient steps (dual cadence)
    config: O2SACConfig = flax.struct.field(pytree_node=False)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: O2SACConfig) -> O2SACState:
    actor, critic, target, temperature = sac.init_actor_critic(key, obs_dim, act_dim, cfg)
    return O2SACState(
        actor=actor, critic=critic, target_critic_params=target, temperature=temperature,
        log_lambda=cft.init_log_lambda(cfg.init_lambda, cfg.lambda_lr), step=jnp.zeros((), jnp.int32), config=cfg,
    )


def lagrange(state: O2SACState) -> jax.Array:
    return state.log_lambda.apply_fn(state.log_lambda.params)


# ---------------------------------------------------------------- losses (pure functions)


def sample_with_kl(actor_params, apply_fn, reference_params, observations, key, log_ref_min: float):
    """a ~ pi(.|s), log pi(a|s) and f = log pi(a|s) - max(log pi_ref(a|s), log_ref_min), from one pre-tanh u."""
    mean, log_std = apply_fn(actor_params, observations)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    log_det = log_det_tanh(u)
    log_prob = gaussian_log_prob(u, mean, log_std) - log_det
    ref_mean, ref_log_std = apply_fn(reference_params, observations)
    ref_log_prob = gaussian_log_prob(u, jax.lax.stop_gradient(ref_mean), jax.lax.stop_gradient(ref_log_std)) - log_det
    return jnp.tanh(u), log_prob, log_prob - jnp.maximum(ref_log_prob, log_ref_min)


def critic_target(state: O2SACState, batch, key, reference_params, lam) -> jax.Array:
    """y = r_scale r + gamma (1 - terminal) (min_j Qbar_j(s',a') - alpha log pi(a'|s') - lambda f(s',a'))."""
    cfg = state.config
    next_actions, next_log_probs, next_f = sample_with_kl(
        state.actor.params, state.actor.apply_fn, reference_params, batch["next_observations"], key, cfg.log_ref_min
    )
    next_q = state.critic.apply_fn(state.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
    if cfg.backup_entropy:
        next_q = next_q - state.temperature.apply_fn(state.temperature.params) * next_log_probs
    if cfg.penalty_in_backup:
        next_q = next_q - lam * next_f
    return cfg.reward_scale * batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * next_q


def actor_loss(actor_params, state: O2SACState, batch, key, reference_params, lam) -> tuple[jax.Array, dict]:
    """alpha log pi(a|s) - min_j Q_j(s,a) + lambda f(s,a)."""
    actions, log_probs, f = sample_with_kl(
        actor_params, state.actor.apply_fn, reference_params, batch["observations"], key, state.config.log_ref_min
    )
    q = state.critic.apply_fn(state.critic.params, batch["observations"], actions).min(axis=0)
    alpha = state.temperature.apply_fn(state.temperature.params)
    loss = (alpha * log_probs - q + lam * f).mean()
    return loss, {"actor_loss": loss, "entropy": -log_probs.mean(), "kl_reference": f.mean(), "log_probs": log_probs, "f": f}


# ---------------------------------------------------------------- update


def update(state: O2SACState, batch: dict, key: jax.Array, reference_params=None, threshold=0.0) -> tuple[O2SACState, dict]:
    """Critic, actor, temperature, and (every ``dual_every``-th step) lambda."""
    cfg = state.config
    critic_key, actor_key = jax.random.split(key)
    if reference_params is None:  # no reference given: the constraint to oneself is zero
        reference_params = state.actor.params
    lam = jax.lax.stop_gradient(lagrange(state))

    target_q = jax.lax.stop_gradient(critic_target(state, batch, critic_key, reference_params, lam))
    grads, critic_info = jax.grad(sac.critic_loss, has_aux=True)(state.critic.params, state.critic.apply_fn, batch, target_q)
    critic = state.critic.apply_gradients(grads=grads)
    state = state.replace(critic=critic, target_critic_params=polyak_update(state.target_critic_params, critic.params, cfg.tau))

    grads, actor_info = jax.grad(actor_loss, has_aux=True)(state.actor.params, state, batch, actor_key, reference_params, lam)
    state = state.replace(actor=state.actor.apply_gradients(grads=grads))
    state, temp_info = sac.update_temperature(state, actor_info.pop("log_probs"), batch["actions"].shape[-1])

    f = actor_info.pop("f")
    log_lambda = cft.maybe_dual_step(state.log_lambda, state.step, cfg.dual_every, f, threshold, cfg.kappa)
    state = state.replace(log_lambda=log_lambda, step=state.step + 1)
    return state, {**critic_info, **actor_info, **temp_info, "lambda": lagrange(state), "threshold": jnp.asarray(threshold, jnp.float32)}
