"""The offline (pre-training) loop: a fixed dataset on the device, K updates per jitted call,
periodic evaluation on the live task, metrics, checkpoints, exact resume.

    dataset (name or path) -> validated against the task -> [BC-Safe: keep episodes with cost <= kappa]
        -> [optional observation normalisation: mean / std of the data, stored with the policy]
        -> device replay buffer -> repeat: update_many(K steps) -> log -> evaluate every E steps

The checkpoint holds the whole agent state (actor, critics, cost critics, VAE, multipliers, targets,
optimisers), the RNG key, counters and the observation statistics: everything the bridge and the
online stages need.

Seeds as a batch axis (``SeedBatchTrainer``, ``run_pretrain_seeds``): S seeds of one config share the
dataset and its device buffer (``OfflineData``), so they can train as ONE jitted program,
``jit(vmap(update_many))`` over agent states stacked on a leading seed axis. Seed k is initialised
and keyed exactly as ``OfflineTrainer`` does for seed k, so its numbers are the single-seed run's up
to float reassociation, and it is written to an ordinary run directory of its own.

Deferred evaluation (``live_eval=False``; ``o2o pretrain --defer-eval``, ``o2o sweep --defer-eval``):
train without the simulator (a GPU node without pybullet or MuJoCo), keep EVERY checkpoint (one per
``offline.checkpoint_every``), and evaluate them afterwards on a machine that has it with
``o2o eval RUN_DIR --record`` (``record_evaluations``): each checkpoint's deterministic evaluation is
written into metrics.csv at its step and the last one into summary.json, exactly the rows and keys a
live run has at those steps, so reports and plots read both kinds of run alike. Whether evaluation is
live or deferred is not part of the config (the updates are the same either way), so a sweep's config
hashes do not change with it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents import get_offline_agent
from o2o.agents.common import make_update_many
from o2o.data.replay import replay_from_dataset, replay_sample
from o2o.errors import ConfigError, RunDirError
from o2o.loops.divergence import check_losses


DEFER_EVAL_ENV = "O2O_DEFER_EVAL"


def live_eval_default() -> bool:
    """False when the environment variable O2O_DEFER_EVAL is set to 1 / true / yes (how ``o2o sweep
    --defer-eval`` reaches its workers)."""
    return os.environ.get(DEFER_EVAL_ENV, "").strip().lower() not in ("1", "true", "yes")


def check_offline_config(o) -> None:
    """The loop's value checks (also made by a sweep before it launches anything)."""
    for name in ("steps", "steps_per_call", "eval_every", "eval_episodes", "checkpoint_every"):
        if getattr(o, name) <= 0:
            raise ConfigError(f"offline.{name} must be > 0, got {getattr(o, name)}")


@lru_cache(maxsize=None)
def _update_many(update_fn, batch_size: int):
    return make_update_many(update_fn, partial(_sample, batch_size=batch_size))


@lru_cache(maxsize=None)
def _seed_batch_update_many(update_fn, batch_size: int, num_steps: int):
    """``update_many`` over a leading seed axis: per-seed states and keys, one shared buffer and signals."""
    one = partial(_update_many(update_fn, batch_size), num_steps=num_steps)
    return jax.jit(jax.vmap(one, in_axes=(0, None, 0, None)), donate_argnums=(0,))


def _sample(buffer, key, batch_size):
    return replay_sample(buffer, key, batch_size)


def _with(cfg_obj, **changes):
    names = {f.name for f in dataclasses.fields(cfg_obj)}
    return dataclasses.replace(cfg_obj, **{k: v for k, v in changes.items() if k in names})


def stack_trees(trees: list) -> Any:
    """Pytrees of one structure stacked leaf by leaf on a new leading axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def unstack_tree(tree: Any, i: int) -> Any:
    """Entry ``i`` of the leading axis of every leaf."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def offline_policy(algo: str, actor, obs_mean, obs_std) -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic policy of an offline agent's actor, on raw (unnormalised) observations."""
    act = get_offline_agent(algo).module.actor_actions
    key = jax.random.PRNGKey(0)
    return lambda obs: np.asarray(act(actor, (obs - obs_mean) / obs_std, key, True))


def resolve_offline_config(cfg, dataset):
    """``cfg`` as a pre-training run on ``dataset`` records it (its config.yaml) and the task: the task
    and cost limit filled in from the dataset and task, the safe agent's limit and horizon, the data's
    per-step ranges for bounded targets, observation normalisation decided. The dataset is checked
    against the task first."""
    from o2o.data import check_task, recorded_task
    from o2o.envs import get_task

    spec = get_offline_agent(cfg.algo)
    task_name = cfg.task or recorded_task(dataset.metadata)
    if not task_name:
        raise ConfigError(f"dataset '{cfg.dataset}' does not say which task it is for; pass --task")
    task = get_task(task_name)
    check_task(dataset, task, require_costs=spec.safe, allow_other_task=cfg.allow_other_task,
               override="--set allow_other_task=true", source=dataset.metadata.get("loaded_from") or cfg.dataset)
    cost_limit = cfg.cost_limit if cfg.cost_limit is not None else task.cost_limit
    if spec.safe and (cost_limit is None or cost_limit <= 0):
        raise ConfigError(f"{cfg.algo} needs a positive cost limit, got {cost_limit}; pass --set cost_limit=20")
    agent_cfg = cfg.agent
    if spec.safe:
        agent_cfg = _with(agent_cfg, cost_limit=float(cost_limit), horizon=int(task.horizon))
    if getattr(agent_cfg, "clip_targets", False):  # per-step ranges of the data, for bounded critic targets
        if getattr(agent_cfg, "reward_range", "absent") is None:
            agent_cfg = _with(agent_cfg, reward_range=(float(dataset.rewards.min()), float(dataset.rewards.max())))
        if getattr(agent_cfg, "cost_range", "absent") is None and dataset.has_costs:
            agent_cfg = _with(agent_cfg, cost_range=(float(dataset.costs.min()), float(dataset.costs.max())))
    if getattr(agent_cfg, "actor_cosine_decay_steps", 0) is None:  # IQL: the decay spans the run (CORL)
        agent_cfg = _with(agent_cfg, actor_cosine_decay_steps=int(cfg.offline.steps))
    normalize = cfg.offline.normalize_observations
    if normalize is None:
        normalize = not spec.safe
    cfg = dataclasses.replace(cfg, offline=dataclasses.replace(cfg.offline, normalize_observations=bool(normalize)))
    return dataclasses.replace(cfg, task=task.name, cost_limit=cost_limit, agent=agent_cfg), task


class OfflineData:
    """What every seed of one pre-training config shares: the config resolved against the task (cost
    limit, horizon), the validated dataset (BC-Safe: filtered), its observation statistics, the
    device replay buffer and the compiled update; and the per-seed pieces built the same way for
    every trainer (agent initialisation, evaluation, checkpoint contents)."""

    def __init__(self, cfg, *, dataset=None):
        from o2o.data import load_hdf5, sha256_data
        from o2o.data.registry import resolve_dataset

        self.spec = get_offline_agent(cfg.algo)
        check_offline_config(cfg.offline)
        if dataset is None:
            dataset = load_hdf5(resolve_dataset(cfg.dataset))  # what is wrong with the file is named first
        self.cfg, self.task = resolve_offline_config(cfg, dataset)
        cfg, self.agent_cfg, self.cost_limit = self.cfg, self.cfg.agent, self.cfg.cost_limit
        # which transitions the run trained on: a dataset name can stand for different files (a dataset
        # regenerated on another machine or by another code version), the checksum cannot (summary.json)
        self.dataset_sha256 = sha256_data(dataset)
        if self.spec.filter_safe_episodes:
            from o2o.agents.bc import filter_safe_trajectories

            dataset = filter_safe_trajectories(dataset, self.cost_limit)
        self.dataset = dataset
        if cfg.offline.normalize_observations:
            self.obs_mean = dataset.observations.mean(0).astype(np.float32)
            self.obs_std = (dataset.observations.std(0) + 1e-3).astype(np.float32)
        else:
            self.obs_mean = np.zeros(dataset.obs_dim, np.float32)
            self.obs_std = np.ones(dataset.obs_dim, np.float32)
        normed = dataset.replace(
            observations=(dataset.observations - self.obs_mean) / self.obs_std,
            next_observations=(dataset.next_observations - self.obs_mean) / self.obs_std,
        )
        self.buffer = replay_from_dataset(normed)
        self.update_many = _update_many(self.spec.module.update, self.agent_cfg.batch_size)
        self.live_eval = True  # False: no evaluation on the live task during training (deferred)

    def config_for(self, seed: int):
        """The resolved config of seed ``seed`` (what its run directory's config.yaml holds)."""
        return dataclasses.replace(self.cfg, seed=int(seed))

    def init_agent(self, seed: int) -> tuple[Any, jax.Array]:
        """Seed ``seed``'s initial agent state and the key its updates are drawn from."""
        init_key, key = jax.random.split(jax.random.PRNGKey(seed))
        return self.spec.module.init(init_key, self.task.obs_dim, self.task.act_dim, self.agent_cfg), key

    def policy(self, actor) -> Callable[[np.ndarray], np.ndarray]:
        return offline_policy(self.cfg.algo, actor, self.obs_mean, self.obs_std)

    def evaluate(self, actor, seed: int, num_episodes: int | None = None) -> dict[str, float]:
        """Deterministic evaluation on fixed evaluation seeds (the same episodes every time)."""
        from o2o.loops.evaluation import evaluation_metrics

        n = num_episodes or self.cfg.offline.eval_episodes
        return evaluation_metrics(self.task, self.policy(actor), n, seed, self.cost_limit)

    def call_steps(self, done: int) -> int:
        """Gradient steps of the next jitted call after ``done``: ``steps_per_call``, or what is left of
        ``steps`` when that is less (a budget that is not a multiple of it runs exactly)."""
        o = self.cfg.offline
        return min(o.steps_per_call, o.steps - done)

    def metrics_row(self, metrics: dict, elapsed: float, steps: int, evaluate: Callable[[], dict], num_steps: int) -> dict[str, float]:
        """One metrics.csv row: the losses (means over the call of ``num_steps`` updates), the update
        rate, and at the evaluation steps the evaluation."""
        o = self.cfg.offline
        out = {f"loss/{k}": float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        check_losses(out)  # before the evaluation: a diverged policy is not run on the task
        out["perf/updates_per_s"] = num_steps / max(elapsed, 1e-9)
        if self.live_eval and (steps % o.eval_every == 0 or steps == o.steps):
            out.update(evaluate())
        return out

    def checkpoint_arrays(self, state, key) -> dict:
        from flax.serialization import to_state_dict

        return {"agent": to_state_dict(state), "key": key, "obs_mean": self.obs_mean, "obs_std": self.obs_std}

    def host_state(self, counters: dict) -> dict:
        return {
            "counters": dict(counters),
            "algo": self.cfg.algo,
            "task": self.task.name,
            "obs_dim": self.task.obs_dim,
            "act_dim": self.task.act_dim,
            "cost_limit": self.cost_limit,
            "dataset": self.cfg.dataset,
            "dataset_transitions": int(self.dataset.num_transitions),
        }

    def restored(self, state, arrays: dict) -> tuple[Any, jax.Array]:
        """``(state, key)`` from a checkpoint's arrays; the checkpoint's observation statistics are
        taken over (they are what the stored policy was trained with)."""
        from flax.serialization import from_state_dict

        self.obs_mean = np.asarray(arrays["obs_mean"], np.float32)
        self.obs_std = np.asarray(arrays["obs_std"], np.float32)
        return from_state_dict(state, arrays["agent"]), jnp.asarray(arrays["key"], jnp.uint32)


class OfflineTrainer:
    """One seed: its agent state and key over the shared ``OfflineData``."""

    def __init__(self, cfg, *, dataset=None, data: OfflineData | None = None):
        self.data = data if data is not None else OfflineData(cfg, dataset=dataset)
        d = self.data
        self.spec, self.task, self.cost_limit, self.dataset, self.buffer = d.spec, d.task, d.cost_limit, d.dataset, d.buffer
        self.cfg = d.config_for(cfg.seed)
        self.update_many = d.update_many
        self.state, self.key = d.init_agent(cfg.seed)
        self.counters = {"steps": 0}

    @property
    def obs_mean(self) -> np.ndarray:
        return self.data.obs_mean

    @property
    def obs_std(self) -> np.ndarray:
        return self.data.obs_std

    @property
    def seeds(self) -> list[int]:
        return [self.cfg.seed]

    def policy(self) -> Callable[[np.ndarray], np.ndarray]:
        return self.data.policy(self.state.actor)

    def evaluate(self, num_episodes: int | None = None) -> dict[str, float]:
        """Deterministic evaluation on fixed evaluation seeds (the same episodes every time)."""
        return self.data.evaluate(self.state.actor, self.cfg.seed, num_episodes)

    def step(self) -> dict[str, float]:
        n = self.data.call_steps(self.counters["steps"])
        self.key, update_key = jax.random.split(self.key)
        t0 = time.perf_counter()
        self.state, metrics = self.update_many(self.state, self.buffer, update_key, {}, num_steps=n)
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - t0
        self.counters["steps"] += n
        return self.data.metrics_row(metrics, elapsed, self.counters["steps"], self.evaluate, n)

    def checkpoint_arrays(self) -> dict:
        return self.data.checkpoint_arrays(self.state, self.key)

    def host_state(self) -> dict:
        return self.data.host_state(self.counters)

    def restore(self, arrays: dict, host: dict) -> None:
        self.state, self.key = self.data.restored(self.state, arrays)
        self.counters = dict(host["counters"])

    # the seed-group surface the shared run loop drives (one seed here)
    def step_seeds(self) -> list[dict[str, float]]:
        return [self.step()]

    def evaluate_seed(self, i: int) -> dict[str, float]:
        return self.evaluate()

    def seed_checkpoint(self, i: int) -> tuple[dict, dict]:
        return self.checkpoint_arrays(), self.host_state()

    def restore_seeds(self, loaded: list[tuple[dict, dict]]) -> None:
        self.restore(*loaded[0])


class SeedBatchTrainer:
    """S seeds of one config as one vectorised program: agent states and keys stacked on a leading seed
    axis (each seed initialised as ``OfflineTrainer`` initialises it), one shared buffer, and
    ``jit(vmap(update_many, in_axes=(0, None, 0, None)))`` for the K updates of every seed at once.
    Seed k's key is split exactly as the single-seed trainer splits its own, so its minibatches and
    updates are those of the single-seed run (its numbers equal up to float reassociation)."""

    def __init__(self, cfg, seeds, *, dataset=None, data: OfflineData | None = None):
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ConfigError("a seed group needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds {seeds} list a seed twice")
        self.data = data if data is not None else OfflineData(cfg, dataset=dataset)
        d = self.data
        self.spec, self.task, self.cost_limit, self.dataset, self.buffer = d.spec, d.task, d.cost_limit, d.dataset, d.buffer
        self.seeds = seeds
        self.cfg = d.config_for(seeds[0])
        self.update_many = partial(_seed_batch_update_many, self.spec.module.update, d.agent_cfg.batch_size)  # (num_steps)
        inits = [d.init_agent(s) for s in seeds]
        self.state = stack_trees([st for st, _ in inits])
        self.keys = jnp.stack([k for _, k in inits])
        self.counters = {"steps": 0}

    def configs(self) -> list:
        return [self.data.config_for(s) for s in self.seeds]

    def seed_state(self, i: int):
        return unstack_tree(self.state, i)

    def evaluate_seed(self, i: int, num_episodes: int | None = None) -> dict[str, float]:
        return self.data.evaluate(unstack_tree(self.state.actor, i), self.seeds[i], num_episodes)

    def step_seeds(self) -> list[dict[str, float]]:
        """K updates of every seed in one call; one metrics row per seed. ``perf/updates_per_s`` is
        each seed's rate (K over the call's wall time); the program's total is S times that."""
        n = self.data.call_steps(self.counters["steps"])
        split = jax.vmap(jax.random.split)(self.keys)  # (S, 2, 2): per seed, exactly split(key)
        self.keys, update_keys = split[:, 0], split[:, 1]
        t0 = time.perf_counter()
        self.state, metrics = self.update_many(n)(self.state, self.buffer, update_keys, {})
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - t0
        self.counters["steps"] += n
        for i, seed in enumerate(self.seeds):  # every seed before any evaluation
            check_losses({f"loss/{k}": v[i] for k, v in metrics.items() if np.ndim(v) >= 1}, f"seed {seed}: ")
        rows = []
        for i in range(len(self.seeds)):
            per_seed = {k: v[i] for k, v in metrics.items() if np.ndim(v) >= 1}
            rows.append(self.data.metrics_row(per_seed, elapsed, self.counters["steps"], partial(self.evaluate_seed, i), n))
        return rows

    def seed_checkpoint(self, i: int) -> tuple[dict, dict]:
        return self.data.checkpoint_arrays(self.seed_state(i), self.keys[i]), self.data.host_state(self.counters)

    def restore_seeds(self, loaded: list[tuple[dict, dict]]) -> None:
        steps = {int(host["counters"]["steps"]) for _, host in loaded}
        if len(steps) != 1:
            raise RunDirError(f"cannot resume seeds {self.seeds} as one group: their checkpoints are at different steps {sorted(steps)}")
        stats = {(np.asarray(a["obs_mean"]).tobytes(), np.asarray(a["obs_std"]).tobytes()) for a, _ in loaded}
        if len(stats) != 1:  # one buffer serves every seed: they must have been trained on the same statistics
            raise RunDirError(f"cannot resume seeds {self.seeds} as one group: their checkpoints hold different observation statistics")
        states, keys = [], []
        for i, (arrays, _host) in enumerate(loaded):
            state, key = self.data.restored(self.seed_state(i), arrays)
            states.append(state)
            keys.append(key)
        self.state, self.keys = stack_trees(states), jnp.stack(keys)
        self.counters = dict(loaded[0][1]["counters"])


def run_pretrain(cfg, out_dir, *, resume: bool = False, progress: bool = True, dataset=None, live_eval: bool | None = None) -> dict:
    """Pre-train one seed into the run directory ``out_dir``; returns its summary. ``live_eval=False``
    defers evaluation (module docstring); None: ``live_eval_default()``."""
    from o2o.runs.rundir import hold_runs

    with hold_runs([out_dir] if resume else []):  # a run in use is refused before the dataset loads
        trainer = OfflineTrainer(cfg, dataset=dataset)
        return _run_seeds(trainer, [trainer.cfg], [Path(out_dir)], resume=resume, progress=progress, live_eval=live_eval)[0]


def run_pretrain_seeds(
    cfg, seeds, out_dirs, *, resume: bool = False, progress: bool = True, dataset=None, live_eval: bool | None = None
) -> list[dict]:
    """Pre-train the seeds ``seeds`` of ``cfg`` (its own seed is ignored) as one vectorised program,
    seed ``seeds[k]`` into the ordinary run directory ``out_dirs[k]`` (exactly what ``run_pretrain``
    writes for that seed). With ``resume`` every directory continues from its checkpoint; they must
    all be at the same step. One seed runs as ``run_pretrain`` does. Returns the summaries."""
    seeds, out_dirs = [int(s) for s in seeds], [Path(p) for p in out_dirs]
    if len(seeds) != len(out_dirs):
        raise ConfigError(f"{len(seeds)} seeds but {len(out_dirs)} run directories")
    if len(seeds) == 1:
        return [run_pretrain(dataclasses.replace(cfg, seed=seeds[0]), out_dirs[0], resume=resume, progress=progress,
                             dataset=dataset, live_eval=live_eval)]
    from o2o.runs.rundir import hold_runs

    with hold_runs(out_dirs if resume else []):  # a run in use is refused before the dataset loads
        trainer = SeedBatchTrainer(cfg, seeds, dataset=dataset)
        return _run_seeds(trainer, trainer.configs(), out_dirs, resume=resume, progress=progress, live_eval=live_eval)


def _open_run_dirs(cfgs, out_dirs: list[Path], resume: bool) -> list:
    """The run directories of a group, all or none: a new group that cannot create one of them removes
    those it created; a resumed group is refused unless every directory's checkpoint is at one step."""
    from o2o.config import to_dict
    from o2o.loops.online import upgrade_saved_config
    from o2o.runs import RunDir
    from o2o.runs.rundir import PRETRAIN

    rundirs, created = [], []
    try:
        for c, out in zip(cfgs, out_dirs):
            if resume:
                upgrade_saved_config(out, c)
            elif not out.exists() or (out.is_dir() and not any(out.iterdir())):
                created.append((out, out.exists()))
            rundirs.append(RunDir.create(out, to_dict(c), kind=PRETRAIN, resume=resume))
    except BaseException:
        for rd in rundirs:
            rd.close()
        for out, existed in created:  # leave them as they were: absent or empty
            shutil.rmtree(out, ignore_errors=True)
            if existed:
                out.mkdir(parents=True, exist_ok=True)
        raise
    steps = {rd.resume_step for rd in rundirs}
    if resume and len(steps) > 1:
        for rd in rundirs:
            rd.close()
        at = ", ".join(f"{rd.path.name} at {rd.resume_step}" for rd in rundirs)
        raise RunDirError(
            f"cannot resume these runs as one group: their checkpoints are at different steps ({at}); "
            f"resume each on its own with `o2o pretrain --resume DIR`"
        )
    return rundirs


def _run_seeds(trainer, cfgs, out_dirs: list[Path], *, resume: bool, progress: bool, live_eval: bool | None = None) -> list[dict]:
    """The loop every pre-training run goes through, one seed (``OfflineTrainer``) or a group
    (``SeedBatchTrainer``): one run directory, metrics writer and checkpoint per seed."""
    from o2o.runs import CheckpointTimer

    live_eval = live_eval_default() if live_eval is None else bool(live_eval)
    trainer.data.live_eval = live_eval
    o = trainer.cfg.offline
    # Deferred evaluation keeps every checkpoint: each becomes one evaluation row later, so it has only
    # the step-based ones (no time-based checkpoints, o2o.runs.clock).
    keep = 2 if live_eval else -(-o.steps // o.checkpoint_every) + 1
    timer = CheckpointTimer() if live_eval else CheckpointTimer(None)

    rundirs = _open_run_dirs(cfgs, out_dirs, resume)  # each holds its run's lock until the summaries are written
    try:
        return _train_seeds(trainer, rundirs, resume=resume, progress=progress, live_eval=live_eval, keep=keep, timer=timer)
    finally:
        for rd in rundirs:
            rd.close()


class OfflineStage:
    """An offline trainer (``OfflineTrainer``, or ``SeedBatchTrainer``: one row and run per seed) as a
    driver stage (``o2o.loops.driver``): one call is ``offline.steps_per_call`` gradient steps."""

    def __init__(self, trainer):
        self.trainer = trainer

    @property
    def position(self) -> int:
        return self.trainer.counters["steps"]

    def next_position(self) -> int:
        return self.position + self.trainer.data.call_steps(self.position)

    def where(self, position: int) -> str:
        return f"step {position}"

    def step(self) -> list[dict[str, float]]:
        return self.trainer.step_seeds()

    def status(self, rows) -> str:
        status = f"{rows[0]['perf/updates_per_s']:.0f} upd/s" + (" per seed" if len(rows) > 1 else "")
        if "eval/return" in rows[0]:
            status += " | eval R " + "/".join(f"{m['eval/return']:.1f}" for m in rows)
            if "eval/cost" in rows[0]:
                status += " C " + "/".join(f"{m['eval/cost']:.1f}" for m in rows)
        return status

    def checkpoint(self, i: int) -> tuple[dict, dict]:
        return self.trainer.seed_checkpoint(i)


def _train_seeds(trainer, rundirs, *, resume: bool, progress: bool, live_eval: bool, keep: int, timer) -> list[dict]:
    """``_run_seeds``'s stage in the open run directories ``rundirs``, through the driver."""
    from o2o.loops.driver import RunCheckpoints, drive
    from o2o.loops.driver import resume as resume_stage
    from o2o.runs import MetricsWriter, RunClock
    from o2o.runs.rundir import run_finished

    o = trainer.cfg.offline
    stage = OfflineStage(trainer)
    where = rundirs[0].path if len(rundirs) == 1 else rundirs[0].path.parent  # the run, or the group's folder
    hosts = [None] * len(rundirs)
    if resume:
        hosts = resume_stage(trainer.restore_seeds, [trainer.seed_checkpoint(i) for i in range(len(rundirs))], rundirs)
        if stage.position >= o.steps and all(rd.summary_path.is_file() for rd in rundirs):
            raise run_finished(where, group=len(rundirs) > 1)
    writers = [MetricsWriter(rd) for rd in rundirs]
    clocks = [RunClock(host, resumed_from=stage.position) for host in hosts]  # wall time across resumes
    seeds = trainer.seeds
    last_eval: list[dict[str, float]] = [{} for _ in seeds]
    what = f"{trainer.cfg.algo} on {trainer.cfg.dataset}" + (f" (seeds {','.join(map(str, seeds))} as one program)" if len(seeds) > 1 else "")

    def kept(last):  # a deferred run keeps to its step-based checkpoints: a stop saves nothing
        return (f"a deferred-evaluation run keeps only its step-based checkpoints (every offline.checkpoint_every = "
                f"{o.checkpoint_every} steps): " + (f"{last.name} in {where}" if last else f"none yet in {where}"))

    def remember_eval(rows):
        for i, metrics in enumerate(rows):
            last_eval[i] = {k: v for k, v in metrics.items() if k.startswith("eval/")} or last_eval[i]

    ckpts = RunCheckpoints(rundirs, clocks, every=o.checkpoint_every, end=o.steps, total=o.steps, keep=keep, timer=timer,
                           on_signal=live_eval, labels=[f"seed {s}" for s in seeds], kept=None if live_eval else kept)
    drive(stage, writers, ckpts, end=o.steps, description=what, progress=progress, after=remember_eval)
    for writer in writers:
        writer.close()
    summaries = []
    for i, (seed, rundir) in enumerate(zip(seeds, rundirs)):
        summary = {
            "algo": trainer.cfg.algo,
            "task": trainer.task.name,
            "dataset": trainer.cfg.dataset,
            "dataset_sha256": trainer.data.dataset_sha256,  # the transitions' checksum (o2o data inspect)
            "seed": seed,
            "cost_limit": trainer.cost_limit,
            "steps": trainer.counters["steps"],
            **clocks[i].summary(),
        }
        if live_eval:
            summary.update({f"final_{k.replace('/', '_')}": v for k, v in (last_eval[i] or trainer.evaluate_seed(i)).items()})
        else:
            summary["evaluation"] = "deferred"  # o2o eval RUN_DIR --record adds the final_eval_* keys
        if len(seeds) > 1:
            summary["seed_group"] = list(seeds)  # trained together as one program; wall_time_s is the group's
        rundir.write_summary(summary)
        summaries.append(summary)
    return summaries


def evaluate_checkpoint(run_dir, num_episodes: int | None = None, checkpoint=None) -> tuple[int, int, dict]:
    """Deterministic evaluation of a pre-training run's latest checkpoint (or of ``checkpoint``) on its
    task, on the run's evaluation seeds: (step, episodes, metrics). ``num_episodes`` None = the run's
    ``offline.eval_episodes``. Policy-only (stripped) checkpoints are fine here."""
    from o2o.bridge.pretrained import load_pretrained
    from o2o.envs import get_task
    from o2o.loops.evaluation import evaluation_metrics

    pre = load_pretrained(run_dir, checkpoint=checkpoint, policy_only_ok=True)
    n = num_episodes or pre.config.offline.eval_episodes
    policy = offline_policy(pre.algo, pre.state.actor, pre.obs_mean, pre.obs_std)
    return pre.step, n, evaluation_metrics(get_task(pre.task), policy, n, pre.config.seed, pre.cost_limit)


def record_evaluations(run_dir, num_episodes: int | None = None, *, echo=None) -> list[dict]:
    """``o2o eval RUN_DIR --record`` of a pre-training run: evaluate each checkpoint whose step has no
    evaluation row yet in metrics.csv (a run trained with deferred evaluation, or one that ran out
    of evaluations), write the ``eval/*`` values into metrics.csv at the checkpoint's step, and
    the final checkpoint's into summary.json as ``final_eval_*``, the keys a live run has.
    ``num_episodes``: None = the run's ``offline.eval_episodes``. Returns one dict per checkpoint
    evaluated (step and metrics), oldest first; running it again evaluates nothing twice."""
    import json

    from o2o.runs import RunDir, read_metrics_csv
    from o2o.runs.checkpoint import checkpoint_step, list_checkpoints, write_text_atomic
    from o2o.runs.lock import lock_run_dir
    from o2o.runs.metrics import merge_metrics

    run = RunDir.open(run_dir)
    with lock_run_dir(run.path):  # metrics.csv and summary.json are rewritten: not while the run trains
        checkpoints = list_checkpoints(run.checkpoints_dir)
        if not checkpoints:
            raise RunDirError(f"pre-trained run '{run_dir}' has no checkpoint to evaluate")
        done: set[int] = set()
        if run.metrics_path.is_file():
            cols = read_metrics_csv(run.metrics_path)
            if "eval/return" in cols:
                done = {int(s) for s, r in zip(cols["step"], cols["eval/return"]) if not np.isnan(r)}
        out = []
        for ckpt in checkpoints:
            step = checkpoint_step(ckpt)
            if step in done:
                continue
            _, _, metrics = evaluate_checkpoint(run_dir, num_episodes, ckpt)
            merge_metrics(run.path, step, metrics)
            out.append({"step": step, **metrics})
            if echo is not None:
                echo(f"{run.path}: step {step}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        final = checkpoint_step(checkpoints[-1])
        if run.summary_path.is_file() and out and out[-1]["step"] == final:
            summary = json.loads(run.summary_path.read_text())
            if int(summary.get("steps", final)) == final:
                summary.update({f"final_{k.replace('/', '_')}": v for k, v in out[-1].items() if k != "step"})
                summary["evaluation"] = "recorded"  # by o2o eval --record, after training
                write_text_atomic(run.summary_path, json.dumps(summary, indent=2) + "\n")
        return out

