"""Networks shared by every agent: MLP, critic ensembles (vmap), tanh-Gaussian, Gaussian and deterministic
actors, and the three policy classes' modes and log-densities (``policy_mode``, ``policy_log_prob``).

Actors work in the normalised action box [-1, 1]^d; environments are wrapped so that this box maps to
their own bounds (see ``o2o.envs.make_env``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# He-style init as in jaxrl/RLPD (orthogonal with sqrt(2)); the last layers are scaled down.
default_init = nn.initializers.orthogonal


class MLP(nn.Module):
    """Fully connected network. ``layer_norm`` follows each hidden Dense (before the activation), as in
    RLPD / OCR-CFT's critics."""

    hidden_dims: Sequence[int]
    output_dim: int | None = None
    layer_norm: bool = False
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    output_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=default_init(jnp.sqrt(2.0)))(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = self.activation(x)
        if self.output_dim is not None:
            x = nn.Dense(self.output_dim, kernel_init=default_init(self.output_scale))(x)
        return x


class Critic(nn.Module):
    """Q(s, a) -> scalar."""

    hidden_dims: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        x = jnp.concatenate([observations, actions], axis=-1)
        return MLP(self.hidden_dims, 1, self.layer_norm)(x)[..., 0]


class ValueNet(nn.Module):
    """V(s) -> scalar (IQL, PPO)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return MLP(self.hidden_dims, 1, self.layer_norm)(observations)[..., 0]


class CriticEnsemble(nn.Module):
    """``num_critics`` independent critics evaluated in one vmapped call; output [num_critics, ...]."""

    hidden_dims: Sequence[int]
    num_critics: int = 2
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            Critic,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        return ensemble(self.hidden_dims, self.layer_norm)(observations, actions)


# ----------------------------------------------------------------------------------------------
# Tanh-Gaussian policy: a = tanh(u), u ~ N(mean, std^2).
# log pi(a|s) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2), computed exactly with
# log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))   (no epsilon fudge).
# ----------------------------------------------------------------------------------------------

LOG_2 = jnp.log(2.0)


def gaussian_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    z = (u - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def log_det_tanh(u: jax.Array) -> jax.Array:
    """sum_i log(1 - tanh(u_i)^2), exact and stable for large |u|."""
    return jnp.sum(2.0 * (LOG_2 - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def tanh_gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Re-parameterised sample a = tanh(mean + std * eps) and its exact log-probability."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    log_prob = gaussian_log_prob(u, mean, log_std) - log_det_tanh(u)
    return jnp.tanh(u), log_prob


def tanh_gaussian_log_prob(
    mean: jax.Array, log_std: jax.Array, actions: jax.Array, clip: float = 1.0 - 1e-6
) -> jax.Array:
    """log pi(a|s) of given actions in (-1, 1) (e.g. dataset actions); actions are clipped away from
    +-1 so atanh stays finite."""
    a = jnp.clip(actions, -clip, clip)
    u = jnp.arctanh(a)
    return gaussian_log_prob(u, mean, log_std) - log_det_tanh(u)


def tanh_gaussian_mode(mean: jax.Array) -> jax.Array:
    return jnp.tanh(mean)


class TanhGaussianActor(nn.Module):
    """Outputs (mean, log_std) of the pre-tanh Gaussian; log_std squashed into [log_std_min, log_std_max]."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = MLP(self.hidden_dims, None, self.layer_norm)(observations)
        mean = nn.Dense(self.action_dim, kernel_init=default_init(1e-2))(x)
        log_std = nn.Dense(self.action_dim, kernel_init=default_init(1e-2))(x)
        # tanh squashing of log_std (as in SpinningUp / jaxrl): smooth, bounded, no hard clip gradient.
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


# ----------------------------------------------------------------------------------------------
# Gaussian policy with a tanh mean and a state-independent log std: a ~ N(tanh(f(s)), diag(std)^2),
# the actor of CORL's and OCR-CFT's IQL and of their PPO (CleanRL's PPO has the same state-independent
# std). The density is over the action itself (no squashing); a sample is clipped to [-1, 1] when it is
# executed, and its log-probability is that of the unclipped sample.
# ----------------------------------------------------------------------------------------------


class GaussianActor(nn.Module):
    """Outputs (mean, log_std): mean = tanh(MLP(s)) in [-1, 1], log_std a learned vector (initialised
    at ``init_log_std``) clipped to [log_std_min, log_std_max] and broadcast over the batch."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    layer_norm: bool = False
    init_log_std: float = 0.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = MLP(self.hidden_dims, None, self.layer_norm)(observations)
        mean = jnp.tanh(nn.Dense(self.action_dim, kernel_init=default_init(1e-2))(x))
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,))
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return mean, jnp.broadcast_to(log_std, mean.shape)


def gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """An unclipped sample of N(mean, std^2) (the caller clips what it executes)."""
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """H(N(mean, diag(std)^2)) = sum_i (log std_i + log(2 pi e) / 2)."""
    return jnp.sum(log_std + 0.5 * jnp.log(2.0 * jnp.pi * jnp.e), axis=-1)


# the policy classes: which actor module an agent uses, what its mode is, and the density of an action
TANH_GAUSSIAN, GAUSSIAN, DETERMINISTIC = "tanh-gaussian", "gaussian", "deterministic"


def policy_mode(kind: str, out) -> jax.Array:
    """The deterministic action in [-1, 1] of an actor's output (``out``: its ``apply`` result)."""
    if kind == TANH_GAUSSIAN:
        return tanh_gaussian_mode(out[0])
    if kind == GAUSSIAN:
        return out[0]
    return out


def policy_log_prob(kind: str, out, actions: jax.Array, clip: float = 1.0 - 1e-6) -> jax.Array:
    """log pi(a|s) of given actions in [-1, 1] under a stochastic actor's output."""
    mean, log_std = out
    if kind == TANH_GAUSSIAN:
        return tanh_gaussian_log_prob(mean, log_std, actions, clip=clip)
    if kind == GAUSSIAN:
        return gaussian_log_prob(actions, mean, log_std)
    raise ValueError(f"a {kind} actor has no density")


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s)) in [-1, 1] (TD3, TD3+BC)."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden_dims, self.action_dim, self.layer_norm, output_scale=1e-2)(observations))


def polyak_update(target_params, online_params, tau: float):
    """theta_target <- (1 - tau) theta_target + tau theta."""
    return jax.tree_util.tree_map(lambda t, o: (1.0 - tau) * t + tau * o, target_params, online_params)


@lru_cache(maxsize=None)
def shared_module(cls, *args):
    """One module instance per (class, arguments) per process. A module's ``apply`` is a static part of
    every TrainState and jit compares static parts by identity: a fresh instance per agent would
    recompile the update for every new agent (every run of a sweep, every test). Lists are not
    hashable: pass tuples."""
    return cls(*args)
