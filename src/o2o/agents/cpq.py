"""Constraints Penalized Q-learning (Xu, Zhan & Zhu, AAAI 2022, "Constraints Penalized Q-Learning for Safe
Offline Reinforcement Learning"), in the form of OSRL's CPQ (Liu et al. 2023) with its no-gradient bug fixed.

Cost threshold. A cost limit kappa on the undiscounted episode cost over a horizon T is turned into a
threshold on the discounted cost value by spreading kappa evenly over the T steps:

    l = kappa (1 - gamma^T) / ((1 - gamma) T)                                       (``cost_threshold``)

Cost critic: fitted Q evaluation plus a term that *raises* Qc on out-of-distribution actions nu, so that
the policy is steered away from actions the data cannot vouch for:

    L(psi) = E_{(s,a,c,s')~D}[(Qc(s,a) - y_c)^2] - w E_{s~D, a~nu(.|s)}[Qc(s,a)]
    y_c    = c + gamma (1 - terminal) agg_k Qcbar_k(s',a'),  a' ~ pi(.|s')
    nu     = the actions a ~ pi(.|s) (10 per state) whose VAE latent KL(q(z|s,a) || N(0,I)) is in the top
             25% of those samples (OSRL's batch-adaptive rule) AND above the
             90% quantile of the KLs of the batch's dataset actions (o2o, see below), plus optional
             uniform random actions. The VAE is a behaviour model trained on D alongside.
    w      = exp(log w), dual ascent on the constraint E_nu[Qc] >= 1.5 l:
             log w <- clip(log w + eta w (1.5 l - E_nu[agg Qc]), -5, 5)        (or w fixed)

Reward critic, the constraints-penalized Bellman operator: no bootstrapping through a
next action whose cost value exceeds the threshold,

    y = r_scale r + gamma (1 - terminal) 1[agg Qcbar(s',a') <= l] min_j Qbar_j(s',a'),   a' ~ pi(.|s')

Actor (re-parameterised as in SAC; the entropy term is optional, OSRL has none):

    L(theta) = E_{s~D, a~pi}[ alpha log pi(a|s) - 1[agg Qc(s,a) <= l] min_j Q_j(s,a) ]

The indicator carries no gradient, so unsafe samples simply stop contributing to the actor's objective;
this assumes non-negative rewards (with negative ones a cut bootstrap is a bonus): shift rewards if needed.

Defaults are OSRL's CPQ config (examples/configs/cpq_configs.py): 2x256 actor and critics, twin reward
and twin cost critics, VAE 2x400 with KL weight 0.5 and latent 2|A|, 10 OOD samples, quantile 0.75,
threshold scale 1.5, log w starting at 0 (w = 1) with step 1e-4, lr actor 1e-4 / critics 1e-3 / VAE 1e-3,
batch 512, reward scale 0.1, no entropy term (alpha = 0). o2o's cost limit default is 20 (Marvel/DSRL;
OSRL's is 10) and ``horizon`` must be the task's time limit (OSRL: episode_len, 300 for CarCircle).
w acts in cost-value units: OSRL's w = 1 suits thresholds of a few units (l = 6.3 for kappa 20, T 300,
gamma 0.99); for a much smaller l scale ``init_ood_weight`` down with it.

Where o2o departs from OSRL's code (fixes):
- the OOD term uses the online cost critic and has a gradient (OSRL evaluates it with the target cost
  critic under ``torch.no_grad()``: a no-op);
- OOD actions are tanh-squashed samples in [-1, 1] (OSRL feeds pre-tanh samples);
- nu also requires a VAE KL above the ``ood_data_quantile`` quantile of the batch's dataset actions'
  KLs (None: OSRL's rule); with a real gradient OSRL's rule flags a quarter of the policy's own samples,
  in distribution or not, and drives their cost values above l;
- E_nu is the mean over the flagged actions only (OSRL averages mask * Qc over all samples);
- the cost ensemble is reduced with max (default) or mean, never OSRL's min;
- only ``terminals`` stop bootstrapping (OSRL also cuts at timeouts).

Options (o2o's, off by default; ``examples/configs/cpq-o2o.yaml`` turns the first four on):
- ``ood_penalty: hinge``: -w E_nu[min(Qc, 1.5 l)], an OOD cost value is raised only up to the dual's
  target (with the linear term w never reaches 0 on data whose costly states exceed 1.5 l);
- ``reward_cql_alpha`` > 0: CQL(H)'s regulariser on the reward critics (Kumar et al. 2020, eq. 4),
  importance-sampled like CQL's code or, with ``reward_cql_importance_sample: false``, the plain
  log-sum-exp over the samples and the data action (CPQ's near-deterministic actor keeps its share);
- ``clip_targets``: both critic targets clipped to the range a discounted sum of the dataset's per-step
  values can take (``value_bounds``);
- ``cost_reduce: mean``.
Their measurements are in docs/results/offline.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents import sac
from o2o.agents.common import adam
from o2o.agents.cql import cql_gap, cql_logsumexp, cql_samples, q_many, sample_actions
from o2o.agents.sac_lag import reduce_costs
from o2o.errors import ConfigError
from o2o.nn import CriticEnsemble, TanhGaussianActor, polyak_update, tanh_gaussian_sample, shared_module
from o2o.nn.vae import vae_kl, vae_train_state, vae_update

act = sac.act
actor_actions = sac.actor_actions
POLICY = sac.POLICY


@dataclass(frozen=True)
class CPQConfig:
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of actor and critics"})
    num_critics: int = field(default=2, metadata={"help": "reward critics (min over them)"})
    num_cost_critics: int = field(default=2, metadata={"help": "cost critics"})
    cost_reduce: Literal["max", "mean"] = field(default="max", metadata={"help": "cost ensemble reduction (never min)"})
    critic_layer_norm: bool = field(default=False, metadata={"help": "LayerNorm in the critics"})
    actor_lr: float = field(default=1e-4, metadata={"help": "actor Adam learning rate (OSRL: 1e-4)"})
    critic_lr: float = field(default=1e-3, metadata={"help": "reward critic Adam learning rate (OSRL: 1e-3)"})
    cost_critic_lr: float = field(default=1e-3, metadata={"help": "cost critic Adam learning rate (OSRL: 1e-3)"})
    vae_lr: float = field(default=1e-3, metadata={"help": "VAE Adam learning rate (OSRL: 1e-3)"})
    vae_hidden_dims: tuple[int, ...] = field(default=(400, 400), metadata={"help": "hidden widths of the VAE"})
    vae_latent_dim: int | None = field(default=None, metadata={"help": "VAE latent width; None = 2 * action_dim"})
    vae_kl_weight: float = field(default=0.5, metadata={"help": "KL weight in the VAE's ELBO (OSRL's beta)"})
    gamma: float = field(default=0.99, metadata={"help": "discount (reward and cost)"})
    tau: float = field(default=0.005, metadata={"help": "Polyak rate of the target critics"})
    reward_scale: float = field(default=0.1, metadata={"help": "reward multiplier in the critic target (OSRL: 0.1)"})
    batch_size: int = field(default=512, metadata={"help": "minibatch size (OSRL: 512)"})
    cost_limit: float = field(default=20.0, metadata={"help": "episode cost limit kappa (undiscounted)"})
    horizon: int = field(default=300, metadata={"help": "episode length T used to turn kappa into the threshold l"})
    num_ood_actions: int = field(default=10, metadata={"help": "policy actions sampled per state as OOD candidates"})
    ood_detection: Literal["vae", "none"] = field(
        default="vae", metadata={"help": "vae: only candidates with a high VAE KL count as OOD; none: all policy samples"}
    )
    ood_quantile: float = field(default=0.75, metadata={"help": "candidates with KL >= this quantile of their KLs are OOD"})
    ood_data_quantile: float | None = field(
        default=0.9, metadata={"help": "also require KL >= this quantile of the dataset actions' KLs; None = OSRL's rule"}
    )
    num_random_ood_actions: int = field(default=0, metadata={"help": "uniform random actions per state added to the OOD set"})
    ood_weight_mode: Literal["dual", "fixed"] = field(
        default="dual", metadata={"help": "dual: learn w so that E_nu[Qc] >= scale * l; fixed: w = init_ood_weight"}
    )
    init_ood_weight: float = field(default=1.0, metadata={"help": "initial (or fixed) OOD weight w"})
    ood_weight_lr: float = field(default=1e-4, metadata={"help": "step of the dual ascent on log w (OSRL alpha_lr)"})
    ood_threshold_scale: float = field(default=1.5, metadata={"help": "target of E_nu[Qc] in units of l (OSRL qc_scalar)"})
    ood_penalty: Literal["linear", "hinge"] = field(
        default="linear",
        metadata={"help": "linear: -w E_nu[Qc] (CPQ, OSRL); hinge: -w E_nu[min(Qc, scale * l)], raise an OOD cost value "
                  "only while it is below the target (o2o, not in the paper)"},
    )
    log_ood_weight_min: float = field(default=-5.0, metadata={"help": "lower clip of log w"})
    log_ood_weight_max: float = field(default=5.0, metadata={"help": "upper clip of log w"})
    init_temperature: float = field(default=0.0, metadata={"help": "entropy temperature alpha in the actor loss (OSRL: 0)"})
    auto_temperature: bool = field(default=False, metadata={"help": "tune alpha to the target entropy (needs init > 0)"})
    temperature_lr: float = field(default=1e-4, metadata={"help": "temperature Adam learning rate"})
    target_entropy: float | None = field(default=None, metadata={"help": "target entropy; None = -action_dim"})
    backup_entropy: bool = field(default=False, metadata={"help": "subtract alpha log pi in the reward target"})
    log_std_min: float = field(default=-5.0, metadata={"help": "lower bound of the actor's log std"})
    log_std_max: float = field(default=2.0, metadata={"help": "upper bound of the actor's log std"})
    clip_targets: bool = field(
        default=False,
        metadata={"help": "clip the reward and cost critic targets to the values a discounted sum of the dataset's "
                  "per-step rewards / costs can take (reward_range, cost_range; o2o, not in OSRL or the paper)"},
    )
    reward_cql_alpha: float = field(
        default=0.0,
        metadata={"help": "weight of a CQL(H) regulariser on the reward critics, alpha_r E_s[logsumexp_a Q - Q(s,a_data)]; "
                  "0 = CPQ's unregularised reward critic (o2o, not in the paper)"},
    )
    reward_cql_n_actions: int = field(
        default=10, metadata={"help": "actions per state from each log-sum-exp source with reward_cql_alpha (CQL: 10)"}
    )
    reward_cql_importance_sample: bool = field(
        default=True,
        metadata={"help": "with reward_cql_alpha: divide each sampled action by its proposal density in the log-sum-exp "
                  "(CQL's code); false = the plain log-sum-exp over the samples and the data action, which keeps "
                  "weight on a near-deterministic actor's own actions (CPQ's alpha = 0)"},
    )
    reward_range: tuple[float, float] | None = field(
        default=None, metadata={"help": "per-step reward range for clip_targets; None = the dataset's min and max"}
    )
    cost_range: tuple[float, float] | None = field(
        default=None, metadata={"help": "per-step cost range for clip_targets; None = the dataset's min and max"}
    )

    def __post_init__(self):
        if self.horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {self.horizon}")
        if self.init_temperature < 0 or (self.auto_temperature and self.init_temperature <= 0):
            raise ConfigError("init_temperature must be >= 0, and > 0 with auto_temperature (it is learned in log space)")
        if self.reward_cql_alpha < 0 or self.reward_cql_n_actions < 1:
            raise ConfigError(
                f"reward_cql_alpha must be >= 0 and reward_cql_n_actions >= 1, got {self.reward_cql_alpha}, {self.reward_cql_n_actions}"
            )
        if self.init_ood_weight <= 0:
            raise ConfigError(f"init_ood_weight must be > 0, got {self.init_ood_weight}")
        for name in ("ood_quantile", "ood_data_quantile"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")


@flax.struct.dataclass
class CPQState:
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    cost_critic: TrainState
    target_cost_critic_params: Any
    vae: TrainState
    log_ood_weight: jax.Array  # scalar: log w of the OOD cost penalty
    temperature: TrainState  # params: {"log_alpha": scalar}; read only with auto_temperature
    config: CPQConfig = flax.struct.field(pytree_node=False)


def cost_threshold(cost_limit: float, horizon: int, gamma: float) -> float:
    """l = kappa (1 - gamma^T) / ((1 - gamma) T): the discounted value of paying kappa / T every step for
    T steps (kappa itself when gamma = 1)."""
    if gamma == 1.0:
        return float(cost_limit)
    return float(cost_limit * (1.0 - gamma**horizon) / ((1.0 - gamma) * horizon))


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: CPQConfig) -> CPQState:
    actor_key, critic_key, cost_key, vae_key = jax.random.split(key, 4)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    act = jnp.zeros((1, act_dim), jnp.float32)
    actor_def = shared_module(TanhGaussianActor, tuple(cfg.hidden_dims), act_dim, cfg.log_std_min, cfg.log_std_max)
    actor = TrainState.create(apply_fn=actor_def.apply, params=actor_def.init(actor_key, obs), tx=adam(cfg.actor_lr))
    critic_def = shared_module(CriticEnsemble, tuple(cfg.hidden_dims), cfg.num_critics, cfg.critic_layer_norm)
    critic_params = critic_def.init(critic_key, obs, act)
    cost_def = shared_module(CriticEnsemble, tuple(cfg.hidden_dims), cfg.num_cost_critics, cfg.critic_layer_norm)
    cost_params = cost_def.init(cost_key, obs, act)
    # log alpha is only read when auto-tuned; with a fixed alpha (possibly 0) it is a placeholder
    log_alpha = jnp.log(cfg.init_temperature) if cfg.init_temperature > 0 else 0.0
    return CPQState(
        actor=actor,
        critic=TrainState.create(apply_fn=critic_def.apply, params=critic_params, tx=adam(cfg.critic_lr)),
        target_critic_params=jax.tree_util.tree_map(jnp.copy, critic_params),
        cost_critic=TrainState.create(apply_fn=cost_def.apply, params=cost_params, tx=adam(cfg.cost_critic_lr)),
        target_cost_critic_params=jax.tree_util.tree_map(jnp.copy, cost_params),
        vae=vae_train_state(vae_key, obs_dim, act_dim, cfg.vae_hidden_dims, cfg.vae_latent_dim, adam(cfg.vae_lr)),
        log_ood_weight=jnp.asarray(jnp.log(cfg.init_ood_weight), jnp.float32),
        temperature=TrainState.create(
            apply_fn=sac.Temperature.apply,
            params={"log_alpha": jnp.asarray(log_alpha, jnp.float32)},
            tx=adam(cfg.temperature_lr),
        ),
        config=cfg,
    )


def temperature(state: CPQState) -> jax.Array:
    cfg = state.config
    if cfg.auto_temperature:
        return state.temperature.apply_fn(state.temperature.params)
    return jnp.asarray(cfg.init_temperature, jnp.float32)


# ---------------------------------------------------------------- losses (pure functions)


def value_bounds(step_range: tuple[float, float], gamma: float, scale: float = 1.0) -> tuple[float, float]:
    """The range of a (possibly cut) discounted sum of per-step values in ``step_range`` times ``scale``:
    between one step's and an infinite sum's extremes."""
    lo, hi = (scale * v for v in step_range)
    return min(lo, lo / (1.0 - gamma)), max(hi, hi / (1.0 - gamma))


def clip_to_value_bounds(target, step_range, gamma: float, scale: float = 1.0):
    """``target`` clipped to ``value_bounds(step_range, gamma, scale)`` (the ``clip_targets`` option)."""
    if step_range is None:
        raise ConfigError("clip_targets needs reward_range and cost_range (o2o pretrain fills them from the dataset)")
    lo, hi = value_bounds(tuple(step_range), gamma, scale)
    return jnp.clip(target, lo, hi)


def constraint_penalized_target(rewards, terminals, next_q, next_qc, threshold, gamma: float, reward_scale: float = 1.0):
    """y = r_scale r + gamma (1 - terminal) 1[Qc(s',a') <= l] Q(s',a'): the reward bootstrap is cut where
    the next action's cost value is over the threshold."""
    safe = (next_qc <= threshold).astype(next_q.dtype)
    return reward_scale * rewards + gamma * (1.0 - terminals) * safe * next_q


def reward_critic_target(state: CPQState, batch, key) -> jax.Array:
    cfg = state.config
    mean, log_std = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    next_actions, next_log_probs = tanh_gaussian_sample(key, mean, log_std)
    next_obs = batch["next_observations"]
    next_q = state.critic.apply_fn(state.target_critic_params, next_obs, next_actions).min(axis=0)
    if cfg.backup_entropy:
        next_q = next_q - temperature(state) * next_log_probs
    next_qc = reduce_costs(state.cost_critic.apply_fn(state.target_cost_critic_params, next_obs, next_actions), cfg.cost_reduce)
    threshold = cost_threshold(cfg.cost_limit, cfg.horizon, cfg.gamma)
    y = constraint_penalized_target(batch["rewards"], batch["terminals"], next_q, next_qc, threshold, cfg.gamma, cfg.reward_scale)
    return clip_to_value_bounds(y, cfg.reward_range, cfg.gamma, cfg.reward_scale) if cfg.clip_targets else y


def cost_critic_target(state: CPQState, batch, key) -> jax.Array:
    """y_c = c + gamma (1 - terminal) agg_k Qcbar_k(s',a'), a' ~ pi(.|s')."""
    cfg = state.config
    mean, log_std = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    next_actions, _ = tanh_gaussian_sample(key, mean, log_std)
    next_qc = state.cost_critic.apply_fn(state.target_cost_critic_params, batch["next_observations"], next_actions)
    y = batch["costs"] + cfg.gamma * (1.0 - batch["terminals"]) * reduce_costs(next_qc, cfg.cost_reduce)
    return clip_to_value_bounds(y, cfg.cost_range, cfg.gamma) if cfg.clip_targets else y


def critic_loss(critic_params, apply_fn, observations, actions, target) -> tuple[jax.Array, dict]:
    q = apply_fn(critic_params, observations, actions)  # [num_critics, B]
    loss = ((q - target[None]) ** 2).mean(axis=1).sum()
    return loss, {"critic_loss": loss, "q_mean": q.mean()}


def conservative_critic_loss(
    critic_params, apply_fn, observations, actions, target, samples: dict, weight, importance_sample: bool = True
) -> tuple[jax.Array, dict]:
    """sum_i [ E_D[(Q_i(s,a) - y)^2] + alpha_r E_s[logsumexp_a Q_i(s,a) - Q_i(s,a_data)] ]: the reward critic
    loss with CQL(H)'s regulariser (importance-sampled log-sum-exp over uniform, pi(.|s) and pi(.|s')
    actions, ``cql.cql_samples``), which lowers the reward value of actions the data does not take."""
    q_data = apply_fn(critic_params, observations, actions)  # [K, B]
    bellman = ((q_data - target[None]) ** 2).mean(axis=1)  # [K]
    lse = cql_logsumexp(
        q_many(apply_fn, critic_params, observations, samples["random_actions"]),
        q_many(apply_fn, critic_params, observations, samples["current_actions"]),
        q_many(apply_fn, critic_params, observations, samples["next_actions"]),
        q_data,
        samples["current_log_probs"],
        samples["next_log_probs"],
        actions.shape[-1],
        importance_sample=importance_sample,
    )
    gap = cql_gap(q_data, lse)  # [K]
    loss = bellman.sum() + weight * gap.sum()
    return loss, {"critic_loss": loss, "q_mean": q_data.mean(), "reward_bellman_loss": bellman.sum(), "reward_cql_gap": gap.mean()}


def flagged_count(num_candidates: int, quantile: float) -> int:
    """How many of n values are >= their ``quantile`` (jnp.quantile's linear interpolation, no ties):
    the value sits at sorted position q (n - 1), so every value from position ceil(q (n - 1)) on counts."""
    return num_candidates - int(math.ceil(quantile * (num_candidates - 1) - 1e-9))


def ood_actions(state: CPQState, observations, key, dataset_actions=None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The OOD set nu as (state, action) pairs: ([N, O] observations, [N, A] actions, [N] mask of those
    that count).

    Policy samples (``num_ood_actions`` per state) count as OOD when their VAE latent KL is >= the
    ``ood_quantile`` of all the samples' KLs in the batch (OSRL's adaptive version of the paper's fixed
    KL threshold) and, with ``ood_data_quantile``, >= that quantile of the dataset actions' KLs; with
    ``ood_detection="none"`` every policy sample counts. Uniform random actions, if any, always count.

    Only the candidates at or above the batch quantile can count, and there are a fixed number of them
    (``flagged_count``), so only those are returned (``jax.lax.top_k`` by KL): the cost critic is then
    evaluated on a quarter of the candidates instead of all of them (and differentiated through them),
    which is the same loss and gradient, since the others enter with mask 0, at 1.6x the updates/s of
    CPQ's preset on a 2-core CPU (benchmarks/bench_cpq_ood_set.py, docs/benchmarks.md). (Were several
    KLs tied exactly at the quantile, top_k would keep only as many as fit; with continuous KLs that has
    probability 0.)"""
    cfg = state.config
    policy_key, random_key = jax.random.split(key)
    actions, _ = sample_actions(state.actor, observations, policy_key, cfg.num_ood_actions)  # [B, M, A]
    b, m, a = actions.shape
    obs = jnp.broadcast_to(observations[:, None, :], (b, m, observations.shape[-1])).reshape(b * m, -1)
    actions = actions.reshape(b * m, a)
    if cfg.ood_detection == "vae":
        kl = vae_kl(state.vae.params, state.vae.apply_fn, obs, actions)  # [B * M]
        kl_top, index = jax.lax.top_k(kl, flagged_count(b * m, cfg.ood_quantile))
        obs, actions = obs[index], actions[index]
        flagged = kl_top >= jnp.quantile(kl, cfg.ood_quantile)
        if cfg.ood_data_quantile is not None:
            kl_data = vae_kl(state.vae.params, state.vae.apply_fn, observations, dataset_actions)
            flagged = flagged & (kl_top >= jnp.quantile(kl_data, cfg.ood_data_quantile))
        mask = flagged.astype(jnp.float32)
    else:
        mask = jnp.ones((b * m,), jnp.float32)
    if cfg.num_random_ood_actions > 0:
        r = cfg.num_random_ood_actions
        obs = jnp.concatenate([obs, jnp.repeat(observations, r, axis=0)])
        actions = jnp.concatenate([actions, jax.random.uniform(random_key, (b * r, a), minval=-1.0, maxval=1.0)])
        mask = jnp.concatenate([mask, jnp.ones((b * r,), jnp.float32)])
    return obs, jax.lax.stop_gradient(actions), jax.lax.stop_gradient(mask)


def cost_critic_loss(
    cost_params, apply_fn, batch, target_qc, ood_observations, ood_actions, ood_mask, ood_weight, ood_cap=None
) -> tuple[jax.Array, dict]:
    """sum_k [ E_D[(Qc_k(s,a) - y_c)^2] - w E_nu[Qc_k(s,a)] ]  (``ood_cap`` c given: E_nu[min(Qc_k, c)]).

    nu is given as pairs: ``ood_observations`` [N, O], ``ood_actions`` [N, A], ``ood_mask`` [N] (1 where the
    pair counts). The OOD actions are data (no gradient flows into the policy that proposed them) but the
    online cost critic is evaluated on them, so the second term raises Qc there; with a cap only where it
    is still below c. Returns the per-critic E_nu[Qc] (uncapped) in the info (``ood_qc``, [K]) for the
    dual update of w.
    """
    obs = batch["observations"]
    qc = apply_fn(cost_params, obs, batch["actions"])  # [K, B]
    bellman = ((qc - target_qc[None]) ** 2).mean(axis=1)  # [K]
    qc_ood = apply_fn(cost_params, ood_observations, ood_actions)  # [K, N]
    n_ood = jnp.maximum(ood_mask.sum(), 1.0)
    ood_qc = (qc_ood * ood_mask[None]).sum(axis=1) / n_ood  # [K]
    pushed = ood_qc if ood_cap is None else (jnp.minimum(qc_ood, ood_cap) * ood_mask[None]).sum(axis=1) / n_ood
    loss = bellman.sum() - ood_weight * pushed.sum()
    return loss, {
        "cost_critic_loss": loss,
        "cost_bellman_loss": bellman.sum(),
        "qc_mean": qc.mean(),
        "ood_qc": ood_qc,
        "ood_count": ood_mask.sum(),
    }


def cpq_actor_loss(actor_params, state: CPQState, batch, key) -> tuple[jax.Array, dict]:
    """E[alpha log pi(a|s) - 1[agg Qc(s,a) <= l] min_j Q_j(s,a)], a ~ pi re-parameterised, online critics."""
    cfg = state.config
    mean, log_std = state.actor.apply_fn(actor_params, batch["observations"])
    actions, log_probs = tanh_gaussian_sample(key, mean, log_std)
    q = state.critic.apply_fn(state.critic.params, batch["observations"], actions).min(axis=0)
    qc = reduce_costs(state.cost_critic.apply_fn(state.cost_critic.params, batch["observations"], actions), cfg.cost_reduce)
    threshold = cost_threshold(cfg.cost_limit, cfg.horizon, cfg.gamma)
    safe = jax.lax.stop_gradient((qc <= threshold).astype(q.dtype))
    loss = (temperature(state) * log_probs - safe * q).mean()
    return loss, {
        "actor_loss": loss,
        "entropy": -log_probs.mean(),
        "actor_qc": qc.mean(),
        "actor_safe_fraction": safe.mean(),
        "log_probs": log_probs,
    }


# ---------------------------------------------------------------- update


def ood_target(cfg: CPQConfig) -> float:
    """scale * l: the cost value an OOD action should have (the dual's target; the hinge's cap)."""
    return cfg.ood_threshold_scale * cost_threshold(cfg.cost_limit, cfg.horizon, cfg.gamma)


def update_ood_weight(state: CPQState, ood_qc: jax.Array, any_ood: jax.Array) -> CPQState:
    """log w <- clip(log w + eta w (scale * l - E_nu[agg Qc]), lo, hi): w grows while OOD cost values sit
    below the target (OSRL's update, a gradient step on log w of w (target - E_nu[Qc])). A batch with
    no OOD action carries no evidence and leaves w alone."""
    cfg = state.config
    if cfg.ood_weight_mode == "fixed":
        return state
    target = ood_target(cfg)
    agg = ood_qc.max() if cfg.cost_reduce == "max" else ood_qc.mean()
    log_w = state.log_ood_weight + cfg.ood_weight_lr * jnp.exp(state.log_ood_weight) * (target - agg)
    log_w = jnp.where(any_ood, jnp.clip(log_w, cfg.log_ood_weight_min, cfg.log_ood_weight_max), state.log_ood_weight)
    return state.replace(log_ood_weight=log_w)


def update(state: CPQState, batch: dict, key: jax.Array) -> tuple[CPQState, dict]:
    """One CPQ step: VAE, reward critics, cost critics (+ the OOD weight), actor, temperature."""
    cfg = state.config
    vae_key, reward_key, cost_key, ood_key, actor_key = jax.random.split(key, 5)
    vae, vae_info = vae_update(state.vae, batch, vae_key, cfg.vae_kl_weight)
    state = state.replace(vae=vae)

    target_q = jax.lax.stop_gradient(reward_critic_target(state, batch, reward_key))
    if cfg.reward_cql_alpha > 0:
        # its own stream, folded from the target's key, so that CPQ without the option draws what it always drew
        samples = cql_samples(
            state.actor, batch, tuple(jax.random.split(jax.random.fold_in(reward_key, 1), 3)), cfg.reward_cql_n_actions
        )
        grads, critic_info = jax.grad(conservative_critic_loss, has_aux=True)(
            state.critic.params, state.critic.apply_fn, batch["observations"], batch["actions"], target_q, samples,
            cfg.reward_cql_alpha, cfg.reward_cql_importance_sample,
        )
    else:
        grads, critic_info = jax.grad(critic_loss, has_aux=True)(
            state.critic.params, state.critic.apply_fn, batch["observations"], batch["actions"], target_q
        )
    critic = state.critic.apply_gradients(grads=grads)

    target_qc = jax.lax.stop_gradient(cost_critic_target(state, batch, cost_key))
    ood_obs, actions, mask = ood_actions(state, batch["observations"], ood_key, batch["actions"])
    ood_weight = jnp.exp(state.log_ood_weight)
    cap = ood_target(cfg) if cfg.ood_penalty == "hinge" else None
    grads, cost_info = jax.grad(cost_critic_loss, has_aux=True)(
        state.cost_critic.params, state.cost_critic.apply_fn, batch, target_qc, ood_obs, actions, mask, ood_weight, cap
    )
    cost_critic = state.cost_critic.apply_gradients(grads=grads)
    state = state.replace(
        critic=critic,
        target_critic_params=polyak_update(state.target_critic_params, critic.params, cfg.tau),
        cost_critic=cost_critic,
        target_cost_critic_params=polyak_update(state.target_cost_critic_params, cost_critic.params, cfg.tau),
    )
    ood_qc = cost_info.pop("ood_qc")
    # the fraction of all candidates (policy samples and random actions) that count as OOD
    num_candidates = batch["observations"].shape[0] * (cfg.num_ood_actions + cfg.num_random_ood_actions)
    cost_info["ood_fraction"] = cost_info.pop("ood_count") / num_candidates
    state = update_ood_weight(state, ood_qc, mask.sum() > 0)

    state, actor_info = sac.update_actor(state, batch, actor_key, loss_fn=cpq_actor_loss)
    log_probs = actor_info.pop("log_probs")
    temp_info = {"temperature": temperature(state)}
    if cfg.auto_temperature:
        state, temp_info = sac.update_temperature(state, log_probs, batch["actions"].shape[-1])
    return state, {
        **vae_info,
        **critic_info,
        **cost_info,
        **actor_info,
        **temp_info,
        "ood_qc": ood_qc.mean(),
        "ood_weight": jnp.exp(state.log_ood_weight),
    }
