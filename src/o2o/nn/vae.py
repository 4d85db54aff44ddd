"""Conditional VAE of the behaviour policy, p(a|s), as in BCQ (Fujimoto et al. 2019) and BEAR (Kumar et al. 2019).

    encoder:  q(z|s,a) = N(mu(s,a), sigma(s,a)^2),   log sigma clipped to [-4, 15]
    decoder:  a = tanh(D(s, z))                       (actions live in [-1, 1])
    prior:    p(z) = N(0, I); sampling from the model draws z ~ N(0, I) clipped to [-0.5, 0.5]
    ELBO:     L = E[||D(s,z) - a||^2] + kl_weight * KL(q(z|s,a) || N(0, I)),   z ~ q(z|s,a)

``kl_weight = 0.5`` with the KL *averaged* over latent dimensions and the reconstruction error averaged
over action dimensions, as in BCQ's, BEAR's and OSRL's code. The latent width defaults to twice the
action width (BCQ). The clipped prior draw keeps decoded actions in the well-covered middle of the
latent space (BCQ's trick); BEAR-Lag matches its actor to these samples, CPQ uses the encoder's KL
to flag out-of-distribution actions.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.nn.networks import MLP

LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0


class VAE(nn.Module):
    """Encoder q(z|s,a) and decoder D(s,z). ``__call__(s, a, noise)`` reconstructs ``a`` with the
    re-parameterised z = mu + sigma * noise (``noise`` ~ N(0, I), shape [..., latent_dim])."""

    hidden_dims: Sequence[int]
    action_dim: int
    latent_dim: int

    def setup(self):
        self.encoder = MLP(self.hidden_dims, None)
        self.latent_mean = nn.Dense(self.latent_dim)
        self.latent_log_std = nn.Dense(self.latent_dim)
        self.decoder = MLP(self.hidden_dims, self.action_dim)

    def encode(self, observations: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.encoder(jnp.concatenate([observations, actions], axis=-1))
        log_std = jnp.clip(self.latent_log_std(h), LOG_STD_MIN, LOG_STD_MAX)
        return self.latent_mean(h), log_std

    def decode_pre_tanh(self, observations: jax.Array, z: jax.Array) -> jax.Array:
        return self.decoder(jnp.concatenate([observations, z], axis=-1))

    def decode(self, observations: jax.Array, z: jax.Array) -> jax.Array:
        return jnp.tanh(self.decode_pre_tanh(observations, z))

    def __call__(self, observations: jax.Array, actions: jax.Array, noise: jax.Array):
        mean, log_std = self.encode(observations, actions)
        z = mean + jnp.exp(log_std) * noise
        return self.decode(observations, z), mean, log_std


def gaussian_kl(mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """KL(N(mean, std^2) || N(0, I)) averaged (not summed) over the last axis, as BCQ/BEAR/OSRL do."""
    return (-0.5 * (1.0 + 2.0 * log_std - mean**2 - jnp.exp(2.0 * log_std))).mean(axis=-1)


def latent_dim_of(params) -> int:
    """The latent width of a VAE's parameters (so the functions below need only ``apply_fn``)."""
    return int(params["params"]["latent_mean"]["bias"].shape[-1])


def vae_loss(params, apply_fn, observations, actions, key, kl_weight: float) -> tuple[jax.Array, dict]:
    """Negative ELBO: MSE reconstruction + kl_weight * KL (see the module docstring)."""
    noise = jax.random.normal(key, actions.shape[:-1] + (latent_dim_of(params),))
    reconstruction, mean, log_std = apply_fn(params, observations, actions, noise)
    recon_loss = ((reconstruction - actions) ** 2).mean()
    kl = gaussian_kl(mean, log_std).mean()
    loss = recon_loss + kl_weight * kl
    return loss, {"vae_loss": loss, "vae_recon_loss": recon_loss, "vae_kl": kl}


def vae_kl(params, apply_fn, observations, actions) -> jax.Array:
    """Per-sample KL(q(z|s,a) || p(z)): large for actions the behaviour data does not explain (CPQ's
    out-of-distribution detector)."""
    mean, log_std = apply_fn(params, observations, actions, method=VAE.encode)
    return gaussian_kl(mean, log_std)


def vae_sample(
    params, apply_fn, observations: jax.Array, key: jax.Array, num_samples: int, latent_clip: float = 0.5
) -> tuple[jax.Array, jax.Array]:
    """``num_samples`` behaviour-like actions per state: z ~ N(0, I) clipped to +-latent_clip.
    Returns (actions, pre_tanh_actions), each [B, num_samples, act_dim]."""
    batch = observations.shape[0]
    z = jax.random.normal(key, (batch, num_samples, latent_dim_of(params)))
    z = jnp.clip(z, -latent_clip, latent_clip)
    obs = jnp.broadcast_to(observations[:, None, :], (batch, num_samples, observations.shape[-1]))
    pre_tanh = apply_fn(params, obs, z, method=VAE.decode_pre_tanh)
    return jnp.tanh(pre_tanh), pre_tanh


def vae_train_state(
    key: jax.Array, obs_dim: int, act_dim: int, hidden_dims: Sequence[int], latent_dim: int | None, tx
) -> TrainState:
    """TrainState of a fresh VAE; ``latent_dim=None`` means 2 * act_dim (BCQ)."""
    from o2o.nn.networks import shared_module

    vae = shared_module(VAE, tuple(hidden_dims), act_dim, latent_dim or 2 * act_dim)
    params = vae.init(key, jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)), jnp.zeros((1, vae.latent_dim)))
    return TrainState.create(apply_fn=vae.apply, params=params, tx=tx)


def vae_update(vae_state: TrainState, batch: dict, key: jax.Array, kl_weight: float) -> tuple[TrainState, dict]:
    """One optimiser step on the negative ELBO of the batch's (s, a)."""
    grads, info = jax.grad(vae_loss, has_aux=True)(
        vae_state.params, vae_state.apply_fn, batch["observations"], batch["actions"], key, kl_weight
    )
    return vae_state.apply_gradients(grads=grads), info
