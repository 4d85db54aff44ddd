"""Experiments on o2o's SAC update speed on CPU: what makes the jitted update fast or slow.

Two kinds of knobs:

* in-process (one process, interleaved repeats): scan ``unroll``, donation, sampling from the
  1M-row buffer vs a fixed batch vs a 100k-capacity buffer, ``jax_default_matmul_precision``,
  single jitted update per host call vs K per call;
* XLA flags (need a fresh process each, since XLA reads ``XLA_FLAGS`` once): run with ``--flags``,
  the parent starts one worker per flag set, cycling through them for ``--rounds`` rounds so that
  outside load is spread over all of them.

    .venv/bin/python benchmarks/experiments/sac_settings.py --inprocess      # knobs in one process
    .venv/bin/python benchmarks/experiments/sac_settings.py --flags          # XLA flag sweep

Writes ``benchmarks/results/experiments_<kind>.json|md``. Nothing here changes o2o itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

FLAG_SETS = {
    "default": "",
    "eigen single-thread": "--xla_cpu_multi_thread_eigen=false",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "xnn graph fusion greedy": "--xla_cpu_use_xnnpack=true --xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "concurrency scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "vector width 512": "--xla_cpu_prefer_vector_width=512",
    "fast math + eigen 1 thread": "--xla_cpu_enable_fast_math=true --xla_cpu_multi_thread_eigen=false",
}


def make_data(obs_dim=17, act_dim=6, n=100_000, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return dict(
        observations=rng.standard_normal((n, obs_dim), np.float32),
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        costs=np.zeros(n, np.float32),
        next_observations=rng.standard_normal((n, obs_dim), np.float32),
        terminals=(rng.random(n) < 0.01).astype(np.float32),
        timeouts=np.zeros(n, np.float32),
    )


def build_variants(K: int, names: list[str] | None = None):
    """{name: (fn(items) -> blocks, items)} for the in-process knobs."""
    import jax
    import jax.numpy as jnp

    from o2o.agents import sac
    from o2o.agents.common import make_update_many
    from o2o.data.replay import replay_add, replay_init, replay_sample

    data = make_data()
    big = replay_add(replay_init(17, 6, 1_000_000), data)
    wanted = lambda name: not names or any(n in name for n in names)  # noqa: E731
    small = replay_add(replay_init(17, 6, 100_000), data) if wanted("scan, 100k-capacity buffer") else None
    fixed_batch = jax.tree_util.tree_map(jnp.asarray, {k: v[:256] for k, v in data.items()})
    cfg = sac.SACConfig()

    def custom_many(sample_fn, unroll=1, donate=True):
        def many(state, buffers, key, num_steps):
            def body(carry, step_key):
                sample_key, update_key = jax.random.split(step_key)
                return sac.update(carry, sample_fn(buffers, sample_key), update_key)

            state, metrics = jax.lax.scan(body, state, jax.random.split(key, num_steps), unroll=unroll)
            return state, jax.tree_util.tree_map(lambda m: m.mean(axis=0), metrics)

        return jax.jit(many, static_argnames=("num_steps",), donate_argnums=(0,) if donate else ())

    sample = lambda b, k: replay_sample(b, k, 256)  # noqa: E731
    variants = {}

    def scan_variant(name, fn, buffers, precision=None):
        if not wanted(name):
            return
        holder = {"state": sac.init(jax.random.PRNGKey(0), 17, 6, cfg), "i": 0}

        def run(items):
            holder["i"] += 1
            key = jax.random.PRNGKey(holder["i"])
            if precision is None:
                holder["state"], m = fn(holder["state"], buffers, key, num_steps=items)
            else:
                with jax.default_matmul_precision(precision):
                    holder["state"], m = fn(holder["state"], buffers, key, num_steps=items)
            jax.block_until_ready(holder["state"])

        variants[name] = (run, K)

    o2o_many = make_update_many(sac.update, sample)
    scan_variant("o2o update_many (1M buffer)", lambda s, b, k, num_steps: o2o_many(s, b, k, {}, num_steps=num_steps), big)
    for u in (2, 4):
        scan_variant(f"scan unroll={u}", custom_many(sample, unroll=u), big)
    scan_variant("scan, no donation", custom_many(sample, donate=False), big)
    scan_variant("scan, fixed batch (no sampling)", custom_many(lambda b, k: b), fixed_batch)
    scan_variant("scan, 100k-capacity buffer", custom_many(sample), small)
    scan_variant("scan, precision=highest", custom_many(sample), big, precision="highest")

    # host loops: one jitted update per call
    single = jax.jit(lambda s, b, k: sac.update(s, sample(b, jax.random.fold_in(k, 1)), k), donate_argnums=(0,))
    holder = {"state": sac.init(jax.random.PRNGKey(0), 17, 6, cfg)}

    def host_loop(items):
        key = jax.random.PRNGKey(0)
        for i in range(items):
            holder["state"], _ = single(holder["state"], big, jax.random.fold_in(key, i))
        jax.block_until_ready(holder["state"])

    variants["jit single update, host loop"] = (host_loop, max(50, K // 5))

    holder1 = {"state": sac.init(jax.random.PRNGKey(0), 17, 6, cfg)}

    def k1_loop(items):
        key = jax.random.PRNGKey(0)
        for i in range(items):
            holder1["state"], _ = o2o_many(holder1["state"], big, jax.random.fold_in(key, i), {}, num_steps=1)
        jax.block_until_ready(holder1["state"])

    variants["o2o update_many K=1, host loop"] = (k1_loop, max(50, K // 5))
    if names:
        variants = {k: v for k, v in variants.items() if any(n in k for n in names)}
    return variants


def worker(args) -> dict:
    import jax

    from common import interleaved, load_average

    before = load_average()
    variants = build_variants(args.K, args.only)
    timings = interleaved(variants, repeats=args.repeats, warmup=1, log=lambda s: print(s, file=sys.stderr))
    return {"load_before": before, "load_after": load_average(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "jax": jax.__version__, "results": {k: t.as_dict() for k, t in timings.items()}}


def serve(args) -> None:
    """Resident worker: build the variants, then run one timed repeat per stdin line ``run NAME``
    (``warmup`` runs each once untimed), answering one JSON line each. Lets the parent interleave
    repeats of processes with different XLA_FLAGS."""
    import time

    variants = build_variants(args.K, args.only)
    print(json.dumps({"ready": list(variants)}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "warmup":
            for fn, items in variants.values():
                fn(items)
            print(json.dumps({"warm": True}), flush=True)
        elif cmd.startswith("run "):
            name = cmd[4:]
            fn, items = variants[name]
            start = time.perf_counter()
            fn(items)
            print(json.dumps({"name": name, "items": items, "seconds": time.perf_counter() - start}), flush=True)


def sweep_flags(sets, only, args) -> dict:
    """One resident worker per XLA flag set; repeat r of every (flag set, variant) runs before
    repeat r + 1 of any, workers taking turns (only one computes at a time)."""
    workers = {}
    for s in sets:
        env = dict(os.environ, XLA_FLAGS=FLAG_SETS[s])
        cmd = [sys.executable, __file__, "--serve", "--K", str(args.K), "--only", *only]
        workers[s] = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    collected: dict[str, dict[str, list[float]]] = {s: {} for s in sets}
    names = {}
    try:
        for s, w in workers.items():  # build + compile + warm up, one worker at a time
            names[s] = json.loads(w.stdout.readline())["ready"]
            w.stdin.write("warmup\n")
            json.loads(w.stdout.readline())
            print(f"ready: {s}", file=sys.stderr)
        for r in range(args.repeats * args.rounds):
            for s, w in workers.items():
                for name in names[s]:
                    w.stdin.write(f"run {name}\n")
                    res = json.loads(w.stdout.readline())
                    rate = res["items"] / res["seconds"]
                    collected[s].setdefault(name, []).append(rate)
                    print(f"repeat {r + 1}: {s:<28s} {name:<32s} {rate:7.1f}/s (load {os.getloadavg()[0]:.2f})",
                          file=sys.stderr)
            # partial results after every round robin, in case the run is cut short
            partial = HERE.parent / "results" / "experiments_flags.partial.json"
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"repeats_done": r + 1, "results": collected,
                                           "flag_sets": {s: FLAG_SETS[s] for s in sets}}, indent=1))
    finally:
        for w in workers.values():
            try:
                w.stdin.write("quit\n")
                w.stdin.flush()
            except Exception:  # noqa: BLE001
                pass
            w.wait(timeout=60)
    return collected


def sweep_flags_sequential(sets, only, args) -> dict:
    """One worker process at a time: for each round, each flag set in turn runs ``--repeats``
    interleaved repeats; rounds spread slow load drifts over the sets."""
    collected: dict[str, dict[str, list[float]]] = {s: {} for s in sets}
    per_cpu: dict[str, dict[str, list[float]]] = {s: {} for s in sets}
    collected["__per_cpu_second__"] = per_cpu  # type: ignore[assignment]
    partial = HERE.parent / "results" / "experiments_flags.partial.json"
    for rnd in range(args.rounds):
        for s in sets:
            env = dict(os.environ, XLA_FLAGS=FLAG_SETS[s])
            cmd = [sys.executable, __file__, "--worker", "--K", str(args.K), "--repeats", str(args.repeats), "--only", *only]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"round {rnd + 1}: {s}: worker failed (rc {proc.returncode}): {proc.stderr[-500:]}", file=sys.stderr)
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            for name, r in res["results"].items():
                collected[s].setdefault(name, []).extend(r["rates"])
                pc = [i / c for i, c in zip(r["items"], r["cpu_seconds"])]
                per_cpu[s].setdefault(name, []).extend(pc)
                print(f"round {rnd + 1}: {s:<28s} {name:<32s} {[round(x, 1) for x in r['rates']]} "
                      f"per CPU-s {[round(x, 1) for x in pc]} "
                      f"(load {res['load_before'][0]:.1f}-{res['load_after'][0]:.1f})", file=sys.stderr)
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"round": rnd + 1, "results": collected,
                                           "flag_sets": {k: FLAG_SETS[k] for k in sets}}, indent=1))
    partial.unlink(missing_ok=True)  # complete: the final results file supersedes it
    return collected


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--inprocess", action="store_true")
    p.add_argument("--flags", action="store_true")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sequential", action="store_true",
                   help="flag sweep with one short-lived worker at a time (less memory; rounds alternate the sets)")
    p.add_argument("--only", nargs="*", default=None, help="substrings of variant names to keep")
    p.add_argument("--flag-sets", nargs="*", default=None, help="names of FLAG_SETS to sweep")
    p.add_argument("--K", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()

    if args.serve:
        serve(args)
        return
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from common import load_average, load_note, machine_info, markdown_table, print_table, write_results

    info = machine_info()
    before = load_average()
    if args.inprocess:
        out = worker(args)
        rows = [[k, v["median"], v["best"], f"{v['min']:.1f}-{v['best']:.1f}", v["per_cpu_second"]]
                for k, v in out["results"].items()]
        base = out["results"].get("o2o update_many (1M buffer)")
        if base:
            rows = [r + [f"{r[1] / base['median']:.2f}x", f"{r[4] / base['per_cpu_second']:.2f}x"] for r in rows]
        headers = ["variant", "updates/s (median)", "best", "range", "per CPU-s", "vs o2o update_many (wall)",
                   "(per CPU-s)"][: len(rows[0])]
        kind = "inprocess"
    else:
        sets = args.flag_sets or list(FLAG_SETS)
        only = args.only or ["o2o update_many (1M buffer)", "jit single update"]
        collected = sweep_flags_sequential(sets, only, args) if args.sequential else sweep_flags(sets, only, args)
        per_cpu = collected.pop("__per_cpu_second__", None)
        out = {"results": collected, "per_cpu_second": per_cpu, "flag_sets": {s: FLAG_SETS[s] for s in sets}}
        names = sorted({n for v in collected.values() for n in v})
        base = {n: statistics.median(collected["default"][n]) for n in names if collected.get("default", {}).get(n)}
        rows = []
        for s in sets:
            row = [f"{s} (`{FLAG_SETS[s]}`)" if FLAG_SETS[s] else s]
            for n in names:
                rates = collected[s].get(n, [])
                med = statistics.median(rates) if rates else float("nan")
                rel = f" ({med / base[n]:.2f}x)" if n in base and rates else ""
                row.append(f"{med:.1f}{rel}" + (f" [{min(rates):.0f}-{max(rates):.0f}]" if rates else ""))
            rows.append(row)
        headers = ["XLA_FLAGS"] + [f"{n}: updates/s median (vs default) [range]" for n in names]
        if per_cpu:
            for i, s in enumerate(sets):
                for n in names:
                    pcs = per_cpu[s].get(n, [])
                    rows[i].append(f"{statistics.median(pcs):.1f}" if pcs else "-")
            headers += [f"{n}: updates per CPU-second" for n in names]
        kind = "flags"
    after = load_average()
    note = load_note(before, after)
    title = f"o2o SAC update: {kind} experiments (K={args.K} per scan call)"
    print_table(title, headers, rows)
    print(note)
    md = f"## {title}\n\nCommand: `{info['command']}`\n\n{markdown_table(headers, rows)}\n\n{note}\n"
    out.update(machine=info, load_before=before, load_after=after)
    paths = write_results(f"experiments_{kind}", out, md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()
