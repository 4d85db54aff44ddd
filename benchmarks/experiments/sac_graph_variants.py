"""Same SAC math, different graph structure: does the shape of the networks' XLA graph matter on CPU?

``sac.update`` only calls ``state.critic.apply_fn`` / ``state.actor.apply_fn``, so these variants
plug other (mathematically identical) modules into an ``SACState`` and run o2o's own update:

- baseline: o2o's ``CriticEnsemble`` (``nn.vmap`` over critics: batched dots [2, 256, 256]) and
  ``TanhGaussianActor`` (two Dense heads of width act_dim);
- separate critics: two plain ``Critic`` modules stacked (no vmap: unbatched dots);
- fused actor head: one Dense of width 2 act_dim split into (mean, log_std);
- both;
- the baseline and "both" again with the scan unrolled twice (``lax.scan(..., unroll=2)``).

    .venv/bin/python benchmarks/experiments/sac_graph_variants.py [--K 300 --repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--K", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax.training.train_state import TrainState

    from common import (interleaved, load_average, load_note, machine_info, markdown_table, print_table,
                        write_results, xla_flops)
    from o2o.agents import sac
    from o2o.agents.common import adam, make_update_many
    from o2o.data.replay import replay_add, replay_init, replay_sample
    from o2o.nn import MLP, Critic
    from o2o.nn.networks import default_init
    from sac_settings import make_data

    class SeparateCritics(nn.Module):
        hidden_dims: tuple
        num_critics: int = 2

        @nn.compact
        def __call__(self, obs, act):
            return jnp.stack([Critic(self.hidden_dims)(obs, act) for _ in range(self.num_critics)], 0)

    class FusedHeadActor(nn.Module):
        hidden_dims: tuple
        action_dim: int
        log_std_min: float = -5.0
        log_std_max: float = 2.0

        @nn.compact
        def __call__(self, obs):
            x = MLP(self.hidden_dims, None)(obs)
            out = nn.Dense(2 * self.action_dim, kernel_init=default_init(1e-2))(x)
            mean, log_std = jnp.split(out, 2, axis=-1)
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(log_std) + 1.0)
            return mean, log_std

    cfg = sac.SACConfig()
    obs0, act0 = jnp.zeros((1, 17)), jnp.zeros((1, 6))

    def make_state(separate: bool, fused: bool, seed: int = 0):
        state = sac.init(jax.random.PRNGKey(seed), 17, 6, cfg)
        if separate:
            cdef = SeparateCritics(cfg.hidden_dims, cfg.num_critics)
            cparams = cdef.init(jax.random.PRNGKey(seed + 1), obs0, act0)
            critic = TrainState.create(apply_fn=cdef.apply, params=cparams, tx=adam(cfg.critic_lr))
            state = state.replace(critic=critic, target_critic_params=jax.tree_util.tree_map(jnp.copy, cparams))
        if fused:
            adef = FusedHeadActor(cfg.hidden_dims, 6)
            actor = TrainState.create(apply_fn=adef.apply, params=adef.init(jax.random.PRNGKey(seed + 2), obs0),
                                      tx=adam(cfg.actor_lr))
            state = state.replace(actor=actor)
        return state

    buffer = replay_add(replay_init(17, 6, 1_000_000), make_data())
    sample = lambda b, k: replay_sample(b, k, 256)  # noqa: E731
    update_many = make_update_many(sac.update, sample)

    @partial(jax.jit, static_argnames=("num_steps",), donate_argnums=(0,))
    def update_many_unroll2(state, buffers, key, signals, num_steps):
        def body(carry, step_key):  # make_update_many's body, scanned with unroll=2
            sample_key, update_key = jax.random.split(step_key)
            return sac.update(carry, sample(buffers, sample_key), update_key)

        state, metrics = jax.lax.scan(body, state, jax.random.split(key, num_steps), unroll=2)
        return state, jax.tree_util.tree_map(lambda m: m.mean(axis=0), metrics)

    one = jax.jit(lambda s, b, k: sac.update(s, sample(b, jax.random.fold_in(k, 1)), k))

    variants, flops = {}, {}
    for name, sep, fused, unroll in (("baseline (vmap critics, 2 actor heads)", False, False, 1),
                                     ("separate critics (no vmap)", True, False, 1),
                                     ("fused actor head", False, True, 1),
                                     ("separate critics + fused actor head", True, True, 1),
                                     ("baseline, scan unroll=2", False, False, 2),
                                     ("separate critics + fused actor head, unroll=2", True, True, 2)):
        holder = {"s": make_state(sep, fused), "i": 0}
        flops[name] = xla_flops(one, make_state(sep, fused), buffer, jax.random.PRNGKey(0))
        fn = update_many if unroll == 1 else update_many_unroll2

        def run(items, h=holder, fn=fn):
            h["i"] += 1
            h["s"], _ = fn(h["s"], buffer, jax.random.PRNGKey(h["i"]), {}, num_steps=items)
            jax.block_until_ready(h["s"])

        variants[name] = (run, args.K)

    info = machine_info()
    before = load_average()
    timings = interleaved(variants, repeats=args.repeats, warmup=1)
    after = load_average()
    base = timings["baseline (vmap critics, 2 actor heads)"].median
    rows = [[n, t.median, t.best, f"{min(t.rates):.1f}-{max(t.rates):.1f}", f"{t.median / base:.2f}x",
             f"{flops[n] / 1e6:.0f}"] for n, t in timings.items()]
    headers = ["graph variant (same math)", "updates/s (median)", "best", "range", "vs baseline", "XLA MFLOP/update"]
    title = f"o2o SAC update, graph variants (update_many K={args.K})"
    print_table(title, headers, rows)
    note = load_note(before, after)
    print(note)
    md = f"## {title}\n\nCommand: `{info['command']}`\n\n{markdown_table(headers, rows)}\n\n{note}\n"
    write_results("experiments_graph", {"machine": info, "load_before": before, "load_after": after,
                                        "results": {k: t.as_dict() for k, t in timings.items()}, "flops": flops}, md)


if __name__ == "__main__":
    main()
