"""Value Pre-Alignment (Marvel): re-fit the reward and cost critics to the *frozen* pre-trained
policy pi0 on the offline data, by entropy-regularised fitted Q evaluation.

    a' ~ pi0(.|s')  (re-parameterised sample, its own log-probability)
    y   = s_r r + gamma   (1 - terminal) ( min_i Qbar_i(s', a')   - alpha_vpa   log pi0(a'|s') )
    y_c =     c + gamma_c (1 - terminal) ( agg_k Qbar_c,k(s', a') - alpha_c_vpa log pi0(a'|s') )
    L   = sum_i MSE(Q_i(s, a), y) + sum_k MSE(Qc_k(s, a), y_c)
    targets: Polyak tau (``vpa.tau``, default the agent's); fresh Adam optimisers; the actor is never updated

Bootstrapping contracts the start's error by about gamma per 1 / tau steps, so K steps leave about
gamma^(K tau) of it (measured on data with zero rewards and costs: tests/test_marvel.py); the preset's
10,000 steps at tau = 0.02 leave ~13%, the released code's 20,000 at 0.005 ~37%.

alpha_vpa > alpha_c_vpa >= 0 (default alpha_vpa = the online temperature, alpha_c_vpa = 0.1 alpha_vpa);
alpha_vpa = alpha_c_vpa = 0 is plain FQE (the released code). ``s_r`` is the online agent's reward scale
(the critics must be in the units the online stage uses); ``agg`` the cost ensemble's reduction (max
or mean, never min). ``terminal`` is true termination only: time-limit truncation bootstraps, unlike
the released code and OSRL, which treat timeouts as terminal (``timeouts_terminal: true`` reproduces
that). The critics start from the pre-trained ones (``init: pretrained``) or fresh (``init: fresh``).
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents.common import make_update_many
from o2o.agents.sac_lag import reduce_costs
from o2o.bridge.config import VPAConfig, check_vpa_config  # noqa: F401  (the section, defined below the bridges)
from o2o.nn import polyak_update, tanh_gaussian_sample




def resolve_alphas(cfg: VPAConfig, online_temperature: float) -> tuple[float, float]:
    alpha = online_temperature if cfg.alpha is None else cfg.alpha
    cost_alpha = 0.1 * alpha if cfg.cost_alpha is None else cfg.cost_alpha
    return float(alpha), float(cost_alpha)


def vpa_targets(state, batch, key, alpha, cost_alpha):
    """(y, y_c) of one minibatch for the SAC-Lag ``state`` (its actor is pi0, its targets the Qbar)."""
    cfg = state.config
    gamma_c = cfg.gamma if cfg.cost_gamma is None else cfg.cost_gamma
    mean, log_std = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    next_actions, next_log_probs = tanh_gaussian_sample(key, mean, log_std)
    next_q = state.critic.apply_fn(state.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
    next_qc = reduce_costs(
        state.cost_critic.apply_fn(state.target_cost_critic_params, batch["next_observations"], next_actions), cfg.cost_reduce
    )
    live = 1.0 - batch["terminals"]
    y = cfg.reward_scale * batch["rewards"] + cfg.gamma * live * (next_q - alpha * next_log_probs)
    y_c = batch["costs"] + gamma_c * live * (next_qc - cost_alpha * next_log_probs)
    return y, y_c


def vpa_update(state, batch, key, alpha, cost_alpha, tau):
    """One VPA step on both critic ensembles (actor untouched); ``tau`` the targets' Polyak rate."""
    y, y_c = jax.lax.stop_gradient(vpa_targets(state, batch, key, alpha, cost_alpha))

    def loss(params, apply_fn, target):
        q = apply_fn(params, batch["observations"], batch["actions"])
        return ((q - target[None]) ** 2).mean(axis=1).sum(), q

    (critic_loss, q), g = jax.value_and_grad(loss, has_aux=True)(state.critic.params, state.critic.apply_fn, y)
    (cost_loss, qc), gc = jax.value_and_grad(loss, has_aux=True)(state.cost_critic.params, state.cost_critic.apply_fn, y_c)
    critic = state.critic.apply_gradients(grads=g)
    cost_critic = state.cost_critic.apply_gradients(grads=gc)
    state = state.replace(
        critic=critic,
        cost_critic=cost_critic,
        target_critic_params=polyak_update(state.target_critic_params, critic.params, tau),
        target_cost_critic_params=polyak_update(state.target_cost_critic_params, cost_critic.params, tau),
    )
    return state, {
        "vpa_critic_loss": critic_loss,
        "vpa_cost_critic_loss": cost_loss,
        "vpa_q_mean": q.mean(),
        "vpa_qc_mean": qc.mean(),
        "vpa_target_mean": y.mean(),
        "vpa_cost_target_mean": y_c.mean(),
    }


def _sample(buffer, key, batch_size):
    from o2o.data.replay import replay_sample

    return replay_sample(buffer, key, batch_size)


@lru_cache(maxsize=None)
def _vpa_many(batch_size: int):
    return make_update_many(vpa_update, partial(_sample, batch_size=batch_size))


def offline_buffer(dataset, obs_mean, obs_std, *, timeouts_terminal: bool = False):
    """The offline data as a device replay buffer, observations standardised as pi0 saw them."""
    from o2o.data.replay import replay_from_dataset

    terminals = dataset.terminals | dataset.timeouts if timeouts_terminal else dataset.terminals
    data = dataset.replace(
        observations=((dataset.observations - obs_mean) / obs_std).astype(np.float32),
        next_observations=((dataset.next_observations - obs_mean) / obs_std).astype(np.float32),
        terminals=terminals,
    )
    return replay_from_dataset(data)


def vpa_stage(state, buffer, cfg: VPAConfig, key, *, resume=None):
    """VPA of ``state``'s critics (SAC-Lag state, actor = pi0) on ``buffer``, as a driver stage
    (``o2o.loops.driver.CallStage``): fresh critic optimisers (learning rates from ``cfg`` or the
    agent's), ``cfg.steps_per_call`` gradient steps per call. ``resume(state, key)``, given the state
    after the optimiser setup (the template of a partial checkpoint), returns ``(state, key, step,
    metrics)`` saved at a call's end to continue from there, or None to start at step 0."""
    from o2o.agents.common import adam
    from o2o.bridge.pretrained import fresh_train_state
    from o2o.loops.driver import CallStage

    check_vpa_config(cfg)
    a = state.config
    critic_tx = adam(cfg.critic_lr if cfg.critic_lr is not None else a.critic_lr)
    cost_tx = adam(cfg.cost_critic_lr if cfg.cost_critic_lr is not None else a.cost_critic_lr)
    online_alpha = float(state.temperature.apply_fn(state.temperature.params))
    alpha, cost_alpha = resolve_alphas(cfg, online_alpha)
    state = state.replace(
        critic=fresh_train_state(state.critic, state.critic.params, critic_tx),
        cost_critic=fresh_train_state(state.cost_critic, state.cost_critic.params, cost_tx),
    )
    tau = a.tau if cfg.tau is None else cfg.tau
    signals = {"alpha": jnp.asarray(alpha, jnp.float32), "cost_alpha": jnp.asarray(cost_alpha, jnp.float32),
               "tau": jnp.asarray(tau, jnp.float32)}
    step, last = 0, {}
    loaded = resume(state, key) if resume is not None else None
    if loaded is not None:
        state, key, step, last = loaded
    return CallStage(_vpa_many(cfg.batch_size), state, buffer, key, signals, start=step, steps_per_call=cfg.steps_per_call,
                     where=lambda p: f"VPA step {p} of {cfg.steps}", status=lambda m: f"Q {m['vpa_q_mean']:.2f} Qc {m['vpa_qc_mean']:.2f}",
                     extra={"vpa_alpha": alpha, "vpa_cost_alpha": cost_alpha}, last=last)


def run_vpa(state, buffer, cfg: VPAConfig, key):
    """Align ``state``'s critics on ``buffer`` (``vpa_stage``), without a run directory: no metrics,
    checkpoints or progress (``o2o finetune`` drives the stage with them). Returns the aligned state and
    the last call's metrics."""
    stage = vpa_stage(state, buffer, cfg, key)
    while stage.position < cfg.steps:
        stage.step()
    return stage.state, stage.last
