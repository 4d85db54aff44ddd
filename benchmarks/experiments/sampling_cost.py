"""What drawing one minibatch costs inside the jitted scan (microseconds per sample of 256 rows).

A ``lax.scan`` of K sample-only steps (the batch is summed into the carry so nothing is dead code):

- o2o replay_sample: ``randint`` + one gather per field (7 gathers, ``v[index]``);
- randint only: the index draw alone;
- gathers only: the 7 gathers with indices computed cheaply from the step counter (no RNG);
- jnp.take(mode="clip"): the same gathers with clamping instead of JAX's default out-of-bounds
  handling for ``v[index]`` (fill);
- packed: all fields in ONE [capacity, 2 obs + act + 4] array, one gather, then split
  (a different buffer layout);
- 100k vs 1M capacity buffer (same 100k filled rows).

    .venv/bin/python benchmarks/experiments/sampling_cost.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--K", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp

    from common import interleaved, load_average, load_note, machine_info, markdown_table, print_table, write_results
    from o2o.data.replay import replay_add, replay_init, replay_sample
    from sac_settings import make_data

    B = 256
    data = make_data()
    big = replay_add(replay_init(17, 6, 1_000_000), data)
    small = replay_add(replay_init(17, 6, 100_000), data)
    order = ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")
    packed = jnp.concatenate([big.data[k].reshape(big.data[k].shape[0], -1) for k in order], axis=1)  # [1M, 44]
    widths = [big.data[k].reshape(big.data[k].shape[0], -1).shape[1] for k in order]
    size = big.size

    def total(batch):
        return sum(jnp.sum(v) for v in batch.values())

    def scan_of(step):
        @jax.jit
        def run(buffers, key):
            def body(acc, xs):
                i, k = xs
                return acc + step(buffers, k, i), None

            acc, _ = jax.lax.scan(body, jnp.zeros(()), (jnp.arange(args.K), jax.random.split(key, args.K)))
            return acc

        return run

    def o2o(buf, k, i):
        return total(replay_sample(buf, k, B))

    def randint_only(buf, k, i):
        return jnp.sum(jax.random.randint(k, (B,), 0, jnp.maximum(buf.size, 1))).astype(jnp.float32)

    def gather_only(buf, k, i):
        index = (i * 7919 + jnp.arange(B) * 104729) % buf.size
        return total({n: v[index] for n, v in buf.data.items()})

    def take_clip(buf, k, i):
        index = jax.random.randint(k, (B,), 0, jnp.maximum(buf.size, 1))
        return total({n: jnp.take(v, index, axis=0, mode="clip") for n, v in buf.data.items()})

    def packed_sample(buf, k, i):
        index = jax.random.randint(k, (B,), 0, jnp.maximum(size, 1))
        rows = jnp.take(buf, index, axis=0, mode="clip")
        import numpy as np

        parts = jnp.split(rows, [int(x) for x in np.cumsum(widths)[:-1]], axis=1)
        return sum(jnp.sum(x) for x in parts)

    cases = {
        "o2o replay_sample (1M buffer)": (scan_of(o2o), big),
        "o2o replay_sample (100k buffer)": (scan_of(o2o), small),
        "randint only": (scan_of(randint_only), big),
        "7 gathers only (no RNG)": (scan_of(gather_only), big),
        "jnp.take(mode='clip') x 7": (scan_of(take_clip), big),
        "packed [N, 44] buffer, 1 gather": (scan_of(packed_sample), packed),
    }
    variants = {}
    for name, (fn, buf) in cases.items():
        def run(items, fn=fn, buf=buf):
            fn(buf, jax.random.PRNGKey(items)).block_until_ready()

        variants[name] = (run, args.K)

    info = machine_info()
    before = load_average()
    timings = interleaved(variants, repeats=args.repeats, warmup=1)
    after = load_average()
    rows = [[n, 1e6 / t.median, 1e6 / t.best, f"{1e6 / max(t.rates):.0f}-{1e6 / min(t.rates):.0f}"] for n, t in timings.items()]
    headers = ["minibatch draw (256 rows, inside a scan)", "us per draw (median)", "best", "range"]
    title = "Cost of sampling a minibatch inside the jitted scan"
    print_table(title, headers, rows)
    note = load_note(before, after)
    print(note)
    md = f"## {title}\n\nCommand: `{info['command']}`\n\n{markdown_table(headers, rows)}\n\n{note}\n"
    write_results("experiments_sampling", {"machine": info, "load_before": before, "load_after": after,
                                           "results": {k: t.as_dict() for k, t in timings.items()}}, md)


if __name__ == "__main__":
    main()
