"""CPQ's OOD set: the cost critic on the top-KL candidates only vs on every candidate (the same loss).

CPQ's cost critic is pushed up on the policy samples the VAE flags as out of distribution: KL at or
above the batch's 0.75 quantile (OSRL's rule) and above the data's 0.9 quantile (o2o). At the preset
(batch 512, 10 samples per state) that is 5120 candidates, of which at most a quarter can be flagged;
the rest enter the cost critic's loss with mask 0. Contestants, one update each as ``o2o pretrain``
runs it (``cpq.update`` in a ``lax.scan`` of K updates on a fixed minibatch, BallCircle sizes obs 8,
act 2, the preset networks, ``ood_penalty=hinge`` and ``clip_targets`` on):

- ``top-k`` (o2o since 2026-12-03): ``cpq.ood_actions`` keeps the ``flagged_count`` candidates of
  highest KL (``jax.lax.top_k``), so the cost critic runs forward and backward on 1280 pairs;
- ``all`` (before): every candidate, the rule as a mask (``ood_actions_all`` below, patched in).

Both start from the same state and keys; the script checks that their losses agree, then times them
interleaved (round robin) and prints updates/s beside XLA's flop count of one update.

    .venv/bin/python benchmarks/bench_cpq_ood_set.py                 # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_cpq_ood_set.py --repeats 3 --K 10

Writes ``benchmarks/results/cpq_ood_set.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved, load_average, load_note, machine_info, markdown_table, print_table, write_results, xla_flops  # noqa: E402

OBS_DIM, ACT_DIM = 8, 2  # BallCircle


def ood_actions_all(state, observations, key, dataset_actions=None):
    """The OOD set as every candidate pair with the rule as a mask: o2o's cpq.ood_actions before top-k."""
    import jax
    import jax.numpy as jnp

    from o2o.agents.cql import sample_actions
    from o2o.nn.vae import vae_kl

    cfg = state.config
    policy_key, _ = jax.random.split(key)
    actions, _ = sample_actions(state.actor, observations, policy_key, cfg.num_ood_actions)
    b, m, a = actions.shape
    obs = jnp.broadcast_to(observations[:, None, :], (b, m, observations.shape[-1])).reshape(b * m, -1)
    actions = actions.reshape(b * m, a)
    kl = vae_kl(state.vae.params, state.vae.apply_fn, obs, actions)
    flagged = kl >= jnp.quantile(kl, cfg.ood_quantile)
    if cfg.ood_data_quantile is not None:
        flagged = flagged & (kl >= jnp.quantile(vae_kl(state.vae.params, state.vae.apply_fn, observations, dataset_actions),
                                                cfg.ood_data_quantile))
    assert cfg.num_random_ood_actions == 0 and cfg.ood_detection == "vae", "the benchmark's preset only"
    return obs, jax.lax.stop_gradient(actions), flagged.astype(jnp.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per contestant")
    p.add_argument("--K", type=int, default=25, help="updates per jitted call")
    p.add_argument("--name", default="cpq_ood_set", help="results file stem")
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from o2o.agents import cpq

    rng = np.random.default_rng(0)
    batch_size = cpq.CPQConfig().batch_size
    batch = {
        "observations": jnp.asarray(rng.normal(size=(batch_size, OBS_DIM)), jnp.float32),
        "next_observations": jnp.asarray(rng.normal(size=(batch_size, OBS_DIM)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, size=(batch_size, ACT_DIM)), jnp.float32),
        "rewards": jnp.asarray(rng.uniform(-3, 7, size=(batch_size,)), jnp.float32),
        "costs": jnp.asarray(rng.integers(0, 2, size=(batch_size,)), jnp.float32),
        "terminals": jnp.zeros((batch_size,), jnp.float32),
    }
    cfg = cpq.CPQConfig(ood_penalty="hinge", clip_targets=True, reward_range=(-3.0, 7.0), cost_range=(0.0, 1.0))
    state = cpq.init(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, cfg)

    def build(ood_fn):
        def body(s, k):
            original = cpq.ood_actions
            cpq.ood_actions = ood_fn  # read at trace time by cpq.update
            try:
                s, info = cpq.update(s, batch, k)
            finally:
                cpq.ood_actions = original
            return s, info["cost_critic_loss"]

        many = jax.jit(lambda s, key, n: jax.lax.scan(body, s, jax.random.split(key, n)), static_argnums=2)
        one = jax.jit(lambda s, key: body(s, key))
        return many, one

    contestants = {"top-k": build(cpq.ood_actions), "all": build(ood_actions_all)}
    losses = {name: np.asarray(many(state, jax.random.PRNGKey(7), 5)[1]) for name, (many, _) in contestants.items()}
    agree = bool(np.allclose(losses["top-k"], losses["all"], rtol=1e-4, atol=1e-4))
    print(f"cost critic losses over 5 updates, top-k {losses['top-k']}, all {losses['all']}: agree = {agree}")
    flops = {name: xla_flops(one, state, jax.random.PRNGKey(1)) for name, (_, one) in contestants.items()}

    def runner(many):
        def run(items):
            jax.block_until_ready(many(state, jax.random.PRNGKey(items), args.K))
        return run

    load_before = load_average()
    timings = interleaved({name: (runner(many), args.K) for name, (many, _) in contestants.items()}, repeats=args.repeats)
    load_after = load_average()
    rows = []
    for name, timing in timings.items():
        rate = timing.median
        rows.append([name, f"{flops[name] / 1e9:.2f}", f"{rate:.2f}", f"{timing.best:.2f}",
                     f"{rate * flops[name] / 1e9:.1f}", f"{rate / timings['all'].median:.2f}x"])
    headers = ["OOD set", "GFLOP / update (XLA)", "updates/s (median)", "updates/s (best)", "GFLOP/s", "vs all"]
    title = f"CPQ update, preset (batch {batch_size}, 10 OOD samples per state), BallCircle sizes"
    print_table(title, headers, rows)
    note = load_note(load_before, load_after)
    print(note)
    markdown = "\n".join([f"# {title}", "", "    .venv/bin/python " + " ".join(["benchmarks/bench_cpq_ood_set.py", *sys.argv[1:]]), "",
                          markdown_table(headers, rows), "", f"Losses agree: {agree}. {note}"])
    payload = {"machine": machine_info(), "args": vars(args), "flops": flops, "timings": timings, "losses": losses,
               "losses_agree": agree, "load_before": load_before, "load_after": load_after}
    for path in write_results(args.name, payload, markdown):
        print(f"wrote {path}")
    if not agree:
        sys.exit("the two OOD sets gave different losses")


if __name__ == "__main__":
    main()
