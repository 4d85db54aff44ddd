"""Offline gradient updates per second: o2o (JAX) vs d3rlpy 2.6.0 for CQL, BEAR, IQL and TD3+BC.

Hopper sizes (obs 11, act 3), every network two hidden layers of 256 in both libraries (actor,
critics, IQL's value net, BEAR's VAE encoder and decoder), two critics, batch 256. Knobs that change
the cost of an update are matched (see ``ALGOS`` below and ``peers/d3rlpy_offline.py``). All
contestants run in ONE process and their repeats are interleaved (round robin), so outside load on a
shared machine hits them alike.

Contestants, per algorithm
- o2o: exactly what ``o2o pretrain`` executes: an ``OfflineTrainer`` (``o2o.loops.offline``) built on
  an in-memory dataset of 100k random Hopper-shaped rows (so the device replay buffer holds 100k rows),
  timed on ``trainer.step()``: one jitted ``update_many`` call of K = 1000 updates in a ``lax.scan``, each
  drawing its minibatch from the buffer inside, then the metrics to the host (no evaluation, no
  checkpoint: they fall outside the timed steps);
- d3rlpy 2.6.0: ``algo.update(batch)`` on pre-sampled ``TransitionMiniBatch`` objects (pure update:
  its numpy -> torch batch conversion and the optimiser steps, no logging), at 2 torch threads and at 1.

BEAR: o2o has ``bear-lag`` (BEAR + twin cost critics + a PID Lagrangian on the cost), whose config
cannot switch the cost part off (``num_cost_critics=0`` fails: an empty ensemble has no min). Two o2o
rows: bear-lag as is (2 cost critics) and with 1 cost critic (the least cost part the config allows);
an estimate for BEAR alone extrapolates the XLA flop counts to 0 cost critics (see the notes).

For every o2o row the achieved FLOP/s (XLA's flop count of one sample+update x updates/s) is set
against the machine's measured float32 matmul peak (``common.matmul_peak_flops`` plus matmul probes
timed among the contestants). TD3+BC's update holds a ``lax.cond`` (the delayed actor step), for
which XLA counts the costlier branch only: its flop count is the average over the policy delay of the
two branches, each counted on its own.

    .venv/bin/python benchmarks/bench_offline_update.py            # full run (~25 min on 2 quiet cores, ~60 loaded)
    .venv/bin/python benchmarks/bench_offline_update.py --quick    # smoke test
    .venv/bin/python benchmarks/bench_offline_update.py --algos iql td3bc --repeats 3

Writes ``benchmarks/results/offline_update.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sac_update import matmul_probe  # noqa: E402
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

OBS_DIM, ACT_DIM, BATCH, HIDDEN = 11, 3, 256, (256, 256)
FILLED = 100_000
TASK = "Hopper"

# Per algorithm: the o2o agent, its config overrides (sizes and cost-relevant knobs), the d3rlpy
# algorithm, and the speed-up target over d3rlpy.
ALGOS = {
    "cql": dict(label="CQL", o2o="cql", d3="cql", target=5.0,
                o2o_rows={"o2o cql": dict(hidden_dims=HIDDEN, num_critics=2, batch_size=BATCH, cql_n_actions=10,
                                          cql_lagrange=False, cql_max_target_backup=False, backup_entropy=False)}),
    "bear": dict(label="BEAR", o2o="bear-lag", d3="bear", target=5.0,
                 o2o_rows={
                     "o2o bear-lag (2 cost critics, as is)": dict(
                         hidden_dims=HIDDEN, num_critics=2, num_cost_critics=2, batch_size=BATCH,
                         vae_hidden_dims=HIDDEN, vae_latent_dim=None, num_target_actions=10, mmd_num_samples=10,
                         mmd_kernel="gaussian", mmd_sigma=50.0, policy_warmup_steps=0),
                     "o2o bear-lag (1 cost critic)": dict(
                         hidden_dims=HIDDEN, num_critics=2, num_cost_critics=1, batch_size=BATCH,
                         vae_hidden_dims=HIDDEN, vae_latent_dim=None, num_target_actions=10, mmd_num_samples=10,
                         mmd_kernel="gaussian", mmd_sigma=50.0, policy_warmup_steps=0),
                 }),
    "iql": dict(label="IQL", o2o="iql", d3="iql", target=3.0,
                o2o_rows={"o2o iql": dict(hidden_dims=HIDDEN, num_critics=2, batch_size=BATCH, expectile=0.7,
                                          beta=3.0, max_weight=100.0)}),
    "td3bc": dict(label="TD3+BC", o2o="td3bc", d3="td3bc", target=3.0,
                  o2o_rows={"o2o td3bc": dict(hidden_dims=HIDDEN, num_critics=2, batch_size=BATCH, policy_delay=2,
                                              alpha=2.5, policy_noise=0.2, noise_clip=0.5)}),
}
PEAK_TARGET = 0.5  # each o2o row >= 50% of the measured matmul peak


def random_dataset(n: int = FILLED, seed: int = 0):
    import numpy as np

    from o2o.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    terminals = rng.random(n) < 0.001
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    return Dataset(
        observations=rng.standard_normal((n, OBS_DIM), np.float32),
        actions=rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        costs=(rng.random(n) < 0.1).astype(np.float32),
        next_observations=rng.standard_normal((n, OBS_DIM), np.float32),
        terminals=terminals,
        timeouts=timeouts & ~terminals,
        has_costs=True,
        metadata={"task": TASK, "generator": "benchmarks/bench_offline_update.py (random rows)"},
    )


def n_params(tree) -> int:
    import jax

    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


# ----------------------------------------------------------------------------------- o2o
def o2o_trainer(algo: str, overrides: dict, K: int, dataset):
    """The trainer ``o2o pretrain --algo <algo>`` builds, on the in-memory dataset."""
    from o2o.agents import get_offline_agent
    from o2o.loops.offline import OfflineConfig, OfflineTrainer, pretrain_config_class

    spec = get_offline_agent(algo)
    never = K * 10**9  # no evaluation / checkpoint inside the timed steps
    cfg = pretrain_config_class(algo)(
        dataset="random-hopper-100k", task=TASK, seed=0, cost_limit=20.0 if spec.safe else None,
        agent=spec.config_cls(**overrides),
        offline=OfflineConfig(steps=never, steps_per_call=K, eval_every=never, checkpoint_every=never),
    )
    return OfflineTrainer(cfg, dataset=dataset)


def one_update_flops(trainer) -> dict[str, float]:
    """XLA's flop count of ONE sample + update, as the trainer's scan body runs it (a scan's cost
    analysis counts the body once). A ``lax.cond`` in the update (TD3+BC's delayed actor) is counted
    by XLA as its costlier branch; then each branch is counted alone (cond replaced by the branch
    while tracing) and the per-update figure is their average over the policy delay."""
    from unittest import mock

    import jax

    from o2o.loops.offline import _sample

    update, bs = trainer.spec.module.update, trainer.cfg.agent.batch_size

    def count():
        one = jax.jit(lambda s, b, k: update(s, _sample(b, jax.random.fold_in(k, 1), bs), k))
        return xla_flops(one, trainer.state, trainer.buffer, jax.random.PRNGKey(0))

    out = {"xla": count()}
    delay = getattr(trainer.cfg.agent, "policy_delay", None)
    if delay:
        for name, pick in (("actor_step", 0), ("no_actor_step", 1)):
            def branch(pred, true_fn, false_fn, *operands, _pick=pick):
                return (true_fn, false_fn)[_pick](*operands)

            with mock.patch.object(jax.lax, "cond", branch):
                out[name] = count()
        out["per_update"] = (out["actor_step"] + (delay - 1) * out["no_actor_step"]) / delay
    else:
        out["per_update"] = out["xla"]
    return out


def o2o_contestants(algos: list[str], K: int, notes: list[str], info: dict):
    import jax

    dataset = random_dataset()
    contestants, flops, params = {}, {}, {}
    for a in algos:
        for row, overrides in ALGOS[a]["o2o_rows"].items():
            trainer = o2o_trainer(ALGOS[a]["o2o"], overrides, K, dataset)
            assert int(trainer.buffer.size) == FILLED
            flops[row] = one_update_flops(trainer)
            st = trainer.state
            params[row] = {name: n_params(getattr(st, name).params) for name in ("actor", "critic", "value", "vae",
                                                                                  "cost_critic") if hasattr(st, name)}
            print(f"  {row}: {flops[row]['per_update'] / 1e6:.0f} MFLOP per sample+update; params {params[row]}")

            def run(items: int, _trainer=trainer) -> None:
                assert items == K
                _trainer.step()  # K updates in one jitted call, metrics to the host (as pretrain)
                jax.block_until_ready(_trainer.state)

            contestants[row] = (run, K)
    info["o2o_params"] = params
    return contestants, flops


# ----------------------------------------------------------------------------------- d3rlpy
def d3rlpy_contestants(algos: list[str], items: int, threads: int, notes: list[str], info: dict, device: str = "cpu"):
    import torch

    try:
        import d3rlpy

        from peers.d3rlpy_offline import D3rlpyOfflineRunner, parameter_counts
    except Exception as e:  # noqa: BLE001
        notes.append(f"d3rlpy skipped: {type(e).__name__}: {e}")
        return {}
    info["d3rlpy"] = d3rlpy.__version__
    out, params = {}, {}
    for a in algos:
        runner = D3rlpyOfflineRunner(ALGOS[a]["d3"], OBS_DIM, ACT_DIM, HIDDEN, BATCH,
                                     device="cuda:0" if device == "cuda" else "cpu:0")
        params[a] = parameter_counts(runner.algo)
        if device == "cuda":  # one GPU row: torch's CPU thread count hardly matters there
            out[f"d3rlpy {ALGOS[a]['label']} (cuda)"] = (runner.run, items)
            continue

        def contestant(n_threads, _runner=runner):
            def run(n: int) -> None:
                torch.set_num_threads(n_threads)
                _runner.run(n)

            return run

        for t in dict.fromkeys((threads, 1)):
            out[f"d3rlpy {ALGOS[a]['label']} ({t} thread{'s' if t != 1 else ''})"] = (contestant(t), items)
    info["d3rlpy_params"] = params
    return out


# ----------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short repeats: a smoke test, not a measurement")
    p.add_argument("--algos", nargs="+", choices=list(ALGOS), default=list(ALGOS), help="algorithms to run")
    p.add_argument("--no-peers", action="store_true", help="o2o only (no d3rlpy)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per contestant (default 5, quick 2)")
    p.add_argument("--K", type=int, default=None, help="updates per o2o call (default 1000, quick 50)")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads for d3rlpy (also 1)")
    p.add_argument("--name", default=None, help="results file stem (default offline_update, with --device cuda offline_update_gpu)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: d3rlpy on cuda:0, and o2o on JAX's default device, which must then be a GPU")
    args = p.parse_args(argv)
    args.name = args.name or ("offline_update_gpu" if args.device == "cuda" else "offline_update")
    if args.device == "cuda":
        import jax

        if jax.default_backend() != "gpu":
            raise SystemExit(f"--device cuda: JAX's default backend is {jax.default_backend()!r}, not a GPU")

    repeats = args.repeats or (2 if args.quick else 5)
    K = args.K or (50 if args.quick else 1000)
    d3_items = 20 if args.quick else 100
    target_seconds = 1.5 if args.quick else 6.0
    algos = [a for a in ALGOS if a in args.algos]

    info = machine_info()
    sizes = (1024, 2048, 4096, 8192) if args.device == "cuda" else (256, 512, 1024, 2048)
    if args.device == "cuda":
        import jax
        import torch

        info["gpu"] = jax.devices()[0].device_kind
        info["jax_default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
        info["torch_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        print(f"GPU: {info['gpu']}; jax_default_matmul_precision {info['jax_default_matmul_precision']}, "
              f"torch matmul allow_tf32 {info['torch_allow_tf32']}")
    before = load_average()
    print(f"machine: {info['cores']} cores, {info['cpu']}, load {before}; jax {info['jax']}, torch {info['torch']}")
    notes: list[str] = []

    peak = matmul_peak_flops(sizes=sizes, repeats=2 if args.quick else 5)
    print(f"matmul peak (f32, jitted, {sizes[0]}..{sizes[-1]}): {peak['peak_flops'] / 1e9:.1f} GFLOP/s; "
          + ", ".join(f"{n}: {v['best'] / 1e9:.1f}" for n, v in peak["per_size"].items()))

    contestants, flops = o2o_contestants(algos, K, notes, info)
    o2o_rows = list(contestants)
    if not args.no_peers:
        contestants.update(d3rlpy_contestants(algos, d3_items, args.torch_threads, notes, info, args.device))
    probes = {}
    for n in (256, 1024):
        run, per_item = matmul_probe(n)
        probes[f"matmul probe ({n}^3, jitted f32)"] = per_item
        contestants[f"matmul probe ({n}^3, jitted f32)"] = (run, 4000 if n == 256 else 200)
    slow = [n for n in contestants if n not in o2o_rows]
    timings = interleaved(contestants, repeats=repeats, warmup=1, calibrate=slow, target_seconds=target_seconds)
    probe_timings = {n: timings.pop(n) for n in probes}
    probe_name = max(probes, key=lambda n: probe_timings[n].median * probes[n])
    probe_flops_median = probe_timings[probe_name].median * probes[probe_name]
    peak_end = matmul_peak_flops(sizes=sizes, repeats=2 if args.quick else 3)
    peak_flops = max(peak["peak_flops"], peak_end["peak_flops"],
                     *(t.best * probes[n] for n, t in probe_timings.items()))
    after = load_average()

    rows, results, headline = [], {}, []
    for a in algos:
        spec = ALGOS[a]
        d3 = {n: t for n, t in timings.items() if n.startswith(f"d3rlpy {spec['label']} (")}
        d3_best = max(d3.items(), key=lambda kv: kv[1].median) if d3 else None
        d3_2t = d3.get(f"d3rlpy {spec['label']} ({args.torch_threads} threads)")
        for name in [n for n in spec["o2o_rows"] if n in timings] + list(d3):
            t = timings[name]
            is_o2o = name in spec["o2o_rows"]
            f = flops[name]["per_update"] if is_o2o else None
            achieved = f * t.median if is_o2o else None
            vs_best = t.median / d3_best[1].median if (is_o2o and d3_best) else None
            vs_2t = t.median / d3_2t.median if (is_o2o and d3_2t) else None
            met_speed = None if vs_best is None else vs_best >= spec["target"]
            met_peak = None if achieved is None else achieved / peak_flops >= PEAK_TARGET
            rows.append([spec["label"], name, t.median, f"{min(t.rates):.1f}-{max(t.rates):.1f}", t.per_cpu_second,
                         f"{vs_best:.2f}x" if vs_best is not None else "-",
                         f"{vs_2t:.2f}x" if vs_2t is not None else "-",
                         f"{f / 1e6:.0f}" if f else "-",
                         f"{achieved / 1e9:.1f}" if achieved else "-",
                         f"{100 * achieved / peak_flops:.0f}%" if achieved else "-",
                         f"{100 * achieved / probe_flops_median:.0f}%" if achieved else "-",
                         "-" if met_speed is None else f"{'met' if met_speed else 'NOT met'} (>= {spec['target']:g}x)",
                         "-" if met_peak is None else f"{'met' if met_peak else 'NOT met'} (>= 50%)"])
            results[name] = {**t.as_dict(), "algorithm": spec["label"],
                             "flops_per_update": flops[name] if is_o2o else None,
                             "achieved_flops": achieved, "fraction_of_peak": achieved / peak_flops if achieved else None,
                             "fraction_of_concurrent_matmul": achieved / probe_flops_median if achieved else None,
                             "speedup_vs_d3rlpy_best": vs_best, "speedup_vs_d3rlpy_2threads": vs_2t,
                             "d3rlpy_best_row": d3_best[0] if (is_o2o and d3_best) else None,
                             "target_speedup": spec["target"] if is_o2o else None,
                             "speed_target_met": met_speed, "peak_target_met": met_peak,
                             "ceiling_updates_per_s": peak_flops / f if f else None}
            if is_o2o and d3_best:
                headline.append(
                    f"{spec['label']}: {name} {t.median:.1f} updates/s = {vs_best:.2f}x d3rlpy at its best thread "
                    f"setting ({d3_best[0]}: {d3_best[1].median:.1f}/s)"
                    + (f", {vs_2t:.2f}x d3rlpy at {args.torch_threads} threads ({d3_2t.median:.1f}/s)" if d3_2t else "")
                    + f"; target >= {spec['target']:g}x {'met' if met_speed else 'NOT met'}; "
                    f"{100 * achieved / peak_flops:.0f}% of the matmul peak "
                    f"({'met' if met_peak else 'NOT met'}); flop ceiling {peak_flops / f:.1f} updates/s "
                    f"= {peak_flops / f / d3_best[1].median:.2f}x d3rlpy's best.")

    bear_rows = [n for n in ALGOS["bear"]["o2o_rows"] if n in flops]
    if len(bear_rows) == 2:
        f2, f1 = (flops[n]["per_update"] for n in bear_rows)
        f0 = 2 * f1 - f2  # linear in the number of cost critics: extrapolate to none
        rate = timings[bear_rows[0]].median * f2 / f0
        notes.append(
            f"BEAR without the cost part (not measurable: the config has no switch): XLA counts "
            f"{f2 / 1e6:.0f} MFLOP with 2 cost critics, {f1 / 1e6:.0f} with 1, so ~{f0 / 1e6:.0f} MFLOP with none "
            f"(linear extrapolation; the PID controller is a few scalar ops). At bear-lag's measured GFLOP/s that "
            f"would be ~{rate:.1f} updates/s"
            + (f" = ~{rate / max(t.median for n, t in timings.items() if n.startswith('d3rlpy BEAR (')):.2f}x d3rlpy "
               f"BEAR's best" if any(n.startswith("d3rlpy BEAR (") for n in timings) else "")
            + f"; its flop ceiling {peak_flops / f0:.1f} updates/s (an estimate, not a measurement).")
    if "td3bc" in algos:
        fl = flops[next(iter(ALGOS["td3bc"]["o2o_rows"]))]
        notes.append(f"TD3+BC flop count: XLA counts the update's lax.cond as its costlier branch "
                     f"({fl['xla'] / 1e6:.0f} MFLOP); the actor step alone {fl['actor_step'] / 1e6:.0f}, the critic-only "
                     f"step {fl['no_actor_step'] / 1e6:.0f} (it still evaluates the actor loss forward for its metrics); "
                     f"per update over the policy delay of 2: {fl['per_update'] / 1e6:.0f} MFLOP.")

    headers = ["algorithm", "contestant", "updates/s (median)", "range", "per CPU-s", "vs d3rlpy best",
               f"vs d3rlpy {args.torch_threads} thr", "MFLOP/update", "GFLOP/s", "% of matmul peak",
               "% of concurrent matmul", "speed target", "peak target"]
    title = (f"Offline updates/s, obs {OBS_DIM}, act {ACT_DIM} (Hopper), every net 2x256, batch {BATCH}, "
             f"2 critics; o2o K={K} per call")
    print_table(title, headers, rows)
    note = load_note(before, after)
    facts = [
        f"Command: `{info['command']}` ({'quick smoke test' if args.quick else f'{repeats} interleaved repeats'}; "
        f"o2o {K} updates per call and per timed repeat (`OfflineTrainer.step()`, what `o2o pretrain` runs); "
        f"d3rlpy at most {d3_items} updates per repeat, calibrated to ~{target_seconds:g} s).",
        f"Machine: {info['cores']} cores ({info['cpu']})" + (f", GPU {info['gpu']} (o2o on it through JAX, d3rlpy on "
        f"cuda:0; JAX matmul precision {info['jax_default_matmul_precision']}, torch allow_tf32 {info['torch_allow_tf32']})"
        if args.device == "cuda" else "") + f"; jax {info['jax']}, torch {info['torch']}, "
        f"d3rlpy {info.get('d3rlpy') or '-'}; XLA_FLAGS='{info['XLA_FLAGS']}'; git {info['git']}; {note}.",
        f"Measured f32 matmul peak {peak_flops / 1e9:.1f} GFLOP/s (best over n = {'/'.join(map(str, sizes))} square products: "
        f"at the start {peak['peak_flops'] / 1e9:.1f}, at the end {peak_end['peak_flops'] / 1e9:.1f}, among the "
        f"contestants {max(t.best * probes[n] for n, t in probe_timings.items()) / 1e9:.1f}; by size at the start: "
        + ", ".join(f"{n}: {v['best'] / 1e9:.1f}" for n, v in peak["per_size"].items()) + "). "
        "'% of concurrent matmul': against jitted matmuls timed among the contestants (medians: "
        + ", ".join(f"{n.split('(')[1].split(',')[0]} {probe_timings[n].median * probes[n] / 1e9:.1f}" for n in probes)
        + " GFLOP/s), the fraction under the same load.",
        "MFLOP/update = XLA's flop count of one o2o sample+update; GFLOP/s = that x the median updates/s. The "
        "d3rlpy rows have no flop figure (other code; for CQL, IQL and TD3+BC the math is close to o2o's).",
        f"Speed-ups = the o2o row's median / d3rlpy's median, at d3rlpy's best thread setting and at "
        f"{args.torch_threads} threads. per CPU-s = updates per second of process CPU time (all threads).",
        f"o2o parameters: {info.get('o2o_params')}; d3rlpy parameters: {info.get('d3rlpy_params')}.",
    ] + headline + notes
    print("\n".join(facts))
    md = f"## {title}\n\n{markdown_table(headers, rows)}\n\n" + "\n".join(f"- {f}" for f in facts) + "\n"
    payload = {"machine": info, "load_before": before, "load_after": after, "quick": args.quick,
               "repeats": repeats, "K": K, "algos": algos, "flops": flops, "matmul_peak": peak,
               "matmul_peak_end": peak_end, "peak_flops": peak_flops, "results": results, "notes": notes,
               "headline": headline,
               "matmul_probes": {n: {**probe_timings[n].as_dict(), "flops_per_item": probes[n]} for n in probes}}
    paths = write_results(args.name, payload, md)
    print("wrote", *map(str, paths))
    return payload


if __name__ == "__main__":
    main()
