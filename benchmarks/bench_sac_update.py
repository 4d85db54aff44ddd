"""SAC gradient updates per second: o2o (JAX) vs plain PyTorch (eager, torch.compile) vs d3rlpy.

Standard size: obs 17, act 6, two hidden layers of 256 (actor and each critic), batch 256, twin
critics, automatic temperature, Adam 3e-4, Polyak 0.005. All contestants run in ONE process and
their repeats are interleaved (round robin), so outside load on a shared machine hits them alike.

Contestants
- o2o update_many K=1000: ``make_update_many(sac.update, replay_sample)``: K updates per jitted
  call in a ``lax.scan``, each drawing its minibatch from a 1M-capacity device replay buffer
  holding 100k random rows;
- o2o update_many K=1: the same, one update per host call (shows the per-call overhead);
- torch eager: ``benchmarks/peers/torch_sac.py``, the same math, minibatches by random index from
  a 1M-row tensor buffer (threads: ``--torch-threads``, default 2; also at 1 thread);
- torch.compile: the same with the two loss functions compiled (optional, skipped with a note
  when it fails or with ``--no-compile``);
- d3rlpy 2.6.0 SAC: ``algo.update(batch)`` on pre-sampled minibatches (pure update throughput,
  no logging).

For o2o the achieved FLOP/s (XLA's flop count of one sample+update x updates/s) is set against
the machine's measured float32 matmul peak. The torch rows use the same flop count (same math).

    .venv/bin/python benchmarks/bench_sac_update.py            # full run (~10-15 min on 2 cores)
    .venv/bin/python benchmarks/bench_sac_update.py --quick    # smoke test (~2 min)
    .venv/bin/python benchmarks/bench_sac_update.py --no-peers # o2o only

Writes ``benchmarks/results/sac_update.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    interleaved,
    load_average,
    load_note,
    machine_info,
    markdown_table,
    matmul_peak_flops,
    print_table,
    write_results,
    xla_flops,
)

OBS_DIM, ACT_DIM, BATCH = 17, 6, 256
CAPACITY, FILLED = 1_000_000, 100_000


def random_rows(n: int = FILLED, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return dict(
        observations=rng.standard_normal((n, obs_dim), np.float32),
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        costs=(rng.random(n) < 0.1).astype(np.float32),
        next_observations=rng.standard_normal((n, obs_dim), np.float32),
        terminals=(rng.random(n) < 0.01).astype(np.float32),
        timeouts=np.zeros(n, np.float32),
    )


# ----------------------------------------------------------------------------------- o2o
def o2o_contestants(K: int, k1_items: int):
    import jax

    from o2o.agents import sac
    from o2o.agents.common import make_update_many
    from o2o.data.replay import replay_add, replay_init, replay_sample

    cfg = sac.SACConfig(hidden_dims=(256, 256), num_critics=2, batch_size=BATCH, auto_temperature=True)
    buffer = replay_add(replay_init(OBS_DIM, ACT_DIM, CAPACITY), random_rows())
    sample = lambda buf, k: replay_sample(buf, k, cfg.batch_size)  # noqa: E731
    update_many = make_update_many(sac.update, sample)

    # XLA's flop count of ONE sample + update (a scan's cost analysis counts the body once).
    one = jax.jit(lambda s, b, k: sac.update(s, sample(b, jax.random.fold_in(k, 1)), k))
    flops = xla_flops(one, sac.init(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, cfg), buffer, jax.random.PRNGKey(0))

    holders = {"K": sac.init(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, cfg),
               "1": sac.init(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, cfg)}
    counter = [0]

    def run_many(items: int) -> None:
        counter[0] += 1
        holders["K"], metrics = update_many(holders["K"], buffer, jax.random.PRNGKey(counter[0]), {}, num_steps=items)
        jax.block_until_ready(holders["K"])

    def run_k1(items: int) -> None:
        counter[0] += 1
        key = jax.random.PRNGKey(counter[0])
        for i in range(items):
            holders["1"], metrics = update_many(holders["1"], buffer, jax.random.fold_in(key, i), {}, num_steps=1)
        jax.block_until_ready(holders["1"])

    contestants = {
        f"o2o update_many K={K}": (run_many, K),
        "o2o update_many K=1 (host loop)": (run_k1, k1_items),
    }
    return contestants, flops


# ----------------------------------------------------------------------------------- peers
def torch_contestants(items: int, threads: int, with_one_thread: bool, with_compile: bool, notes: list[str]):
    import torch

    from peers.torch_sac import TensorReplay, TorchSAC, run_updates

    replay = TensorReplay(OBS_DIM, ACT_DIM, CAPACITY)
    replay.add(random_rows())

    def contestant(agent, n_threads):
        def run(n: int) -> None:
            torch.set_num_threads(n_threads)
            run_updates(agent, replay, n, BATCH)

        return run

    out = {f"torch eager ({threads} threads)": (contestant(TorchSAC(OBS_DIM, ACT_DIM), threads), items)}
    if with_one_thread and threads != 1:
        out["torch eager (1 thread)"] = (contestant(TorchSAC(OBS_DIM, ACT_DIM), 1), items)
    if with_compile:
        try:
            torch.set_num_threads(threads)
            agent = TorchSAC(OBS_DIM, ACT_DIM, compile=True)
            start = time.perf_counter()
            run_updates(agent, replay, 3, BATCH)  # triggers compilation (forward + backward graphs)
            took = time.perf_counter() - start
            notes.append(f"torch.compile (inductor, default mode) compiled in {took:.0f} s.")
            out[f"torch.compile ({threads} threads)"] = (contestant(agent, threads), items)
            if with_one_thread and threads != 1:  # the same compiled agent (no second compilation)
                out["torch.compile (1 thread)"] = (contestant(agent, 1), items)
        except Exception as e:  # noqa: BLE001 - optional contestant
            notes.append(f"torch.compile skipped: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            traceback.print_exc()
    return out


def d3rlpy_contestants(items: int, threads: int, notes: list[str], info: dict):
    import torch

    try:
        import d3rlpy

        from peers.d3rlpy_sac import D3rlpyRunner
    except Exception as e:  # noqa: BLE001
        notes.append(f"d3rlpy skipped: {type(e).__name__}: {e}")
        return {}
    info["d3rlpy"] = d3rlpy.__version__
    runner = D3rlpyRunner(OBS_DIM, ACT_DIM)

    def contestant(n_threads):
        def run(n: int) -> None:
            torch.set_num_threads(n_threads)
            runner.run(n)

        return run

    out = {f"d3rlpy {d3rlpy.__version__} SAC ({threads} threads)": (contestant(threads), items)}
    if threads != 1:
        out[f"d3rlpy {d3rlpy.__version__} SAC (1 thread)"] = (contestant(1), items)
    return out


def matmul_probe(n: int = 1024):
    """A jitted n^3 matmul run among the contestants: the matmul rate under the same load."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(2), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)

    def run(items: int) -> None:
        out = None
        for _ in range(items):
            out = f(a, b)
        out.block_until_ready()

    return run, 2.0 * n**3


# ----------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short repeats: a smoke test, not a measurement")
    p.add_argument("--no-peers", action="store_true", help="o2o only (no torch / d3rlpy)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile contestant")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per contestant (default 5, quick 2)")
    p.add_argument("--K", type=int, default=None, help="updates per o2o call (default 1000, quick 200)")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads for the peers")
    p.add_argument("--name", default="sac_update", help="results file stem")
    args = p.parse_args(argv)

    repeats = args.repeats or (2 if args.quick else 5)
    K = args.K or (200 if args.quick else 1000)
    peer_items = 40 if args.quick else 300  # updates per timed repeat of a torch peer
    d3_items = 20 if args.quick else 100
    k1_items = 50 if args.quick else 200

    info = machine_info()
    before = load_average()
    print(f"machine: {info['cores']} cores, {info['cpu']}, load {before}; jax {info['jax']}, torch {info['torch']}")
    notes: list[str] = []

    peak = matmul_peak_flops(sizes=(256, 512, 1024, 2048), repeats=2 if args.quick else 5)
    print(f"matmul peak (f32, jitted, 256..2048): {peak['peak_flops'] / 1e9:.1f} GFLOP/s; "
          + ", ".join(f"{n}: {v['best'] / 1e9:.1f}" for n, v in peak["per_size"].items()))

    contestants, flops = o2o_contestants(K, k1_items)
    print(f"XLA flops per o2o SAC update (sample + update): {flops / 1e6:.0f} MFLOP")
    if not args.no_peers:
        contestants.update(torch_contestants(peer_items, args.torch_threads, True, not args.no_compile, notes))
        contestants.update(d3rlpy_contestants(d3_items, args.torch_threads, notes, info))

    probes = {}
    for n in (256, 1024):
        run, per_item = matmul_probe(n)
        probes[f"matmul probe ({n}^3, jitted f32)"] = per_item
        contestants[f"matmul probe ({n}^3, jitted f32)"] = (run, 4000 if n == 256 else 200)
    slow = [n for n in contestants if not n.startswith(f"o2o update_many K={K}")]
    timings = interleaved(contestants, repeats=repeats, warmup=1, calibrate=slow,
                          target_seconds=1.5 if args.quick else 6.0)
    probe_timings = {n: timings.pop(n) for n in probes}
    # the better of the two probes (a 256^3 product runs on one thread, 1024^3 on all of them)
    probe_name = max(probes, key=lambda n: probe_timings[n].median * probes[n])
    probe, probe_flops = probe_timings[probe_name], probes[probe_name]
    probe_flops_median = probe.median * probe_flops
    # the peak again at the end, in case the machine got quieter: the largest figure is the limit
    peak_end = matmul_peak_flops(sizes=(256, 512, 1024, 2048), repeats=2 if args.quick else 3)
    peak_flops = max(peak["peak_flops"], peak_end["peak_flops"],
                     *(t.best * probes[n] for n, t in probe_timings.items()))
    after = load_average()

    o2o_name = f"o2o update_many K={K}"
    o2o_rate = timings[o2o_name].median
    rows, results = [], {}
    for name, t in timings.items():
        same_math = name.startswith("o2o") or name.startswith("torch")
        achieved = flops * t.median if same_math else float("nan")
        speedup = o2o_rate / t.median
        rows.append([name, t.median, t.best, f"{min(t.rates):.1f}-{max(t.rates):.1f}", t.per_cpu_second,
                     "-" if name == o2o_name else f"{speedup:.2f}x",
                     f"{achieved / 1e9:.1f}" if same_math else "-",
                     f"{100 * achieved / peak_flops:.0f}%" if same_math else "-",
                     f"{100 * achieved / probe_flops_median:.0f}%" if same_math else "-"])
        results[name] = {**t.as_dict(), "o2o_speedup": speedup,
                         "achieved_flops": achieved if same_math else None,
                         "fraction_of_peak": achieved / peak_flops if same_math else None,
                         "fraction_of_concurrent_matmul": achieved / probe_flops_median if same_math else None}

    def best_of(prefix: str):
        cands = {n: t.median for n, t in timings.items() if n.startswith(prefix)}
        return max(cands.items(), key=lambda kv: kv[1]) if cands else None

    headline = []
    for label, prefix in (("torch eager", "torch eager"), ("torch.compile", "torch.compile"), ("d3rlpy", "d3rlpy")):
        b = best_of(prefix)
        if b:
            headline.append(f"o2o (K={K}) vs {label} at its best thread setting ({b[0]}): "
                            f"{o2o_rate / b[1]:.2f}x ({o2o_rate:.1f} vs {b[1]:.1f} updates/s)")
    headers = ["contestant", "updates/s (median)", "best", "range", "per CPU-s", f"o2o K={K} speed-up",
               "GFLOP/s", "% of matmul peak", "% of concurrent matmul"]
    title = f"SAC updates/s, obs {OBS_DIM}, act {ACT_DIM}, 2x256, batch {BATCH}, twin critics, auto alpha"
    print_table(title, headers, rows)
    note = load_note(before, after)
    facts = [
        f"Command: `{info['command']}` ({'quick smoke test' if args.quick else f'{repeats} interleaved repeats'}; "
        f"o2o {K} updates per call and per timed repeat; the other rows at most {peer_items} (torch), "
        f"{d3_items} (d3rlpy), {k1_items} (o2o K=1) updates per repeat, calibrated to ~{1.5 if args.quick else 6.0:g} s).",
        f"Machine: {info['cores']} cores ({info['cpu']}); jax {info['jax']}, torch {info['torch']}, "
        f"d3rlpy {info.get('d3rlpy') or '-'}; XLA_FLAGS='{info['XLA_FLAGS']}'; {note}.",
        f"XLA flop count of one o2o sample+update: {flops / 1e6:.0f} MFLOP; measured f32 matmul peak "
        f"{peak_flops / 1e9:.1f} GFLOP/s (best over n = 256/512/1024/2048 square products, at the start "
        f"{peak['peak_flops'] / 1e9:.1f}, at the end {peak_end['peak_flops'] / 1e9:.1f}, among the contestants "
        f"{max(t.best * probes[n] for n, t in probe_timings.items()) / 1e9:.1f}; by size at the start: "
        + ", ".join(f"{n}: {v['best'] / 1e9:.1f}" for n, v in peak["per_size"].items()) + "). "
        f"The torch rows' GFLOP/s use the same flop count (same math). "
        f"'% of concurrent matmul': against jitted matmuls timed among the contestants, the better of "
        + ", ".join(f"{n.split('(')[1].split(',')[0]} {probe_timings[n].median * probes[n] / 1e9:.1f}"
                    for n in probes)
        + " GFLOP/s (medians): the fraction under the same load.",
        "Speed-up = o2o's median / the row's median. Best = the least disturbed repeat. per CPU-s = updates "
        "per second of process CPU time (all threads; threads spinning at a barrier count), a load-robust "
        "efficiency figure.",
    ] + headline + notes
    print("\n".join(facts))
    md = f"## {title}\n\n{markdown_table(headers, rows)}\n\n" + "\n".join(f"- {f}" for f in facts) + "\n"
    payload = {"machine": info, "load_before": before, "load_after": after, "quick": args.quick,
               "repeats": repeats, "K": K, "flops_per_update": flops, "matmul_peak": peak,
               "matmul_peak_end": peak_end, "peak_flops": peak_flops,
               "results": results, "notes": notes, "headline": headline,
               "matmul_probes": {n: {**probe_timings[n].as_dict(), "flops_per_item": probes[n]} for n in probes}}
    paths = write_results(args.name, payload, md)
    print("wrote", *map(str, paths))
    return payload


if __name__ == "__main__":
    main()
