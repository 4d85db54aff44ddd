"""Conservative Q-Learning, CQL(H) on SAC (Kumar, Zhou, Tucker & Levine, 2020, "Conservative Q-Learning for
Offline Reinforcement Learning", eq. 4 with the importance-sampled log-sum-exp of appendix F).

    critic:  L(phi_i) = E[(Q_i(s,a) - y)^2] + alpha_cql E_{s~D}[ log sum_a exp Q_i(s,a) - E_{a~D}[Q_i(s,a)] ]
             y = r_scale r + gamma (1 - terminal) min_j Qbar_j(s',a'),   a' ~ pi(.|s')
                 (- alpha log pi(a'|s') only with backup_entropy; CORL's default is without)
             log sum_a exp Q(s,a) ~= logsumexp over N uniform actions, N actions ~ pi(.|s) and N ~ pi(.|s')
                 (all evaluated at s), each importance-weighted by its density:
                 Q(s,a_unif) - log(0.5^|A|),  Q(s,a_pi) - log pi(a_pi|s),  Q(s,a'_pi) - log pi(a'_pi|s')
    actor:   L(theta) = E[alpha log pi(a|s) - min_j Q_j(s,a)],  a ~ pi re-parameterised
             (the first ``bc_steps`` steps: E[alpha log pi(a|s) - log pi(a_data|s)], a behaviour-cloning warm start)
    alpha:   L(alpha) = E[-alpha (log pi(a|s) + H_target)]                     (auto temperature)
    Lagrange variant (cql_lagrange): the regulariser weight becomes alpha' alpha_cql with
             alpha' = clip(exp(log alpha'), 0, 1e6) trained to max_{alpha'} alpha' alpha_cql (gap_i - target_action_gap).

Defaults are CORL's published D4RL MuJoCo settings (configs/offline/cql/*): alpha_cql 10, N = 10,
importance sampling on, temperature 1, no Lagrange, backup_entropy off, auto temperature (its Adam lr
= the policy lr), policy lr 3e-5, critic lr 3e-4, tau 0.005, batch 256, actor and critics 3x256,
bc_steps 0. Per dataset CORL also normalises rewards for hopper/walker (normalize_reward) and states
for all: that is the data pipeline's job. CORL initialises log alpha' = 1 and uses gap -1.0.

Only ``terminals`` stop bootstrapping (time-limit truncation does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents import sac
from o2o.agents.common import adam
from o2o.errors import ConfigError
from o2o.nn import polyak_update, tanh_gaussian_log_prob, tanh_gaussian_sample

act = sac.act
actor_actions = sac.actor_actions
POLICY = sac.POLICY


@dataclass(frozen=True)
class CQLConfig:
    hidden_dims: tuple[int, ...] = field(default=(256, 256, 256), metadata={"help": "hidden widths of actor and critics (CORL: 3x256)"})
    num_critics: int = field(default=2, metadata={"help": "reward critics in the ensemble (min over them)"})
    critic_layer_norm: bool = field(default=False, metadata={"help": "LayerNorm in the critics"})
    actor_lr: float = field(default=3e-5, metadata={"help": "actor Adam learning rate (CORL: 3e-5)"})
    critic_lr: float = field(default=3e-4, metadata={"help": "critic Adam learning rate"})
    temperature_lr: float = field(default=3e-5, metadata={"help": "temperature Adam learning rate (CORL: = actor lr)"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    tau: float = field(default=0.005, metadata={"help": "Polyak rate of the target critics"})
    init_temperature: float = field(default=1.0, metadata={"help": "initial (or fixed) entropy temperature alpha"})
    auto_temperature: bool = field(default=True, metadata={"help": "tune alpha to reach the target entropy"})
    target_entropy: float | None = field(default=None, metadata={"help": "target entropy; None = -action_dim"})
    backup_entropy: bool = field(default=False, metadata={"help": "subtract alpha log pi in the critic target (CORL: off)"})
    reward_scale: float = field(default=1.0, metadata={"help": "reward multiplier in the critic target"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})
    cql_alpha: float = field(default=10.0, metadata={"help": "weight alpha_cql of the conservative regulariser (CORL: 10)"})
    cql_n_actions: int = field(default=10, metadata={"help": "actions sampled per state for each log-sum-exp source"})
    cql_importance_sample: bool = field(default=True, metadata={"help": "importance-weight the log-sum-exp samples by their density"})
    cql_temp: float = field(default=1.0, metadata={"help": "temperature of the log-sum-exp"})
    cql_max_target_backup: bool = field(default=False, metadata={"help": "target = max over N next actions of min_j Qbar_j"})
    cql_clip_diff_min: float | None = field(default=None, metadata={"help": "lower clip of logsumexp - Q(data); None = none"})
    cql_clip_diff_max: float | None = field(default=None, metadata={"help": "upper clip of logsumexp - Q(data); None = none"})
    cql_lagrange: bool = field(default=False, metadata={"help": "learn the regulariser weight alpha' (CQL-Lagrange)"})
    cql_target_action_gap: float = field(default=-1.0, metadata={"help": "Lagrange threshold tau on the gap (CORL default -1)"})
    cql_alpha_prime_lr: float = field(default=3e-4, metadata={"help": "Adam learning rate of log alpha' (CORL: critic lr)"})
    cql_init_log_alpha_prime: float = field(default=1.0, metadata={"help": "initial log alpha' (CORL: 1.0)"})
    cql_alpha_prime_max: float = field(default=1e6, metadata={"help": "upper clip of alpha'"})
    bc_steps: int = field(default=0, metadata={"help": "behaviour-cloning actor steps at the start (0 = none)"})
    action_clip: float = field(default=1.0 - 1e-6, metadata={"help": "dataset actions clipped to +-this before atanh (BC warm start)"})
    log_std_min: float = field(default=-5.0, metadata={"help": "lower bound of the actor's log std"})
    log_std_max: float = field(default=2.0, metadata={"help": "upper bound of the actor's log std"})

    def __post_init__(self):
        if self.cql_n_actions < 1:
            raise ConfigError(f"cql_n_actions must be >= 1, got {self.cql_n_actions}")
        if self.auto_temperature and self.init_temperature <= 0:
            raise ConfigError("init_temperature must be > 0 with auto_temperature (it is learned in log space)")


@flax.struct.dataclass
class CQLState:
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    temperature: TrainState  # params: {"log_alpha": scalar}
    alpha_prime: TrainState  # params: {"log_alpha_prime": scalar}; used only with cql_lagrange
    step: jax.Array  # int32 gradient steps taken (BC warm start)
    config: CQLConfig = flax.struct.field(pytree_node=False)


class AlphaPrime:
    """alpha' = clip(exp(log alpha'), 0, max) as a tiny 'module' for a TrainState."""

    @staticmethod
    def apply(params, max_value: float = 1e6):
        return jnp.clip(jnp.exp(params["log_alpha_prime"]), 0.0, max_value)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: CQLConfig) -> CQLState:
    actor, critic, target, temperature = sac.init_actor_critic(key, obs_dim, act_dim, cfg)
    alpha_prime = TrainState.create(
        apply_fn=AlphaPrime.apply,
        params={"log_alpha_prime": jnp.asarray(cfg.cql_init_log_alpha_prime, jnp.float32)},
        tx=adam(cfg.cql_alpha_prime_lr),
    )
    return CQLState(
        actor=actor,
        critic=critic,
        target_critic_params=target,
        temperature=temperature,
        alpha_prime=alpha_prime,
        step=jnp.zeros((), jnp.int32),
        config=cfg,
    )


# ---------------------------------------------------------------- sampling helpers


def sample_actions(actor: TrainState, observations: jax.Array, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """n re-parameterised actions per state: ([B, n, A], log pi [B, n])."""
    mean, log_std = actor.apply_fn(actor.params, observations)
    shape = (observations.shape[0], n, mean.shape[-1])
    return tanh_gaussian_sample(key, jnp.broadcast_to(mean[:, None], shape), jnp.broadcast_to(log_std[:, None], shape))


def q_many(apply_fn, params, observations: jax.Array, actions: jax.Array) -> jax.Array:
    """Q of n actions per state: observations [B, O], actions [B, n, A] -> [num_critics, B, n]."""
    # evaluated as one [B * n] batch of rows: the same numbers as a [B, n] batch, but XLA then runs
    # plain 2-D matmuls instead of copying the [B, n, .] activations around each layer (~1.2x on CQL)
    b, n, a = actions.shape
    obs = jnp.broadcast_to(observations[:, None, :], (b, n, observations.shape[-1])).reshape(b * n, -1)
    q = apply_fn(params, obs, actions.reshape(b * n, a))
    return q.reshape(*q.shape[:-1], b, n)


# ---------------------------------------------------------------- losses (pure functions)


def cql_logsumexp(
    q_random, q_current, q_next, q_data, log_pi_current, log_pi_next, act_dim: int, importance_sample: bool, temp: float = 1.0
) -> jax.Array:
    """The soft maximum temp * log sum_a exp(Q(s,a) / temp) estimated from samples, per critic and state.

    q_random/q_current/q_next: [K, B, N] (uniform, pi(.|s), pi(.|s') actions, all evaluated at s);
    q_data: [K, B]; log_pi_current/log_pi_next: [B, N]. With importance sampling every sample is divided
    by its proposal density (the uniform on [-1, 1]^A has log density A log 0.5) and the data action is
    left out, as in the CQL authors' code and CORL; without, the data action joins the plain samples.
    Returns [K, B].
    """
    if importance_sample:
        parts = [q_random - uniform_log_density(act_dim), q_next - log_pi_next[None], q_current - log_pi_current[None]]
    else:
        parts = [q_random, q_data[..., None], q_next, q_current]
    return temp * jax.nn.logsumexp(jnp.concatenate(parts, axis=-1) / temp, axis=-1)


def uniform_log_density(act_dim: int) -> float:
    """log of the uniform density on [-1, 1]^act_dim: act_dim * log(0.5)."""
    return act_dim * math.log(0.5)


def cql_gap(q_data, lse, clip_min: float | None = None, clip_max: float | None = None) -> jax.Array:
    """E_s[logsumexp_a Q(s,a) - Q(s, a_data)] per critic, optionally clipped per state: [K]."""
    diff = lse - q_data
    if clip_min is not None or clip_max is not None:
        diff = jnp.clip(diff, clip_min, clip_max)
    return diff.mean(axis=-1)


def reward_critic_target(state: CQLState, batch, key) -> jax.Array:
    """y = r_scale r + gamma (1 - terminal) (min_j Qbar_j(s',a') [- alpha log pi(a'|s')])."""
    cfg = state.config
    n = cfg.cql_n_actions if cfg.cql_max_target_backup else 1
    next_actions, next_log_probs = sample_actions(state.actor, batch["next_observations"], key, n)
    next_q = q_many(state.critic.apply_fn, state.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
    best = jnp.argmax(next_q, axis=-1)  # n == 1 without max-backup: index 0
    next_q = jnp.take_along_axis(next_q, best[:, None], axis=-1)[:, 0]
    next_log_probs = jnp.take_along_axis(next_log_probs, best[:, None], axis=-1)[:, 0]
    if cfg.backup_entropy:
        next_q = next_q - sac.Temperature.apply(state.temperature.params) * next_log_probs
    return cfg.reward_scale * batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * next_q


def cql_critic_loss(
    critic_params, apply_fn, batch, target_q, samples: dict, cql_weight, cfg: CQLConfig
) -> tuple[jax.Array, tuple[dict, jax.Array]]:
    """sum_i MSE(Q_i, y) + cql_weight * sum_i (gap_i - action_gap), where gap_i = E[logsumexp Q_i - Q_i(data)].
    Returns (loss, (info, gap per critic)).

    ``samples`` holds the (gradient-free) CQL actions: random_actions, current_actions,
    current_log_probs, next_actions, next_log_probs. ``cql_weight`` is alpha_cql, or alpha' alpha_cql
    in the Lagrange variant (where action_gap = cql_target_action_gap; 0 otherwise).
    """
    obs = batch["observations"]
    q_data = apply_fn(critic_params, obs, batch["actions"])  # [K, B]
    bellman = ((q_data - target_q[None]) ** 2).mean(axis=1)  # [K]
    q_random = q_many(apply_fn, critic_params, obs, samples["random_actions"])
    lse = cql_logsumexp(
        q_random,
        q_many(apply_fn, critic_params, obs, samples["current_actions"]),
        q_many(apply_fn, critic_params, obs, samples["next_actions"]),
        q_data,
        samples["current_log_probs"],
        samples["next_log_probs"],
        batch["actions"].shape[-1],
        cfg.cql_importance_sample,
        cfg.cql_temp,
    )
    gap = cql_gap(q_data, lse, cfg.cql_clip_diff_min, cfg.cql_clip_diff_max)  # [K]
    action_gap = cfg.cql_target_action_gap if cfg.cql_lagrange else 0.0
    conservative = (cql_weight * (gap - action_gap)).sum()
    loss = bellman.sum() + conservative
    info = {
        "critic_loss": loss,
        "bellman_loss": bellman.sum(),
        "cql_loss": conservative,
        "cql_gap": gap.mean(),
        "q_mean": q_data.mean(),
        "q_random_mean": q_random.mean(),
    }
    return loss, (info, gap)


def alpha_prime_loss(alpha_prime_params, gap, cfg: CQLConfig) -> jax.Array:
    """-alpha' alpha_cql (gap - target_action_gap), averaged over the critics (CORL): minimising it raises
    alpha' while the gap exceeds its target and lowers it otherwise."""
    weight = AlphaPrime.apply(alpha_prime_params, cfg.cql_alpha_prime_max)
    return -(weight * cfg.cql_alpha * (gap - cfg.cql_target_action_gap)).mean()


def cql_actor_loss(actor_params, state: CQLState, batch, key, behaviour_cloning) -> tuple[jax.Array, dict]:
    """E[alpha log pi(a|s) - min_j Q_j(s,a)], or with ``behaviour_cloning`` E[alpha log pi(a|s) - log pi(a_data|s)]."""
    mean, log_std = state.actor.apply_fn(actor_params, batch["observations"])
    actions, log_probs = tanh_gaussian_sample(key, mean, log_std)
    q = state.critic.apply_fn(state.critic.params, batch["observations"], actions).min(axis=0)
    data_log_prob = tanh_gaussian_log_prob(mean, log_std, batch["actions"], clip=state.config.action_clip)
    objective = jnp.where(behaviour_cloning, data_log_prob, q)
    alpha = sac.Temperature.apply(state.temperature.params)
    loss = (alpha * log_probs - objective).mean()
    return loss, {"actor_loss": loss, "entropy": -log_probs.mean(), "log_probs": log_probs}


# ---------------------------------------------------------------- update


def cql_samples(actor: TrainState, batch, keys: tuple[jax.Array, jax.Array, jax.Array], n: int) -> dict:
    """The (gradient-free) actions of CQL's log-sum-exp estimate, n per state from each source: uniform on
    [-1, 1]^A (random_actions), pi(.|s) (current_actions, current_log_probs) and pi(.|s')
    (next_actions, next_log_probs), all to be evaluated at s. ``keys``: one per source, in that order
    (three keys rather than one split here, so that CQL draws the same numbers as before this was shared)."""
    random_key, current_key, next_key = keys
    batch_size, act_dim = batch["actions"].shape
    current_actions, current_log_probs = sample_actions(actor, batch["observations"], current_key, n)
    next_actions, next_log_probs = sample_actions(actor, batch["next_observations"], next_key, n)
    return jax.lax.stop_gradient(
        {
            "random_actions": jax.random.uniform(random_key, (batch_size, n, act_dim), minval=-1.0, maxval=1.0),
            "current_actions": current_actions,
            "current_log_probs": current_log_probs,
            "next_actions": next_actions,
            "next_log_probs": next_log_probs,
        }
    )


def update_critic(state: CQLState, batch, key):
    cfg = state.config
    target_key, random_key, current_key, next_key = jax.random.split(key, 4)
    target_q = jax.lax.stop_gradient(reward_critic_target(state, batch, target_key))
    samples = cql_samples(state.actor, batch, (random_key, current_key, next_key), cfg.cql_n_actions)
    alpha_prime = state.alpha_prime.apply_fn(state.alpha_prime.params, cfg.cql_alpha_prime_max)
    cql_weight = cfg.cql_alpha * (alpha_prime if cfg.cql_lagrange else 1.0)
    grads, (info, gap) = jax.grad(cql_critic_loss, has_aux=True)(
        state.critic.params, state.critic.apply_fn, batch, target_q, samples, jax.lax.stop_gradient(cql_weight), cfg
    )
    critic = state.critic.apply_gradients(grads=grads)
    state = state.replace(critic=critic, target_critic_params=polyak_update(state.target_critic_params, critic.params, cfg.tau))

    if cfg.cql_lagrange:
        grads = jax.grad(alpha_prime_loss)(state.alpha_prime.params, jax.lax.stop_gradient(gap), cfg)
        state = state.replace(alpha_prime=state.alpha_prime.apply_gradients(grads=grads))
        info["cql_alpha_prime"] = state.alpha_prime.apply_fn(state.alpha_prime.params, cfg.cql_alpha_prime_max)
    return state, info


def update(state: CQLState, batch: dict, key: jax.Array) -> tuple[CQLState, dict]:
    """One CQL step: critics (+ alpha'), then the actor on the new critics, then the temperature."""
    critic_key, actor_key = jax.random.split(key)
    state, critic_info = update_critic(state, batch, critic_key)
    behaviour_cloning = state.step < state.config.bc_steps

    def loss_fn(params, state, batch, key):
        return cql_actor_loss(params, state, batch, key, behaviour_cloning)

    state, actor_info = sac.update_actor(state, batch, actor_key, loss_fn=loss_fn)
    state, temp_info = sac.update_temperature(state, actor_info.pop("log_probs"), batch["actions"].shape[-1])
    return state.replace(step=state.step + 1), {**critic_info, **actor_info, **temp_info}
