"""Generating offline datasets with o2o's own agents: DSRL-like (safe tasks) and D4RL-like (MuJoCo).

The reference datasets cannot be downloaded here, so o2o makes comparable ones, reproducibly:

* ``dsrl`` recipe (Bullet-Safety-Gym; Liu et al. 2023, DSRL): SAC-Lag behaviour agents are trained while
  their target episode cost moves linearly across a range (agent 0 from ``cost_low`` up to
  ``cost_high``, agent 1 the other way, ...). Every training trajectory seen along the way is kept -
  random warm-up, poor early policies, safe and unsafe ones - and a grid filter in (episode cost,
  episode return) space then caps each cell, evening out the density so the data spans the
  reward-cost frontier.
* ``d4rl`` recipe (MuJoCo; Fu et al. 2020, D4RL): one SAC behaviour run keeps a policy snapshot at every
  evaluation. ``random`` = the untrained policy, ``expert`` = the best-evaluated snapshot,
  ``medium`` = the snapshot whose evaluation return is closest to ``medium_fraction`` of the
  expert's (D4RL: about a third), ``medium-replay`` = the run's replay data up to that snapshot,
  ``medium-expert`` = medium and expert together. Datasets are collected with the stochastic policy.

Behaviour runs are ordinary run directories under ``<data dir>/behaviour/`` (resumable, reused by
later qualities). Output: one HDF5 file in the D4RL/DSRL layout with its metadata, a JSON sidecar
(with the sha256), and a dataset card (markdown + cost-return or return histogram PNG).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from o2o.data.registry import EMBEDDED, data_dir, list_datasets, named_dataset_path, resolve_dataset  # noqa: F401 (re-exported)
from o2o.errors import ConfigError, DatasetError

QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")


@dataclass(frozen=True)
class DSRLRecipe:
    num_agents: int = field(default=2, metadata={"help": "behaviour agents (alternating up / down cost schedules)"})
    iterations: int = field(default=100, metadata={"help": "iterations per behaviour agent"})
    episodes_per_iteration: int = field(default=3, metadata={"help": "training episodes per iteration (all kept)"})
    updates_per_iteration: int = field(default=300, metadata={"help": "SAC-Lag gradient steps per iteration"})
    warmup_episodes: int = field(default=10, metadata={"help": "episodes of uniform random actions first"})
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "behaviour networks"})
    cost_low: float = field(default=5.0, metadata={"help": "low end of the target-cost schedule"})
    cost_high: float | None = field(default=None, metadata={"help": "high end; None = the task's max cost in DSRL"})
    dual_lr: float = field(default=0.01, metadata={"help": "dual ascent step of the behaviour agents' multiplier"})
    cost_bins: int = field(default=20, metadata={"help": "grid filter: bins along episode cost"})
    return_bins: int = field(default=20, metadata={"help": "grid filter: bins along episode return"})
    max_per_bin: int = field(default=6, metadata={"help": "grid filter: trajectories kept per cell at most"})


@dataclass(frozen=True)
class D4RLRecipe:
    iterations: int = field(default=150, metadata={"help": "behaviour SAC iterations (1000 env steps each by default)"})
    steps_per_iteration: int = field(default=1000, metadata={"help": "env steps per behaviour iteration"})
    updates_per_iteration: int = field(default=1000, metadata={"help": "SAC gradient steps per behaviour iteration"})
    warmup_steps: int = field(default=5000, metadata={"help": "uniform random steps before SAC acts"})
    eval_every: int = field(default=5, metadata={"help": "evaluate and snapshot every E iterations"})
    eval_episodes: int = field(default=5, metadata={"help": "episodes per evaluation"})
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "behaviour networks"})
    transitions: int = field(default=100_000, metadata={"help": "transitions per dataset (whole episodes, at least this many)"})
    medium_fraction: float = field(default=1 / 3, metadata={"help": "medium = snapshot closest to this fraction of expert return"})
    num_envs: int = field(default=4, metadata={"help": "env copies used to roll out snapshot policies"})
    min_expert_score: float = field(default=50.0, metadata={"help": "warn (stderr, metadata, card) when the best behaviour snapshot scores below this D4RL-normalised score: its 'expert' is no expert and its 'medium' no medium"})
    medium_iteration: int | None = field(default=None, metadata={"help": "take the snapshot of this iteration as medium instead of the one nearest medium_fraction of the expert's return; for medium / medium-replay the behaviour run then stops there (checkpointed: a later expert resumes it). Reproduces a known run's medium datasets without training to the expert, e.g. Walker2d's iteration 320 of 1000 (docs/datasets.md)"})


@dataclass(frozen=True)
class GenerateConfig:
    task: str = field(default="BallCircle", metadata={"help": "task name"})
    recipe: Literal["dsrl", "d4rl"] = field(default="dsrl", metadata={"help": "dsrl (safe tasks) or d4rl (MuJoCo)"})
    quality: Literal["random", "medium", "medium-replay", "expert", "medium-expert"] | None = field(
        default=None, metadata={"help": "d4rl quality"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the behaviour agents, rollouts and filter"})
    dsrl: DSRLRecipe = field(default_factory=DSRLRecipe, metadata={"help": "dsrl recipe"})
    d4rl: D4RLRecipe = field(default_factory=D4RLRecipe, metadata={"help": "d4rl recipe"})


def default_name(cfg: GenerateConfig) -> str:
    if cfg.recipe == "dsrl":
        return f"{cfg.task}-dsrl" + (f"-s{cfg.seed}" if cfg.seed else "")
    return f"{cfg.task}-{cfg.quality}" + (f"-s{cfg.seed}" if cfg.seed else "")


def code_version() -> str:
    from o2o.version import __version__ as version

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if commit:
            version += f"+g{commit}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def machine_description() -> str:
    """The CPU and the numeric libraries a dataset was generated with, in one line. Generation is
    reproducible on one machine, not across CPUs (docs/datasets.md: the behaviour runs are chaotic, so a
    last-bit difference grows into another run), so a dataset records where it was made."""
    import platform
    from importlib import metadata

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = cpu or platform.processor() or "unknown CPU"
    parts = [f"{cpu} ({platform.machine()}, {os.cpu_count()} cores)", f"Python {platform.python_version()}"]
    for package in ("jax", "jaxlib", "numpy", "pybullet", "mujoco"):
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return "; ".join(parts)


def _config_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def check_generate_config(cfg: GenerateConfig):
    from o2o.envs import get_task

    task = get_task(cfg.task)
    if cfg.recipe == "dsrl" and not task.safe:
        raise ConfigError(f"recipe 'dsrl' needs a safe task (Bullet-Safety-Gym); {task.name} has no costs: use --recipe d4rl")
    if cfg.recipe == "d4rl":
        if cfg.quality is None:
            raise ConfigError(f"recipe 'd4rl' needs --quality, one of: {', '.join(QUALITIES)}")
        if task.safe:
            raise ConfigError(f"recipe 'd4rl' is for MuJoCo tasks; {task.name} is a safe task: use --recipe dsrl")
    for recipe in (cfg.dsrl, cfg.d4rl):
        for f in dataclasses.fields(recipe):
            v = getattr(recipe, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise ConfigError(f"{'dsrl' if recipe is cfg.dsrl else 'd4rl'}.{f.name} must be >= 0, got {v}")
    if cfg.dsrl.num_agents < 1 or cfg.dsrl.iterations < 1 or cfg.d4rl.iterations < 1:
        raise ConfigError("dsrl.num_agents, dsrl.iterations and d4rl.iterations must be >= 1")
    m, r = cfg.d4rl.medium_iteration, cfg.d4rl
    if m is not None and not (0 < m <= r.iterations and m % r.eval_every == 0):
        raise ConfigError(f"d4rl.medium_iteration={m} names no snapshot: snapshots are taken every d4rl.eval_every={r.eval_every} iterations up to d4rl.iterations={r.iterations}")
    return task


# ------------------------------------------------------------------------------------ grid filter


def grid_filter(episode_costs, episode_returns, *, cost_bins: int, return_bins: int, max_per_bin: int, rng) -> np.ndarray:
    """Indices of the trajectories kept by DSRL's density filter: the (cost, return) plane is cut into
    a cost_bins x return_bins grid over the data's range and at most ``max_per_bin`` trajectories are
    kept per cell (a random subset where a cell holds more). Returned sorted."""
    costs = np.asarray(episode_costs, np.float64)
    returns = np.asarray(episode_returns, np.float64)

    def bin_of(x, n):
        lo, hi = x.min(), x.max()
        if hi <= lo:
            return np.zeros(len(x), np.int64)
        return np.minimum(((x - lo) / (hi - lo) * n).astype(np.int64), n - 1)

    cell = bin_of(costs, cost_bins) * return_bins + bin_of(returns, return_bins)
    keep = []
    for c in np.unique(cell):
        members = np.flatnonzero(cell == c)
        if len(members) > max_per_bin:
            members = rng.choice(members, size=max_per_bin, replace=False)
        keep.extend(members.tolist())
    return np.sort(np.asarray(keep, np.int64))


# ------------------------------------------------------------------------------------ helpers


def _buffer_dataset(rundir_path: Path, upto_steps: int | None = None, *, has_costs: bool, source: str):
    """The behaviour run's replay buffer (every training transition, oldest first) as a Dataset."""
    from o2o.data import Dataset
    from o2o.runs import load_checkpoint

    arrays, host = load_checkpoint(rundir_path)
    buf = arrays["buffer"]
    size, ptr = int(buf["size"]), int(buf["ptr"])
    data = buf["data"]
    if ptr not in (0, size):  # the ring wrapped (checkpoints hold the written rows, or every row in older ones)
        raise DatasetError(f"{rundir_path}: behaviour replay buffer wrapped around; raise online.replay_capacity")
    n = size if upto_steps is None else min(size, upto_steps)
    cols = {k: np.asarray(v[:n]) for k, v in data.items()}
    return Dataset(
        observations=cols["observations"],
        actions=cols["actions"],
        rewards=cols["rewards"],
        costs=cols["costs"],
        next_observations=cols["next_observations"],
        terminals=cols["terminals"] > 0.5,
        timeouts=cols["timeouts"] > 0.5,
        has_costs=has_costs,
        source=source,
    )


def _run_behaviour(cfg, out: Path, *, progress: bool, before=None, after=None, description=None, stop_after=None) -> dict:
    """Run (or resume, or reuse when finished) a behaviour training run in ``out``; ``stop_after``:
    only up to that iteration for now (o2o.loops.online.run_online)."""
    from o2o.loops.online import run_online
    from o2o.runs import latest_checkpoint

    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("iterations") == cfg.online.iterations:
            return summary
    resume = out.exists() and latest_checkpoint(out) is not None
    if out.exists() and not resume:
        from o2o.runs.lock import delete_run_dir

        delete_run_dir(out)  # a behaviour run that died before its first checkpoint: start it again
    return run_online(cfg, out, resume=resume, progress=progress, before_iteration=before, after_iteration=after, description=description, stop_after=stop_after)


# ------------------------------------------------------------------------------------ dsrl recipe


def generate_dsrl(cfg: GenerateConfig, *, progress: bool = True):
    """Behaviour agents under moving cost targets -> every trajectory -> grid filter -> Dataset."""
    from o2o.config import to_dict
    from o2o.data import Dataset
    from o2o.presets import resolve_train_config

    task = check_generate_config(cfg)
    r = cfg.dsrl
    high = r.cost_high if r.cost_high is not None else float(task.dsrl_max_cost or 4 * (task.cost_limit or 20))
    # "schedule": 2 names the behaviour runs whose multiplier follows the moving target; the directories of
    # the o2o versions whose multiplier kept the first target (docs/datasets.md) are never reused
    behaviour_root = data_dir() / "behaviour" / f"{task.name}-dsrl-s{cfg.seed}-{_config_hash({**to_dict(cfg), 'schedule': 2})}"
    parts, summaries = [], []
    for i in range(r.num_agents):
        start, end = (r.cost_low, high) if i % 2 == 0 else (high, r.cost_low)
        train_cfg = resolve_train_config(
            "sac-lag",
            task.name,
            cfg.seed * 1000 + i,
            overrides=[
                f"agent.hidden_dims={list(r.hidden_dims)}",
                f"online.iterations={r.iterations}",
                f"online.episodes_per_iteration={r.episodes_per_iteration}",
                f"online.updates_per_iteration={r.updates_per_iteration}",
                f"online.warmup_steps={r.warmup_episodes * task.horizon}",
                f"online.update_after={r.warmup_episodes * task.horizon}",
                f"online.replay_capacity={(r.iterations * r.episodes_per_iteration + r.warmup_episodes + 8) * task.horizon}",
                f"online.eval_every={max(r.iterations // 5, 1)}",
                "online.eval_episodes=2",
                f"online.checkpoint_every={max(r.iterations // 4, 1)}",
                f"online.cost_limit={start}",
                "lagrange.controller=dual-ascent",
                f"lagrange.dual_lr={r.dual_lr}",
            ],
        )

        def move_target(trainer, start=start, end=end):
            # Linear schedule of the target cost over the agent's iterations (from the counters, so a
            # resumed run continues the same schedule).
            frac = trainer.counters["iteration"] / max(trainer.cfg.online.iterations - 1, 1)
            trainer.controller.set_cost_limit(start + (end - start) * frac)

        out = behaviour_root / f"agent{i}"
        summaries.append(
            _run_behaviour(train_cfg, out, progress=progress, before=move_target, description=f"behaviour {i + 1}/{r.num_agents} ({start:g}->{end:g})")
        )
        parts.append(_buffer_dataset(out, has_costs=True, source=str(out)))

    everything = Dataset.concatenate(parts)
    costs, returns = everything.episode_costs(), everything.episode_returns()
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 42]))
    keep = grid_filter(costs, returns, cost_bins=r.cost_bins, return_bins=r.return_bins, max_per_bin=r.max_per_bin, rng=rng)
    dataset = everything.select_episodes(keep)
    extra = {
        "behaviour_runs": [str((behaviour_root / f"agent{i}").relative_to(data_dir())) for i in range(r.num_agents)],
        "behaviour_episodes_seen": int(len(costs)),
        "cost_schedule": [[r.cost_low, high] if i % 2 == 0 else [high, r.cost_low] for i in range(r.num_agents)],
    }
    return dataset, extra


# ------------------------------------------------------------------------------------ d4rl recipe


def _snapshot_dir(run: Path) -> Path:
    return run / "snapshots"


def _save_snapshot(trainer, run: Path, metrics: dict | None) -> None:
    from flax.serialization import msgpack_serialize, to_state_dict

    from o2o.runs.checkpoint import write_text_atomic

    snap = _snapshot_dir(run)
    snap.mkdir(parents=True, exist_ok=True)
    it = trainer.counters["iteration"]
    params = to_state_dict(trainer.state.actor.params)
    tmp = snap / f".iter_{it:06d}.msgpack.tmp"
    tmp.write_bytes(msgpack_serialize(__import__("jax").device_get(params)))
    os.replace(tmp, snap / f"iter_{it:06d}.msgpack")
    info = {"iteration": it, "env_steps": trainer.counters["env_steps"], "eval_return": None if metrics is None else metrics.get("eval/return")}
    write_text_atomic(snap / f"iter_{it:06d}.json", json.dumps(info))


def _snapshots(run: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in _snapshot_dir(run).glob("iter_*.json")), key=lambda d: d["iteration"])


def _snapshot_policy(task, run: Path, iteration: int, hidden_dims, seed: int):
    import jax
    from flax.serialization import from_state_dict, msgpack_restore

    from o2o.agents import sac

    state = sac.init(jax.random.PRNGKey(0), task.obs_dim, task.act_dim, sac.SACConfig(hidden_dims=tuple(hidden_dims)))
    params = from_state_dict(state.actor.params, msgpack_restore((_snapshot_dir(run) / f"iter_{iteration:06d}.msgpack").read_bytes()))
    actor = state.actor.replace(params=params)
    key = jax.random.PRNGKey(seed)
    counter = [0]

    from o2o.loops.online import policy_step  # the key is folded in inside jit, not on the host

    def policy(obs):
        counter[0] += 1
        return np.asarray(policy_step(actor, obs, key, counter[0]))

    return policy


def _rollout_dataset(task, policy, transitions: int, seed: int, num_envs: int, source: str):
    """Whole episodes of the stochastic policy until at least ``transitions`` steps."""
    from o2o.data import Dataset
    from o2o.envs import Collector

    rollouts, steps = [], 0
    with Collector(task, num_envs, seed, stream=3) as collector:
        while steps < transitions:
            r = collector.collect(policy, num_episodes=num_envs)
            rollouts.append(r)
            steps += r.num_steps
    cat = lambda name: np.concatenate([getattr(r, name) for r in rollouts])  # noqa: E731
    return Dataset(
        observations=cat("observations"),
        actions=cat("actions"),
        rewards=cat("rewards"),
        costs=cat("costs"),
        next_observations=cat("next_observations"),
        terminals=cat("terminals"),
        timeouts=cat("timeouts"),
        has_costs=False,
        source=source,
    )


def behaviour_quality_warnings(task, expert: dict, medium: dict, r: D4RLRecipe) -> list[str]:
    """What makes a d4rl-recipe dataset unlike D4RL's: a behaviour run whose best snapshot is far from
    an expert (D4RL-normalised score below ``r.min_expert_score``), so that 'medium' (a third of it) is
    close to random. Empty where the task has no D4RL reference returns."""
    from o2o.envs.scores import normalized_return

    if task.ref_source != "D4RL":
        return []
    score = float(normalized_return(task, expert["eval_return"]))
    if score >= r.min_expert_score:
        return []
    return [
        f"the behaviour run's best snapshot (iteration {expert['iteration']}, {expert['env_steps']} env steps, evaluation return "
        f"{expert['eval_return']:.1f}) scores D4RL {score:.1f} < d4rl.min_expert_score {r.min_expert_score:g}: 'expert' is not an "
        f"expert, and 'medium' (iteration {medium['iteration']}, return {medium['eval_return']:.1f}) is not D4RL's medium; "
        f"a longer behaviour run (--set d4rl.iterations=N, now {r.iterations}) gives D4RL-like qualities"
    ]


def behaviour_checkpoint_every(r: D4RLRecipe) -> int:
    """Iterations between the d4rl behaviour run's checkpoints: a sixth of the run, at most 50 (a long
    run, e.g. Walker2d's 1000 iterations, ~4 h on a core, stopped mid-way loses little when it
    resumes), at least one evaluation period."""
    return max(r.eval_every, min(r.iterations // 6, 50))


def generate_d4rl(cfg: GenerateConfig, *, progress: bool = True):
    from o2o.config import to_dict
    from o2o.data import Dataset
    from o2o.presets import resolve_train_config

    task = check_generate_config(cfg)
    r = cfg.d4rl
    behaviour_cfg = {k: v for k, v in to_dict(r).items() if k not in ("transitions", "medium_fraction", "num_envs", "min_expert_score", "medium_iteration")}
    run = data_dir() / "behaviour" / f"{task.name}-d4rl-s{cfg.seed}-{_config_hash({'task': task.name, **behaviour_cfg})}"
    train_cfg = resolve_train_config(
        "sac",
        task.name,
        cfg.seed,
        overrides=[
            f"agent.hidden_dims={list(r.hidden_dims)}",
            f"online.iterations={r.iterations}",
            "online.episodes_per_iteration=null",
            f"online.steps_per_iteration={r.steps_per_iteration}",
            f"online.updates_per_iteration={r.updates_per_iteration}",
            f"online.warmup_steps={r.warmup_steps}",
            f"online.update_after={r.warmup_steps}",
            f"online.replay_capacity={r.iterations * r.steps_per_iteration + 1000}",
            f"online.eval_every={r.eval_every}",
            f"online.eval_episodes={r.eval_episodes}",
            f"online.checkpoint_every={behaviour_checkpoint_every(r)}",
        ],
    )

    def snapshot_untrained(trainer):
        if trainer.counters["iteration"] == 0:
            _save_snapshot(trainer, run, None)

    def snapshot_evaluated(trainer, metrics):
        if "eval/return" in metrics:
            _save_snapshot(trainer, run, metrics)

    q = cfg.quality
    partial = r.medium_iteration is not None and q in ("medium", "medium-replay")  # no expert needed
    _run_behaviour(
        train_cfg, run, progress=progress, before=snapshot_untrained, after=snapshot_evaluated,
        description=f"behaviour SAC {task.name}", stop_after=r.medium_iteration if partial else None,
    )
    snaps = [s for s in _snapshots(run) if s["eval_return"] is not None]
    if not snaps:
        raise DatasetError(f"{run}: the behaviour run has no evaluated snapshots")
    extra: dict = {"behaviour_run": str(run.relative_to(data_dir()))}
    if r.medium_iteration is not None:
        medium = next((s for s in snaps if s["iteration"] == r.medium_iteration), None)
        if medium is None:
            raise DatasetError(f"{run}: the behaviour run has no snapshot at d4rl.medium_iteration={r.medium_iteration}")
    if partial:  # the run stopped at the medium snapshot: its expert is unknown, say so instead of guessing
        expert = None
        extra["behaviour_stopped_at"] = r.medium_iteration
    else:
        expert = max(snaps, key=lambda s: s["eval_return"])
        if r.medium_iteration is None:
            target = r.medium_fraction * expert["eval_return"]
            before_expert = [s for s in snaps if s["iteration"] <= expert["iteration"]]
            medium = min(before_expert, key=lambda s: abs(s["eval_return"] - target))
        warnings = behaviour_quality_warnings(task, expert, medium, r)
        if warnings:
            extra["warnings"] = warnings
    extra.update(expert_snapshot=expert, medium_snapshot=medium)

    def rollouts(snapshot_iteration: int, stream_seed: int, label: str):
        policy = _snapshot_policy(task, run, snapshot_iteration, r.hidden_dims, stream_seed)
        return _rollout_dataset(task, policy, r.transitions, stream_seed, r.num_envs, f"{label} rollouts of {run}")

    if q == "random":
        dataset = rollouts(0, cfg.seed * 10 + 1, "random")
    elif q == "medium":
        dataset = rollouts(medium["iteration"], cfg.seed * 10 + 2, "medium")
    elif q == "expert":
        dataset = rollouts(expert["iteration"], cfg.seed * 10 + 3, "expert")
    elif q == "medium-expert":
        dataset = Dataset.concatenate(
            [rollouts(medium["iteration"], cfg.seed * 10 + 2, "medium"), rollouts(expert["iteration"], cfg.seed * 10 + 3, "expert")]
        )
    else:  # medium-replay: the behaviour run's own replay data until the medium snapshot
        dataset = _buffer_dataset(run, upto_steps=medium["env_steps"], has_costs=False, source=str(run))
        if dataset.has_unfinished_tail:
            dataset = dataset.replace(timeouts=np.concatenate([dataset.timeouts[:-1], [True]]))
    return dataset, extra


# ------------------------------------------------------------------------------------ entry point


def generate(cfg: GenerateConfig, out: Path | None = None, *, progress: bool = True) -> tuple[Path, dict]:
    """Generate a dataset, write ``<name>.hdf5`` (+ ``.json`` sidecar, ``.md`` card, ``.png`` scatter)
    atomically, and return its path and metadata."""
    from o2o.config import to_dict
    from o2o.data import save_hdf5
    from o2o.envs import get_task

    task = check_generate_config(cfg)
    out = Path(out) if out is not None else data_dir() / f"{default_name(cfg)}.hdf5"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    dataset, extra = generate_dsrl(cfg, progress=progress) if cfg.recipe == "dsrl" else generate_d4rl(cfg, progress=progress)
    returns = dataset.episode_returns()
    metadata = {
        "name": out.stem,
        "task": task.name,
        "env_id": task.env_id,
        "recipe": cfg.recipe,
        "quality": cfg.quality,
        "seed": cfg.seed,
        "generator_config": to_dict(cfg),
        "code_version": code_version(),
        "machine": machine_description(),
        "num_transitions": int(dataset.num_transitions),
        "num_episodes": int(dataset.num_episodes),
        "min_episode_return": float(returns.min()),
        "max_episode_return": float(returns.max()),
        # Like DSRL, a generated dataset carries its own reference returns (min / max in the data).
        "ref_min_return": float(returns.min()),
        "ref_max_return": float(returns.max()),
        **extra,
    }
    if dataset.has_costs:
        costs = dataset.episode_costs()
        metadata.update(min_episode_cost=float(costs.min()), max_episode_cost=float(costs.max()))
    # Generation time is recorded in the sidecar only: the HDF5 bytes must not depend on it.
    sha = save_hdf5(dataset, out, metadata=metadata)
    from o2o.data import sha256_data

    sidecar = {**metadata, "sha256": sha, "data_sha256": sha256_data(dataset), "file": out.name, "generation_seconds": round(time.time() - t0, 1)}
    (out.with_suffix(".json")).write_text(json.dumps(sidecar, indent=2, default=str))
    write_card(dataset, out, sidecar, get_task(task.name))
    return out, sidecar


# ------------------------------------------------------------------------------------ dataset card


def scatter_png(dataset, path: Path, title: str, cost_limit: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    returns = dataset.episode_returns()
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    if dataset.has_costs:
        costs = dataset.episode_costs()
        safe = costs <= (cost_limit if cost_limit is not None else np.inf)
        ax.scatter(costs[safe], returns[safe], s=10, alpha=0.7, color="tab:blue", label=f"cost <= {cost_limit:g}" if cost_limit is not None else "episodes")
        ax.scatter(costs[~safe], returns[~safe], s=10, alpha=0.7, color="tab:red", label=f"cost > {cost_limit:g}" if cost_limit is not None else None)
        if cost_limit is not None:
            ax.axvline(cost_limit, color="k", ls="--", lw=1)
        ax.set_xlabel("episode cost")
        ax.set_ylabel("episode return")
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.hist(returns, bins=30, color="tab:blue", alpha=0.8)
        ax.set_xlabel("episode return")
        ax.set_ylabel("episodes")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_card(dataset, path: Path, meta: dict, task) -> None:
    """A short markdown page beside the dataset, and its scatter (cost vs return) or return histogram."""
    png = path.with_suffix(".png")
    limit = task.cost_limit if task.safe else None
    scatter_png(dataset, png, f"{meta['name']}: {meta['num_episodes']} episodes", limit)
    returns, lengths = dataset.episode_returns(), dataset.episode_lengths()
    lines = [
        f"# {meta['name']}",
        "",
        f"Task {meta['task']} ({meta['env_id']}), recipe `{meta['recipe']}`" + (f", quality `{meta['quality']}`" if meta.get("quality") else "") + f", seed {meta['seed']}.",
        f"Generated by o2o {meta['code_version']} in {meta.get('generation_seconds', '?')} s"
        + (f" on {meta['machine']}." if meta.get("machine") else "."),
        "",
        "| | |",
        "|---|---|",
        f"| transitions | {meta['num_transitions']} |",
        f"| episodes | {meta['num_episodes']} (length {lengths.min()}..{lengths.max()}) |",
        f"| episode return | min {returns.min():.1f}, median {np.median(returns):.1f}, max {returns.max():.1f} |",
    ]
    if dataset.has_costs:
        costs = dataset.episode_costs()
        lines += [
            f"| episode cost | min {costs.min():.0f}, median {np.median(costs):.0f}, max {costs.max():.0f} |",
            f"| episodes with cost <= {limit:g} | {np.mean(costs <= limit):.1%} |",
        ]
    lines += [f"| sha256 (file) | `{meta['sha256']}` |"]
    if meta.get("data_sha256"):
        lines += [f"| sha256 (transitions only; `o2o data inspect` prints it) | `{meta['data_sha256']}` |"]
    lines += [""]
    if meta.get("warnings"):
        lines += ["**Warnings**", ""] + [f"- {w}" for w in meta["warnings"]] + [""]
    lines += [f"![scatter]({png.name})", ""]
    path.with_suffix(".md").write_text("\n".join(lines))
