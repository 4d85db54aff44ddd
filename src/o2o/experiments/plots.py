"""Learning-curve figures: reward and cost panels, the cost limit drawn, methods coloured consistently."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path


from o2o.experiments.aggregate import curve

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]


def step_label(x: float, _pos=None) -> str:
    """A step count as a tick label: 20000 -> '20k', 1500000 -> '1.5M', 30 -> '30'."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:g}k"
    return f"{x:g}"


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
    train_cost_metric: str | None = None,
    pdf: bool = False,
) -> Path:
    """One panel for reward (and one for cost when ``cost_metric``, one for the cumulative training
    cost when ``train_cost_metric``), the aggregate (``how``: mean or
    iqm) and its 95% CI over the runs of each group. ``colors`` maps group labels to colours, so that a
    method keeps its colour across figures (default: by position). ``pdf``: also the same figure as a
    vector PDF beside the PNG (for print). Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter, MaxNLocator

    panels = 1 + bool(cost_metric) + bool(train_cost_metric)
    # one legend for both panels, below them: method labels (with their grid cells) are long, and a legend
    # inside an axis hides the curves it names
    entries = [f"{label} (n=...)" for label in groups] + (["cost limit"] if cost_metric and cost_limit is not None else [])
    ncol = max(1, min(len(entries), (panels * 96) // max(len(e) for e in entries))) if entries else 1
    legend_rows = -(-len(entries) // ncol)
    legend_h = 0.22 * legend_rows + 0.15
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8 + legend_h), dpi=110, squeeze=False)
    for i, (label, runs) in enumerate(groups.items()):
        color = (colors or {}).get(label, COLORS[i % len(COLORS)])
        metrics = [(axes[0, 0], reward_metric)] + ([(axes[0, 1], cost_metric)] if cost_metric else [])
        if train_cost_metric:
            metrics.append((axes[0, panels - 1], train_cost_metric))
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
    if train_cost_metric:
        axes[0, panels - 1].set_ylabel("cumulative training cost")
        axes[0, panels - 1].set_ylim(bottom=0)
    for ax in axes[0]:
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10], integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(step_label))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if cost_metric:
        extra = [(h, lab) for h, lab in zip(*axes[0, 1].get_legend_handles_labels()) if lab.startswith("cost limit")]
        handles, labels = handles + [h for h, _ in extra], labels + [lab for _, lab in extra]
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    what = "mean and 95% t CI" if how == "mean" else "IQM and 95% bootstrap CI"
    full = f"{title}  ({what} over seeds)"
    # a title wider than the figure would be cut at both edges: the aggregate's description on a line of
    # its own, and a title longer than a line wrapped
    width = 58 * panels
    fig.suptitle(full if len(full) <= width else f"{textwrap.fill(title, width)}\n({what} over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, legend_h / (3.8 + legend_h), 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    if pdf:
        tmp_pdf = out.with_name(f".{out.stem}.tmp.pdf")
        fig.savefig(tmp_pdf, format="pdf")
        os.replace(tmp_pdf, out.with_suffix(".pdf"))
    plt.close(fig)
    os.replace(tmp, out)
    return out
