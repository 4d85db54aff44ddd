"""Aggregation of run directories over seeds, two ways:

- ``mean``: the mean and its two-sided 95% Student-t confidence interval (mean +- t_{0.975, n-1} s / sqrt(n));
- ``iqm``: the interquartile mean (the mean of the middle 50%: ``scipy.stats.trim_mean(x, 0.25)``, as
  rliable's ``aggregate_iqm``) with a 95% percentile-bootstrap interval over seeds; across tasks, a
  stratified bootstrap (seeds resampled within each task), as Agarwal et al. (2021) recommend.

With few seeds (3-5) the IQM trims little or nothing (n = 3: it is the mean), and a bootstrap interval
is narrower than the t interval; the report says which was used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from o2o.errors import RunDirError
from o2o.runs.rundir import read_summary


@dataclass
class Curve:
    x: np.ndarray  # common x grid
    mean: np.ndarray
    low: np.ndarray  # 95% CI
    high: np.ndarray
    n: int  # seeds


def mean_ci(values: np.ndarray, axis: int = 0, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and the two-sided Student-t confidence interval over ``axis`` (NaN-free input)."""
    values = np.asarray(values, np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, mean.copy(), mean.copy()
    sem = values.std(axis=axis, ddof=1) / np.sqrt(n)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sem
    return mean, mean - half, mean + half


def format_mean_ci(values, digits: int = 1) -> str:
    """'mean ± half-width' of the 95% t-interval over seeds ('mean' alone for one value)."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return f"{values.mean():.{digits}f}"
    m, _lo, hi = mean_ci(values)
    return f"{float(m):.{digits}f} ± {float(hi - m):.{digits}f}"


AGGREGATES = ("mean", "iqm")


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean: ``trim_mean`` cutting 25% at each end (int(0.25 n) values per side)."""
    return stats.trim_mean(np.asarray(values, np.float64), 0.25, axis=axis)


def bootstrap_ci(
    values: np.ndarray, statistic=iqm, *, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``statistic`` over axis 0 and its percentile-bootstrap interval (seeds resampled with replacement;
    ``statistic(x, axis=...)`` must reduce that axis). Fixed ``seed``: a report is reproducible."""
    values = np.asarray(values, np.float64)
    estimate = statistic(values, axis=0)
    n = values.shape[0]
    if n < 2:
        return estimate, np.array(estimate, copy=True), np.array(estimate, copy=True)
    rng = np.random.default_rng(seed)
    resampled = values[rng.integers(0, n, size=(reps, n))]  # (reps, n, ...)
    dist = statistic(resampled, axis=1)
    low, high = np.percentile(dist, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return estimate, low, high


def stratified_bootstrap_ci(
    groups: list[np.ndarray], statistic=iqm, *, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``statistic`` of the pooled scores of several tasks (one 1-D array of seeds per task), with the
    interval of a bootstrap that resamples seeds within each task (rliable's StratifiedBootstrap)."""
    groups = [np.asarray(g, np.float64).ravel() for g in groups]
    estimate = float(statistic(np.concatenate(groups), axis=0))
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([g[rng.integers(0, len(g), size=(reps, len(g)))] for g in groups], axis=1)
    dist = statistic(pooled, axis=1)
    low, high = np.percentile(dist, [50 * (1 - level), 50 * (1 + level)])
    return estimate, float(low), float(high)


def aggregate(values: np.ndarray, how: str = "mean", *, reps: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(estimate, low, high)`` over axis 0: ``mean`` (t interval) or ``iqm`` (bootstrap interval)."""
    if how == "mean":
        return mean_ci(values)
    if how == "iqm":
        return bootstrap_ci(values, iqm, reps=reps, seed=seed)
    raise ValueError(f"unknown aggregate '{how}'; choose one of {AGGREGATES}")


def read_run(run: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    from o2o.config import load_yaml
    from o2o.runs import read_metrics_csv

    run = Path(run)
    if not (run / "metrics.csv").exists():
        raise RunDirError(f"'{run}' has no metrics.csv: is it a run directory?")
    return load_yaml(run / "config.yaml"), read_metrics_csv(run / "metrics.csv")


def x_key_of(metrics: dict) -> str:
    """The budget axis of a run: env steps (online runs) or the logged step (offline gradient steps)."""
    return "env_steps" if "env_steps" in metrics else "step"


def curve(runs: list[str | Path], metric: str, x_key: str | None = None, how: str = "mean") -> Curve:
    """Aggregate (``mean`` / ``iqm``, see ``aggregate``) and 95% CI of ``metric`` over runs, on the x
    values where every run logged it (evaluation rows), truncated to the shortest run."""
    series = []
    for run in runs:
        _, m = read_run(run)
        x_key = x_key or x_key_of(m)
        if metric not in m:
            raise RunDirError(f"'{run}' never logged '{metric}'")
        valid = ~np.isnan(m[metric])
        series.append((m[x_key][valid], m[metric][valid]))
    n_points = min(len(x) for x, _ in series)
    xs = np.stack([x[:n_points] for x, _ in series])
    ys = np.stack([y[:n_points] for _, y in series])
    mean, low, high = aggregate(ys, how)
    return Curve(x=xs.mean(axis=0), mean=mean, low=low, high=high, n=len(runs))


def summaries(runs: list[str | Path]) -> list[dict]:
    out = []
    for run in runs:
        path = Path(run) / "summary.json"
        if not path.exists():
            raise RunDirError(f"'{run}' has no summary.json: the run has not finished")
        out.append(read_summary(path))
    return out
