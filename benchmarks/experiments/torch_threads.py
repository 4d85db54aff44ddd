"""PyTorch eager SAC (the peer) at 1 and 2 threads, with OpenMP's default (spinning) and passive
wait policy. Each setting runs in its own process (OMP_WAIT_POLICY is read at start-up), in turns,
for ``--rounds`` rounds. On a loaded 2-core machine the 2-thread default collapses (a descheduled
thread stalls its partner at every op's barrier); run it when the machine is busy to see it.

    .venv/bin/python benchmarks/experiments/torch_threads.py [--updates 200 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SETTINGS = {
    "2 threads, default wait policy": ({}, 2),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "1 thread": ({}, 1),
}


def worker(threads: int, updates: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from bench_sac_update import random_rows
    from peers.torch_sac import TensorReplay, TorchSAC, run_updates

    torch.set_num_threads(threads)
    replay = TensorReplay(17, 6, 1_000_000)
    replay.add(random_rows())
    agent = TorchSAC(17, 6)
    run_updates(agent, replay, 10)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_updates(agent, replay, updates)
        rates.append(updates / (time.perf_counter() - start))
    return {"rates": rates, "load": os.getloadavg()[0], "np": np.__version__}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.updates, args.repeats)))
        return

    from common import load_average, load_note, machine_info, markdown_table, print_table, write_results

    info = machine_info()
    before = load_average()
    rates: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for rnd in range(args.rounds):
        for name, (env, threads) in SETTINGS.items():
            cmd = [sys.executable, __file__, "--worker", str(threads), "--updates", str(args.updates),
                   "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name}: failed: {proc.stderr[-400:]}", file=sys.stderr)
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rates[name] += res["rates"]
            print(f"round {rnd + 1}: {name:<36s} {[round(r, 1) for r in res['rates']]} (load {res['load']:.2f})",
                  file=sys.stderr)
    after = load_average()
    rows = [[k, statistics.median(v), f"{min(v):.1f}-{max(v):.1f}"] for k, v in rates.items() if v]
    headers = ["torch eager SAC", "updates/s (median)", "range"]
    title = "PyTorch eager SAC: threads and OpenMP wait policy"
    print_table(title, headers, rows)
    note = load_note(before, after)
    print(note)
    md = f"## {title}\n\nCommand: `{info['command']}`\n\n{markdown_table(headers, rows)}\n\n{note}\n"
    write_results("experiments_torch_threads", {"machine": info, "load_before": before, "load_after": after,
                                                "rates": rates}, md)


if __name__ == "__main__":
    main()
