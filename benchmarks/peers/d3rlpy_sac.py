"""d3rlpy 2.6.0 SAC at the standard size, as a speed peer.

Built on a small random ``MDPDataset`` of the right shapes (the data do not affect the cost of an
update). Timed: ``algo.update(batch)`` on minibatches pre-sampled with d3rlpy's own
``sample_transition_batch`` (so the figure is the update itself: d3rlpy's numpy -> torch batch
conversion + the SAC impl's critic/actor/temperature steps), no logging, no evaluation.
A second figure includes d3rlpy's own minibatch sampling (what ``fit`` does per step, minus logging).
"""

from __future__ import annotations


def make_d3rlpy_sac(obs_dim: int = 17, act_dim: int = 6, hidden=(256, 256), n: int = 20_000,
                    episode_length: int = 1000, seed: int = 0):
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory

    from peers.d3rlpy_offline import random_mdp_dataset

    d3rlpy.seed(seed)
    dataset = random_mdp_dataset(obs_dim, act_dim, n, episode_length, seed)
    config = d3rlpy.algos.SACConfig(
        batch_size=256,
        gamma=0.99,
        actor_learning_rate=3e-4,
        critic_learning_rate=3e-4,
        temp_learning_rate=3e-4,
        tau=0.005,
        n_critics=2,
        initial_temperature=1.0,
        actor_encoder_factory=VectorEncoderFactory(list(hidden)),
        critic_encoder_factory=VectorEncoderFactory(list(hidden)),
    )
    algo = config.create(device="cpu:0")
    algo.build_with_dataset(dataset)
    return algo, dataset


class D3rlpyRunner:
    """``run(n)``: n updates on a cycle of pre-sampled minibatches; ``run_with_sampling(n)``: n
    sample+update steps."""

    def __init__(self, obs_dim: int = 17, act_dim: int = 6, hidden=(256, 256), pool: int = 64, seed: int = 0):
        self.algo, self.dataset = make_d3rlpy_sac(obs_dim, act_dim, hidden, seed=seed)
        self.batches = [self.dataset.sample_transition_batch(256) for _ in range(pool)]
        self.i = 0

    def run(self, num_updates: int) -> None:
        for _ in range(num_updates):
            self.algo.update(self.batches[self.i % len(self.batches)])
            self.i += 1

    def run_with_sampling(self, num_updates: int) -> None:
        for _ in range(num_updates):
            self.algo.update(self.dataset.sample_transition_batch(256))
