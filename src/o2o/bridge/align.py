"""OCR-CFT stage 2, value alignment (Luo et al. 2024, Sec. 4.2): the re-evaluated critic Qbar is kept
*frozen* as the target (no Polyak updates during alignment) while the critic Q is aligned to the online
algorithm's way of improving the policy and the online actor pi_on is trained alongside it (from pi_off).
After alignment the targets are reset to the aligned critic.

O2SAC (max-entropy optimum: Q(s,a) = V(s) + alpha log pi(a|s)); anchor a_dot = tanh(mean of pi_off(.|s)),
clamped to +-0.9999; a ~ pi_on(.|s):

    Q'(s,a) = min( Qbar(s,a_dot) - alpha [log pi_off(a_dot|s) - log pi_off(a|s)],  Qbar(s,a) )
    L       = sum_i MSE(Q_i(s,a), Q'(s,a)) + sum_i MSE(Q_i(s,a_dot), Qbar(s,a_dot))

O2TD3 (Q decays with the distance to the anchor a_dot = pi_off(s)); a~ = clip(pi_on(s) + clipped noise),
d = ||a~ - a_dot|| / sqrt(|A|), k = 1, sigma = 0.2:

    poster: Q'(s,a~) = min( Qbar(s,a~), Q(s,a_dot) / (1 + k max(d^2, sigma^2)) )
    code:   Q'(s,a~) = min( Qbar(s,a~), Q(s,a_dot) / (1 + k min(d, sigma)^2) )   if Q(s,a_dot) >= 0
                       min( Qbar(s,a~), Q(s,a_dot) * (1 + k min(d, sigma)^2) )   otherwise
    L       = sum_i MSE(Q_i(s,a~), Q') + sum_i MSE(Q_i(s,a_dot), Qbar(s,a_dot))

(``ocr.td3_align_rule: poster | code``; the released code's rule is the default: the poster's division
moves a negative Q(s,a_dot) *up*, away from the anchor.) Qbar is the minimum over the frozen ensemble;
Q(s,a_dot) is the current critic's (minimum over the ensemble, no gradient).

The actor steps are the online algorithm's own: SAC's actor and temperature losses; TD3's
-Q_1 / mean|Q_1| every ``policy_delay`` steps. O2PPO has no alignment stage of its own: its auxiliary
advantage (``loops/ocr.py``) acts during fine-tuning.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp

from o2o.agents.common import make_update_many
from o2o.nn import tanh_gaussian_log_prob, tanh_gaussian_sample

ANCHOR_CLIP = 0.9999


# ------------------------------------------------------------------------------------- O2SAC


def o2sac_alignment_target(qbar_a, qbar_anchor, log_prob_off_a, log_prob_off_anchor, alpha):
    """Q'(s,a) = min(Qbar(s,a_dot) - alpha (log pi_off(a_dot|s) - log pi_off(a|s)), Qbar(s,a))."""
    return jnp.minimum(qbar_anchor - alpha * (log_prob_off_anchor - log_prob_off_a), qbar_a)


def o2sac_targets(state, batch, key, offline_actor_params, alpha):
    obs = batch["observations"]
    mean_on, log_std_on = state.actor.apply_fn(state.actor.params, obs)
    actions, _ = tanh_gaussian_sample(key, mean_on, log_std_on)
    actions = jnp.clip(actions, -ANCHOR_CLIP, ANCHOR_CLIP)
    mean_off, log_std_off = state.actor.apply_fn(offline_actor_params, obs)
    anchor = jnp.clip(jnp.tanh(mean_off), -ANCHOR_CLIP, ANCHOR_CLIP)
    log_prob_anchor = tanh_gaussian_log_prob(mean_off, log_std_off, anchor, clip=ANCHOR_CLIP)
    log_prob_a = tanh_gaussian_log_prob(mean_off, log_std_off, actions, clip=ANCHOR_CLIP)
    qbar = lambda a: state.critic.apply_fn(state.target_critic_params, obs, a).min(axis=0)
    qbar_anchor = qbar(anchor)
    target = o2sac_alignment_target(qbar(actions), qbar_anchor, log_prob_a, log_prob_anchor, alpha)
    return actions, anchor, target, qbar_anchor


def _two_point_critic_step(state, obs, actions, target, anchor, anchor_target):
    def loss(params):
        q = state.critic.apply_fn(params, obs, actions)
        q_anchor = state.critic.apply_fn(params, obs, anchor)
        main = ((q - target[None]) ** 2).mean(axis=1).sum()
        anchored = ((q_anchor - anchor_target[None]) ** 2).mean(axis=1).sum()
        return main + anchored, (main, anchored, q)

    (total, (main, anchored, q)), grads = jax.value_and_grad(loss, has_aux=True)(state.critic.params)
    state = state.replace(critic=state.critic.apply_gradients(grads=grads))  # targets stay frozen
    return state, {"align_critic_loss": main, "align_anchor_loss": anchored, "align_q_mean": q.mean(), "align_target_mean": target.mean()}


def o2sac_align_update(state, batch, key, offline_actor_params, alpha):
    """One alignment step: critic to Q' (targets frozen), then SAC's actor and temperature steps."""
    from o2o.agents import sac

    target_key, actor_key = jax.random.split(key)
    actions, anchor, target, anchor_target = jax.lax.stop_gradient(o2sac_targets(state, batch, target_key, offline_actor_params, alpha))
    state, info = _two_point_critic_step(state, batch["observations"], actions, target, anchor, anchor_target)
    state, actor_info = sac.update_actor(state, batch, actor_key)
    state, temp_info = sac.update_temperature(state, actor_info.pop("log_probs"), batch["actions"].shape[-1])
    return state, {**info, "align_actor_loss": actor_info["actor_loss"], "align_entropy": actor_info["entropy"], **temp_info}


# ------------------------------------------------------------------------------------- O2TD3


def o2td3_alignment_target(qbar_tilde, q_anchor, distance, k: float, sigma: float, rule: str):
    """Q'(s,a~) by the poster's or the released code's rule (module docstring)."""
    if rule == "poster":
        shrunk = q_anchor / (1.0 + k * jnp.maximum(distance**2, sigma**2))
    elif rule == "code":
        factor = 1.0 + k * jnp.minimum(distance, sigma) ** 2
        shrunk = jnp.where(q_anchor >= 0, q_anchor / factor, q_anchor * factor)
    else:
        raise ValueError(f"unknown O2TD3 alignment rule '{rule}' (poster | code)")
    return jnp.minimum(qbar_tilde, shrunk)


def o2td3_align_update(state, batch, key, offline_actor_params, *, rule: str, k: float, sigma: float):
    """One alignment step: critic to Q' (targets frozen); every ``policy_delay``-th step TD3's actor
    step with the -Q / mean|Q| loss."""
    from o2o.agents.td3 import smoothed_target_actions

    cfg = state.config
    obs = batch["observations"]
    apply = state.actor.apply_fn
    anchor = apply(offline_actor_params, obs)
    actions = smoothed_target_actions(apply(state.actor.params, obs), key, cfg.policy_noise, cfg.noise_clip)
    distance = jnp.linalg.norm(actions - anchor, axis=-1) / jnp.sqrt(actions.shape[-1])
    q_anchor = state.critic.apply_fn(state.critic.params, obs, anchor).min(axis=0)
    qbar = lambda a: state.critic.apply_fn(state.target_critic_params, obs, a).min(axis=0)
    target = jax.lax.stop_gradient(o2td3_alignment_target(qbar(actions), q_anchor, distance, k, sigma, rule))
    state, info = _two_point_critic_step(state, obs, actions, target, anchor, jax.lax.stop_gradient(qbar(anchor)))

    def actor_loss(params):
        q = state.critic.apply_fn(state.critic.params, obs, apply(params, obs))[0]
        return -q.mean() / jax.lax.stop_gradient(jnp.abs(q).mean() + 1e-8)

    def actor_step(state):
        grads = jax.grad(actor_loss)(state.actor.params)
        return state.replace(actor=state.actor.apply_gradients(grads=grads))

    state = jax.lax.cond(state.step % cfg.policy_delay == 0, actor_step, lambda s: s, state)
    return state.replace(step=state.step + 1), {**info, "align_actor_loss": actor_loss(state.actor.params), "align_distance": distance.mean()}


# ------------------------------------------------------------------------------------- compiled scans


def _replay(buffer, key, batch_size):
    from o2o.data.replay import replay_sample

    return replay_sample(buffer, key, batch_size)


@lru_cache(maxsize=None)
def align_many(kind: str, batch_size: int, rule: str = "code", k: float = 1.0, sigma: float = 0.2):
    """One compiled K-step alignment per (kind, batch size, rule) per process."""
    sample = partial(_replay, batch_size=batch_size)
    if kind == "sac":
        return make_update_many(o2sac_align_update, sample)
    if kind == "td3":
        return make_update_many(partial(o2td3_align_update, rule=rule, k=k, sigma=sigma), sample)
    raise ValueError(kind)


# ------------------------------------------------------------------------------------- O2PPO


def o2ppo_advantages(advantages, log_prob_ref, entropy_ref, *, rule: str, alpha: float, beta: float, mix_weight, act_dim: int):
    """O2PPO's advantage with the auxiliary term A_alpha = alpha (log pi_ref(a|s) + H(pi_ref(.|s))),
    which makes the PPO objective a cross-entropy constraint to pi_ref.

        poster: A' = A + beta A_alpha
        code:   A_ref = floor + softplus(A_alpha - floor), floor = -4 |A|     (soft floor)
                A_ref <- A_ref std(A) / std(A_ref)                            (on A's scale)
                A'    = (A + w_t A_ref) / (1 + w_t),  w_t = max(0, 1 - t / T)  (``mix_weight``)
    """
    aux = alpha * (log_prob_ref + entropy_ref)
    if rule == "poster":
        return advantages + beta * aux
    floor = -4.0 * act_dim
    aux = floor + jax.nn.softplus(aux - floor)
    aux = aux * advantages.std() / (aux.std() + 1e-8)
    return (advantages + mix_weight * aux) / (1.0 + mix_weight)


@partial(jax.jit, static_argnames=("rule", "alpha", "beta", "act_dim"))
def o2ppo_batch_advantages(state, reference_params, batch, key, mix_weight, *, rule: str, alpha: float, beta: float, act_dim: int):
    """The rollout batch's advantages with O2PPO's auxiliary term, pi_ref's log-density of each
    executed pre-tanh sample exact (``ppo.log_prob_pre_tanh``) and its entropy by one sample."""
    from o2o.agents.ppo import entropy_estimate, log_prob_pre_tanh, normalize_observations

    obs = normalize_observations(state.obs_stats, batch["observations"], state.config)
    mean, log_std = state.actor.apply_fn(reference_params, obs)
    log_prob_ref = log_prob_pre_tanh(mean, log_std, batch["pre_tanh_actions"])
    entropy_ref = entropy_estimate(mean, log_std, key)
    new = o2ppo_advantages(batch["advantages"], log_prob_ref, entropy_ref, rule=rule, alpha=alpha, beta=beta, mix_weight=mix_weight, act_dim=act_dim)
    return new, log_prob_ref.mean()
