"""Does running several seeds of one configuration as one vectorised program pay?

The question behind issue #6's "seeds as a batch axis": S seeds of the same config could run their
gradient updates as ONE jitted call over stacked agent states and replay buffers (``jax.vmap`` of
``update_many``) instead of S calls. Environments stay on the host (PyBullet / MuJoCo cannot be
vmapped), so only the update phase can be batched this way; this measures that phase.

Contestants, each doing K SAC gradient steps for each of S seeds (interleaved repeats):
- sequential: S calls of ``update_many`` (one per seed's state and buffer), as S runs would;
- vmapped:    one call of ``jit(vmap(update_many))`` over the stacked states and buffers.

    .venv/bin/python benchmarks/bench_seed_vmap.py                 # S = 4, two network sizes
    .venv/bin/python benchmarks/bench_seed_vmap.py --seeds 8 --K 200

Writes ``benchmarks/results/seed_vmap.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved, load_average, load_note, machine_info, markdown_table, print_table, write_results  # noqa: E402

OBS_DIM, ACT_DIM, ROWS = 8, 2, 50_000  # BallCircle's widths


def contestants(seeds: int, K: int, hidden: int, batch: int):
    import jax
    import numpy as np

    from o2o.agents import sac
    from o2o.agents.common import make_update_many
    from o2o.data.replay import replay_add, replay_init, replay_sample

    cfg = sac.SACConfig(hidden_dims=(hidden, hidden), batch_size=batch)
    update_many = make_update_many(sac.update, lambda buf, k: replay_sample(buf, k, batch))

    def rows(seed):
        rng = np.random.default_rng(seed)
        return dict(
            observations=rng.standard_normal((ROWS, OBS_DIM), np.float32), actions=rng.uniform(-1, 1, (ROWS, ACT_DIM)).astype(np.float32),
            rewards=rng.standard_normal(ROWS).astype(np.float32), costs=np.zeros(ROWS, np.float32),
            next_observations=rng.standard_normal((ROWS, OBS_DIM), np.float32), terminals=np.zeros(ROWS, np.float32),
            timeouts=np.zeros(ROWS, np.float32),
        )

    states = [sac.init(jax.random.PRNGKey(s), OBS_DIM, ACT_DIM, cfg) for s in range(seeds)]
    buffers = [replay_add(replay_init(OBS_DIM, ACT_DIM, ROWS), rows(s)) for s in range(seeds)]
    stack = lambda xs: jax.tree_util.tree_map(lambda *a: jax.numpy.stack(a), *xs)  # noqa: E731
    held = {"seq": states, "vm": stack([sac.init(jax.random.PRNGKey(s), OBS_DIM, ACT_DIM, cfg) for s in range(seeds)])}
    stacked_buffers = stack(buffers)
    vmapped = jax.jit(jax.vmap(lambda st, buf, key: update_many(st, buf, key, {}, num_steps=K)))
    counter = [0]

    def run_sequential(_items: int) -> None:
        counter[0] += 1
        new = []
        for s in range(seeds):
            st, _ = update_many(held["seq"][s], buffers[s], jax.random.PRNGKey(counter[0] * 1000 + s), {}, num_steps=K)
            new.append(st)
        held["seq"] = new
        jax.block_until_ready(new)

    def run_vmapped(_items: int) -> None:
        counter[0] += 1
        keys = jax.random.split(jax.random.PRNGKey(counter[0]), seeds)
        held["vm"], _ = vmapped(held["vm"], stacked_buffers, keys)
        jax.block_until_ready(held["vm"])

    items = seeds * K
    return {f"sequential: {seeds} calls": (run_sequential, items), f"vmapped: 1 call over {seeds} seeds": (run_vmapped, items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--K", type=int, default=200, help="gradient steps per seed per call")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import jax

    before = load_average()
    headers = ["network", "contestant", "updates/s (median)", "best", "speed-up vs sequential (median)"]
    rows, payload = [], {}
    for hidden, batch in ((64, 128), (256, 256)):
        net = f"{hidden}x{hidden}, batch {batch}"
        timings = interleaved(contestants(args.seeds, args.K, hidden, batch), repeats=args.repeats, warmup=1)
        base = next(iter(timings.values())).median
        for name, t in timings.items():
            rows.append([net, name, t.median, t.best, f"{t.median / base:.2f}x"])
            payload[f"{net} | {name}"] = t.as_dict()
    after = load_average()
    title = (f"SAC updates of {args.seeds} seeds: {args.seeds} calls vs one vmapped call "
             f"(K={args.K} steps per seed per call, device {jax.devices()[0].platform})")
    print_table(title, headers, rows)
    info = machine_info()
    md = "\n".join([f"# {title}", "", markdown_table(headers, rows), "", f"- {load_note(before, after)}",
                    f"- command: `{info['command']}`; jax {info['jax']}; XLA_FLAGS '{info['XLA_FLAGS']}'"])
    paths = write_results("seed_vmap", {"timings": payload, "machine": info, "args": vars(args)}, md)
    print(f"outputs: {paths[0]}, {paths[1]}")

if __name__ == "__main__":
    main()
