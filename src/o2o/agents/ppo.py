"""Proximal Policy Optimization, clipped objective (Schulman et al., 2017, "Proximal Policy Optimization
Algorithms"), with generalised advantage estimation (Schulman et al., 2016).

On-policy: every iteration collects a fresh rollout with the current policy pi_old, then

    delta_t = r_t + gamma (1 - terminal_t) V(s'_t) - V(s_t)
    A_t     = delta_t + gamma lambda (1 - end_t) A_{t+1}           end_t = terminal_t or timeout_t or segment end
    R_t     = A_t + V(s_t)                                           (value target)
    rho_t   = pi(a_t|s_t) / pi_old(a_t|s_t)
    L_clip  = -E[min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)]   (A normalised per minibatch)
    L_V     = 1/2 E[max((V(s_t) - R_t)^2, (V_old(s_t) + clip(V(s_t) - V_old(s_t), -eps, eps) - R_t)^2)]
    L       = L_clip - c_H H(pi(.|s_t)) + c_V L_V,   minimised for ``num_epochs`` epochs of minibatches

Timeouts: s'_t is the true next observation (at a time-limit cut, the last observation of the episode,
not the next episode's first), so a truncated episode bootstraps V(s'_T) and a terminated one does not;
the advantage recursion stops at every episode end and at the end of the rollout segment, whose tail
also bootstraps V(s'_T). OCR-CFT's released code ignores timeouts here; o2o does not copy that.

Implementation details (CleanRL ``ppo_continuous_action.py``, whose defaults these are): running
observation normalisation (mean/var over every observation seen, clipped to +-10) and reward scaling
(rewards divided by the running std of the discounted return, clipped to +-10), both with their
statistics in the agent state so they are checkpointed and travel with the policy; advantage
normalisation per minibatch; Adam eps 1e-5; gradient norm clipped at 0.5; learning rate annealed
linearly to 0 over the run; orthogonal initialisation (last layer 0.01 for the policy mean, 1 for V).
Statistics are frozen while a rollout is collected and learned from, and take in its observations
after the update (CleanRL's env wrapper updates them at every step), so the importance ratio starts
at exactly 1.

The policy is CleanRL's and the OCR-CFT authors' Gaussian with a state-independent log std
(``o2o.nn.GaussianActor``; the authors' mean also passes through tanh, so it lies in [-1, 1]): a sample
is executed clipped to [-1, 1], the rollout keeps the unclipped sample for its exact log-probability, and
the entropy is the Gaussian's, in closed form. IQL's actor is the same class, so O2PPO starts from it
as it is. From scratch the log std starts at ``init_log_std`` (0: std 1, as CleanRL). Actor and critic
have separate Adam optimisers (O2PPO uses different learning rates), each with its own gradient-norm clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from o2o.nn import GAUSSIAN, GaussianActor, ValueNet, gaussian_entropy, gaussian_log_prob, gaussian_sample

POLICY = GAUSSIAN  # the policy class (o2o.nn.policy_mode)


@dataclass(frozen=True)
class PPOConfig:
    hidden_dims: tuple[int, ...] = field(default=(64, 64), metadata={"help": "hidden widths of the actor (an offline actor to fine-tune fixes them)"})
    value_hidden_dims: tuple[int, ...] = field(default=(64, 64), metadata={"help": "hidden widths of the value network"})
    actor_lr: float = field(default=3e-4, metadata={"help": "actor Adam learning rate"})
    value_lr: float = field(default=3e-4, metadata={"help": "value Adam learning rate"})
    anneal_lr: bool = field(default=True, metadata={"help": "anneal both learning rates linearly to 0 over the run"})
    adam_eps: float = field(default=1e-5, metadata={"help": "Adam epsilon"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip_ratio: float = field(default=0.2, metadata={"help": "clip eps of the probability ratio (and of the value change)"})
    clip_value_loss: bool = field(default=True, metadata={"help": "clip the value update around the rollout's values"})
    value_coef: float = field(default=0.5, metadata={"help": "weight c_V of the value loss"})
    entropy_coef: float = field(default=0.0, metadata={"help": "weight c_H of the entropy bonus"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "global gradient-norm clip (actor and value each)"})
    num_epochs: int = field(default=10, metadata={"help": "passes over each rollout"})
    minibatch_size: int = field(default=64, metadata={"help": "minibatch size (divides the rollout length)"})
    normalize_advantages: bool = field(default=True, metadata={"help": "standardise advantages per minibatch"})
    normalize_observations: bool = field(default=True, metadata={"help": "running mean/std observation normalisation"})
    freeze_observation_stats: bool = field(default=False, metadata={"help": "keep the observation statistics as initialised (fine-tuning: the offline data's)"})
    observation_clip: float = field(default=10.0, metadata={"help": "clip of the normalised observations"})
    scale_rewards: bool = field(default=True, metadata={"help": "divide rewards by the running std of the discounted return"})
    reward_clip: float = field(default=10.0, metadata={"help": "clip of the scaled rewards"})
    init_log_std: float = field(default=0.0, metadata={"help": "initial log std of the policy (state-independent)"})
    log_std_min: float = field(default=-10.0, metadata={"help": "lower bound of the actor's log std"})
    log_std_max: float = field(default=2.0, metadata={"help": "upper bound of the actor's log std"})


# ---------------------------------------------------------------- running statistics


@flax.struct.dataclass
class RunningMeanStd:
    """Mean and variance of everything seen so far (Chan et al.'s parallel update, as gymnasium's)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array  # float32; starts at 1e-4 as gymnasium's, so the first batch dominates at once


def running_stats_init(shape=()) -> RunningMeanStd:
    return RunningMeanStd(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.asarray(1e-4, jnp.float32))


def running_stats_update(stats: RunningMeanStd, x: jax.Array) -> RunningMeanStd:
    """Merge the batch ``x`` ([N, *shape]) into the statistics."""
    batch_mean, batch_var, batch_count = x.mean(axis=0), x.var(axis=0), x.shape[0]
    delta = batch_mean - stats.mean
    total = stats.count + batch_count
    m2 = stats.var * stats.count + batch_var * batch_count + delta**2 * stats.count * batch_count / total
    return RunningMeanStd(stats.mean + delta * batch_count / total, m2 / total, total)


def running_stats_from(mean, std, count: float = 1e6) -> RunningMeanStd:
    """Statistics from a known mean and std (e.g. the dataset's, of an offline actor trained on
    standardised observations), weighted as ``count`` observations."""
    mean = jnp.asarray(mean, jnp.float32)
    return RunningMeanStd(mean, jnp.asarray(std, jnp.float32) ** 2, jnp.asarray(count, jnp.float32))


STATS_EPS = 1e-8


def normalize_observations(stats: RunningMeanStd, observations: jax.Array, cfg: PPOConfig) -> jax.Array:
    if not cfg.normalize_observations:
        return observations
    z = (observations - stats.mean) / jnp.sqrt(stats.var + STATS_EPS)
    return jnp.clip(z, -cfg.observation_clip, cfg.observation_clip)


# ---------------------------------------------------------------- state


@flax.struct.dataclass
class PPOState:
    actor: TrainState  # GaussianActor: (mean, log_std) of the Gaussian over actions
    value: TrainState  # ValueNet
    obs_stats: RunningMeanStd
    return_stats: RunningMeanStd  # of the discounted return, for reward scaling
    config: PPOConfig = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class PPOPolicy:
    """What acting needs (small, so the per-env-step call flattens little): the actor and the
    observation statistics."""

    actor: TrainState
    obs_stats: RunningMeanStd
    config: PPOConfig = flax.struct.field(pytree_node=False)


# Module definitions and optimisers are cached: TrainState keeps apply_fn and tx as static fields, and
# jit compares those by identity, so equal ones must be the same objects for every trainer of a process
# to share one compiled update.
@lru_cache(maxsize=None)
def optimizer(learning_rate: float, max_grad_norm: float, eps: float) -> optax.GradientTransformation:
    """Clipped Adam whose learning rate is a state entry (so annealing is set per call, and resumes)."""

    def make(learning_rate):
        return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate, eps=eps))

    return optax.inject_hyperparams(make)(learning_rate=learning_rate)


@lru_cache(maxsize=None)
def _module(cls, *args):
    return cls(*args)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: PPOConfig) -> PPOState:
    actor_key, value_key = jax.random.split(key)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    actor_def = _module(GaussianActor, tuple(cfg.hidden_dims), act_dim, cfg.log_std_min, cfg.log_std_max, False, cfg.init_log_std)
    actor_params = actor_def.init(actor_key, obs)
    value_def = _module(ValueNet, tuple(cfg.value_hidden_dims))
    return PPOState(
        actor=TrainState.create(apply_fn=actor_def.apply, params=actor_params, tx=optimizer(cfg.actor_lr, cfg.max_grad_norm, cfg.adam_eps)),
        value=TrainState.create(
            apply_fn=value_def.apply, params=value_def.init(value_key, obs), tx=optimizer(cfg.value_lr, cfg.max_grad_norm, cfg.adam_eps)
        ),
        obs_stats=running_stats_init((obs_dim,)),
        return_stats=running_stats_init(),
        config=cfg,
    )


def policy_of(state: PPOState) -> PPOPolicy:
    return PPOPolicy(actor=state.actor, obs_stats=state.obs_stats, config=state.config)


# ---------------------------------------------------------------- policy


@jax.jit
def sample_actions(policy: PPOPolicy, observations: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a, u): u ~ N(mean(s), std^2), a = clip(u, -1, 1) executed; the rollout keeps u for exact
    log-probabilities."""
    mean, log_std = policy.actor.apply_fn(policy.actor.params, normalize_observations(policy.obs_stats, observations, policy.config))
    u = gaussian_sample(key, mean, log_std)
    return jnp.clip(u, -1.0, 1.0), u


@partial(jax.jit, static_argnames=("deterministic",))
def actor_actions(policy: PPOPolicy, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    """Actions in [-1, 1]: a clipped sample, or the mean when deterministic. Takes a ``PPOPolicy``
    (``policy_of(state)``): acting needs the observation statistics as well as the actor."""
    if deterministic:
        mean, _ = policy.actor.apply_fn(policy.actor.params, normalize_observations(policy.obs_stats, observations, policy.config))
        return mean
    return sample_actions(policy, observations, key)[0]


def act(state: PPOState, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array:
    return actor_actions(policy_of(state), observations, key, deterministic)


# ---------------------------------------------------------------- advantages


def gae(rewards, values, next_values, terminals, episode_ends, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets of rollout segments, time along the last axis ([..., T]).

    ``next_values`` are V(s'_t) of the true next observations; ``terminals`` stop the bootstrap,
    ``episode_ends`` (terminal or timeout) stop the recursion; the segment's last step always ends it.
    """
    deltas = rewards + gamma * (1.0 - terminals) * next_values - values
    continues = 1.0 - episode_ends.astype(deltas.dtype)
    continues = continues.at[..., -1].set(0.0)

    def step(next_advantage, xs):
        delta, cont = xs
        advantage = delta + gamma * lam * cont * next_advantage
        return advantage, advantage

    time_major = (jnp.moveaxis(deltas, -1, 0), jnp.moveaxis(continues, -1, 0))
    _, advantages = jax.lax.scan(step, jnp.zeros(deltas.shape[:-1], deltas.dtype), time_major, reverse=True)
    advantages = jnp.moveaxis(advantages, 0, -1)
    return advantages, advantages + values


def discounted_return_trace(rewards, episode_ends, gamma: float, carry) -> tuple[jax.Array, jax.Array]:
    """G_t = gamma G_{t-1} + r_t, restarted at every episode (time along the last axis; ``carry`` is G
    of each row's previous step, 0 at an episode start). Returns (G [..., T], the carry after T)."""

    def step(g, xs):
        r, end = xs
        g = gamma * g + r
        return jnp.where(end, 0.0, g), g

    carry, trace = jax.lax.scan(step, carry, (jnp.moveaxis(rewards, -1, 0), jnp.moveaxis(episode_ends, -1, 0)))
    return jnp.moveaxis(trace, 0, -1), carry


def prepare_batch(state: PPOState, rollout: dict, return_carry: jax.Array) -> tuple[PPOState, dict, jax.Array, dict]:
    """From a rollout of ``[num_envs, T]`` segments to PPO's flat training batch.

    ``rollout``: observations, raw_actions (the unclipped samples), rewards, next_observations, terminals, timeouts, each
    [num_envs, T, ...]. Scales rewards (updating the return statistics), evaluates V(s), V(s') and
    log pi_old(a|s) under the frozen observation statistics, and computes GAE. Returns the new state
    (return statistics), the batch (observations raw: ``update`` normalises them), the new carry of
    the discounted returns and diagnostics.
    """
    cfg = state.config
    terminals = rollout["terminals"].astype(jnp.float32)
    ends = jnp.logical_or(rollout["terminals"], rollout["timeouts"])
    rewards = rollout["rewards"]
    if cfg.scale_rewards:
        trace, return_carry = discounted_return_trace(rewards, ends, cfg.gamma, return_carry)
        return_stats = running_stats_update(state.return_stats, trace.reshape(-1))
        state = state.replace(return_stats=return_stats)
        rewards = jnp.clip(rewards / jnp.sqrt(return_stats.var + STATS_EPS), -cfg.reward_clip, cfg.reward_clip)

    def values_of(obs):
        return state.value.apply_fn(state.value.params, normalize_observations(state.obs_stats, obs, cfg))

    values = values_of(rollout["observations"])
    next_values = values_of(rollout["next_observations"])
    mean, log_std = state.actor.apply_fn(state.actor.params, normalize_observations(state.obs_stats, rollout["observations"], cfg))
    log_probs = gaussian_log_prob(rollout["raw_actions"], mean, log_std)
    advantages, returns = gae(rewards, values, next_values, terminals, ends, cfg.gamma, cfg.gae_lambda)

    def flat(x):
        return x.reshape((-1,) + x.shape[2:])

    batch = {
        "observations": flat(rollout["observations"]),
        "raw_actions": flat(rollout["raw_actions"]),
        "log_probs": flat(log_probs),
        "values": flat(values),
        "advantages": flat(advantages),
        "returns": flat(returns),
    }
    info = {
        "explained_variance": 1.0 - jnp.var(returns - values) / (jnp.var(returns) + 1e-8),
        "value_mean": values.mean(),
        "advantage_std": advantages.std(),
        "scaled_reward_mean": rewards.mean(),
    }
    return state, batch, return_carry, info


def observe(state: PPOState, observations: jax.Array) -> PPOState:
    """Merge a rollout's observations ([N, obs_dim]) into the normalisation statistics (unless frozen)."""
    if not state.config.normalize_observations or state.config.freeze_observation_stats:
        return state
    return state.replace(obs_stats=running_stats_update(state.obs_stats, observations))


# ---------------------------------------------------------------- losses (pure functions)


def clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip_ratio: float) -> tuple[jax.Array, dict]:
    """-mean min(rho A, clip(rho, 1 - eps, 1 + eps) A), rho = exp(log pi - log pi_old)."""
    log_ratio = log_probs - old_log_probs
    ratio = jnp.exp(log_ratio)
    loss = jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)).mean()
    info = {
        "approx_kl": ((ratio - 1.0) - log_ratio).mean(),  # the low-variance estimator of KL(pi_old || pi)
        "clip_fraction": (jnp.abs(ratio - 1.0) > clip_ratio).mean(),
    }
    return loss, info


def value_loss(values, old_values, returns, clip_ratio: float | None) -> jax.Array:
    """1/2 mean (V - R)^2, or with clipping 1/2 mean max((V - R)^2, (V_old + clip(V - V_old) - R)^2)."""
    unclipped = (values - returns) ** 2
    if clip_ratio is None:
        return 0.5 * unclipped.mean()
    clipped = (old_values + jnp.clip(values - old_values, -clip_ratio, clip_ratio) - returns) ** 2
    return 0.5 * jnp.maximum(unclipped, clipped).mean()


def actor_loss(actor_params, state: PPOState, minibatch) -> tuple[jax.Array, dict]:
    cfg = state.config
    mean, log_std = state.actor.apply_fn(actor_params, minibatch["observations"])
    log_probs = gaussian_log_prob(minibatch["raw_actions"], mean, log_std)
    advantages = minibatch["advantages"]
    if cfg.normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    surrogate, info = clipped_surrogate_loss(log_probs, minibatch["log_probs"], advantages, cfg.clip_ratio)
    entropy = gaussian_entropy(log_std).mean()
    loss = surrogate - cfg.entropy_coef * entropy
    return loss, {"policy_loss": surrogate, "entropy": entropy, **info}


def critic_loss(value_params, state: PPOState, minibatch) -> tuple[jax.Array, dict]:
    cfg = state.config
    values = state.value.apply_fn(value_params, minibatch["observations"])
    loss = value_loss(values, minibatch["values"], minibatch["returns"], cfg.clip_ratio if cfg.clip_value_loss else None)
    return cfg.value_coef * loss, {"value_loss": loss}


# ---------------------------------------------------------------- update


def _with_learning_rate(train_state: TrainState, learning_rate) -> TrainState:
    opt_state = train_state.opt_state
    hyperparams = {**opt_state.hyperparams, "learning_rate": jnp.asarray(learning_rate, jnp.float32)}
    return train_state.replace(opt_state=opt_state._replace(hyperparams=hyperparams))


def minibatch_update(state: PPOState, minibatch: dict) -> tuple[PPOState, dict]:
    grads, actor_info = jax.grad(actor_loss, has_aux=True)(state.actor.params, state, minibatch)
    actor = state.actor.apply_gradients(grads=grads)
    grads, value_info = jax.grad(critic_loss, has_aux=True)(state.value.params, state, minibatch)
    value = state.value.apply_gradients(grads=grads)
    return state.replace(actor=actor, value=value), {**actor_info, **value_info}


def update(state: PPOState, batch: dict, key: jax.Array, lr_fraction=1.0) -> tuple[PPOState, dict]:
    """``num_epochs`` passes over the rollout ``batch`` (from ``prepare_batch``) in shuffled minibatches,
    all inside one jitted call. ``lr_fraction`` scales both learning rates (annealing; the host sets it
    from the iteration count when ``anneal_lr``). Metrics are averages over every minibatch step."""
    cfg = state.config
    n = batch["advantages"].shape[0]
    num_minibatches = n // cfg.minibatch_size
    data = {**batch, "observations": normalize_observations(state.obs_stats, batch["observations"], cfg)}
    fraction = lr_fraction if cfg.anneal_lr else 1.0
    state = state.replace(
        actor=_with_learning_rate(state.actor, cfg.actor_lr * fraction),
        value=_with_learning_rate(state.value, cfg.value_lr * fraction),
    )

    def epoch(state, epoch_key):
        order = jax.random.permutation(epoch_key, n)[: num_minibatches * cfg.minibatch_size]
        order = order.reshape(num_minibatches, cfg.minibatch_size)

        def step(state, idx):
            return minibatch_update(state, jax.tree_util.tree_map(lambda x: x[idx], data))

        return jax.lax.scan(step, state, order)

    state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, cfg.num_epochs))
    metrics = jax.tree_util.tree_map(lambda m: m.mean(), metrics)
    metrics["learning_rate"] = jnp.asarray(cfg.actor_lr * fraction, jnp.float32)
    return state, metrics
