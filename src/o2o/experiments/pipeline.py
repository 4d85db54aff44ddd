"""The end-to-end offline-to-online pipeline (``o2o marvel``, ``o2o demo``, ``o2o ocr``):

    dataset  (a name in the data directory; <Task>-dsrl, or for o2o ocr <Task>-medium, is generated if missing)
      -> pretrain/<algo>-s<seed>/          offline pre-training (CPQ by default; o2o ocr: each method's
                                           own offline algorithm, cql / td3bc / iql)
      -> finetune/<method>-s<seed>/        bridge (VPA) + online fine-tuning, for each method
      -> report.md, curves.png             offline vs fine-tuned policy, learning curves

Every stage reuses a finished run (summary.json present and the same resolved config), resumes an
interrupted one (a checkpoint present) and refuses a directory that holds a run with another
config. Budgets come as nested dicts per stage (``budget = {"data": ..., "pretrain": ..., "finetune":
...}``), e.g. from ``configs/pipeline-demo.yaml``; ``--set stage.key=value`` overrides one key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from o2o.errors import ConfigError, O2OError, RunDirError

STAGES = ("data", "pretrain", "finetune")
# what a --budget file may hold besides the stages' budgets: the pipeline's own settings, as
# configs/pipeline-demo.yaml (o2o demo's file) names them; the command line's options win over them
PIPELINE_KEYS = ("task", "dataset", "offline_algo", "methods", "seeds")
BUDGET_FORMAT = ("a --budget file holds per-stage budgets {data: ..., pretrain: ..., finetune: ...} (each the keys of "
                 "that stage's config) and may name the pipeline's " + ", ".join(PIPELINE_KEYS)
                 + " (as src/o2o/configs/pipeline-demo.yaml does)")

# Reference rates for --dry-run's rough time estimate: this project's 2-core CPU (docs/benchmarks.md).
# Offline gradient updates/s at the presets' network and batch sizes: the CPU table (CQL, BEAR-Lag, IQL,
# TD3+BC), CPQ's "100k steps take ~2 h", BC / BC-Safe from the demo's pre-training (4000 steps ~25 s).
OFFLINE_UPDATES_PER_S = {"cpq": 14.0, "bear-lag": 42.7, "cql": 17.3, "iql": 200.1, "td3bc": 240.4, "bc-safe": 160.0, "bc": 160.0}
ONLINE_UPDATES_PER_S = 190.0  # SAC's update at 256 x 256, batch 256 (smaller batches: proportionally more)
ENV_STEPS_PER_S = {"BallCircle": 2073.0, "CarRun": 993.0, "Hopper": 2657.0}  # a SAC actor stepping 1 env
DEFAULT_ENV_STEPS_PER_S = 1000.0


@dataclass
class PipelineResult:
    root: Path
    dataset: Path
    pretrained: dict[tuple[str, int], Path] = field(default_factory=dict)  # (offline algo, seed) -> run
    finetuned: dict[str, dict[int, Path]] = field(default_factory=dict)
    report: Path | None = None
    figure: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # per method, means over seeds
    seed_rows: list[dict[str, Any]] = field(default_factory=list)  # per method and seed


@dataclass
class PlannedStage:
    """One step of a pipeline's plan (``--dry-run``): what it is, where, what it will do and roughly how long."""

    stage: str  # data | pretrain | finetune
    name: str
    path: Path
    state: str  # how the directory is used: new, reused, continued, extended
    work: str  # the budget in the field's units
    seconds: float  # rough estimate of the work left (0: nothing to do)


def read_budget_file(path: str | Path) -> tuple[dict, dict]:
    """(the stages' budgets, the pipeline settings) of a ``--budget`` file (``BUDGET_FORMAT``)."""
    from o2o.config import load_yaml

    data = load_yaml(path)
    unknown = sorted(set(data) - set(STAGES) - set(PIPELINE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; {BUDGET_FORMAT}")
    return {k: v for k, v in data.items() if k in STAGES}, {k: v for k, v in data.items() if k in PIPELINE_KEYS}


def split_overrides(overrides: list[str]) -> dict[str, list[str]]:
    """``data.dsrl.iterations=5`` -> {"data": ["dsrl.iterations=5"]}; every key needs a stage prefix."""
    out: dict[str, list[str]] = {s: [] for s in STAGES}
    for item in overrides:
        stage, _, rest = item.partition(".")
        if stage not in STAGES or not rest:
            raise ConfigError(f"--set {item}: pipeline keys start with the stage, one of {', '.join(STAGES)} (e.g. finetune.online.iterations=20)")
        out[stage].append(rest)
    return out


def _stage_state(out: Path, cfg) -> str:
    """'new' | 'done' | 'resume'; raises when ``out`` holds a run with another config (one saved before
    o2o added config keys is compared with them at their defaults: ``upgrade_saved_config``). A raised
    budget (``o2o.runs.rundir.budget_keys``) is not another config: the run is resumed to it."""
    from o2o.config import to_dict
    from o2o.loops.online import upgrade_saved_config
    from o2o.runs.checkpoint import latest_checkpoint
    from o2o.runs.rundir import read_config, resume_diffs

    if not (out / "config.yaml").exists():
        if out.exists() and any(out.iterdir()):
            raise RunDirError(f"'{out}' exists and holds no o2o run; empty it or choose another --out")
        return "new"
    upgrade_saved_config(out, cfg)
    diffs, raised = resume_diffs(read_config(out), to_dict(cfg))
    if diffs:
        raise RunDirError(
            f"'{out}' holds a run with another config ({'; '.join(diffs[:3])}); choose another --out or delete it"
        )
    if (out / "summary.json").exists() and not raised:
        return "done"
    if latest_checkpoint(out) is not None or (out / "bridge").exists():
        return "resume"
    from o2o.runs.lock import delete_run_dir

    delete_run_dir(out)  # stopped before its first checkpoint: nothing to keep
    return "new"


def default_dataset(task: str, recipe: str = "dsrl", quality: str | None = None) -> str:
    return f"{task}-{quality}" if recipe == "d4rl" else f"{task}-dsrl"


def ensure_dataset(task: str, dataset: str | None, budget: dict, overrides: list[str], progress: bool,
                   recipe: str = "dsrl", quality: str | None = None) -> Path:
    from o2o.config import apply_overrides, update_from_dict
    from o2o.loops.datagen import GenerateConfig, generate
    from o2o.data.registry import data_dir, resolve_dataset

    default = default_dataset(task, recipe, quality)
    name = dataset or default
    try:
        return resolve_dataset(name)
    except O2OError:
        if name != default:
            raise  # only the task's default dataset is generated on demand
    cfg = update_from_dict(GenerateConfig(), {"task": task, "recipe": recipe, "quality": quality, **(budget or {})})
    cfg = apply_overrides(cfg, overrides)
    path, _ = generate(cfg, data_dir() / f"{name}.hdf5", progress=progress)
    return path


def run_pipeline(
    task: str,
    *,
    root: str | Path,
    dataset: str | None = None,
    offline_algo: str | None = "cpq",
    methods: tuple[str, ...] = ("marvel",),
    seeds: tuple[int, ...] = (0,),
    budget: dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    pretrain_seed: int | None = None,
    recipe: str = "dsrl",
    quality: str | None = None,
    fresh: bool = False,
    dry_run: bool = False,
) -> PipelineResult | list[PlannedStage]:
    """Run (or complete) the pipeline under ``root``. One pre-training run per seed, each fine-tuning
    seed starting from its own; with ``pretrain_seed`` every fine-tuning seed starts from that one
    pre-trained run (cheaper; the spread over seeds then leaves out pre-training's). ``offline_algo``
    None: each method pre-trains with its own (``MethodSpec.offline_algo``: o2sac cql, o2td3 td3bc,
    o2ppo iql). ``recipe``/``quality``: how the default dataset is generated when missing. ``fresh``:
    once every config is validated, delete the stage directories and report files this call writes
    (nothing else under ``root``) so that every stage runs anew (``o2o demo``). ``dry_run``: check every
    config, write nothing and return the plan (``plan_pipeline``)."""
    from o2o.envs import get_task
    from o2o.loops.finetune import resolve_finetune_config, run_finetune
    from o2o.loops.offline import run_pretrain
    from o2o.methods import get_method
    from o2o.presets import resolve_pretrain_config

    task = get_task(task).name
    budget = budget or {}
    unknown = set(budget) - set(STAGES)
    if unknown:
        raise ConfigError(f"pipeline budget has unknown key(s) {sorted(unknown)}; {BUDGET_FORMAT}")
    algo_of = {m: offline_algo or get_method(m).offline_algo or "cpq" for m in methods}
    per_stage = split_overrides(list(overrides))
    root = Path(root)
    result = PipelineResult(root=root, dataset=Path())

    # Validate every stage's config before any work (an unknown key fails here, not an hour in).
    dataset_name = dataset or default_dataset(task, recipe, quality)
    pre_seeds = sorted({pretrain_seed} if pretrain_seed is not None else set(seeds))
    algos = sorted({algo_of[m] for m in methods if get_method(m).needs_pretrained or offline_algo})
    pre_cfgs = {(a, s): resolve_pretrain_config(a, dataset_name, task, s, layer=budget.get("pretrain"), overrides=per_stage["pretrain"])
                for a in algos for s in pre_seeds}

    for m in methods:  # an unknown key or bad value of a fine-tuning stage fails here, before any work
        resolve_finetune_config(m, None, task, seeds[0], layer=budget.get("finetune"), overrides=per_stage["finetune"], require_pretrained=False)

    if dry_run:
        return plan_pipeline(task, root, dataset, recipe, quality, budget.get("data") or {}, budget.get("finetune"), per_stage, pre_cfgs,
                             methods, seeds, algo_of, pretrain_seed, fresh=fresh)
    if fresh:
        import contextlib

        from o2o.runs.lock import delete_run_dir, lock_run_dir

        outputs = [root / "pretrain" / f"{a}-s{s}" for a, s in pre_cfgs] + [root / "finetune" / f"{m}-s{s}" for m in methods for s in seeds]
        with contextlib.ExitStack() as held:  # every stage's lock first: a run in use is refused before any is deleted
            for path in outputs:
                if path.is_dir():
                    held.enter_context(lock_run_dir(path))
            for path in outputs:
                delete_run_dir(path)
        for name in ("report.md", "curves.png"):
            (root / name).unlink(missing_ok=True)
    result.dataset = ensure_dataset(task, dataset, budget.get("data", {}), per_stage["data"], progress, recipe, quality)
    resolved = _resolved_pretrain_configs(pre_cfgs, result.dataset)
    for (algo, seed), pre_cfg in pre_cfgs.items():
        out = root / "pretrain" / f"{algo}-s{seed}"
        state = _stage_state(out, resolved[(algo, seed)])
        if state != "done":
            run_pretrain(pre_cfg, out, resume=state == "resume", progress=progress)
        result.pretrained[(algo, seed)] = out

    for method in methods:
        result.finetuned[method] = {}
        for seed in seeds:
            source = result.pretrained.get((algo_of[method], seed if pretrain_seed is None else pretrain_seed))
            pretrained = str(source) if get_method(method).needs_pretrained else None
            cfg = resolve_finetune_config(
                method, pretrained, task, seed, layer=budget.get("finetune"), overrides=per_stage["finetune"]
            )
            out = root / "finetune" / f"{method}-s{seed}"
            state = _stage_state(out, cfg)
            if state != "done":
                run_finetune(cfg, out, resume=state == "resume", progress=progress)
            result.finetuned[method][seed] = out

    write_report(result, task)
    return result


def _left(out: Path, cfg, fresh: bool) -> tuple[str, float]:
    """How the stage directory ``out`` will be used (read-only) and the fraction of its budget left to run,
    for a run whose resolved config is ``cfg``: a directory holding a run of another config is planned as
    refused, as the launch will refuse it (a config saved before o2o added keys is compared with them at
    their defaults, as the launch does)."""
    from o2o.config import to_dict
    from o2o.loops.online import completed_saved_config
    from o2o.runs.checkpoint import checkpoint_step, latest_checkpoint
    from o2o.runs.rundir import dotted_value, read_config, budget_keys, resume_diffs

    if fresh or not (out / "config.yaml").is_file():
        return "new", 1.0
    saved, planned = read_config(out), to_dict(cfg)
    completed = completed_saved_config(saved, cfg)
    completed = saved if completed is None else completed
    diffs = resume_diffs(completed, planned)[0]
    if diffs:
        return f"REFUSED: holds another config ({'; '.join(diffs[:2])})", 0.0
    key = next(iter(budget_keys(saved)[-1:]), None)  # online.iterations of a fine-tuning run, offline.steps of a pre-training one
    old, new = (dotted_value(saved, key), dotted_value(planned, key)) if key else (None, None)
    ckpt = latest_checkpoint(out)
    done = checkpoint_step(ckpt) if ckpt is not None else 0
    if (out / "summary.json").is_file():
        if isinstance(old, int) and isinstance(new, int) and new > old:
            return f"finished at {key}={old}; extended to {new}", (new - old) / new
        return "finished: reused", 0.0
    if ckpt is not None and isinstance(new, int) and new > 0:
        return f"continues from {ckpt.name}", max(new - done, 0) / new
    return ("continues its bridge" if (out / "bridge").exists() else "new"), 1.0


def _env_rate(task: str) -> float:
    return ENV_STEPS_PER_S.get(task, DEFAULT_ENV_STEPS_PER_S)


def _update_rate(batch_size: int | None) -> float:
    return ONLINE_UPDATES_PER_S * 256 / max(batch_size or 256, 1)


def _resolved_pretrain_configs(pre_cfgs: dict, dataset_path) -> dict:
    """Each pre-training config as its run directory records it (``resolve_offline_config``), read against
    the dataset file at ``dataset_path`` (loaded once)."""
    from o2o.data import load_hdf5
    from o2o.loops.offline import resolve_offline_config

    dataset = load_hdf5(dataset_path) if pre_cfgs else None
    return {key: resolve_offline_config(cfg, dataset)[0] for key, cfg in pre_cfgs.items()}


def plan_pipeline(task, root, dataset, recipe, quality, data_budget, finetune_budget, per_stage, pre_cfgs, methods, seeds, algo_of,
                  pretrain_seed, *, fresh=False) -> list[PlannedStage]:
    """What ``run_pipeline`` would do with these (checked) configs, stage by stage, with the budget of each
    in its units and a rough time estimate at the reference rates above; nothing is written."""
    from o2o.bridge.ocr import bridge_stages
    from o2o.config import apply_overrides, update_from_dict
    from o2o.envs import get_task
    from o2o.loops.datagen import GenerateConfig
    from o2o.data.registry import data_dir, resolve_dataset
    from o2o.loops.finetune import resolve_finetune_config
    from o2o.methods import get_method

    horizon, env_rate = get_task(task).horizon, _env_rate(task)
    plan = []
    name = dataset or default_dataset(task, recipe, quality)
    try:
        path = resolve_dataset(name)
        plan.append(PlannedStage("data", Path(path).stem, Path(path), "exists", "-", 0.0))
    except O2OError:
        if dataset and name != default_dataset(task, recipe, quality):
            raise
        g = apply_overrides(update_from_dict(GenerateConfig(), {"task": task, "recipe": recipe, "quality": quality, **data_budget}),
                            per_stage["data"])
        if recipe == "dsrl":
            r = g.dsrl
            episodes = r.num_agents * (r.iterations * r.episodes_per_iteration + r.warmup_episodes)
            env_steps, updates = episodes * horizon, r.num_agents * r.iterations * r.updates_per_iteration
            work = f"generated (dsrl): {r.num_agents} behaviour agents, {episodes} episodes (~{env_steps:,} env steps), {updates:,} updates"
        else:
            r = g.d4rl
            env_steps, updates = r.iterations * r.steps_per_iteration + r.transitions, r.iterations * r.updates_per_iteration
            work = f"generated (d4rl {quality}): a SAC behaviour run of {r.iterations * r.steps_per_iteration:,} env steps, {r.transitions:,} transitions"
        plan.append(PlannedStage("data", name, data_dir() / f"{name}.hdf5", "new", work, env_steps / env_rate + updates / _update_rate(256)))

    existing = plan[0].state == "exists"  # a new dataset: no pre-training stage can hold a run of it yet
    resolved = _resolved_pretrain_configs(pre_cfgs, plan[0].path) if existing else pre_cfgs
    for (algo, seed), cfg in pre_cfgs.items():
        o = cfg.offline
        out = Path(root) / "pretrain" / f"{algo}-s{seed}"
        state, left = _left(out, resolved[(algo, seed)], fresh) if existing else ("new", 1.0)
        evals = (o.steps // o.eval_every + 1) * o.eval_episodes * horizon
        seconds = o.steps / OFFLINE_UPDATES_PER_S.get(algo, 20.0) + evals / env_rate
        plan.append(PlannedStage("pretrain", out.name, out, state, f"{o.steps:,} gradient steps of {algo}, "
                                 f"evaluated every {o.eval_every:,} ({o.eval_episodes} episodes)", seconds * left))

    for method in methods:
        spec = get_method(method)
        for seed in seeds:
            source = f"{algo_of[method]}-s{seed if pretrain_seed is None else pretrain_seed}"
            # the start as the launch passes it, resolved against it once it exists
            pretrained = Path(root) / "pretrain" / source if spec.needs_pretrained else None
            try:
                cfg = resolve_finetune_config(method, pretrained and str(pretrained), task, seed, layer=finetune_budget,
                                              overrides=per_stage["finetune"], require_pretrained=False)
            except O2OError:
                if pretrained is None:
                    raise
                cfg = resolve_finetune_config(method, None, task, seed, layer=finetune_budget, overrides=per_stage["finetune"],
                                              require_pretrained=False)
                cfg = update_from_dict(cfg, {"pretrained": str(pretrained.absolute())})
            o, batch = cfg.online, getattr(cfg.agent, "batch_size", 256)
            bridge, bridge_batch = 0, batch
            if spec.family == "ocr-cft":
                bridge = sum(bridge_stages(spec, cfg.algo, cfg.ocr.reeval_steps, cfg.ocr.align_steps).values())
                bridge_batch = cfg.ocr.reeval_batch_size
            elif spec.vpa:
                bridge, bridge_batch = cfg.vpa.steps, cfg.vpa.batch_size
            episodes = getattr(o, "episodes_per_iteration", None)
            per_iteration = o.steps_per_iteration if episodes is None else episodes * horizon
            env_steps = o.iterations * per_iteration + (o.iterations // o.eval_every + 1) * o.eval_episodes * horizon
            updates = o.iterations * getattr(o, "updates_per_iteration", 0)
            out = Path(root) / "finetune" / f"{method}-s{seed}"
            state, left = _left(out, cfg, fresh)
            src = f"from {source}" if spec.needs_pretrained else "from scratch"
            work = (f"{src}; " + (f"bridge {bridge:,} steps; " if bridge else "")
                    + f"{o.iterations} iterations: ~{env_steps:,} env steps (evaluations included), {updates:,} updates of batch {batch}")
            bridge_s = 0.0 if state.startswith(("continues from", "finished")) else bridge / _update_rate(bridge_batch)
            plan.append(PlannedStage("finetune", out.name, out, state, work, bridge_s + (env_steps / env_rate + updates / _update_rate(batch)) * left))
    return plan


def _first_last_eval(run: Path) -> tuple[dict, dict]:
    from o2o.runs import read_metrics_csv

    m = read_metrics_csv(run / "metrics.csv")
    ret = m["eval/return"]
    idx = np.flatnonzero(~np.isnan(ret))
    pick = lambda i: {k: float(m[k][i]) for k in ("eval/return", "eval/cost", "eval/normalized_return", "eval/normalized_cost") if k in m}
    return pick(idx[0]), pick(idx[-1])


def write_report(result: PipelineResult, task_name: str) -> None:
    """``report.md`` (offline vs fine-tuned, per method, mean over seeds) and ``curves.png``."""
    from o2o.envs import get_task
    from o2o.experiments.plots import plot_learning_curves
    from o2o.runs.rundir import read_summary

    task = get_task(task_name)
    if not task.safe:
        return _write_unconstrained_report(result, task)
    rows, result.seed_rows = [], []
    for method, runs in result.finetuned.items():
        firsts, lasts, cum = [], [], []
        for seed, run in sorted(runs.items()):
            first, last = _first_last_eval(run)
            summary = read_summary(run / "summary.json")
            firsts.append(first)
            lasts.append(last)
            cum.append(summary["train_cumulative_cost"])
            limit = summary.get("cost_limit")
            result.seed_rows.append({
                "method": method, "seed": seed, "cost_limit": limit,
                "start_return": first["eval/return"], "start_cost": first["eval/cost"],
                "final_return": last["eval/return"], "final_cost": last["eval/cost"],
                "start_normalized_return": first["eval/normalized_return"],
                "final_normalized_return": last["eval/normalized_return"],
                "final_normalized_cost": last["eval/normalized_cost"],
                "train_cumulative_cost": summary["train_cumulative_cost"],
                "wall_time_s": summary.get("wall_time_s", float("nan")),
            })
        mean = lambda xs, k: float(np.mean([x[k] for x in xs]))
        rows.append({
            "method": method, "seeds": len(runs), "cost_limit": limit,
            "start_return": mean(firsts, "eval/return"), "start_cost": mean(firsts, "eval/cost"),
            "final_return": mean(lasts, "eval/return"), "final_cost": mean(lasts, "eval/cost"),
            "final_normalized_return": mean(lasts, "eval/normalized_return"),
            "final_normalized_cost": mean(lasts, "eval/normalized_cost"),
            "train_cumulative_cost": float(np.mean(cum)),
        })
    result.rows = rows
    limit = rows[0]["cost_limit"] if rows else task.cost_limit
    figure = plot_learning_curves(
        {m: [str(p) for p in runs.values()] for m, runs in result.finetuned.items()},
        result.root / "curves.png",
        title=f"{task.name}: fine-tuning from {', '.join(sorted({p.name.rsplit('-s', 1)[0] for p in result.pretrained.values()}))}",
        cost_limit=limit,
        reward_metric="eval/normalized_return",
        reward_label="DSRL-normalised return",
        x_label="environment steps",
        train_cost_metric="train/cumulative_cost",
        pdf=True,
    )
    from o2o.experiments.report import AGGREGATE_TEXT, collect, safe_finetune_table

    runs, _ = collect([run for method_runs in result.finetuned.values() for _, run in sorted(method_runs.items())])
    tables = _write_tables(result, runs, task.name)
    lines = [
        f"# {task.name}: offline-to-online pipeline",
        "",
        f"Dataset `{result.dataset}`; pre-trained runs: {', '.join(str(p) for p in result.pretrained.values())}.",
        f"Evaluation: deterministic policy, the run's fixed evaluation episodes; cost limit {limit:g}. Reward: DSRL-normalised",
        "return; cost: raw episode cost. 'start' = the policy the online stage starts from (env step 0: after VPA for the",
        "methods that have it); 'lowest, first 10%' = the lowest evaluation in the first 10% of the online budget (the",
        "initial dip); 'reward at 25%' = the evaluation nearest 25% of the budget; 'final' = after the last iteration;",
        f"cumulative training cost = the cost of every training episode. Over seeds: {AGGREGATE_TEXT['mean']} (costs'",
        "intervals clipped at 0, those of training episodes over the limit at the episodes run).",
        "",
        safe_finetune_table(runs, "mean"),
        "", "Per seed:", "",
        safe_finetune_table(runs, "mean", per_seed=True),
    ]
    lines += ["", f"![learning curves]({figure.name})", "", tables, ""]
    result.report = result.root / "report.md"
    result.report.write_text("\n".join(lines))
    result.figure = figure


def _write_tables(result: PipelineResult, runs, task_name: str) -> str:
    """``results.tex`` (the final-evaluation and safe fine-tuning tables as LaTeX, booktabs), ``results.csv``
    and ``safe-finetune.csv`` beside the report, as ``o2o report`` writes them; returns the report's line naming them."""
    from o2o.experiments.report import group_runs, results_csv, results_latex, safe_finetune_csv, safe_finetune_latex, summarise_group

    results = [summarise_group(t, m, g, "mean") for (t, m), g in group_runs(runs).items()]
    (result.root / "results.tex").write_text(results_latex(results, "mean", f"{task_name} pipeline, {result.root}")
                                             + safe_finetune_latex(runs, "mean"))
    (result.root / "results.csv").write_text(results_csv(results, "mean"))
    safe = safe_finetune_csv(runs, "mean")
    if safe:
        (result.root / "safe-finetune.csv").write_text(safe)
        return ("For a paper: the final-evaluation and safe fine-tuning tables as LaTeX in `results.tex` (booktabs), their "
                "numbers in `results.csv` and `safe-finetune.csv`, the figure also as `curves.pdf`.")
    return ("For a paper: the final-evaluation table as LaTeX in `results.tex` (booktabs), its numbers in `results.csv`, "
            "the figure also as `curves.pdf`.")


def format_score(x: float) -> str:
    """One decimal, '-' for a number a run too short cannot give (no evaluation in its first 10%)."""
    return "-" if not np.isfinite(x) else f"{x:.1f}"


def _write_unconstrained_report(result: PipelineResult, task) -> None:
    """``report.md`` and ``curves.png`` for a task without costs (OCR-CFT): returns only."""
    from o2o.experiments.plots import plot_learning_curves
    from o2o.experiments.report import estimate, online_stats
    from o2o.runs import read_metrics_csv

    rows, per_seed = [], {}
    for method, runs in result.finetuned.items():
        firsts, lasts = zip(*(_first_last_eval(run) for _, run in sorted(runs.items())))
        stats = [online_stats(read_metrics_csv(run / "metrics.csv")) or {} for _, run in sorted(runs.items())]
        per_seed[method] = {k: [x.get(k, np.nan) for x in stats] for k in ("start", "lowest_early", "online_mean", "final")}
        per_seed[method]["start_return"] = [f["eval/return"] for f in firsts]
        per_seed[method]["final_return"] = [x["eval/return"] for x in lasts]
        mean = lambda xs, k: float(np.mean([x.get(k, np.nan) for x in xs]))
        rows.append({
            "method": method, "seeds": len(runs),
            "start_return": mean(firsts, "eval/return"), "start_normalized_return": mean(firsts, "eval/normalized_return"),
            "lowest_early_normalized_return": mean(stats, "lowest_early"), "online_mean_normalized_return": mean(stats, "online_mean"),
            "final_return": mean(lasts, "eval/return"), "final_normalized_return": mean(lasts, "eval/normalized_return"),
        })
    result.rows = rows
    sources = sorted({p.name.rsplit("-s", 1)[0] for p in result.pretrained.values()}) or ["scratch"]
    figure = plot_learning_curves(
        {m: [str(p) for p in runs.values()] for m, runs in result.finetuned.items()},
        result.root / "curves.png", title=f"{task.name}: fine-tuning from {', '.join(sources)}", x_label="environment steps",
        cost_metric=None, pdf=True,
    )
    from o2o.experiments.report import collect

    tables = _write_tables(result, collect([run for rs in result.finetuned.values() for _, run in sorted(rs.items())])[0], task.name)
    lines = [
        f"# {task.name}: offline-to-online pipeline",
        "",
        f"Dataset `{result.dataset}`; pre-trained runs: {', '.join(str(p) for p in result.pretrained.values()) or 'none'}.",
        "Evaluation: deterministic policy, the run's fixed evaluation episodes. 'start' = the policy the online stage",
        "starts from (iteration 0: after the bridge); 'lowest, first 10%' = the lowest evaluation in the first 10% of",
        "the online budget (the initial dip, if any); 'online mean' = the mean of the evaluations after iteration 0;",
        "'final' = after the last online iteration. Over seeds: mean and 95% Student-t interval; normalised returns are",
        "D4RL's 0-100 scale (o2o tasks' reference returns).",
        "",
        "| method | seeds | start return | start norm. | lowest norm., first 10% | online mean norm. | final return | final norm. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in result.finetuned.items():
        cells = [estimate(per_seed[method][k]).fmt(1) for k in ("start_return", "start", "lowest_early", "online_mean", "final_return", "final")]
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed:", "", "| method | seed | start norm. | lowest norm., first 10% | online mean norm. | final norm. |", "|---|---|---|---|---|---|"]
    for method, runs in result.finetuned.items():
        for i, seed in enumerate(sorted(runs)):
            lines.append(f"| {method} | {seed} | " + " | ".join(format_score(per_seed[method][k][i]) for k in ("start", "lowest_early", "online_mean", "final")) + " |")
    lines += ["", f"![learning curves]({figure.name})", "", tables, ""]
    result.report = result.root / "report.md"
    result.report.write_text("\n".join(lines))
    result.figure = figure
