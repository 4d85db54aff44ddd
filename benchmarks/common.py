"""Shared helpers of the speed benchmarks: machine peak, XLA flop counts, timing, tables, results.

Every benchmark runs its contestants side by side in one process and interleaves their repeats
(round robin), so that load from other processes on a shared machine hits all of them alike.
Rates are reported as the median over repeats (and the best repeat, the least disturbed one);
the load average is recorded before and after.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------------- machine
def load_average() -> tuple[float, float, float]:
    """1/5/15-minute load averages (runnable processes; compare with the core count)."""
    return tuple(round(x, 2) for x in os.getloadavg())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "?")
    except Exception:  # noqa: BLE001 - a missing peer is not an error here
        return None


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else None
    except Exception:  # noqa: BLE001
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: cores, CPU, library versions, XLA flags, load at this moment."""
    return {
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "torch": _version("torch"),
        "d3rlpy": None,  # filled in by a benchmark that imports it (importing d3rlpy is slow/noisy)
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "git": git_revision(),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }


def load_note(before: Sequence[float], after: Sequence[float], cores: int | None = None) -> str:
    cores = cores or os.cpu_count() or 1
    worst = max(before[0], after[0])
    level = "idle" if worst < 0.5 * cores else "busy" if worst < 1.5 * cores else "heavily loaded"
    return (f"load average (1/5/15 min) {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f} before, "
            f"{after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} after, on {cores} cores: machine {level}")


# ----------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Throughput of one contestant over several repeats (items = updates or env steps)."""

    rates: list[float] = field(default_factory=list)  # items per second, one per repeat
    seconds: list[float] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time (all threads) per repeat

    def add(self, items: int, seconds: float, cpu_seconds: float | None = None) -> None:
        self.items.append(items)
        self.seconds.append(seconds)
        self.rates.append(items / seconds)
        if cpu_seconds is not None:
            self.cpu_seconds.append(cpu_seconds)

    @property
    def per_cpu_second(self) -> float:
        """Median items per second of process CPU time (threads summed; spinning threads count)."""
        if not self.cpu_seconds:
            return float("nan")
        return statistics.median(i / max(c, 1e-9) for i, c in zip(self.items, self.cpu_seconds))

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def best(self) -> float:
        return max(self.rates) if self.rates else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.rates), max(self.rates)) if self.rates else (float("nan"), float("nan"))

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "best": self.best, "min": self.spread[0], "rates": self.rates,
                "seconds": self.seconds, "items": self.items, "cpu_seconds": self.cpu_seconds,
                "per_cpu_second": self.per_cpu_second}


def time_call(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call; ``fn`` must block until its work is done."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_call_cpu(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall-clock seconds, process CPU seconds) of one call."""
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def measure(fn: Callable[[int], Any], items: int, *, warmup: int = 1, repeats: int = 5,
            timing: Timing | None = None) -> Timing:
    """Call ``fn(items)`` ``warmup`` times untimed, then ``repeats`` times timed; ``fn`` must block
    until the work is done (``jax.block_until_ready`` / a host value)."""
    timing = timing or Timing()
    for _ in range(warmup):
        fn(items)
    for _ in range(repeats):
        timing.add(items, time_call(lambda: fn(items)))
    return timing


def interleaved(contestants: dict[str, tuple[Callable[[int], Any], int]], *, repeats: int,
                warmup: int = 1, log: Callable[[str], None] | None = print,
                calibrate: Iterable[str] = (), target_seconds: float = 5.0, min_items: int = 5) -> dict[str, Timing]:
    """Round-robin repeats of several contestants: ``{name: (fn(items), items)}``. Each is warmed
    up first (compilation, caches), then repeat r of every contestant runs before repeat r + 1 of
    any, so a burst of outside load is shared rather than landing on one contestant.

    Contestants named in ``calibrate`` are warmed up on a few items and then given as many items per
    repeat as take about ``target_seconds`` (between ``min_items`` and their ``items``): a slow
    contestant on a loaded machine then cannot stretch a run to hours."""
    calibrate = set(calibrate)
    plan = {}
    for name, (fn, items) in contestants.items():
        if name in calibrate:
            few = max(2, min(items, min_items))
            fn(few)  # warm-up (compilation etc.)
            rate = few / time_call(lambda: fn(few))
            items = int(min(items, max(min_items, round(rate * target_seconds))))
            if log:
                log(f"  calibrated {name}: ~{rate:.1f}/s -> {items} per repeat")
        else:
            for _ in range(warmup):
                fn(items)
        plan[name] = (fn, items)
    timings = {name: Timing() for name in contestants}
    for r in range(repeats):
        for name, (fn, items) in plan.items():
            timings[name].add(items, *time_call_cpu(lambda: fn(items)))
            if log:
                log(f"  repeat {r + 1}/{repeats}  {name:<42s} {timings[name].rates[-1]:10.1f}/s  "
                    f"(load {os.getloadavg()[0]:.2f})")
    return timings


# ----------------------------------------------------------------------------------- XLA
def xla_cost(jitted_fn, *args, **kwargs) -> dict[str, float]:
    """XLA's cost analysis of ``jitted_fn(*args, **kwargs)`` as a flat dict (handles the list-of-dicts
    form older jaxlibs return). Loops are counted once per body, not per trip: use it on one step."""
    compiled = jitted_fn.lower(*args, **kwargs).compile()
    cost = compiled.cost_analysis()
    if cost is None:
        return {}
    if isinstance(cost, (list, tuple)):
        merged: dict[str, float] = {}
        for part in cost:
            for k, v in (part or {}).items():
                merged[k] = merged.get(k, 0.0) + float(v)
        return merged
    return {k: float(v) for k, v in dict(cost).items()}


def xla_flops(jitted_fn, *args, **kwargs) -> float:
    """Floating-point operations of one call according to XLA (``cost_analysis()['flops']``)."""
    return float(xla_cost(jitted_fn, *args, **kwargs).get("flops", float("nan")))


def matmul_peak_flops(sizes: Iterable[int] = (512, 1024, 1536, 2048), *, repeats: int = 5,
                      min_seconds: float = 0.2) -> dict[str, Any]:
    """The machine's measured float32 matmul peak: jitted ``a @ b`` at a few square sizes, best
    FLOP/s achieved (2 n^3 per product). This is the physical limit the update FLOP/s is set against."""
    import jax
    import jax.numpy as jnp

    per_size = {}
    for n in sizes:
        ka, kb = jax.random.split(jax.random.PRNGKey(n))
        a = jax.random.normal(ka, (n, n), jnp.float32)
        b = jax.random.normal(kb, (n, n), jnp.float32)
        f = jax.jit(lambda x, y: x @ y)
        f(a, b).block_until_ready()
        one = time_call(lambda: f(a, b).block_until_ready())
        number = max(1, int(min_seconds / max(one, 1e-6)))
        rates = []
        for _ in range(repeats):
            def run():
                out = None
                for _ in range(number):
                    out = f(a, b)
                out.block_until_ready()
            rates.append(2.0 * n**3 * number / time_call(run))
        per_size[n] = {"best": max(rates), "median": statistics.median(rates)}
    best = max(v["best"] for v in per_size.values())
    return {"peak_flops": best, "per_size": per_size}


# ----------------------------------------------------------------------------------- tables
def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:  # nan
            return "-"
        if abs(x) >= 1e9:
            return f"{x / 1e9:.{digits}f} G"
        if abs(x) >= 1e4:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in cells])


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal when rich is present, else the markdown table."""
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for i, h in enumerate(headers):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*[fmt(c) if not isinstance(c, str) else c for c in row])
        Console(width=max(120, sum(len(h) for h in headers) * 2)).print(table)
    except ImportError:
        print(f"\n{title}\n{markdown_table(headers, rows)}\n")


def write_results(name: str, payload: dict[str, Any], markdown: str, directory: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """``results/<name>.json`` (everything, machine-readable) and ``results/<name>.md`` (the tables)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def _json_default(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, Timing):
        return x.as_dict()
    return str(x)
