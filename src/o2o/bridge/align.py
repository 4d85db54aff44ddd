"""OCR-CFT stage 2, value alignment (Luo et al. 2024, Sec. 4.2): the re-evaluated critic Qbar is kept
*frozen* as the target (no Polyak updates during alignment) while the critic Q is aligned to the online
algorithm's way of improving the policy and the online actor pi_on is trained alongside it (from pi_off).
After alignment the targets are reset to the aligned critic.

O2SAC (max-entropy optimum: Q(s,a) = V(s) + alpha log pi(a|s)); anchor a_dot = tanh(mean of pi_off(.|s)),
clamped to +-0.9999; a ~ pi_on(.|s):

    Q'(s,a) = min( Qbar(s,a_dot) - alpha [log pi_off(a_dot|s) - log pi_off(a|s)],  Qbar(s,a) )
    L       = sum_i MSE(Q_i(s,a), Q'(s,a)) + sum_i MSE(Q_i(s,a_dot), Qbar(s,a_dot))

O2TD3 (Q decays with the distance to the anchor a_dot = pi_off(s)); a~ = clip(pi_on(s) + clipped noise),
d = ||a~ - a_dot|| / sqrt(|A|), k = 1, sigma = 0.2, Qbar_j the frozen critics, Qbar = min_j Qbar_j:

    poster: S = Qbar(s,a_dot) / (1 + k max(d^2, sigma^2))
    code:   S = Qbar(s,a_dot) / (1 + k min(d, sigma)^2)   if Qbar(s,a_dot) >= 0
            S = Qbar(s,a_dot) * (1 + k min(d, sigma)^2)   otherwise
    Q'_j(s,a~) = min( Qbar_j(s,a~), S )                  (each critic its own target, as released)
    L       = sum_j MSE(Q_j(s,a~), Q'_j) + sum_j MSE(Q_j(s,a_dot), Qbar(s,a_dot))

(``ocr.td3_align_rule: poster | code``; the released code's rule is the default: the poster's division
moves a negative Qbar(s,a_dot) *up*, away from the anchor.)

The actor steps are the released code's: O2SAC's is SAC's actor loss at the fixed re-evaluation alpha
(the temperature is not tuned during alignment; the online stage tunes it from there); O2TD3's is
-Q_1(s, pi_on(s)) on every step, taken on the critic before that step's critic update.
O2PPO has no alignment stage of its own: its auxiliary advantage (``loops/ocr.py``) acts during fine-tuning.
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
        main = ((q - jnp.broadcast_to(target, q.shape)) ** 2).mean(axis=1).sum()  # one target, or one per critic
        anchored = ((q_anchor - anchor_target[None]) ** 2).mean(axis=1).sum()
        return main + anchored, (main, anchored, q)

    (total, (main, anchored, q)), grads = jax.value_and_grad(loss, has_aux=True)(state.critic.params)
    state = state.replace(critic=state.critic.apply_gradients(grads=grads))  # targets stay frozen
    return state, {"align_critic_loss": main, "align_anchor_loss": anchored, "align_q_mean": q.mean(), "align_target_mean": target.mean()}


def o2sac_align_update(state, batch, key, offline_actor_params, alpha):
    """One alignment step: critic to Q' (targets frozen), then SAC's actor step at the fixed alpha
    (the state's temperature, set to the re-evaluation alpha by the bridge, is not updated)."""
    from o2o.agents import sac

    target_key, actor_key = jax.random.split(key)
    actions, anchor, target, anchor_target = jax.lax.stop_gradient(o2sac_targets(state, batch, target_key, offline_actor_params, alpha))
    state, info = _two_point_critic_step(state, batch["observations"], actions, target, anchor, anchor_target)
    state, actor_info = sac.update_actor(state, batch, actor_key)
    temperature = state.temperature.apply_fn(state.temperature.params)
    return state, {**info, "align_actor_loss": actor_info["actor_loss"], "align_entropy": actor_info["entropy"], "align_temperature": temperature}


# ------------------------------------------------------------------------------------- O2TD3


def o2td3_alignment_target(qbar_tilde, qbar_anchor, distance, k: float, sigma: float, rule: str):
    """Q'_j(s,a~) = min(Qbar_j(s,a~), S) by the poster's or the released code's rule (module docstring).
    ``qbar_tilde`` is [num_critics, B] (each critic's own frozen value), ``qbar_anchor`` [B]."""
    if rule == "poster":
        shrunk = qbar_anchor / (1.0 + k * jnp.maximum(distance**2, sigma**2))
    elif rule == "code":
        factor = 1.0 + k * jnp.minimum(distance, sigma) ** 2
        shrunk = jnp.where(qbar_anchor >= 0, qbar_anchor / factor, qbar_anchor * factor)
    else:
        raise ValueError(f"unknown O2TD3 alignment rule '{rule}' (poster | code)")
    return jnp.minimum(qbar_tilde, shrunk[None])


def o2td3_align_update(state, batch, key, offline_actor_params, *, rule: str, k: float, sigma: float):
    """One alignment step: the actor step -Q_1(s, pi_on(s)) on the current critic, then the critic step
    to Q'_j (targets frozen)."""
    from o2o.agents.td3 import smoothed_target_actions

    cfg = state.config
    obs = batch["observations"]
    apply = state.actor.apply_fn
    anchor = apply(offline_actor_params, obs)
    actions = smoothed_target_actions(apply(state.actor.params, obs), key, cfg.policy_noise, cfg.noise_clip)
    distance = jnp.linalg.norm(actions - anchor, axis=-1) / jnp.sqrt(actions.shape[-1])
    qbar_all = lambda a: state.critic.apply_fn(state.target_critic_params, obs, a)
    qbar_anchor = qbar_all(anchor).min(axis=0)
    target = jax.lax.stop_gradient(o2td3_alignment_target(qbar_all(actions), qbar_anchor, distance, k, sigma, rule))

    def actor_loss(params):
        return -state.critic.apply_fn(state.critic.params, obs, apply(params, obs))[0].mean()

    loss, grads = jax.value_and_grad(actor_loss)(state.actor.params)
    state = state.replace(actor=state.actor.apply_gradients(grads=grads))
    state, info = _two_point_critic_step(state, obs, actions, target, anchor, jax.lax.stop_gradient(qbar_anchor))
    return state.replace(step=state.step + 1), {**info, "align_actor_loss": loss, "align_distance": distance.mean()}


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
    """O2PPO's advantage with the auxiliary term built on x = log pi_ref(a|s) + H(pi_ref(.|s)), which makes
    the PPO objective a cross-entropy constraint to pi_ref.

        poster: A' = A + beta alpha x
        code:   A_ref = alpha (softplus(x + 4 |A|) - 4 |A|) / |A| * std(A)   (soft floor at -4 per dimension,
                                                                          on A's scale, as released)
                A'    = (A + w_t A_ref) / (1 + w_t),  w_t = max(0, 1 - t / T)  (``mix_weight``)

    A_ref is not divided by its own spread: its pull toward pi_ref grows as the policy drifts from it.
    """
    x = log_prob_ref + entropy_ref
    if rule == "poster":
        return advantages + beta * alpha * x
    floor = 4.0 * act_dim
    aux = alpha * (jax.nn.softplus(x + floor) - floor) / act_dim * advantages.std()
    return (advantages + mix_weight * aux) / (1.0 + mix_weight)


@partial(jax.jit, static_argnames=("rule", "alpha", "beta", "act_dim"))
def o2ppo_batch_advantages(state, reference_params, batch, key, mix_weight, *, rule: str, alpha: float, beta: float, act_dim: int):
    """The rollout batch's advantages with O2PPO's auxiliary term, pi_ref's log-density of each
    executed (unclipped) sample exact and its entropy in closed form."""
    from o2o.agents.ppo import normalize_observations
    from o2o.nn import gaussian_entropy, gaussian_log_prob

    del key  # the Gaussian's entropy needs no sample
    obs = normalize_observations(state.obs_stats, batch["observations"], state.config)
    mean, log_std = state.actor.apply_fn(reference_params, obs)
    log_prob_ref = gaussian_log_prob(batch["raw_actions"], mean, log_std)
    entropy_ref = gaussian_entropy(log_std)
    new = o2ppo_advantages(batch["advantages"], log_prob_ref, entropy_ref, rule=rule, alpha=alpha, beta=beta, mix_weight=mix_weight, act_dim=act_dim)
    return new, log_prob_ref.mean()
