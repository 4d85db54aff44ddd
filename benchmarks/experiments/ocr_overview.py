"""One figure of every OCR-CFT comparison run so far (docs/results.md#ocr-cft): a grid of D4RL-normalised
learning curves, one row per online algorithm (O2SAC from CQL, O2TD3 from TD3+BC, O2PPO from IQL) and
one column per dataset (Hopper / Walker2d x medium / medium-replay), each panel the full method beside
naive fine-tuning and from-scratch training, with the pre-trained policy's score as a dashed line.

    .venv/bin/python benchmarks/experiments/ocr_overview.py [--sweeps runs/sweeps] [--out docs/figures/ocr_overview.png]

It also prints the at-a-glance table of docs/results.md: per panel and method, the mean over seeds of
the start score, the lowest evaluation in the first 10% of the online budget, the final score and
the online mean (``o2o.experiments.report.finetune_stats``, the numbers of `o2o report`'s
fine-tuning table).

Every panel reads one `o2o sweep` directory (the table ``PANELS`` below names it and the spec that
made it), or, where that directory is not on this machine, the results archive `o2o report` wrote beside
the sweep's page (docs/results/<name>/archive/<name>: every finished run's metrics, no checkpoints); only finished runs count (those with a summary.json), and a panel whose sweep has none says
"not run", or, where the sweep's page exists but neither its directory nor an archive does (sweeps run
before archives existed, on machines since gone), that its data is not on this machine.
`--rows sac` draws one row (e.g. the O2SAC panels run after the full figure was made). Curves: mean
and 95% Student-t interval over seeds (``o2o.experiments.aggregate.curve``), x = online env steps. The pre-trained line is the mean of the pre-trained runs' own final evaluations
(their summary.json), the runs every seed of the panel starts from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from o2o.experiments.aggregate import curve

KEY = "eval/normalized_return"
ROWS = {"sac": "O2SAC (from CQL)", "td3": "O2TD3 (from TD3+BC)", "ppo": "O2PPO (from IQL)"}
OFFLINE = {"sac": "CQL", "td3": "TD3+BC", "ppo": "IQL"}
COLS = ["Hopper-medium", "Hopper-medium-replay", "Walker2d-medium", "Walker2d-medium-replay"]
# (row, dataset) -> the sweep directory (runs/sweeps/<name>, made by benchmarks/experiments/<name>.yaml)
PANELS = {
    ("sac", "Hopper-medium"): "ocr-hopper-sac",
    ("sac", "Hopper-medium-replay"): "ocr-hopper-mr-sac",
    ("sac", "Walker2d-medium"): "ocr-walker2d-sac",
    ("sac", "Walker2d-medium-replay"): "ocr-walker2d-mr-sac",
    ("td3", "Hopper-medium"): "ocr-hopper-td3-5seeds",
    ("td3", "Hopper-medium-replay"): "ocr-hopper-mr-td3-5seeds",
    ("td3", "Walker2d-medium"): "ocr-walker2d-td3",
    ("td3", "Walker2d-medium-replay"): "ocr-walker2d-mr-td3",
    ("ppo", "Hopper-medium"): "ocr-hopper-ppo",
    ("ppo", "Hopper-medium-replay"): "ocr-hopper-mr-ppo",
    ("ppo", "Walker2d-medium"): "ocr-walker2d-ppo",
    ("ppo", "Walker2d-medium-replay"): "ocr-walker2d-mr-ppo",
}
# method suffix -> (label, colour); {alg}: SAC / TD3 / PPO, {off}: the offline algorithm
VARIANTS = {"": ("O2{alg}", "tab:blue"), "-naive": ("{alg} from {off} (naive)", "tab:red"), "-scratch": ("{alg} from scratch", "tab:gray")}


def find_sweep(sweeps: Path, name: str | None, archives: Path = Path("docs/results")) -> Path | None:
    """The sweep directory ``sweeps/name``, else its results archive ``archives/name/archive/name``."""
    if not name:
        return None
    for candidate in (sweeps / name, archives / name / "archive" / name):
        if candidate.is_dir():
            return candidate
    return None


def method_runs(sweep: Path, method: str) -> list[Path]:
    """The finished runs (with a summary.json) of one method of a sweep, over its tasks and seeds."""
    method_dir = sweep / "runs" / method
    return [r for t in sorted(method_dir.glob("*")) for r in sorted(t.glob("seed*")) if (r / "summary.json").is_file()]


def table_row(sweep: Path, row: str, dataset: str) -> str | None:
    """One markdown row of the at-a-glance table: per method (full, naive, scratch) the mean over seeds of
    start, lowest in the first 10% of the budget, final and online mean (``finetune_stats``)."""
    from o2o.experiments.report import finetune_stats

    cells, n = [], []
    for suffix in VARIANTS:
        stats = [s for s in (finetune_stats(r) for r in method_runs(sweep, f"o2{row}{suffix}")) if s is not None]
        if not stats:
            cells.append("-")
            continue
        n.append(len(stats))
        mean = {k: float(np.mean([s[k] for s in stats])) for k in ("start", "lowest_early", "final", "online_mean")}
        cells.append(f"{mean['start']:.1f} / {mean['lowest_early']:.1f} / {mean['final']:.1f} / {mean['online_mean']:.1f}"
                     + ("" if len(stats) == n[0] else f" (n={len(stats)})"))
    if not n:
        return None
    return f"| {ROWS[row].split()[0]} | {dataset} | {n[0]} | " + " | ".join(cells) + f" | `{sweep.name}` |"


def missing_why(name: str | None, pages: Path = Path("docs/results")) -> str:
    """What a panel without runs says: not run, or run but its data is not here (its page exists)."""
    if not name:
        return "no spec yet"
    if (pages / f"{name}.md").is_file():
        return f"run, but its data is not\non this machine (page:\n{pages}/{name}.md)"
    return f"not run\n({name}.yaml)"


def draw_panel(ax, sweep: Path, row: str) -> list[str]:
    """Plot one panel; return the lines of its text summary."""
    from o2o.experiments.report import finetune_stats

    lines, pre = [], []
    for suffix, (label, colour) in VARIANTS.items():
        method = f"o2{row}{suffix}"
        runs = method_runs(sweep, method)
        if not runs:
            continue
        c = curve(runs, KEY, x_key="env_steps")
        name = label.format(alg=row.upper(), off=OFFLINE[row])
        ax.plot(c.x / 1e3, c.mean, color=colour, label=f"{name} (n={c.n})")
        ax.fill_between(c.x / 1e3, c.low, c.high, color=colour, alpha=0.2, linewidth=0)
        lines.append(f"{method}: n={c.n}, start {c.mean[0]:.1f}, final {c.mean[-1]:.1f} at {int(c.x[-1])} env steps")
        if suffix != "-scratch":  # the pre-trained runs' own final scores (NaN where one cannot be found)
            pre += [st["pretrained"] for st in (finetune_stats(r) for r in runs) if st is not None]
    if pre and not np.isnan(pre).all():
        ax.axhline(np.nanmean(pre), color="black", linestyle="--", linewidth=1, label=f"pre-trained {OFFLINE[row]} policy")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweeps", type=Path, default=Path("runs/sweeps"), help="the directory holding the sweep directories")
    p.add_argument("--out", type=Path, default=Path("docs/figures/ocr_overview.png"))
    p.add_argument("--rows", default=",".join(ROWS), help=f"the rows to draw, comma-separated (default: all, {','.join(ROWS)})")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        p.error(f"--rows: unknown row {unknown[0] if unknown else repr(args.rows)}; choose from {', '.join(ROWS)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(COLS), figsize=(4.2 * len(COLS), 3.2 * len(rows) + (0.4 if len(rows) == 1 else 0)), squeeze=False)
    for i, row in enumerate(rows):
        for j, dataset in enumerate(COLS):
            ax = axes[i, j]
            name = PANELS.get((row, dataset))
            sweep = find_sweep(args.sweeps, name)
            lines = draw_panel(ax, sweep, row) if sweep else []
            ax.set_title(f"{ROWS[row].split()[0]} - {dataset}", fontsize=10)
            if not lines:
                why = missing_why(name)
                ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="gray", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                print(f"{row} {dataset}: {why.splitlines()[0]}")
                continue
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
            if i == len(rows) - 1:
                ax.set_xlabel("online env steps (thousands)")
            if not any(a.get_ylabel() for a in axes[i, :j]):  # the row's first drawn panel
                ax.set_ylabel("D4RL-normalised score")
            print(f"{row} {dataset} ({sweep}): " + "; ".join(lines))
    print("\n| algorithm | dataset | seeds (full method) | full method | naive | from scratch | sweep |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for dataset in COLS:
            name = PANELS.get((row, dataset))
            sweep = find_sweep(args.sweeps, name)
            if sweep:
                line = table_row(sweep, row, dataset)
                if line:
                    print(line)
    print("\n(each cell: start / lowest in the first 10% of the online budget / final / online mean, D4RL-normalised,"
          " mean over seeds)")
    fig.suptitle(f"OCR-CFT on the generated datasets, reduced budgets: {' / '.join(ROWS[r].split()[0] for r in rows)} vs naive "
                 "fine-tuning vs from scratch (mean and 95% t-interval over seeds)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
