"""BEAR-Lag: BEAR (Kumar, Fu, Tucker & Levine, 2019, "Stabilizing Off-Policy Q-Learning via Bootstrapping Error
Reduction") with a cost critic and a PID-controlled Lagrange multiplier on it, as OSRL's BEARL (Liu et al. 2023).

Behaviour model: a VAE of p(a|s) trained on the data (``o2o.nn.vae``; ELBO with KL weight 0.5).

Critics, with BEAR's soft clipped double Q and a max over N actions from the *target* actor at s':

    y   = r_scale r + gamma (1 - terminal) max_{a'_1..N ~ pibar(.|s')} [ lam min_j Qbar_j(s',a') + (1 - lam) max_j Qbar_j(s',a') ]
    y_c = c       + gamma (1 - terminal) max_{a'_1..N ~ pibar(.|s')} [ lam max_k Qcbar_k(s',a') + (1 - lam) min_k Qcbar_k(s',a') ]
    L(phi_j) = E[(Q_j(s,a) - y)^2],   L(psi_k) = E[(Qc_k(s,a) - y_c)^2]

(the cost mix is the mirror image of the reward's: weighted towards the pessimistic max, never the min).

Actor, with BEAR's support constraint as an MMD between n actor samples and n VAE samples (both
pre-tanh, as in BEAR's code) under a learned multiplier w, plus the cost penalty:

    L(theta) = E_s[ -min_j Q_j(s, a_1) + w (MMD(s) - eps) ] + lambda E_s[ agg_k Qc_k(s, a_1) - l ],   a_1..n ~ pi(.|s)
    MMD^2(s)  = E k(x,x') + E k(y,y') - 2 E k(x,y),   x ~ pi(.|s), y ~ VAE(.|s)   (pre-tanh)
    gaussian: k(x,y) = exp(-||x - y||^2 / (2 sigma)),   laplacian: k(x,y) = exp(-||x - y||_1 / (2 sigma))
              (sigma enters unsquared, as in BEAR's and OSRL's code)
    w:        log w <- clip(log w + eta w (E[MMD] - eps), -5, 5)     (dual ascent, OSRL's update)
    l = kappa (1 - gamma^T) / ((1 - gamma) T)                          (``cpq.cost_threshold``)

The multiplier lambda comes from OSRL's PID Lagrangian, fed each step with the batch mean of
agg Qc(s, a_1) - l (a critic estimate, not measured episode costs):

    e_t = mean(agg Qc - l);   I_t = max(0, I_{t-1} + e_t);   D_t = max(0, e_t - e_{t-1})
    lambda_t = max(0, K_p max(0, e_t) + K_i I_t + K_d D_t)

The controller's state (I, e_{t-1}) lives in the agent state so a K-step scan updates it every step.

Defaults are OSRL's BEARL config (examples/configs/bearl_configs.py): 2x256 actor and critics, twin
reward and twin cost critics, VAE 2x400 (KL weight 0.5, latent 2|A|), N = 10 target actions,
lam = 0.75, gaussian kernel with sigma 50, n = 10 MMD samples, eps = 0.05, log w from 0 with step 1e-3,
PID (K_p, K_i, K_d) = (0.1, 0.003, 0.001), lr 1e-3 everywhere, batch 512, reward scale 0.1, no policy
warm-up (start_update_policy_step 0). BEAR's paper uses a laplacian kernel (sigma 20 hopper/cheetah, 50
walker/ant): ``mmd_kernel``/``mmd_sigma``. o2o's cost limit default is 20 (Marvel/DSRL); ``horizon``
must be the task's time limit.

Where o2o departs from OSRL's code:
- OSRL steps its PID controller twice per update (the actor loss is evaluated twice); here once.
- OSRL reduces the cost critics with min in the actor and mixes the cost target towards the min
  (optimistic for a cost); here max (or mean) and the mirrored mix above.
- OSRL bootstraps the cost target through terminals and treats timeouts as terminal; here only
  ``terminals`` stop bootstrapping.
- Option (off by default, o2o's): ``clip_targets`` bounds y and y_c by the range a discounted sum of the
  dataset's per-step rewards / costs can take (``cpq.value_bounds``; with 0/1 costs and gamma 0.99,
  [0, 100]). At OSRL's 100k steps on the generated BallCircle data the cost critic of every seed left
  that range downwards (mean Qc on the data below 0 from 30k-70k steps on, down to -1,850), the PID multiplier fell to ~0 and
  the policy went unsafe (docs/results/offline.md).
- OSRL's critic ensembles are two banks of ``num_q`` networks each; here one ensemble of
  ``num_critics`` networks, soft-clipped over all of them (identical for the default of two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents import sac
from o2o.agents.common import adam
from o2o.agents.cpq import clip_to_value_bounds, cost_threshold
from o2o.agents.cql import q_many
from o2o.agents.sac_lag import reduce_costs
from o2o.errors import ConfigError
from o2o.nn import CriticEnsemble, TanhGaussianActor, polyak_update, shared_module
from o2o.nn.vae import vae_sample, vae_train_state, vae_update

act = sac.act
actor_actions = sac.actor_actions
POLICY = sac.POLICY


@dataclass(frozen=True)
class BEARLagConfig:
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of actor and critics"})
    num_critics: int = field(default=2, metadata={"help": "reward critics (soft clipped double Q over them)"})
    num_cost_critics: int = field(default=2, metadata={"help": "cost critics"})
    cost_reduce: Literal["max", "mean"] = field(default="max", metadata={"help": "cost ensemble reduction in the actor (never min)"})
    critic_layer_norm: bool = field(default=False, metadata={"help": "LayerNorm in the critics"})
    actor_lr: float = field(default=1e-3, metadata={"help": "actor Adam learning rate (OSRL: 1e-3)"})
    critic_lr: float = field(default=1e-3, metadata={"help": "reward critic Adam learning rate (OSRL: 1e-3)"})
    cost_critic_lr: float = field(default=1e-3, metadata={"help": "cost critic Adam learning rate (OSRL: 1e-3)"})
    vae_lr: float = field(default=1e-3, metadata={"help": "VAE Adam learning rate (OSRL: 1e-3)"})
    vae_hidden_dims: tuple[int, ...] = field(default=(400, 400), metadata={"help": "hidden widths of the VAE"})
    vae_latent_dim: int | None = field(default=None, metadata={"help": "VAE latent width; None = 2 * action_dim"})
    vae_kl_weight: float = field(default=0.5, metadata={"help": "KL weight in the VAE's ELBO (OSRL's beta)"})
    gamma: float = field(default=0.99, metadata={"help": "discount (reward and cost)"})
    tau: float = field(default=0.005, metadata={"help": "Polyak rate of the target actor and critics"})
    reward_scale: float = field(default=0.1, metadata={"help": "reward multiplier in the critic target (OSRL: 0.1)"})
    batch_size: int = field(default=512, metadata={"help": "minibatch size (OSRL: 512)"})
    cost_limit: float = field(default=20.0, metadata={"help": "episode cost limit kappa (undiscounted)"})
    horizon: int = field(default=300, metadata={"help": "episode length T used to turn kappa into the threshold l"})
    num_target_actions: int = field(default=10, metadata={"help": "target-actor samples at s' (max over them)"})
    soft_clip_lambda: float = field(default=0.75, metadata={"help": "lam of the soft clipped double Q"})
    mmd_kernel: Literal["gaussian", "laplacian"] = field(default="gaussian", metadata={"help": "MMD kernel"})
    mmd_sigma: float = field(default=50.0, metadata={"help": "MMD kernel width (BEAR: laplacian 20 hopper/cheetah, 50 walker/ant)"})
    mmd_num_samples: int = field(default=10, metadata={"help": "actor and VAE samples per state in the MMD"})
    mmd_threshold: float = field(default=0.05, metadata={"help": "MMD constraint level eps"})
    init_log_mmd_weight: float = field(default=0.0, metadata={"help": "initial log w of the MMD constraint"})
    mmd_weight_lr: float = field(default=1e-3, metadata={"help": "step of the dual ascent on log w (OSRL alpha_lr)"})
    log_mmd_weight_min: float = field(default=-5.0, metadata={"help": "lower clip of log w"})
    log_mmd_weight_max: float = field(default=5.0, metadata={"help": "upper clip of log w"})
    policy_warmup_steps: int = field(
        default=0, metadata={"help": "first steps with the MMD (and cost) terms only, no Q (OSRL start_update_policy_step)"}
    )
    pid_kp: float = field(default=0.1, metadata={"help": "PID proportional gain on the cost critic error"})
    pid_ki: float = field(default=0.003, metadata={"help": "PID integral gain"})
    pid_kd: float = field(default=0.001, metadata={"help": "PID derivative gain"})
    log_std_min: float = field(default=-5.0, metadata={"help": "lower bound of the actor's log std"})
    log_std_max: float = field(default=2.0, metadata={"help": "upper bound of the actor's log std"})
    clip_targets: bool = field(
        default=False,
        metadata={"help": "clip the reward and cost critic targets to the values a discounted sum of the dataset's "
                  "per-step rewards / costs can take (reward_range, cost_range; o2o, not in OSRL or the paper)"},
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
        if not 0.0 <= self.soft_clip_lambda <= 1.0:
            raise ConfigError(f"soft_clip_lambda must be in [0, 1], got {self.soft_clip_lambda}")
        if self.mmd_sigma <= 0:
            raise ConfigError(f"mmd_sigma must be > 0, got {self.mmd_sigma}")


@flax.struct.dataclass
class PIDState:
    integral: jax.Array  # scalar, >= 0 (anti-windup)
    prev_error: jax.Array  # scalar


@flax.struct.dataclass
class BEARLagState:
    actor: TrainState
    target_actor_params: Any
    critic: TrainState
    target_critic_params: Any
    cost_critic: TrainState
    target_cost_critic_params: Any
    vae: TrainState
    log_mmd_weight: jax.Array  # scalar log w
    pid: PIDState
    step: jax.Array  # int32 gradient steps taken (policy warm-up)
    config: BEARLagConfig = flax.struct.field(pytree_node=False)


def copy(tree):
    """Target networks start as copies in distinct buffers (the K-step update donates its input state)."""
    return jax.tree_util.tree_map(jnp.copy, tree)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: BEARLagConfig) -> BEARLagState:
    actor_key, critic_key, cost_key, vae_key = jax.random.split(key, 4)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    act = jnp.zeros((1, act_dim), jnp.float32)
    actor_def = shared_module(TanhGaussianActor, tuple(cfg.hidden_dims), act_dim, cfg.log_std_min, cfg.log_std_max)
    actor_params = actor_def.init(actor_key, obs)
    critic_def = shared_module(CriticEnsemble, tuple(cfg.hidden_dims), cfg.num_critics, cfg.critic_layer_norm)
    critic_params = critic_def.init(critic_key, obs, act)
    cost_def = shared_module(CriticEnsemble, tuple(cfg.hidden_dims), cfg.num_cost_critics, cfg.critic_layer_norm)
    cost_params = cost_def.init(cost_key, obs, act)
    return BEARLagState(
        actor=TrainState.create(apply_fn=actor_def.apply, params=actor_params, tx=adam(cfg.actor_lr)),
        target_actor_params=copy(actor_params),
        critic=TrainState.create(apply_fn=critic_def.apply, params=critic_params, tx=adam(cfg.critic_lr)),
        target_critic_params=copy(critic_params),
        cost_critic=TrainState.create(apply_fn=cost_def.apply, params=cost_params, tx=adam(cfg.cost_critic_lr)),
        target_cost_critic_params=copy(cost_params),
        vae=vae_train_state(vae_key, obs_dim, act_dim, cfg.vae_hidden_dims, cfg.vae_latent_dim, adam(cfg.vae_lr)),
        log_mmd_weight=jnp.asarray(cfg.init_log_mmd_weight, jnp.float32),
        pid=pid_init(),
        step=jnp.zeros((), jnp.int32),
        config=cfg,
    )


# ---------------------------------------------------------------- PID Lagrangian (OSRL's LagrangianPIDController)


def pid_init() -> PIDState:
    return PIDState(integral=jnp.zeros((), jnp.float32), prev_error=jnp.zeros((), jnp.float32))


def pid_step(pid: PIDState, error: jax.Array, kp: float, ki: float, kd: float) -> tuple[PIDState, jax.Array]:
    """lambda = max(0, K_p max(0, e) + K_i I + K_d max(0, e - e_prev)),  I <- max(0, I + e)."""
    integral = jnp.maximum(pid.integral + error, 0.0)
    derivative = jnp.maximum(error - pid.prev_error, 0.0)
    lagrange = jnp.maximum(kp * jnp.maximum(error, 0.0) + ki * integral + kd * derivative, 0.0)
    return PIDState(integral=integral, prev_error=error), lagrange


# ---------------------------------------------------------------- losses (pure functions)


def mmd(samples_x: jax.Array, samples_y: jax.Array, kernel: str = "gaussian", sigma: float = 20.0) -> jax.Array:
    """sqrt(MMD^2 + 1e-6) between two sample sets per state: [B, n, A] x [B, m, A] -> [B] (BEAR's estimator,
    V-statistics including the diagonal; ~1e-3 for identical sets). MMD^2 is clamped at 0 before the
    square root: with a wide kernel every k is close to 1 and float32 cancellation can take the estimate
    below -1e-6 (a NaN in the released form)."""

    def k(a, b):
        diff = a[:, :, None, :] - b[:, None, :, :]  # [B, n, m, A]
        dist = jnp.abs(diff).sum(-1) if kernel == "laplacian" else (diff**2).sum(-1)
        return jnp.exp(-dist / (2.0 * sigma)).mean(axis=(1, 2))

    mmd2 = k(samples_x, samples_x) + k(samples_y, samples_y) - 2.0 * k(samples_x, samples_y)
    return jnp.sqrt(jnp.maximum(mmd2, 0.0) + 1e-6)


def soft_clipped(q: jax.Array, lam: float, pessimistic_is_max: bool = False) -> jax.Array:
    """Mix over the ensemble axis 0: lam * pessimistic + (1 - lam) * optimistic, where the pessimistic
    member is the min for rewards and the max for costs."""
    lo, hi = q.min(axis=0), q.max(axis=0)
    return lam * hi + (1.0 - lam) * lo if pessimistic_is_max else lam * lo + (1.0 - lam) * hi


def target_action_samples(state: BEARLagState, next_observations, key) -> jax.Array:
    """N actions per next state from the target actor: [B, N, A]."""
    cfg = state.config
    mean, log_std = state.actor.apply_fn(state.target_actor_params, next_observations)
    shape = (next_observations.shape[0], cfg.num_target_actions, mean.shape[-1])
    u = mean[:, None] + jnp.exp(log_std[:, None]) * jax.random.normal(key, shape)
    return jnp.tanh(u)


def critic_targets(state: BEARLagState, batch, key) -> tuple[jax.Array, jax.Array]:
    """(y, y_c): soft clipped ensembles, max over the N target-actor samples, bootstrap cut at terminals."""
    cfg = state.config
    next_obs = batch["next_observations"]
    next_actions = target_action_samples(state, next_obs, key)
    q = q_many(state.critic.apply_fn, state.target_critic_params, next_obs, next_actions)  # [K, B, N]
    qc = q_many(state.cost_critic.apply_fn, state.target_cost_critic_params, next_obs, next_actions)
    next_q = soft_clipped(q, cfg.soft_clip_lambda).max(axis=-1)
    next_qc = soft_clipped(qc, cfg.soft_clip_lambda, pessimistic_is_max=True).max(axis=-1)
    not_done = 1.0 - batch["terminals"]
    y = cfg.reward_scale * batch["rewards"] + cfg.gamma * not_done * next_q
    y_c = batch["costs"] + cfg.gamma * not_done * next_qc
    if cfg.clip_targets:
        y = clip_to_value_bounds(y, cfg.reward_range, cfg.gamma, cfg.reward_scale)
        y_c = clip_to_value_bounds(y_c, cfg.cost_range, cfg.gamma)
    return y, y_c


def critic_loss(params, apply_fn, observations, actions, target) -> tuple[jax.Array, jax.Array]:
    q = apply_fn(params, observations, actions)  # [num_critics, B]
    return ((q - target[None]) ** 2).mean(axis=1).sum(), q.mean()


def bear_lag_actor_loss(actor_params, state: BEARLagState, batch, key, behaviour_raw_actions) -> tuple[jax.Array, dict]:
    """-min Q(s, a_1) [after warm-up] + w (MMD - eps) + lambda (agg Qc(s, a_1) - l); lambda from the PID
    controller stepped on this batch (no gradient through it). Returns the new PID state in the info."""
    cfg = state.config
    obs = batch["observations"]
    mean, log_std = state.actor.apply_fn(actor_params, obs)
    shape = (obs.shape[0], cfg.mmd_num_samples, mean.shape[-1])
    pre_tanh = mean[:, None] + jnp.exp(log_std[:, None]) * jax.random.normal(key, shape)
    first_action = jnp.tanh(pre_tanh[:, 0])
    mmd_values = mmd(behaviour_raw_actions, pre_tanh, cfg.mmd_kernel, cfg.mmd_sigma)  # [B]
    q = state.critic.apply_fn(state.critic.params, obs, first_action).min(axis=0)
    qc = reduce_costs(state.cost_critic.apply_fn(state.cost_critic.params, obs, first_action), cfg.cost_reduce)
    threshold = cost_threshold(cfg.cost_limit, cfg.horizon, cfg.gamma)
    pid, lagrange = pid_step(state.pid, jax.lax.stop_gradient(qc.mean() - threshold), cfg.pid_kp, cfg.pid_ki, cfg.pid_kd)
    mmd_weight = jnp.exp(state.log_mmd_weight)
    use_q = (state.step >= cfg.policy_warmup_steps).astype(q.dtype)
    cost_penalty = lagrange * (qc - threshold).mean()
    loss = (-use_q * q + mmd_weight * (mmd_values - cfg.mmd_threshold)).mean() + cost_penalty
    return loss, {
        "actor_loss": loss,
        "mmd": mmd_values.mean(),
        "actor_q": q.mean(),
        "actor_qc": qc.mean(),
        "cost_penalty": cost_penalty,
        "lagrange": lagrange,
        "pid": pid,
    }


# ---------------------------------------------------------------- update


def update(state: BEARLagState, batch: dict, key: jax.Array) -> tuple[BEARLagState, dict]:
    """One BEAR-Lag step: VAE, reward and cost critics, actor (+ PID, + MMD weight), targets."""
    cfg = state.config
    vae_key, target_key, behaviour_key, actor_key = jax.random.split(key, 4)
    vae, vae_info = vae_update(state.vae, batch, vae_key, cfg.vae_kl_weight)
    state = state.replace(vae=vae)

    y, y_c = jax.lax.stop_gradient(critic_targets(state, batch, target_key))
    obs, actions = batch["observations"], batch["actions"]
    (critic_l, q_mean), grads = jax.value_and_grad(critic_loss, has_aux=True)(
        state.critic.params, state.critic.apply_fn, obs, actions, y
    )
    critic = state.critic.apply_gradients(grads=grads)
    (cost_l, qc_mean), grads = jax.value_and_grad(critic_loss, has_aux=True)(
        state.cost_critic.params, state.cost_critic.apply_fn, obs, actions, y_c
    )
    cost_critic = state.cost_critic.apply_gradients(grads=grads)
    state = state.replace(critic=critic, cost_critic=cost_critic)

    _, behaviour_raw = vae_sample(state.vae.params, state.vae.apply_fn, obs, behaviour_key, cfg.mmd_num_samples)
    grads, actor_info = jax.grad(bear_lag_actor_loss, has_aux=True)(
        state.actor.params, state, batch, actor_key, jax.lax.stop_gradient(behaviour_raw)
    )
    actor = state.actor.apply_gradients(grads=grads)
    pid = actor_info.pop("pid")
    log_w = state.log_mmd_weight + cfg.mmd_weight_lr * jnp.exp(state.log_mmd_weight) * (actor_info["mmd"] - cfg.mmd_threshold)

    state = state.replace(
        actor=actor,
        pid=pid,
        log_mmd_weight=jnp.clip(log_w, cfg.log_mmd_weight_min, cfg.log_mmd_weight_max),
        target_actor_params=polyak_update(state.target_actor_params, actor.params, cfg.tau),
        target_critic_params=polyak_update(state.target_critic_params, critic.params, cfg.tau),
        target_cost_critic_params=polyak_update(state.target_cost_critic_params, cost_critic.params, cfg.tau),
        step=state.step + 1,
    )
    return state, {
        **vae_info,
        **actor_info,
        "critic_loss": critic_l,
        "q_mean": q_mean,
        "cost_critic_loss": cost_l,
        "qc_mean": qc_mean,
        "mmd_weight": jnp.exp(state.log_mmd_weight),
        "pid_integral": pid.integral,
    }
