"""Aggregation of run directories over seeds: mean and 95% confidence interval (Student t) of a metric
on a common x axis (env steps), and summary tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from o2o.errors import RunDirError


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


def read_run(run: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    from o2o.config import load_yaml
    from o2o.runs import read_metrics_csv

    run = Path(run)
    if not (run / "metrics.csv").exists():
        raise RunDirError(f"'{run}' has no metrics.csv: is it a run directory?")
    return load_yaml(run / "config.yaml"), read_metrics_csv(run / "metrics.csv")


def curve(runs: list[str | Path], metric: str, x_key: str = "env_steps") -> Curve:
    """Mean / CI of ``metric`` over runs, on the x values where every run logged it (evaluation rows),
    truncated to the shortest run."""
    series = []
    for run in runs:
        _, m = read_run(run)
        if metric not in m:
            raise RunDirError(f"'{run}' never logged '{metric}'")
        valid = ~np.isnan(m[metric])
        series.append((m[x_key][valid], m[metric][valid]))
    n_points = min(len(x) for x, _ in series)
    xs = np.stack([x[:n_points] for x, _ in series])
    ys = np.stack([y[:n_points] for _, y in series])
    mean, low, high = mean_ci(ys)
    return Curve(x=xs.mean(axis=0), mean=mean, low=low, high=high, n=len(runs))


def summaries(runs: list[str | Path]) -> list[dict]:
    out = []
    for run in runs:
        path = Path(run) / "summary.json"
        if not path.exists():
            raise RunDirError(f"'{run}' has no summary.json: the run has not finished")
        out.append(json.loads(path.read_text()))
    return out
