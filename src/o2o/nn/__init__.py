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
    "tanh_gaussian_log_prob",
    "tanh_gaussian_mode",
    "tanh_gaussian_sample",
]


from functools import lru_cache as _lru_cache


@_lru_cache(maxsize=None)
def shared_module(cls, *args):
    """One module instance per (class, arguments) per process. A module's ``apply`` is a static part of
    every TrainState and jit compares static parts by identity: a fresh instance per agent would
    recompile the update for every new agent (every run of a sweep, every test). Lists are not
    hashable: pass tuples."""
    return cls(*args)
