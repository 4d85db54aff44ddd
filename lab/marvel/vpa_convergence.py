"""How far does VPA take the critics towards pi0's values? (issue #35, "VPA until the error is gone")

For one Marvel fine-tuning run (its config, pre-trained start and dataset), the Monte-Carlo values of
pi0 are computed once (``o2o.experiments.diagnose.monte_carlo_pairs``: pi0's own and random
state-actions, continued past the time limit), then VPA is run from the run's starting critics at each
target rate in ``--taus`` and scored against those values after each number of steps in ``--steps``
(one VPA per rate, scored on the way). Rows also score the reward critic reduced by the ensemble mean
instead of the min, to separate the min's downward bias from slow bootstrapping. The run directory is
only read.

    python lab/marvel/vpa_convergence.py RUN_DIR --out DIR [--pairs 64] [--rollouts 10] \
        [--steps 10000,20000,40000] [--taus 0.02,0.05]

Writes DIR/mc_pairs.npz (reused when it exists with the same settings), DIR/vpa_convergence.json and
.md; prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--rollouts", type=int, default=10)
    p.add_argument("--steps", default="10000,20000,40000")
    p.add_argument("--taus", default="0.02,0.05")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from o2o.bridge.pretrained import load_pretrained
    from o2o.bridge.vpa import offline_buffer, vpa_stage
    from o2o.config import load_yaml
    from o2o.envs import get_task
    from o2o.experiments.diagnose import monte_carlo_pairs, monte_carlo_summary, score_critics, tail_horizon
    from o2o.loops.finetune import agent_init_key, build_agent
    from o2o.loops.marvel import offline_dataset
    from o2o.methods import get_method
    from o2o.runconfig import finetune_config_class, load_run_config

    run_dir, out = Path(args.run_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = load_yaml(run_dir / "config.yaml")
    cfg = load_run_config(finetune_config_class(saved["method"]), saved)
    task, spec = get_task(cfg.task), get_method(cfg.method)
    pre = load_pretrained(cfg.pretrained, task=task.name, need_cost_critic=cfg.vpa.init == "pretrained")
    start = build_agent(cfg, spec, pre, agent_init_key(cfg.seed))
    a = cfg.agent
    horizon = tail_horizon(a.gamma)
    settings = {"run": str(run_dir), "pairs": args.pairs, "rollouts": args.rollouts, "horizon": horizon, "seed": args.seed}

    cache = out / "mc_pairs.npz"
    samples = None
    if cache.exists():
        data = np.load(cache)
        if json.loads(str(data["settings"])) == settings:
            samples = {s: {k: data[f"{s}/{k}"] for k in ("observations", "actions", "returns", "costs")} for s in ("policy", "random")}
    if samples is None:
        t0 = time.time()
        samples = monte_carlo_pairs(task, start.actor, pre.obs_stats, a.reward_scale, a.gamma, pairs=args.pairs,
                                    rollouts=args.rollouts, horizon=horizon, past_time_limit=True, seed=args.seed, progress=False)
        np.savez(cache, settings=json.dumps(settings), **{f"{s}/{k}": v for s, d in samples.items() for k, v in d.items()})
        print(f"Monte-Carlo values: {time.time() - t0:.0f} s", flush=True)

    def score(state):
        row = {}
        for source, sample in samples.items():
            sc = score_critics(state, sample, pre.obs_stats, a.cost_reduce)
            mean, std = pre.obs_stats
            S, A = jnp.asarray((sample["observations"] - mean) / std), jnp.asarray(sample["actions"])
            q_avg = np.asarray(state.critic.apply_fn(state.critic.params, S, A).mean(axis=0))
            sc["reward_abs_error_ensemble_mean"] = float(np.abs(q_avg - sample["returns"].mean(axis=1)).mean())
            sc["q_mean_ensemble_mean"] = float(q_avg.mean())
            row[source] = sc
        return row

    result = {**settings, "task": task.name, "vpa_batch_size": cfg.vpa.batch_size,
              "mc": {s: monte_carlo_summary(d) for s, d in samples.items()}, "start": score(start), "rows": []}
    steps = sorted(int(s) for s in args.steps.split(","))
    dataset = offline_dataset(pre, task)
    buffer = offline_buffer(dataset, pre.obs_mean, pre.obs_std, timeouts_terminal=cfg.vpa.timeouts_terminal)
    for tau in (float(t) for t in args.taus.split(",")):
        vpa = dataclasses.replace(cfg.vpa, tau=tau, steps=steps[-1], steps_per_call=math.gcd(*steps, cfg.vpa.steps_per_call))
        state = jax.tree_util.tree_map(jnp.array, start)  # the stage donates its input
        stage = vpa_stage(state, buffer, vpa, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0xB41D6E))
        t0 = time.time()
        for k in steps:
            while stage.position < k:
                stage.step()
            result["rows"].append({"tau": tau, "steps": k, "wall_s": time.time() - t0, **score(stage.state)})
            print(format_row(result, result["rows"][-1]), flush=True)
    (out / "vpa_convergence.json").write_text(json.dumps(result, indent=2))
    (out / "vpa_convergence.md").write_text(format_table(result))
    print(format_table(result))
    return 0


def _r(v) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def format_row(result, r) -> str:
    cells = [f"{r['tau']:g}", str(r["steps"])]
    for source in ("policy", "random"):
        s0, s = result["start"][source], r[source]
        cells += [f"{s['reward_abs_error']:.2f} ({s['reward_abs_error'] / s0['reward_abs_error']:.0%})",
                  f"{s['reward_abs_error_ensemble_mean']:.2f}",
                  f"{s['cost_abs_error']:.2f} ({s['cost_abs_error'] / s0['cost_abs_error']:.0%})",
                  f"{s['q_mean']:.2f} / {s['qc_mean']:.2f}", f"{_r(s['reward_spearman'])} / {_r(s['cost_spearman'])}"]
    return "| " + " | ".join(cells) + " |"


def format_table(result) -> str:
    mc = result["mc"]
    lines = [
        f"# VPA against Monte-Carlo: {result['task']} ({result['run']})",
        "",
        f"{result['pairs']} state-actions per source, {result['rollouts']} rollouts each, {result['horizon']} steps past the pair "
        f"(past the time limit). Monte-Carlo means (standard error of a pair's value): policy return "
        f"{mc['policy']['mc_return_mean']:.2f} ({mc['policy']['mc_return_standard_error']:.2f}), cost "
        f"{mc['policy']['mc_cost_mean']:.2f} ({mc['policy']['mc_cost_standard_error']:.2f}); random return "
        f"{mc['random']['mc_return_mean']:.2f} ({mc['random']['mc_return_standard_error']:.2f}), cost "
        f"{mc['random']['mc_cost_mean']:.2f} ({mc['random']['mc_cost_standard_error']:.2f}). Errors: mean absolute, "
        "with the share of the start's error left; Q with the ensemble min (the agent's) and mean.",
        "",
        "| tau | steps | policy: Q error | Q error (mean) | Qc error | Q / Qc mean | Spearman Q / Qc | random: Q error | Q error (mean) | Qc error | Q / Qc mean | Spearman Q / Qc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    start = {"tau": float("nan"), "steps": 0, **result["start"]}
    lines.append(format_row(result, start).replace("| nan |", "| start |"))
    lines += [format_row(result, r) for r in result["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
