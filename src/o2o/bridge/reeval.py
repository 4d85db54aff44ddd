"""OCR-CFT stage 1, policy re-evaluation (Luo et al. 2024, Sec. 4.1): discard the offline critic and fit a
fresh one on the whole offline dataset with the offline actor pi_off *frozen*, by the online algorithm's
own evaluation rule (fitted Q evaluation without pessimism: "optimistic" critic reconstruction).

    SAC:  y = r_scale r + gamma (1 - terminal) (min_i Qbar_i(s',a') - alpha log pi_off(a'|s')),  a' ~ pi_off(.|s')
          alpha fixed (0.2 medium / medium-replay, 0.5 expert / medium-expert: ``ocr.reeval_alpha``)
    TD3:  y = r_scale r + gamma (1 - terminal) min_i Qbar_i(s', clip(pi_off(s') + clip(N(0, 0.2^2), -0.5, 0.5), -1, 1))
    both: L = sum_i MSE(Q_i(s,a), y) over dataset (s, a); Adam, Polyak tau on the targets
    PPO:  L = MSE(V(s_t), G_t),  G_t = sum_k gamma^k r_{t+k} to the end of the episode, episodes cut at
          terminals AND timeouts (the released code forgets timeouts: ``ocr.reeval_ignore_timeouts``
          reproduces that); rewards in PPO's scaled units (divided by the std of the dataset's
          discounted returns, which become PPO's starting return statistics) and observations through
          PPO's normalisation, so V is in the units the online stage uses.

Only ``terminals`` stop bootstrapping in the Q targets (a time-limit cut bootstraps).
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents.common import make_update_many
from o2o.nn import polyak_update, tanh_gaussian_sample


# ------------------------------------------------------------------------------------- targets


def sac_reeval_target(state, batch, key, alpha) -> jax.Array:
    """Soft backup of the frozen pi_off (``state.actor``) with fixed alpha."""
    cfg = state.config
    mean, log_std = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    next_actions, next_log_probs = tanh_gaussian_sample(key, mean, log_std)
    next_q = state.critic.apply_fn(state.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
    return cfg.reward_scale * batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * (next_q - alpha * next_log_probs)


def td3_reeval_target(state, batch, key) -> jax.Array:
    """Smoothed deterministic backup of the frozen pi_off (``state.actor``)."""
    from o2o.agents.td3 import smoothed_target_actions

    cfg = state.config
    next_pi = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    next_actions = smoothed_target_actions(next_pi, key, cfg.policy_noise, cfg.noise_clip)
    next_q = state.critic.apply_fn(state.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
    return cfg.reward_scale * batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * next_q


def _critic_step(state, batch, target_q):
    def loss(params):
        q = state.critic.apply_fn(params, batch["observations"], batch["actions"])
        return ((q - target_q[None]) ** 2).mean(axis=1).sum(), q

    (value, q), grads = jax.value_and_grad(loss, has_aux=True)(state.critic.params)
    critic = state.critic.apply_gradients(grads=grads)
    state = state.replace(critic=critic, target_critic_params=polyak_update(state.target_critic_params, critic.params, state.config.tau))
    return state, {"reeval_critic_loss": value, "reeval_q_mean": q.mean(), "reeval_target_mean": target_q.mean()}


def sac_reeval_update(state, batch, key, alpha):
    """One FQE step of a SAC-family state (critics only; the actor is pi_off and is never updated)."""
    return _critic_step(state, batch, jax.lax.stop_gradient(sac_reeval_target(state, batch, key, alpha)))


def td3_reeval_update(state, batch, key):
    """One FQE step of a TD3-family state (critics only)."""
    return _critic_step(state, batch, jax.lax.stop_gradient(td3_reeval_target(state, batch, key)))


# ------------------------------------------------------------------------------------- PPO: Monte Carlo


def episode_ends(terminals, timeouts, *, ignore_timeouts: bool = False) -> np.ndarray:
    """Where an episode of the dataset ends: a terminal, a timeout (unless ignored), the last row."""
    ends = np.asarray(terminals, bool).copy()
    if not ignore_timeouts:
        ends |= np.asarray(timeouts, bool)
    if len(ends):
        ends[-1] = True
    return ends


def monte_carlo_returns(rewards, terminals, timeouts, gamma: float, *, ignore_timeouts: bool = False) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1} within an episode, restarted after every episode end (no bootstrap
    at a timeout: the offline trajectory's return is what was observed)."""
    rewards = np.asarray(rewards, np.float64)
    ends = episode_ends(terminals, timeouts, ignore_timeouts=ignore_timeouts)
    out = np.zeros_like(rewards)
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if ends[t]:
            g = 0.0
        g = rewards[t] + gamma * g
        out[t] = g
    return out.astype(np.float32)


def discounted_return_trace(rewards, ends, gamma: float) -> np.ndarray:
    """PPO's reward-scaling statistic over the dataset: G_t = gamma G_{t-1} + r_t, restarted per episode."""
    out = np.zeros(len(rewards), np.float64)
    g = 0.0
    for t, r in enumerate(np.asarray(rewards, np.float64)):
        g = gamma * g + r
        out[t] = g
        if ends[t]:
            g = 0.0
    return out.astype(np.float32)


def value_regression_update(state, batch, key):
    """One step of MSE(V(s), G) on PPO's value network (observations already normalised)."""
    del key

    def loss(params):
        v = state.value.apply_fn(params, batch["observations"])
        return ((v - batch["returns"]) ** 2).mean(), v

    (value, v), grads = jax.value_and_grad(loss, has_aux=True)(state.value.params)
    return state.replace(value=state.value.apply_gradients(grads=grads)), {
        "reeval_value_loss": value, "reeval_v_mean": v.mean(), "reeval_return_mean": batch["returns"].mean(),
    }


def sample_rows(data: dict, key, batch_size: int) -> dict:
    n = data["returns"].shape[0]
    index = jax.random.randint(key, (batch_size,), 0, n)
    return {k: v[index] for k, v in data.items()}


# ------------------------------------------------------------------------------------- compiled scans


def _replay(buffer, key, batch_size):
    from o2o.data.replay import replay_sample

    return replay_sample(buffer, key, batch_size)


@lru_cache(maxsize=None)
def reeval_many(kind: str, batch_size: int):
    """One compiled K-step re-evaluation per (kind, batch size) per process."""
    if kind == "sac":
        return make_update_many(sac_reeval_update, partial(_replay, batch_size=batch_size))
    if kind == "td3":
        return make_update_many(td3_reeval_update, partial(_replay, batch_size=batch_size))
    if kind == "ppo":
        return make_update_many(value_regression_update, partial(sample_rows, batch_size=batch_size))
    raise ValueError(kind)
