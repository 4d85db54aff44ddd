"""``o2o report``: tables and learning-curve figures from a sweep or from run directories.

What a number in a report is:
- **final**: each run's last evaluation (deterministic policy, fixed evaluation seeds), aggregated
  over seeds; the budget it was measured at (env steps, or gradient steps for offline runs) is given
  with it.
- **best**: the maximum over evaluations of the seed-aggregated curve of the normalised return, with
  the budget where it was reached; on a safe task only the evaluations whose seed-aggregated normalised
  cost is within the limit (<= 1) count, and a method with none has no best. It selects on the
  evaluation episodes, so it is optimistic; it is always labelled as best, never mixed with final.
- **intervals** of a quantity that cannot be negative (costs, cumulative training cost, episode
  counts) are clipped at 0, and those of the training episodes over the limit at the episodes run;
  the t interval of a handful of seeds can otherwise leave the range (e.g. `2.0 [-23.4, 27.4] of 12`).
- **normalised return**: DSRL's (R - R_min) / (R_max - R_min) on safe tasks, D4RL's
  100 (R - R_random) / (R_expert - R_random) on the others (reference returns: ``o2o tasks``).
- **normalised cost**: DSRL's C / kappa; an agent whose aggregated final normalised cost exceeds 1
  is marked unsafe.
- **cumulative training cost**: the cost paid by every training episode of a run, warm-up included.
- **fine-tuning table** (runs started from a pre-trained run, unconstrained tasks): *pre-trained* = the
  pre-trained run's own final evaluation (its summary.json); *start* = the evaluation before any online
  step (env step 0: the policy fine-tuning starts from, after any bridge); *lowest, first 10%* = the
  lowest evaluation in the first 10% of the online budget (step 0 excluded) and *dip* = start minus
  that (the initial performance drop offline-to-online methods are judged by); *final - start*;
  *best* = each run's best evaluation after step 0 (optimistic); *online mean* = the mean of a run's
  evaluations after step 0 (the area under its curve over the budget: what it scored while learning).
- **safe fine-tuning table** (safe tasks, runs evaluated at env step 0): DSRL-normalised reward at the
  *start*, *lowest* in the first 10% of the online budget (the initial dip), at the evaluation nearest
  *25%* of the budget, *final* and *final - start*; raw evaluation cost at the start and the end; how
  many seeds' final policies are within the limit; cumulative training cost and training episodes over
  the limit.

Aggregation over seeds: ``mean`` (mean, 95% Student-t interval) or ``iqm`` (interquartile mean, 95%
percentile-bootstrap interval; across tasks, a stratified bootstrap). Only finished runs count: a
failed or unfinished run is listed as such and left out of every number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from o2o.errors import O2OError, RunDirError
from o2o.runs.rundir import read_summary
from o2o.experiments.aggregate import aggregate, curve, read_run, stratified_bootstrap_ci, iqm, x_key_of

AGGREGATE_TEXT = {
    "mean": "mean and 95% Student-t confidence interval over seeds",
    "iqm": "interquartile mean (IQM) and 95% percentile-bootstrap interval over seeds (2000 resamples; rliable)",
}


@dataclass
class RunInfo:
    path: Path
    method: str  # group label: method name (+ variant)
    task: str
    seed: int
    config: dict
    metrics: dict
    summary: dict


@dataclass
class Source:
    """Where runs came from: a sweep (with its spec) or run directories given directly."""

    label: str  # how tables and figures name it
    path: Path
    spec_text: str = ""
    spec_sha256: str = ""
    spec_source: str = ""
    only: list = field(default_factory=list)  # the sweep ran only its runs matching these globs (o2o sweep --only)
    excluded: list = field(default_factory=list)  # (run, status, error)


# ---------------------------------------------------------------------------------- collecting


def _is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "metrics.csv").is_file()


def _method_of(config: dict) -> str:
    return str(config.get("method") or config.get("algo") or "?")


def collect(sources: list[str | Path]) -> tuple[list[RunInfo], list[Source]]:
    """The finished runs of every source (a sweep directory, a run directory, or a folder searched for
    run directories), and the sources with the runs they left out and why."""
    from o2o.experiments.index import is_archive
    from o2o.experiments.index import INDEX_FILE, read_index
    from o2o.experiments.index import SPEC_COPY, run_dir_of
    runs: list[RunInfo] = []
    out_sources: list[Source] = []
    loose = Source(label="run directories given on the command line", path=Path("."))
    for given in sources:
        path = Path(given)
        if not path.exists():
            raise RunDirError(f"'{path}' does not exist; give a sweep directory or run directories")
        if (path / INDEX_FILE).is_file() or is_archive(path):
            meta, records = read_index(path)
            spec_text = (path / SPEC_COPY).read_text() if (path / SPEC_COPY).is_file() else ""
            src = Source(
                label=f"sweep spec `{meta.get('spec_source') or path / SPEC_COPY}`",
                path=path, spec_text=spec_text, spec_sha256=meta.get("spec_sha256", ""), spec_source=meta.get("spec_source", ""),
                only=json.loads(meta.get("only") or "[]"),
            )
            for rec in records:
                run_dir = run_dir_of(path, rec.run_id)
                if rec.status != "finished":
                    src.excluded.append((rec.run_id, rec.status, rec.error or ""))
                    continue
                if not (run_dir / "summary.json").is_file():
                    src.excluded.append((rec.run_id, "finished in the index, but summary.json is missing", ""))
                    continue
                label = rec.method + (f" [{rec.variant}]" if rec.variant else "")
                runs.append(_load(run_dir, label, rec.task, rec.seed))
            out_sources.append(src)
        elif _is_run_dir(path):
            _add_loose(path, runs, loose)
        elif path.is_dir():
            found = sorted(p.parent for p in path.rglob("config.yaml") if _is_run_dir(p.parent))
            if not found:
                raise RunDirError(f"'{path}' holds no run directories (config.yaml + metrics.csv) and is not a sweep directory")
            for run_dir in found:
                _add_loose(run_dir, runs, loose)
        else:
            raise RunDirError(f"'{path}' is a file; give a sweep directory or run directories")
    if loose.excluded or _has_loose(runs, out_sources):
        out_sources.append(loose)
    if not runs:
        why = "; ".join(f"{r}: {st}" + (f" ({e})" if e else "") for s in out_sources for r, st, e in s.excluded[:5])
        raise O2OError("no finished runs to report" + (f" ({why})" if why else ""))
    return runs, out_sources


def _has_loose(runs, sources) -> bool:
    sweep_paths = [s.path.resolve() for s in sources]
    return any(not any(sp in r.path.resolve().parents for sp in sweep_paths) for r in runs)


def _add_loose(run_dir: Path, runs: list, loose: Source) -> None:
    if not (run_dir / "summary.json").is_file():
        loose.excluded.append((str(run_dir), "unfinished (no summary.json)", ""))
        return
    config, _ = read_run(run_dir)
    runs.append(_load(run_dir, _method_of(config), str(config.get("task")), int(config.get("seed", 0))))


def _load(run_dir: Path, method: str, task: str, seed: int) -> RunInfo:
    config, metrics = read_run(run_dir)
    summary = read_summary(run_dir / "summary.json")
    return RunInfo(run_dir, method, task, seed, config, metrics, summary)


# ---------------------------------------------------------------------------------- numbers


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    def fmt(self, digits: int = 2) -> str:
        if not math.isfinite(self.value):
            return "-"
        if self.low == self.high:
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass
class GroupResult:
    task: str
    method: str
    n: int
    seeds: list[int]
    safe_task: bool
    normalisation: str  # DSRL / D4RL / o2o reference returns
    x_key: str  # env_steps | step
    final_budget: tuple[int, int]  # min, max over seeds of the x value of the final evaluation
    final_updates: tuple[int, int] | None
    final_return: Estimate
    final_norm_return: Estimate
    best_norm_return: Estimate
    best_at: int
    final_cost: Estimate | None = None
    final_norm_cost: Estimate | None = None
    cost_limit: float | None = None
    unsafe: bool | None = None
    cum_train_cost: Estimate | None = None
    violating_episodes: Estimate | None = None
    train_episodes: Estimate | None = None
    final_norm_return_per_seed: list = field(default_factory=list)


def _last_eval(metrics: dict, name: str) -> tuple[float, int]:
    """The value of ``name`` at a run's last evaluation row, and that row's index."""
    ret = metrics["eval/return"]
    idx = np.flatnonzero(~np.isnan(ret))
    if not len(idx):
        raise RunDirError("a run has no evaluation rows")
    i = int(idx[-1])
    return float(metrics[name][i]) if name in metrics else float("nan"), i


def _last(metrics: dict, name: str) -> float:
    if name not in metrics:
        return float("nan")
    col = metrics[name][~np.isnan(metrics[name])]
    return float(col[-1]) if len(col) else float("nan")


def estimate(values, how: str = "mean", *, lowest: float | None = None, highest: float | None = None) -> Estimate:
    """The aggregate of ``values`` over seeds with its interval; ``lowest`` / ``highest``: the quantity's
    least / greatest valid value (0 for a cost or a count; the episodes run for a count of episodes),
    at which the interval is clipped."""
    values = np.asarray(values, np.float64)
    if np.isnan(values).any():
        return Estimate(float("nan"), float("nan"), float("nan"))
    v, lo, hi = aggregate(values, how)
    if lowest is not None:
        lo = max(float(lo), lowest)
    if highest is not None and math.isfinite(highest):
        hi = min(float(hi), highest)
    return Estimate(float(v), float(lo), float(hi))


def group_runs(runs: list[RunInfo]) -> dict[tuple[str, str], list[RunInfo]]:
    groups: dict[tuple[str, str], list[RunInfo]] = {}
    for run in sorted(runs, key=lambda r: (r.task, r.method, r.seed)):
        groups.setdefault((run.task, run.method), []).append(run)
    return groups


def summarise_group(task: str, method: str, runs: list[RunInfo], how: str = "mean") -> GroupResult:
    from o2o.envs import get_task

    t = get_task(task)
    x_key = x_key_of(runs[0].metrics)
    finals = {k: [] for k in ("ret", "nret", "cost", "ncost", "x", "upd", "cum", "viol", "eps")}
    for r in runs:
        m = r.metrics
        if "eval/return" not in m or np.isnan(m["eval/return"]).all():
            raise RunDirError(
                f"run '{r.path}' has no evaluation rows (trained with --defer-eval? evaluate it with `o2o eval {r.path} --record`)"
            )
        finals["ret"].append(_last_eval(m, "eval/return")[0])
        finals["nret"].append(_last_eval(m, "eval/normalized_return")[0])
        finals["cost"].append(_last_eval(m, "eval/cost")[0])
        finals["ncost"].append(_last_eval(m, "eval/normalized_cost")[0])
        i = _last_eval(m, "eval/return")[1]
        finals["x"].append(int(m[x_key][i]))
        finals["upd"].append(int(m["updates"][i]) if "updates" in m else -1)
        finals["cum"].append(_last(m, "train/cumulative_cost"))
        finals["viol"].append(_last(m, "train/violating_episodes"))
        finals["eps"].append(float(r.summary.get("train_episodes", float("nan"))))
    c = curve([r.path for r in runs], "eval/normalized_return", x_key=x_key, how=how)
    eligible = np.ones(len(c.mean), bool)
    if t.safe and "eval/normalized_cost" in runs[0].metrics:  # only the evaluations within the limit can be best
        eligible = curve([r.path for r in runs], "eval/normalized_cost", x_key=x_key, how=how).mean <= 1.0
    best = int(np.argmax(np.where(eligible, c.mean, -np.inf))) if eligible.any() else -1
    best_estimate = Estimate(float(c.mean[best]), float(c.low[best]), float(c.high[best])) if best >= 0 else Estimate(math.nan, math.nan, math.nan)
    result = GroupResult(
        task=t.name, method=method, n=len(runs), seeds=[r.seed for r in runs], safe_task=t.safe,
        normalisation={"DSRL": "DSRL", "D4RL": "D4RL"}.get(t.ref_source, "o2o reference returns, D4RL formula"),
        x_key=x_key, final_budget=(min(finals["x"]), max(finals["x"])),
        final_updates=None if min(finals["upd"]) < 0 else (min(finals["upd"]), max(finals["upd"])),
        final_return=estimate(finals["ret"], how), final_norm_return=estimate(finals["nret"], how),
        best_norm_return=best_estimate, best_at=int(round(c.x[best])) if best >= 0 else -1,
        final_norm_return_per_seed=list(finals["nret"]),
    )
    if t.safe and "eval/cost" in runs[0].metrics:
        result.final_cost = estimate(finals["cost"], how, lowest=0.0)
        result.final_norm_cost = estimate(finals["ncost"], how, lowest=0.0)
        limits = {r.summary.get("cost_limit") for r in runs}
        result.cost_limit = limits.pop() if len(limits) == 1 else None
        result.unsafe = bool(result.final_norm_cost.value > 1.0)
    if "train/cumulative_cost" in runs[0].metrics and t.safe:
        result.cum_train_cost = estimate(finals["cum"], how, lowest=0.0)
        result.violating_episodes = estimate(finals["viol"], how, lowest=0.0, highest=max(finals["eps"]))
        result.train_episodes = estimate(finals["eps"], how, lowest=0.0)
    return result


def online_stats(metrics: dict) -> dict[str, float] | None:
    """A fine-tuning curve's numbers (D4RL-normalised; module docstring): start, lowest in the first 10%
    of the online budget (step 0 left out), dip, final, final - start, best and online mean; None when
    the run has no evaluation at env step 0."""
    if "env_steps" not in metrics or "eval/normalized_return" not in metrics:
        return None
    steps, score = np.asarray(metrics["env_steps"], float), np.asarray(metrics["eval/normalized_return"], float)
    ok = ~np.isnan(score) & ~np.isnan(steps)
    steps, score = steps[ok], score[ok]
    if not len(steps) or steps[0] != 0:
        return None
    budget = float(steps.max())
    online = steps > 0
    early = online & (steps <= 0.1 * budget)
    start = float(score[0])
    lowest = float(score[early].min()) if early.any() else math.nan
    return {
        "start": start, "lowest_early": lowest, "dip": start - lowest, "final": float(score[-1]), "gain": float(score[-1]) - start,
        "best": float(score[online].max()) if online.any() else math.nan,
        "online_mean": float(score[online].mean()) if online.any() else math.nan, "budget": budget,
    }


def finetune_stats(run_dir: Path, config: dict | None = None, metrics: dict | None = None) -> dict[str, float] | None:
    """``online_stats`` of a run started from a pre-trained run, with the pre-trained run's own final
    score as ``pretrained`` (NaN when its summary.json cannot be found at the path its config gives,
    relative to the working directory); None for a run without a pre-trained run."""
    if config is None or metrics is None:
        config, metrics = read_run(run_dir)
    pretrained = config.get("pretrained")
    stats = online_stats(metrics) if pretrained else None
    if stats is None:
        return None
    pre = Path(pretrained) / "summary.json"
    if not pre.is_file():  # a results archive keeps a copy of it (o2o.experiments.archive)
        pre = Path(run_dir) / "pretrained_summary.json"
    pre_score = read_summary(pre).get("final_eval_normalized_return", math.nan) if pre.is_file() else math.nan
    return {"pretrained": float(pre_score), **stats}


FINETUNE_COLUMNS = [("pretrained", "pre-trained"), ("start", "start (step 0)"), ("lowest_early", "lowest, first 10%"),
                    ("dip", "dip"), ("final", "final"), ("gain", "final - start"), ("best", "best"), ("online_mean", "online mean")]


def finetune_table(runs: list[RunInfo], how: str = "mean") -> str:
    """The fine-tuning table (module docstring) of every group of fine-tuning runs on unconstrained tasks."""
    from o2o.envs import get_task

    lines = []
    for (task, method), group in group_runs(runs).items():
        if get_task(task).safe:
            continue
        stats = [s for s in (finetune_stats(r.path, r.config, r.metrics) for r in group) if s is not None]
        if len(stats) != len(group):
            continue
        budgets = sorted({int(s["budget"]) for s in stats})
        cells = [estimate([s[k] for s in stats], how).fmt(1) for k, _ in FINETUNE_COLUMNS]
        lines.append(f"| {task} | {method} | {len(stats)} | {'-'.join(map(str, budgets))} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = "| task | method | seeds | online budget (env steps) | " + " | ".join(label for _, label in FINETUNE_COLUMNS) + " |"
    return "\n".join([head, "|" + "---|" * (head.count("|") - 1), *lines])


def safe_finetune_stats(metrics: dict, summary: dict) -> dict[str, float] | None:
    """A safe-task fine-tuning run's numbers (module docstring): DSRL-normalised reward at the start
    (env step 0), lowest in the first 10% of the online budget, at the evaluation nearest 25% of it, final
    and final - start; raw evaluation cost at the start and the end, whether the final policy is within
    the limit; cumulative training cost and training episodes over the limit. None when the run has no
    evaluation at env step 0."""
    stats = online_stats(metrics)
    if stats is None or "eval/cost" not in metrics:
        return None
    steps, ret = np.asarray(metrics["env_steps"], float), np.asarray(metrics["eval/normalized_return"], float)
    rows = np.flatnonzero(~np.isnan(ret) & ~np.isnan(steps))
    quarter = rows[np.argmin(np.abs(steps[rows] - 0.25 * stats["budget"]))]
    cost = np.asarray(metrics["eval/cost"], float)
    ncost = np.asarray(metrics.get("eval/normalized_cost", np.full(len(cost), np.nan)), float)
    return {
        **stats, "quarter": float(ret[quarter]), "quarter_at": float(steps[quarter]),
        "start_cost": float(cost[rows[0]]), "final_cost": float(cost[rows[-1]]), "safe": float(ncost[rows[-1]] <= 1.0),
        "cum_cost": float(summary.get("train_cumulative_cost", _last(metrics, "train/cumulative_cost"))),
        "violating": float(summary.get("train_violating_episodes", _last(metrics, "train/violating_episodes"))),
        "episodes": float(summary.get("train_episodes", math.nan)),
    }


SAFE_FINETUNE_COLUMNS = [  # (key, label, digits, least valid value)
    ("start", "start reward", 3, None), ("start_cost", "start cost", 1, 0.0), ("lowest_early", "lowest reward, first 10%", 3, None),
    ("quarter", "reward at 25%", 3, None), ("final", "final reward", 3, None), ("final_cost", "final cost", 1, 0.0),
    ("gain", "final - start", 3, None), ("cum_cost", "cumulative training cost", 0, 0.0),
    ("violating", "training episodes over the limit", 1, 0.0),
]


def safe_finetune_rows(runs: list[RunInfo]) -> list[dict]:
    """One dict per run of a safe task whose curve starts at env step 0: task, method, seed and
    ``safe_finetune_stats``."""
    from o2o.envs import get_task

    out = []
    for r in runs:  # in the given order
        if get_task(r.task).safe:
            stats = safe_finetune_stats(r.metrics, r.summary)
            if stats is not None:
                out.append({"task": r.task, "method": r.method, "seed": r.seed, **stats})
    return out


def safe_finetune_groups(runs: list[RunInfo], how: str = "mean", per_seed: bool = False) -> list[dict]:
    """The rows of the safe fine-tuning table: task, method, seeds (the seed with ``per_seed``), the online
    budgets, an ``Estimate`` per ``SAFE_FINETUNE_COLUMNS`` key over the group's seeds, and ``safe`` (the
    seeds whose final evaluation is within the limit) of ``n``."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in safe_finetune_rows(runs):
        groups.setdefault((r["task"], r["method"]), []).append(r)
    out = []
    for (task, method), group in groups.items():
        budgets = "-".join(map(str, sorted({int(r["budget"]) for r in group})))
        for sub in ([[r] for r in group] if per_seed else [group]):
            most = {"violating": max(r["episodes"] for r in sub)}  # a count of episodes: at most the episodes run
            cells = {k: (Estimate(float(sub[0][k]), float(sub[0][k]), float(sub[0][k])) if per_seed
                         else estimate([r[k] for r in sub], how, lowest=low, highest=most.get(k))) for k, _, _, low in SAFE_FINETUNE_COLUMNS}
            out.append({"task": task, "method": method, "seeds": sub[0]["seed"] if per_seed else len(sub), "budgets": budgets,
                        "cells": cells, "safe": sum(int(r["safe"]) for r in sub), "n": len(sub)})
    return out


def safe_finetune_table(runs: list[RunInfo], how: str = "mean", per_seed: bool = False) -> str:
    """The safe fine-tuning table (module docstring) over seeds, or with ``per_seed`` one row per run."""
    rows = safe_finetune_groups(runs, how, per_seed)
    if not rows:
        return ""
    head = ("| task | method | " + ("seed" if per_seed else "seeds") + " | online budget (env steps) | "
            + " | ".join(label for _, label, _, _ in SAFE_FINETUNE_COLUMNS[:6]) + " | final within the limit | "
            + " | ".join(label for _, label, _, _ in SAFE_FINETUNE_COLUMNS[6:]) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        cells = [(f"{est.value:.{0 if k == 'violating' else d}f}" if math.isfinite(est.value) else "-") if per_seed else est.fmt(d)
                 for (k, _, d, _), est in zip(SAFE_FINETUNE_COLUMNS, row["cells"].values())]
        within = ("yes" if row["safe"] else "**no**") if per_seed else f"{row['safe']} of {row['n']}"
        lines.append(f"| {row['task']} | {row['method']} | {row['seeds']} | {row['budgets']} | "
                     + " | ".join(cells[:6]) + f" | {within} | " + " | ".join(cells[6:]) + " |")
    return "\n".join(lines)


def safe_finetune_csv(runs: list[RunInfo], how: str = "mean") -> str:
    """The safe fine-tuning table over seeds as CSV (each column with its interval bounds); empty without safe fine-tuning runs."""
    rows = safe_finetune_groups(runs, how)
    if not rows:
        return ""
    fields = ["task", "method", "seeds", "aggregate", "online_budget"]
    for k, _, _, _ in SAFE_FINETUNE_COLUMNS:
        fields += [k, f"{k}_low", f"{k}_high"]
    fields += ["final_within_limit"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields, lineterminator="\n")
    w.writeheader()
    for row in rows:
        out = {"task": row["task"], "method": row["method"], "seeds": row["n"], "aggregate": how, "online_budget": row["budgets"],
               "final_within_limit": row["safe"]}
        for k, est in row["cells"].items():
            out |= {k: est.value, f"{k}_low": est.low, f"{k}_high": est.high}
        w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()})
    return buf.getvalue()


def safe_finetune_latex(runs: list[RunInfo], how: str = "mean") -> str:
    """The safe fine-tuning table over seeds as a LaTeX ``table`` (booktabs): start, the initial dip, reward at
    25% and final (DSRL-normalised), final cost, seeds within the limit, cumulative training cost; '' without
    safe fine-tuning runs."""
    rows = safe_finetune_groups(runs, how)
    if not rows:
        return ""
    what = "mean [95\\% t interval]" if how == "mean" else "IQM [95\\% bootstrap interval]"
    keys = [("start", 3), ("lowest_early", 3), ("quarter", 3), ("final", 3), ("final_cost", 1)]
    out = ["\\begin{table}[t]", "\\centering", "\\begin{tabular}{llr" + "r" * len(keys) + "lr}", "\\toprule",
           "Task & Method & Seeds & Start & Lowest, first 10\\% & At 25\\% & Final & Final cost & Within the limit "
           "& Training cost \\\\", "\\midrule"]
    for row in rows:
        cells = " & ".join(_tex_est(row["cells"][k], d) for k, d in keys)
        out.append(f"{_tex(row['task'])} & {_tex(row['method'])} & {row['n']} & {cells} & {row['safe']} of {row['n']} & "
                   f"{_tex_est(row['cells']['cum_cost'], 0)} \\\\")
    out += ["\\bottomrule", "\\end{tabular}",
            f"\\caption{{Fine-tuning on safe tasks ({what} over seeds): DSRL-normalised reward at the start (after any bridge), "
            "the lowest in the first 10\\% of the online budget (the initial dip), at 25\\% of the budget and final; final "
            "evaluation cost (raw); seeds whose final evaluation is within the limit; cumulative training cost.}", "\\end{table}"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------- tables


def _budget(g: GroupResult) -> str:
    lo, hi = g.final_budget
    unit = "env steps" if g.x_key == "env_steps" else "gradient steps"
    text = f"{lo}" if lo == hi else f"{lo}-{hi}"
    if g.final_updates is not None and g.x_key == "env_steps":
        ulo, uhi = g.final_updates
        text += f" {unit}, {ulo if ulo == uhi else f'{ulo}-{uhi}'} updates"
        return text
    return f"{text} {unit}"


def safe_table(results: list[GroupResult]) -> str:
    rows = [r for r in results if r.safe_task]
    if not rows:
        return ""
    head = ("| task | method | seeds | budget (final) | final reward (DSRL-norm.) | final cost (DSRL-norm.) | safe? | "
            "best reward within the limit (DSRL-norm.) @ step (env steps online, gradient steps offline) | cumulative training cost | training episodes over the limit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for g in rows:
        unsafe = g.unsafe
        reward = g.final_norm_return.fmt(3)
        cost = g.final_norm_cost.fmt(2) if g.final_norm_cost else "-"
        if unsafe:
            reward, cost = f"_{reward}_", f"**{cost}**"
        lines.append(
            f"| {g.task} | {g.method} | {g.n} | {_budget(g)} | {reward} | {cost} | "
            f"{'-' if unsafe is None else ('✗ unsafe' if unsafe else '✓')} | "
            f"{f'{g.best_norm_return.fmt(3)} @ {g.best_at}' if g.best_at >= 0 else '- (no evaluation within the limit)'} | "
            f"{g.cum_train_cost.fmt(0) if g.cum_train_cost else '-'} | "
            f"{g.violating_episodes.fmt(1) if g.violating_episodes else '-'}"
            f"{f' of {g.train_episodes.value:.0f}' if g.train_episodes and math.isfinite(g.train_episodes.value) else ''} |"
        )
    return "\n".join(lines)


def score_table(results: list[GroupResult]) -> str:
    rows = [r for r in results if not r.safe_task]
    if not rows:
        return ""
    head = ("| task | method | seeds | budget (final) | final score (normalised x100) | best score @ step | "
            "final eval return (raw) | normalisation |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for g in rows:
        lines.append(
            f"| {g.task} | {g.method} | {g.n} | {_budget(g)} | {g.final_norm_return.fmt(1)} | "
            f"{g.best_norm_return.fmt(1)} @ {g.best_at} | {g.final_return.fmt(1)} | {g.normalisation} |"
        )
    return "\n".join(lines)


def across_tasks_table(results: list[GroupResult]) -> str:
    """IQM of the final normalised return pooled over the tasks of one normalisation family, with a
    stratified-bootstrap interval; only for methods run on at least two tasks of that family."""
    lines = []
    for family, safe in (("safe tasks, DSRL-normalised reward", True), ("unconstrained tasks, normalised score x100", False)):
        by_method: dict[str, list[GroupResult]] = {}
        for g in results:
            if g.safe_task == safe:
                by_method.setdefault(g.method, []).append(g)
        for method, gs in by_method.items():
            if len(gs) < 2:
                continue
            est, lo, hi = stratified_bootstrap_ci([np.asarray(g.final_norm_return_per_seed) for g in gs], iqm)
            digits = 3 if safe else 1
            lines.append(f"| {family} | {method} | {len(gs)} ({', '.join(g.task for g in gs)}) | {sum(g.n for g in gs)} | "
                         f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] |")
    if not lines:
        return ""
    head = "| tasks | method | tasks pooled | runs | IQM of final normalised return [95% stratified bootstrap CI] |"
    return "\n".join([head, "|---|---|---|---|---|"] + lines)


CSV_FIELDS = [
    "task", "method", "seeds", "n", "aggregate", "normalisation", "budget_axis", "final_budget_min", "final_budget_max",
    "final_updates", "final_norm_return", "final_norm_return_low", "final_norm_return_high", "final_return",
    "final_return_low", "final_return_high", "best_norm_return", "best_norm_return_low", "best_norm_return_high",
    "best_at", "final_cost", "final_cost_low", "final_cost_high", "final_norm_cost", "final_norm_cost_low",
    "final_norm_cost_high", "cost_limit", "unsafe", "cum_train_cost", "cum_train_cost_low", "cum_train_cost_high",
    "violating_episodes", "train_episodes",
]


def results_csv(results: list[GroupResult], how: str) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    w.writeheader()

    def e(prefix: str, est: Estimate | None) -> dict:
        if est is None:
            return {}
        return {prefix: est.value, f"{prefix}_low": est.low, f"{prefix}_high": est.high}

    for g in results:
        row = {
            "task": g.task, "method": g.method, "seeds": " ".join(map(str, g.seeds)), "n": g.n, "aggregate": how,
            "normalisation": g.normalisation, "budget_axis": g.x_key, "final_budget_min": g.final_budget[0],
            "final_budget_max": g.final_budget[1], "final_updates": g.final_updates[1] if g.final_updates else "",
            "best_at": g.best_at if g.best_at >= 0 else "", "cost_limit": "" if g.cost_limit is None else g.cost_limit,
            "unsafe": "" if g.unsafe is None else int(g.unsafe),
            "violating_episodes": g.violating_episodes.value if g.violating_episodes else "",
            "train_episodes": g.train_episodes.value if g.train_episodes else "",
        }
        row |= e("final_norm_return", g.final_norm_return) | e("final_return", g.final_return) | e("best_norm_return", g.best_norm_return)
        row |= e("final_cost", g.final_cost) | e("final_norm_cost", g.final_norm_cost) | e("cum_train_cost", g.cum_train_cost)
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def _tex(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in text)


def _tex_est(est: Estimate | None, digits: int) -> str:
    if est is None or not math.isfinite(est.value):
        return "--"
    if est.low == est.high:
        return f"{est.value:.{digits}f}"
    return f"{est.value:.{digits}f} {{\\scriptsize [{est.low:.{digits}f}, {est.high:.{digits}f}]}}"


def results_latex(results: list[GroupResult], how: str, source: str) -> str:
    """The safe-task and score tables as LaTeX ``table`` environments (booktabs: ``\\usepackage{booktabs}``);
    the same numbers as the page, unsafe rows' cost in bold."""
    what = "mean [95\\% t interval]" if how == "mean" else "IQM [95\\% bootstrap interval]"
    out = [f"% o2o report: {_tex(source)}; {what} over seeds; needs \\usepackage{{booktabs}}"]
    safe = [g for g in results if g.safe_task]
    if safe:
        out += ["\\begin{table}[t]", "\\centering", "\\begin{tabular}{llrrrl}", "\\toprule",
                "Task & Method & Seeds & Reward (norm.) & Cost (norm.) & Best reward within the limit \\\\", "\\midrule"]
        for g in safe:
            cost = _tex_est(g.final_norm_cost, 2)
            if g.unsafe:
                cost = f"\\textbf{{{cost}}}"
            best = f"{_tex_est(g.best_norm_return, 3)} @ {g.best_at:,}" if g.best_at >= 0 else "--"
            out.append(f"{_tex(g.task)} & {_tex(g.method)} & {g.n} & {_tex_est(g.final_norm_return, 3)} & {cost} & {best} \\\\")
        out += ["\\bottomrule", "\\end{tabular}",
                f"\\caption{{Final evaluation, DSRL-normalised reward and cost ({what} over seeds); cost above 1 (bold): unsafe.}}",
                "\\end{table}"]
    plain = [g for g in results if not g.safe_task]
    if plain:
        out += ["\\begin{table}[t]", "\\centering", "\\begin{tabular}{llrrl}", "\\toprule",
                "Task & Method & Seeds & Final score & Best score \\\\", "\\midrule"]
        for g in plain:
            best = f"{_tex_est(g.best_norm_return, 1)} @ {g.best_at:,}" if g.best_at >= 0 else "--"
            out.append(f"{_tex(g.task)} & {_tex(g.method)} & {g.n} & {_tex_est(g.final_norm_return, 1)} & {best} \\\\")
        out += ["\\bottomrule", "\\end{tabular}",
                f"\\caption{{Final evaluation, normalised score (x100; {what} over seeds).}}", "\\end{table}"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------- the page


def method_colors(methods: list[str]) -> dict[str, str]:
    """One colour per method for the whole report, by sorted name: every figure agrees."""
    from o2o.experiments.plots import COLORS

    import matplotlib

    palette = COLORS if len(methods) <= len(COLORS) else [matplotlib.colormaps["tab20"](i % 20) for i in range(len(methods))]
    return {m: palette[i] for i, m in enumerate(sorted(methods))}


def write_report(
    sources: list[str | Path],
    out: str | Path,
    *,
    how: str = "mean",
    title: str | None = None,
    command: str = "",
    archive: bool = True,
) -> dict:
    """Write ``out`` (markdown), ``<out stem>/`` (one PNG per task, results.csv, per-table CSVs) and, with
    ``archive``, ``<out stem>/archive/<sweep>/`` for each sweep directory read: the small files of its
    finished runs, from which the page can be made again (``o2o.experiments.archive``).
    Returns the paths written."""
    from o2o.experiments.plots import plot_learning_curves

    runs, srcs = collect(sources)
    results = [summarise_group(task, method, group, how) for (task, method), group in group_runs(runs).items()]
    out = Path(out)
    if out.suffix != ".md":
        raise O2OError(f"--out '{out}' should be a markdown file path ending in .md (figures go next to it)")
    assets = out.with_suffix("")
    assets.mkdir(parents=True, exist_ok=True)
    sweeps = [s for s in srcs if s.spec_text]
    named_by = "; ".join(s.label + (f" (sha256 {s.spec_sha256[:12]})" if s.spec_sha256 else "") for s in srcs if s.path) or "run directories"
    named_short = ", ".join(Path(s.spec_source).name if s.spec_source else s.label for s in srcs)
    colors = method_colors(sorted({g.method for g in results}))

    figures = []
    groups = group_runs(runs)
    phase_of = {"step": "offline", "env_steps": "online"}  # a figure's x-axis is in one unit: a phase per figure
    for task in sorted({r.task for r in runs}):
        from o2o.envs import get_task

        t = get_task(task)
        limit = next((g.cost_limit for g in results if g.task == task and g.cost_limit is not None), None)
        safe = any(g.safe_task and g.final_cost is not None for g in results if g.task == task)
        x_keys = sorted({g.x_key for g in results if g.task == task})
        for x_key in x_keys:
            methods = {g.method for g in results if g.task == task and g.x_key == x_key}
            task_groups = {method: [r.path for r in g] for (tk, method), g in groups.items() if tk == task and method in methods}
            name = task if len(x_keys) == 1 else f"{task} ({phase_of.get(x_key, x_key)})"
            png = assets / (f"{task}.png" if len(x_keys) == 1 else f"{task}-{phase_of.get(x_key, x_key)}.png")
            plot_learning_curves(
                task_groups, png, title=f"{title}: {name}" if title else f"{name}  [{named_short}]", cost_limit=limit,
                reward_metric="eval/normalized_return", cost_metric="eval/cost" if safe else None,
                reward_label="DSRL-normalised return" if t.ref_source == "DSRL" else "normalised score (x100)",
                colors=colors, how=how, x_label="environment steps" if x_key == "env_steps" else "gradient steps", pdf=True,
            )
            figures.append((name, png, limit))

    csv_path = assets / "results.csv"
    csv_path.write_text(results_csv(results, how))
    tex_path = assets / "results.tex"
    tex_path.write_text(results_latex(results, how, named_short) + safe_finetune_latex(runs, how))
    sft_csv = safe_finetune_csv(runs, how)
    sft_csv_path = assets / "safe-finetune.csv" if sft_csv else None
    if sft_csv_path:
        sft_csv_path.write_text(sft_csv)

    from o2o.experiments.archive import archive_sweep
    from o2o.experiments.index import is_archive
    from o2o.experiments.index import INDEX_FILE

    archives = []
    for src in srcs:
        if not src.spec_sha256 and not src.spec_text:
            continue  # run directories given directly: not a sweep
        if archive and (src.path / INDEX_FILE).is_file():
            dest = assets / "archive" / src.path.resolve().name
            archive_sweep(src.path, dest)
            archives.append(dest)
        elif is_archive(src.path):
            archives.append(src.path)

    rel = lambda p: Path(p).relative_to(out.parent).as_posix()  # noqa: E731
    md = [f"# {title or 'Results: ' + named_short}", ""]
    md.append(f"Generated by `{command or 'o2o report'}` on {time.strftime('%Y-%m-%d %H:%M')}. "
              f"Every table and figure below comes from {named_by}.")
    md.append("")
    md.append(f"Aggregation: {AGGREGATE_TEXT[how]}. **Final** = each run's last evaluation, at the budget given "
              "in the row. **Best** = the maximum over evaluations of the seed-aggregated normalised-return curve, "
              "with the budget where it was reached (it selects on the evaluation episodes: optimistic); on a safe "
              "task only the evaluations whose seed-aggregated normalised cost is within the limit (<= 1) count. "
              "Intervals of costs and counts are clipped at 0, and those of the training episodes over the limit "
              "at the episodes run. Only finished runs are counted.")
    for s in sweeps:
        md += ["", f"## Sweep spec `{s.spec_source or s.path}`", "",
               f"sha256 `{s.spec_sha256}`; sweep directory `{s.path}`."
               + (" It ran part of the spec: only the runs matching " + ", ".join(f"`--only '{p}'`" for p in s.only) + "." if s.only else ""),
               "", "```yaml", s.spec_text.rstrip(), "```"]
    st = safe_table(results)
    if st:
        md += ["", "## Safe tasks (DSRL normalisation)", "",
               f"Table 1 — from {named_by}. Reward: DSRL-normalised return (R - R_min) / (R_max - R_min); cost: "
               "DSRL-normalised cost C / kappa; an agent whose aggregated final normalised cost exceeds 1 is marked "
               "**✗ unsafe** (its reward in italics: not a valid result under the constraint). Cumulative training cost: "
               "every training episode's cost, warm-up included. Intervals in brackets.", "", st]
    sc = score_table(results)
    if sc:
        md += ["", "## Unconstrained tasks (D4RL normalisation)", "",
               f"Table 2 — from {named_by}. Score = 100 (R - R_random) / (R_expert - R_random) with each task's "
               "reference returns (`o2o tasks`: D4RL's for MuJoCo, o2o's own for Pendulum).", "", sc]
    ft = finetune_table(runs, how)
    if ft:
        md += ["", "## Fine-tuning from a pre-trained policy", "",
               f"Table — from {named_by}. Per run, D4RL-normalised: *pre-trained* = the pre-trained run's own final "
               "evaluation; *start* = the evaluation at env step 0 (the policy fine-tuning starts from, after any "
               "bridge); *lowest, first 10%* = the lowest evaluation in the first 10% of the online budget (step 0 "
               "excluded); *dip* = start - lowest; *best* = the run's best evaluation after step 0 (optimistic); "
               "*online mean* = the mean of its evaluations after step 0 (what it scored while fine-tuning). "
               "Then aggregated over seeds.", "", ft]
    sft = safe_finetune_table(runs, how)
    if sft:
        md += ["", "## Fine-tuning on safe tasks", "",
               f"Table — from {named_by}. Per run: DSRL-normalised reward at the start (env step 0, after any "
               "bridge), the lowest in the first 10% of the online budget (step 0 excluded: the initial dip), at the "
               "evaluation nearest 25% of the budget, final, and final - start; evaluation cost (raw) at the start "
               "and the end; cumulative training cost and training episodes over the limit. Then aggregated over "
               "seeds; 'final within the limit' counts the seeds.", "", sft]
    at = across_tasks_table(results)
    if at:
        md += ["", "## Across tasks", "", f"Table 3 — from {named_by}. rliable-style aggregate: IQM over every run of "
               "the tasks pooled, interval from a bootstrap that resamples seeds within each task (2000 resamples).", "", at]
    md += ["", f"CSV of every number (with interval bounds): [{rel(csv_path)}]({rel(csv_path)})"
           + (f", the safe fine-tuning table's: [{rel(sft_csv_path)}]({rel(sft_csv_path)})" if sft_csv_path else "")
           + f"; the tables in LaTeX (booktabs): [{rel(tex_path)}]({rel(tex_path)}); each figure also as a vector PDF beside its PNG."]
    for a in archives:
        where = rel(a) if out.parent.resolve() in a.resolve().parents else str(a)
        md += ["", f"The runs' data (config, metrics.csv, summary of every finished run, no checkpoints): [{where}/]({where}/); "
               f"`o2o report {a} --out PAGE.md` makes this page again from it."]
    md += ["", "## Learning curves", ""]
    for task, png, limit in figures:
        md += [f"![{task}]({rel(png)})", "",
               f"*{task}: evaluation normalised return" + (f" and episode cost (dashed: the cost limit {limit:g})" if limit is not None else "")
               + f", {AGGREGATE_TEXT[how].split(' over')[0]}; methods keep their colours across figures. From {named_by}.*", ""]
    excluded = [(s, r, st_, e) for s in srcs for r, st_, e in s.excluded]
    if excluded:
        md += ["## Runs left out", "", "| run | status | error |", "|---|---|---|"]
        md += [f"| {r} | {st_} | {e.replace('|', '/') if e else ''} |" for _, r, st_, e in excluded]
        md.append("")
    out.write_text("\n".join(md).rstrip() + "\n")
    return {"markdown": out, "csv": csv_path, "safe_finetune_csv": sft_csv_path, "latex": tex_path, "figures": [p for _, p, _ in figures], "results": results,
            "excluded": excluded, "runs": len(runs), "archives": archives}
