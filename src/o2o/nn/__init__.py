"""Neural networks: MLP, critic ensembles, actors, Polyak averaging."""

from o2o.nn.vae import VAE, vae_loss, vae_sample
from o2o.nn.networks import (
    MLP,
    Critic,
    CriticEnsemble,
    DeterministicActor,
    TanhGaussianActor,
    ValueNet,
    polyak_update,
    shared_module,
    tanh_gaussian_log_prob,
    tanh_gaussian_mode,
    tanh_gaussian_sample,
)

__all__ = [
    "MLP",
    "Critic",
    "CriticEnsemble",
    "DeterministicActor",
    "TanhGaussianActor",
    "ValueNet",
    "VAE",
    "vae_loss",
    "vae_sample",
    "polyak_update",
    "shared_module",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_mode",
    "tanh_gaussian_sample",
]

