"""Figures and the claims table of the Marvel comparison (docs/results.md#marvel).

    .venv/bin/python lab/marvel/marvel_report.py RUNS_ROOT OUT_DIR

RUNS_ROOT holds marvel-<Task>/finetune/<method>-s<seed>/ from `o2o marvel` (budget:
lab/marvel/marvel-budget.yaml), or is an `o2o sweep` directory whose runs/<method>/<Task>/seed<k>/
are fine-tuning runs (lab/marvel/marvel.yaml). Writes OUT_DIR/marvel-<Task>-main.png (marvel, warm-start,
from-scratch), OUT_DIR/marvel-<Task>-ablation.png (vpa-only, apid-only, vpa-pid, marvel) and prints a
markdown table per task: start (iteration 0) and final evaluation return and cost, the first
iteration from which the evaluation cost stays <= kappa, the mean evaluation return and cost over
the online evaluations (after iteration 0), cumulative training cost, violating training
episodes; mean and 95% t-interval over seeds. Where marvel runs hold `o2o diagnose-critic` output
(diagnose_critic.json), a further table per task: the Spearman rank correlation of the critics with
Monte-Carlo returns and costs before and after VPA (Marvel's Table 1), over those seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from o2o.experiments.aggregate import format_mean_ci
from o2o.experiments.plots import plot_learning_curves
from o2o.runs import read_metrics_csv

MAIN = ["marvel", "warm-start", "from-scratch"]
ABLATION = ["vpa-only", "apid-only", "vpa-pid", "marvel"]
COLORS = {"marvel": "tab:red", "warm-start": "tab:blue", "from-scratch": "tab:gray", "vpa-only": "tab:green",
          "apid-only": "tab:purple", "vpa-pid": "tab:orange", "vpa-init": "tab:brown"}


fmt = format_mean_ci


def run_stats(run: Path, limit: float) -> dict:
    m = read_metrics_csv(run / "metrics.csv")
    valid = ~np.isnan(m["eval/return"])
    it, ret, cost = m["step"][valid], m["eval/return"][valid], m["eval/cost"][valid]
    ok = cost <= limit
    settle = next((int(it[i]) for i in range(len(it)) if ok[i:].all()), None)
    s = json.loads((run / "summary.json").read_text())
    return {"start_return": ret[0], "start_cost": cost[0], "final_return": ret[-1], "final_cost": cost[-1],
            "best_return": ret[1:].max() if len(ret) > 1 else ret[0], "settle": settle,
            "mean_return": ret[1:].mean() if len(ret) > 1 else ret[0], "mean_cost": cost[1:].mean() if len(cost) > 1 else cost[0],
            "cum_cost": s["train_cumulative_cost"], "violations": s["train_violating_episodes"], "episodes": s["train_episodes"],
            "iterations": s["iterations"], "env_steps": s["env_steps"]}


def finished_runs(root: Path) -> dict[str, dict[str, list[Path]]]:
    """{task: {method: [finished run dirs, by seed]}} from `o2o marvel` directories or a sweep directory."""
    by_task: dict[str, dict[str, list[Path]]] = {}

    def seed(run: Path) -> int:  # <method>-s<k> (o2o marvel) or seed<k> (o2o sweep)
        return int(run.name.rsplit("-s", 1)[1] if "-s" in run.name else run.name.removeprefix("seed"))

    for task_dir in sorted(root.glob("marvel-*")):  # o2o marvel: marvel-<Task>/finetune/<method>-s<seed>
        for run in sorted((task_dir / "finetune").glob("*-s*"), key=seed):
            if (run / "summary.json").exists():
                by_task.setdefault(task_dir.name.split("-", 1)[1], {}).setdefault(run.name.rsplit("-s", 1)[0], []).append(run)
    for method_dir in sorted((root / "runs").glob("*")):  # o2o sweep: runs/<method>/<Task>/seed<k>
        for task_dir in sorted(method_dir.glob("*")):
            for run in sorted(task_dir.glob("seed*"), key=seed):
                if (run / "summary.json").exists():
                    by_task.setdefault(task_dir.name, {}).setdefault(method_dir.name, []).append(run)
    return by_task


def online_critic_table(task: str, runs: dict[str, list[Path]], limit: float) -> None:
    """What the multiplier and the online cost critic read at the end of fine-tuning: lambda, the cost
    critic's mean on replayed state-actions and on the actor's actions, and the episode cost it should track."""
    print(f"\n#### {task}: the multiplier and the online cost critic at the end (last 5 iterations; mean ± 95% t-interval)\n")
    print("| method | lambda | Qc on replayed (s, a) | Qc on (s, pi(s)) | training episode cost | per-step cost | "
          "discounted cost-to-go, were the cost spread evenly | K_p / K0 at the first violating iteration |")
    print("|---|---|---|---|---|---|---|---|")
    for method, group in runs.items():
        cols: dict[str, list[float]] = {"lagrange": [], "loss/qc_mean": [], "loss/actor_qc": [], "train/episode_cost": [], "step_cost": [],
                                        "to_go": [], "kp_first": []}
        for r in group:
            m = read_metrics_csv(r / "metrics.csv")
            rows = ~np.isnan(m["train/episode_cost"])
            for k in ("lagrange", "loss/qc_mean", "loss/actor_qc", "train/episode_cost"):
                cols[k].append(float(np.nanmean(m[k][rows][-5:])))
            cols["step_cost"].append(float(np.nanmean((m["train/episode_cost"] / m["train/episode_length"])[rows][-5:])))
            # sum_t gamma^t c over the rest of an episode of length T, averaged over the T start times
            config = yaml.safe_load((r / "config.yaml").read_text())
            agent = config["agent"]
            gamma = agent["gamma"] if agent.get("cost_gamma") is None else agent["cost_gamma"]
            horizon = int(np.nanmean(m["train/episode_length"][rows][-5:]))
            to_go = np.mean([(1 - gamma ** (horizon - t)) / (1 - gamma) for t in range(horizon)])
            cols["to_go"].append(cols["step_cost"][-1] * float(to_go))
            # (P)ID controllers: the proportional gain the first violation met (after the update it caused)
            violating = np.flatnonzero(m["train/episode_cost"][rows] > limit)
            kp = m["lagrange_kp"][rows] if "lagrange_kp" in m else np.full(rows.sum(), np.nan)
            if len(violating) and not np.isnan(kp[violating[0]]):
                cols["kp_first"].append(float(kp[violating[0]]) / config["lagrange"]["kp"])
        print(f"| {method} | {fmt(cols['lagrange'], 2)} | {fmt(cols['loss/qc_mean'])} | {fmt(cols['loss/actor_qc'])} | "
              f"{fmt(cols['train/episode_cost'])} | {fmt(cols['step_cost'], 3)} | {fmt(cols['to_go'])} | "
              f"{fmt(cols['kp_first'], 2) if cols['kp_first'] else '-'} |")


def critic_table(task: str, runs: list[Path]) -> None:
    """Marvel's Table 1 over the seeds whose run has diagnose_critic.json (one VPA per seed)."""
    diags = [json.loads(p.read_text()) for r in runs if (p := r / "diagnose_critic.json").exists()]
    if not diags:
        return
    print(f"\n#### {task}: critics vs Monte-Carlo of the pre-trained policy, before / after VPA "
          f"({len(diags)} seeds, {diags[0]['pairs']} state-actions x {diags[0]['rollouts']} rollouts per source)\n")
    print("| source | critic | Spearman before VPA | after VPA | MC mean | critic mean before | after |")
    print("|---|---|---|---|---|---|---|")
    for source in ("policy", "random"):
        for critic, key, mc, mean in (("reward Q", "reward_spearman", "mc_return_mean", "q_mean"),
                                      ("cost Qc", "cost_spearman", "mc_cost_mean", "qc_mean")):
            src = [d["sources"][source] for d in diags]

            def col(stage: str, k: str, src=src) -> str:
                vals = [s[stage][k] for s in src if s[stage][k] is not None]
                return fmt(vals, digits=2 if k.endswith("spearman") else 1) if vals else "n/a (MC values all equal)"
            print(f"| {source} | {critic} | {col('before', key)} | {col('after', key)} | {fmt([s[mc] for s in src])} | "
                  f"{col('before', mean)} | {col('after', mean)} |")


def main(root: str, out: str) -> None:
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for task, runs in finished_runs(root).items():
        limit = json.loads(next(iter(runs.values()))[0].joinpath("summary.json").read_text())["cost_limit"]
        for name, group in (("main", MAIN), ("ablation", ABLATION)):
            groups = {m: [str(r) for r in runs[m]] for m in group if m in runs}
            if len(groups) >= 2:
                png = plot_learning_curves(groups, out / f"marvel-{task}-{name}.png", title=f"{task}: {', '.join(groups)}",
                                           cost_limit=limit, colors=COLORS)
                print(f"figure: {png}")
        print(f"\n### {task} (cost limit {limit:g}; mean ± 95% t-interval over seeds)\n")
        print("| method | seeds | start return | start cost | final return | final cost | best return | "
              "online mean return | online mean cost | eval cost <= limit from iteration | cumulative training cost | violating training episodes |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for method, group in runs.items():
            st = [run_stats(r, limit) for r in group]
            settle = [s["settle"] for s in st]
            settle_txt = ", ".join("never" if x is None else str(x) for x in settle)
            print(f"| {method} | {len(st)} | {fmt([s['start_return'] for s in st])} | {fmt([s['start_cost'] for s in st])} | "
                  f"{fmt([s['final_return'] for s in st])} | {fmt([s['final_cost'] for s in st])} | {fmt([s['best_return'] for s in st])} | "
                  f"{fmt([s['mean_return'] for s in st])} | {fmt([s['mean_cost'] for s in st])} | "
                  f"{settle_txt} | {fmt([s['cum_cost'] for s in st])} | {fmt([s['violations'] for s in st])} of {st[0]['episodes']} |")
        print(f"\nbudget per run: {st[0]['iterations']} iterations, {st[0]['env_steps']} env steps")
        online_critic_table(task, runs, limit)
        critic_table(task, runs.get("marvel", []))


if __name__ == "__main__":
    main(*sys.argv[1:3])
