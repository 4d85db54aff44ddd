"""d3rlpy 2.6.0 offline algorithms (CQL, BEAR, IQL, TD3+BC) as speed peers of o2o's offline agents.

Every network is ``VectorEncoderFactory([256, 256])`` (actor, critics, value function, VAE encoder
and decoder), two critics, batch 256, and the knobs that change the cost of an update are set to
o2o's (see ``D3RLPY_KNOBS`` and ``benchmarks/bench_offline_update.py``). Built on a small random
``MDPDataset`` of the right shapes (the data do not affect the cost of an update). Timed:
``algo.update(batch)`` on minibatches pre-sampled with d3rlpy's own ``sample_transition_batch`` (the
update itself: d3rlpy's numpy -> torch batch conversion and the algorithm's optimiser steps), no
logging, no evaluation, as ``peers/d3rlpy_sac.py`` does for SAC.
"""

from __future__ import annotations

import numpy as np

# What each config is given on top of the shared sizes, and why (the cost-relevant knobs set to o2o's).
D3RLPY_KNOBS = {
    # o2o CQL (CORL defaults): N = 10 uniform + 10 pi(.|s) + 10 pi(.|s') actions in the log-sum-exp, fixed
    # weight (no Lagrange). d3rlpy learns its alpha by default (alpha_learning_rate 1e-4: one more backward
    # through the conservative term per update); alpha_learning_rate=0 switches that off (fixed alpha).
    "cql": dict(n_action_samples=10, alpha_learning_rate=0.0, initial_alpha=1.0, conservative_weight=10.0),
    # o2o BEAR-Lag: 10 MMD samples, 10 target samples, gaussian kernel sigma 50, VAE latent 2|A|, no
    # actor warm-up. d3rlpy's default warmup_steps=40000 would time an MMD-only actor step: 0 times the
    # full one. (n_action_samples only matters for d3rlpy's action selection, not for an update.)
    "bear": dict(n_mmd_action_samples=10, n_target_samples=10, mmd_kernel="gaussian", mmd_sigma=50.0,
                 vae_kl_weight=0.5, lam=0.75, warmup_steps=0),
    # o2o IQL (paper / CORL): expectile 0.7, beta 3, advantage weights clipped at 100.
    "iql": dict(expectile=0.7, weight_temp=3.0, max_weight=100.0),
    # o2o TD3+BC: alpha 2.5, policy delay 2, smoothing noise 0.2 clipped at 0.5.
    "td3bc": dict(alpha=2.5, update_actor_interval=2, target_smoothing_sigma=0.2, target_smoothing_clip=0.5),
}


def random_mdp_dataset(obs_dim: int, act_dim: int, n: int = 20_000, episode_length: int = 1000, seed: int = 0):
    import d3rlpy

    rng = np.random.default_rng(seed)
    terminals = np.zeros(n, np.float32)
    timeouts = np.zeros(n, np.float32)
    timeouts[episode_length - 1 :: episode_length] = 1.0
    return d3rlpy.dataset.MDPDataset(
        observations=rng.standard_normal((n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
        action_space=d3rlpy.ActionSpace.CONTINUOUS,
    )


def make_config(algo: str, hidden=(256, 256), batch_size: int = 256):
    """The d3rlpy config of ``algo`` ('cql', 'bear', 'iql', 'td3bc') at the benchmark's sizes."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory

    enc = lambda: VectorEncoderFactory(list(hidden))  # noqa: E731
    shared = dict(batch_size=batch_size, gamma=0.99, tau=0.005, n_critics=2,
                  actor_encoder_factory=enc(), critic_encoder_factory=enc())
    if algo == "cql":
        return d3rlpy.algos.CQLConfig(**shared, **D3RLPY_KNOBS["cql"])
    if algo == "bear":
        return d3rlpy.algos.BEARConfig(**shared, imitator_encoder_factory=enc(), **D3RLPY_KNOBS["bear"])
    if algo == "iql":
        return d3rlpy.algos.IQLConfig(**shared, value_encoder_factory=enc(), **D3RLPY_KNOBS["iql"])
    if algo == "td3bc":
        return d3rlpy.algos.TD3PlusBCConfig(**shared, **D3RLPY_KNOBS["td3bc"])
    raise ValueError(f"unknown algorithm {algo!r}")


def make_d3rlpy_algo(algo: str, obs_dim: int = 11, act_dim: int = 3, hidden=(256, 256), batch_size: int = 256,
                     seed: int = 0, device: str = "cpu:0"):
    import d3rlpy

    d3rlpy.seed(seed)
    dataset = random_mdp_dataset(obs_dim, act_dim, seed=seed)
    learner = make_config(algo, hidden, batch_size).create(device=device)
    learner.build_with_dataset(dataset)
    return learner, dataset


def parameter_counts(learner) -> dict[str, int]:
    """Parameters per torch module of a built d3rlpy algorithm (targets included, named as d3rlpy does)."""
    import torch

    modules = learner.impl.modules
    out = {}
    for name in vars(modules) if hasattr(modules, "__dict__") else modules.__dataclass_fields__:
        m = getattr(modules, name)
        if isinstance(m, torch.nn.Module):
            out[name] = sum(p.numel() for p in m.parameters())
    return out


class D3rlpyOfflineRunner:
    """``run(n)``: n updates on a cycle of pre-sampled minibatches."""

    def __init__(self, algo: str, obs_dim: int = 11, act_dim: int = 3, hidden=(256, 256), batch_size: int = 256,
                 pool: int = 64, seed: int = 0, device: str = "cpu:0"):
        self.algo, self.dataset = make_d3rlpy_algo(algo, obs_dim, act_dim, hidden, batch_size, seed, device)
        self.cuda = device.startswith("cuda")
        self.batches = [self.dataset.sample_transition_batch(batch_size) for _ in range(pool)]
        self.i = 0

    def run(self, num_updates: int) -> None:
        for _ in range(num_updates):
            self.algo.update(self.batches[self.i % len(self.batches)])
            self.i += 1
        if self.cuda:
            import torch

            torch.cuda.synchronize()
