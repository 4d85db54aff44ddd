"""Learning-curve figures: reward and cost panels, the cost limit drawn, methods coloured consistently."""

from __future__ import annotations

import os
from pathlib import Path


from o2o.experiments.aggregate import curve

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]


def plot_learning_curves(
    groups: dict[str, list[str | Path]],
    out: str | Path,
    *,
    title: str,
    cost_limit: float | None = None,
    reward_metric: str = "eval/return",
    cost_metric: str | None = "eval/cost",
    reward_label: str = "evaluation return",
    colors: dict[str, str] | None = None,
    how: str = "mean",
    x_label: str = "environment steps",
) -> Path:
    """One panel for reward (and one for cost when ``cost_metric``), the aggregate (``how``: mean or
    iqm) and its 95% CI over the runs of each group. ``colors`` maps group labels to colours, so that a
    method keeps its colour across figures (default: by position). Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if cost_metric else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), dpi=110, squeeze=False)
    for i, (label, runs) in enumerate(groups.items()):
        color = (colors or {}).get(label, COLORS[i % len(COLORS)])
        metrics = [(axes[0, 0], reward_metric)] + ([(axes[0, 1], cost_metric)] if cost_metric else [])
        for ax, metric in metrics:
            c = curve(runs, metric, how=how)
            ax.plot(c.x, c.mean, color=color, marker="o", ms=3, label=f"{label} (n={c.n})")
            ax.fill_between(c.x, c.low, c.high, color=color, alpha=0.2, lw=0)
    axes[0, 0].set_ylabel(reward_label)
    if cost_metric:
        axes[0, 1].set_ylabel("evaluation episode cost")
        axes[0, 1].set_ylim(bottom=0)  # a cost is never negative; the t interval can dip below 0
        if cost_limit is not None:
            axes[0, 1].axhline(cost_limit, color="k", ls="--", lw=1.2, label=f"cost limit {cost_limit:g}")
    for ax in axes[0]:
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    what = "mean and 95% t CI" if how == "mean" else "IQM and 95% bootstrap CI"
    full = f"{title}  ({what} over seeds)"
    # a title wider than the figure would be cut at both edges: the aggregate's description on a line of its own
    fig.suptitle(full if len(full) <= 58 * panels else f"{title}\n({what} over seeds)", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out
