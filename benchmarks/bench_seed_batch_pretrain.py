"""Does pre-training S seeds as one vectorised program pay, for the WHOLE pre-training?

bench_seed_vmap.py measures only the update phase. This measures what a user waits for: S seeds of
one ``o2o pretrain`` config, dataset loading, initialisation, compilation, updates, evaluation and
checkpoints included, either

- sequential: ``run_pretrain`` for seed 0, 1, ..., S-1, one after another in one process (as one
  sweep worker runs them: the update is compiled once and reused), or
- vectorised: ``run_pretrain_seeds`` (``o2o pretrain --seeds``): one ``jit(vmap(update_many))``
  program over the S seeds' stacked states, one shared buffer.

Each contestant runs in a fresh Python process per repeat (so each pays its imports and its
compilation, as a command would), the repeats alternate the two (ABBA...), and the load average is
recorded. Reported: the whole pre-training's wall time inside the process (import excluded), the
process's wall time, and the steady-state update rate from the runs' own metrics (``perf/updates_per_s``
rows after each run's first call, which holds the compilation): per seed, and for all S seeds
together (sequential: one seed at a time, so the same; vectorised: S times the per-seed rate).

    .venv/bin/python benchmarks/bench_seed_batch_pretrain.py                       # TD3+BC, 3 seeds, 3000 steps
    .venv/bin/python benchmarks/bench_seed_batch_pretrain.py --algo iql --steps 5000 --repeats 3

The default dataset (BallCircle-dsrl-small) ships with o2o, so the same command runs on a GPU machine
(``jax.devices()`` decides the device). Writes ``benchmarks/results/seed_batch_pretrain.{json,md}``
(``--name`` to change).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_average, load_note, machine_info, markdown_table, print_table, write_results  # noqa: E402


def child(args) -> None:
    """One contestant, once: train the seeds into a temporary folder, print a JSON line of timings."""
    import jax

    from o2o.loops.offline import run_pretrain, run_pretrain_seeds
    from o2o.presets import resolve_pretrain_config
    from o2o.runs import read_metrics_csv

    seeds = list(range(args.seeds))
    overrides = [f"offline.steps_per_call={args.steps_per_call}", *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"seed{s}" for s in seeds]
        start = time.perf_counter()
        cfg = resolve_pretrain_config(args.algo, args.dataset, None, 0, steps=args.steps, overrides=overrides)
        if args.child == "sequential":
            for s, out in zip(seeds, outs):
                run_pretrain(resolve_pretrain_config(args.algo, args.dataset, None, s, steps=args.steps, overrides=overrides), out, progress=False)
        else:
            run_pretrain_seeds(cfg, seeds, outs, progress=False)
        seconds = time.perf_counter() - start
        rates = []  # steady state: every run's rows after its first call (which holds the compilation)
        for out in outs:
            rates += list(read_metrics_csv(out)["perf/updates_per_s"])[1:]
    print(json.dumps({"seconds": seconds, "per_seed_rate": statistics.median(rates) if rates else float("nan"),
                      "device": jax.devices()[0].platform}))


def run_child(args, contestant: str) -> dict:
    cmd = [sys.executable, __file__, "--child", contestant, "--algo", args.algo, "--dataset", args.dataset,
           "--seeds", str(args.seeds), "--steps", str(args.steps), "--steps-per-call", str(args.steps_per_call)]
    for o in args.overrides:
        cmd += ["--set", o]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{contestant} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="td3bc")
    parser.add_argument("--dataset", default="BallCircle-dsrl-small")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000, help="gradient steps per seed")
    parser.add_argument("--steps-per-call", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override of every run (repeatable)")
    parser.add_argument("--name", default="seed_batch_pretrain", help="results file name")
    parser.add_argument("--child", choices=["sequential", "vectorised"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    before = load_average()
    names = ["sequential", "vectorised"]
    results: dict[str, list[dict]] = {n: [] for n in names}
    loads = []
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            res = run_child(args, name)
            res["load_1min"] = load_average()[0]
            results[name].append(res)
            loads.append(res["load_1min"])
            print(f"  repeat {r + 1}/{args.repeats}  {name:<11} pre-training {res['seconds']:7.1f} s  process {res['process_seconds']:7.1f} s  "
                  f"steady {res['per_seed_rate']:8.1f} upd/s per seed  (load {res['load_1min']:.2f})", flush=True)
    after = load_average()
    device = results["sequential"][0]["device"]
    med = lambda name, key: statistics.median(x[key] for x in results[name])  # noqa: E731
    base = med("sequential", "seconds")
    headers = ["contestant", "whole pre-training, s (median)", "best", "process, s (median)", "speed-up (median)",
               "steady upd/s per seed", "steady upd/s, all seeds"]
    rows = []
    for name in names:
        per_seed = med(name, "per_seed_rate")
        total = per_seed * (args.seeds if name == "vectorised" else 1)
        label = f"sequential: {args.seeds} runs one after another" if name == "sequential" else f"vectorised: 1 program over {args.seeds} seeds"
        rows.append([label, med(name, "seconds"), min(x["seconds"] for x in results[name]), med(name, "process_seconds"),
                     f"{base / med(name, 'seconds'):.2f}x", per_seed, total])
    title = (f"Whole pre-training of {args.seeds} seeds ({args.algo} on {args.dataset}, {args.steps} steps each, "
             f"{args.steps_per_call} per call{', ' + ' '.join(args.overrides) if args.overrides else ''}; device {device})")
    print_table(title, headers, rows)
    info = machine_info()
    md = "\n".join([f"# {title}", "", markdown_table(headers, rows), "",
                    f"- {load_note(before, after)}; 1-min load after each repeat: {', '.join(f'{x:.2f}' for x in loads)}",
                    f"- {args.repeats} repeats per contestant, alternating (ABBA...), each a fresh process",
                    f"- command: `{info['command']}`; jax {info['jax']}; XLA_FLAGS '{info['XLA_FLAGS']}'"])
    paths = write_results(args.name, {"results": results, "machine": info, "args": vars(args), "load_before": before, "load_after": after}, md)
    print(f"outputs: {paths[0]}, {paths[1]}")


if __name__ == "__main__":
    main()
