"""What one policy call costs during collection (microseconds per call, batch = num_envs).

The collector calls the policy once per env step of all envs. With o2o's SAC actor the call is
``np.asarray(sac.actor_actions(state.actor, obs, jax.random.fold_in(key, step)))``; here its parts:

- prescribed: fold_in outside + ``actor_actions(state.actor, ...)`` (flattens the whole actor
  TrainState: params + Adam moments) + device->host copy;
- precomputed key: the same without the per-step ``fold_in`` dispatch;
- fused jit(params): one jitted function of (actor params, obs, base key, step) doing fold_in, the
  forward pass and the sample; only the params pytree crosses the boundary;
- numpy forward: the same MLP in NumPy (weights copied to host once per policy refresh) with a
  NumPy RNG: no JAX dispatch at all.

    .venv/bin/python benchmarks/experiments/actor_call_overhead.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--obs-dim", type=int, default=8)
    p.add_argument("--act-dim", type=int, default=2)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from common import interleaved, load_average, load_note, machine_info, markdown_table, print_table, write_results
    from o2o.agents import sac
    from o2o.nn import tanh_gaussian_sample

    state = sac.init(jax.random.PRNGKey(0), args.obs_dim, args.act_dim, sac.SACConfig())
    base = jax.random.PRNGKey(1)

    @jax.jit
    def fused(params, obs, key, step):
        mean, log_std = state.actor.apply_fn(params, obs)
        return tanh_gaussian_sample(jax.random.fold_in(key, step), mean, log_std)[0]

    # NumPy copy of the actor (flax param tree: MLP_0/Dense_0, Dense_1; heads Dense_0 (mean), Dense_1 (log_std))
    prm = jax.tree_util.tree_map(np.asarray, state.actor.params)["params"]
    W = [(prm["MLP_0"][f"Dense_{i}"]["kernel"], prm["MLP_0"][f"Dense_{i}"]["bias"]) for i in range(2)]
    Wm, Ws = (prm["Dense_0"]["kernel"], prm["Dense_0"]["bias"]), (prm["Dense_1"]["kernel"], prm["Dense_1"]["bias"])
    rng = np.random.default_rng(0)

    def numpy_actor(obs):
        x = obs
        for k, b in W:
            x = np.maximum(x @ k + b, 0.0)
        mean = x @ Wm[0] + Wm[1]
        log_std = -5.0 + 3.5 * (np.tanh(x @ Ws[0] + Ws[1]) + 1.0)
        return np.tanh(mean + np.exp(log_std) * rng.standard_normal(mean.shape, np.float32))

    variants = {}
    for n in (1, 4):
        obs = np.random.default_rng(n).standard_normal((n, args.obs_dim)).astype(np.float32)
        key0 = jax.random.fold_in(base, 0)

        def prescribed(calls, obs=obs):
            for i in range(calls):
                np.asarray(sac.actor_actions(state.actor, obs, jax.random.fold_in(base, i), deterministic=False))

        def no_fold(calls, obs=obs):
            for _ in range(calls):
                np.asarray(sac.actor_actions(state.actor, obs, key0, deterministic=False))

        def fused_call(calls, obs=obs):
            params = state.actor.params
            for i in range(calls):
                np.asarray(fused(params, obs, base, i))

        def numpy_call(calls, obs=obs):
            for _ in range(calls):
                numpy_actor(obs)

        variants[f"batch {n}: prescribed (fold_in + actor_actions(TrainState))"] = (prescribed, args.calls)
        variants[f"batch {n}: precomputed key"] = (no_fold, args.calls)
        variants[f"batch {n}: fused jit(params, obs, key, step)"] = (fused_call, args.calls)
        variants[f"batch {n}: numpy forward + numpy RNG"] = (numpy_call, args.calls)

    info = machine_info()
    before = load_average()
    timings = interleaved(variants, repeats=args.repeats, warmup=1)
    after = load_average()
    rows = [[n, 1e6 / t.median, 1e6 / t.best, f"{1e6 / max(t.rates):.0f}-{1e6 / min(t.rates):.0f}"] for n, t in timings.items()]
    headers = ["policy call", "us per call (median)", "best", "range"]
    title = f"Cost of one policy call during collection (obs {args.obs_dim}, act {args.act_dim}, 2x256 actor)"
    print_table(title, headers, rows)
    note = load_note(before, after)
    print(note)
    md = f"## {title}\n\nCommand: `{info['command']}`\n\n{markdown_table(headers, rows)}\n\n{note}\n"
    write_results("experiments_actor_call", {"machine": info, "load_before": before, "load_after": after,
                                             "results": {k: t.as_dict() for k, t in timings.items()}}, md)


if __name__ == "__main__":
    main()
