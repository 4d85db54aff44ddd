"""The offline (pre-training) loop: a fixed dataset on the device, K updates per jitted call,
periodic evaluation on the live task, metrics, checkpoints, exact resume.

    dataset (name or path) -> validated against the task -> [BC-Safe: keep episodes with cost <= kappa]
        -> [optional observation normalisation: mean / std of the data, stored with the policy]
        -> device replay buffer -> repeat: update_many(K steps) -> log -> evaluate every E steps

The checkpoint holds the whole agent state (actor, critics, cost critics, VAE, multipliers, targets,
optimisers), the RNG key, counters and the observation statistics: everything the bridge and the
online stages need.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents import get_offline_agent
from o2o.agents.common import make_update_many
from o2o.data.replay import replay_from_dataset, replay_sample
from o2o.errors import ConfigError, DatasetError


@dataclass(frozen=True)
class OfflineConfig:
    steps: int = field(default=100_000, metadata={"help": "gradient steps in total"})
    steps_per_call: int = field(default=1000, metadata={"help": "gradient steps per jitted call (one metrics row each)"})
    eval_every: int = field(default=10_000, metadata={"help": "evaluate on the live task every N gradient steps (and at the end)"})
    eval_episodes: int = field(default=5, metadata={"help": "deterministic evaluation episodes"})
    checkpoint_every: int = field(default=25_000, metadata={"help": "checkpoint every N gradient steps (and at the end)"})
    normalize_observations: bool = field(default=False, metadata={"help": "standardise observations with the dataset's mean / std"})


@lru_cache(maxsize=None)
def pretrain_config_class(algo: str) -> type:
    spec = get_offline_agent(algo)
    fields = [
        ("algo", str, field(default=algo, metadata={"help": "offline algorithm"})),
        ("dataset", str, field(default="BallCircle-dsrl", metadata={"help": "dataset name (o2o data list) or path"})),
        ("task", str | None, field(default=None, metadata={"help": "task; None = the dataset's metadata"})),
        ("seed", int, field(default=0, metadata={"help": "random seed"})),
        ("cost_limit", float | None, field(default=None, metadata={"help": "episode cost limit kappa; None = the task's default"})),
        ("agent", spec.config_cls, field(default_factory=spec.config_cls, metadata={"help": "agent hyper-parameters"})),
        ("offline", OfflineConfig, field(default_factory=OfflineConfig, metadata={"help": "training loop"})),
    ]
    return dataclasses.make_dataclass("PretrainConfig", fields, frozen=True)


@lru_cache(maxsize=None)
def _update_many(update_fn, batch_size: int):
    return make_update_many(update_fn, partial(_sample, batch_size=batch_size))


def _sample(buffer, key, batch_size):
    return replay_sample(buffer, key, batch_size)


def _with(cfg_obj, **changes):
    names = {f.name for f in dataclasses.fields(cfg_obj)}
    return dataclasses.replace(cfg_obj, **{k: v for k, v in changes.items() if k in names})


class OfflineTrainer:
    def __init__(self, cfg, *, dataset=None):
        from o2o.data import load_hdf5
        from o2o.envs import get_task
        from o2o.loops.datagen import resolve_dataset

        self.spec = get_offline_agent(cfg.algo)
        o = cfg.offline
        for name in ("steps", "steps_per_call", "eval_every", "eval_episodes", "checkpoint_every"):
            if getattr(o, name) <= 0:
                raise ConfigError(f"offline.{name} must be > 0, got {getattr(o, name)}")
        if o.steps % o.steps_per_call:
            raise ConfigError(f"offline.steps ({o.steps}) must be a multiple of offline.steps_per_call ({o.steps_per_call})")
        path = None
        if dataset is None:
            path = resolve_dataset(cfg.dataset)
        task_name = cfg.task or (dataset.metadata.get("task") if dataset is not None else _peek_task(path))
        if not task_name:
            raise ConfigError(f"dataset '{cfg.dataset}' does not say which task it is for; pass --task")
        self.task = get_task(task_name)
        if dataset is None:
            dataset = load_hdf5(path, task=self.task, require_costs=self.spec.safe)
        else:
            _check_dataset(dataset, self.task, self.spec.safe, cfg.dataset)
        self.cost_limit = cfg.cost_limit if cfg.cost_limit is not None else self.task.cost_limit
        if self.spec.safe:
            if self.cost_limit is None or self.cost_limit <= 0:
                raise ConfigError(f"{cfg.algo} needs a positive cost limit, got {self.cost_limit}; pass --set cost_limit=20")
        agent_cfg = cfg.agent
        if self.spec.safe:
            agent_cfg = _with(agent_cfg, cost_limit=float(self.cost_limit), horizon=int(self.task.horizon))
        self.cfg = dataclasses.replace(cfg, task=self.task.name, cost_limit=self.cost_limit, agent=agent_cfg)
        if self.spec.filter_safe_episodes:
            from o2o.agents.bc import filter_safe_trajectories

            dataset = filter_safe_trajectories(dataset, self.cost_limit)
        self.dataset = dataset
        if o.normalize_observations:
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
        init_key, self.key = jax.random.split(jax.random.PRNGKey(cfg.seed))
        self.state = self.spec.module.init(init_key, self.task.obs_dim, self.task.act_dim, agent_cfg)
        self.update_many = _update_many(self.spec.module.update, agent_cfg.batch_size)
        self.counters = {"steps": 0}

    def policy(self) -> Callable[[np.ndarray], np.ndarray]:
        actor = self.state.actor
        act = self.spec.module.actor_actions
        key = jax.random.PRNGKey(0)
        mean, std = self.obs_mean, self.obs_std
        return lambda obs: np.asarray(act(actor, (obs - mean) / std, key, True))

    def evaluate(self, num_episodes: int | None = None) -> dict[str, float]:
        """Deterministic evaluation on fixed evaluation seeds (the same episodes every time)."""
        from o2o.loops.evaluation import evaluation_metrics

        n = num_episodes or self.cfg.offline.eval_episodes
        return evaluation_metrics(self.task, self.policy(), n, self.cfg.seed, self.cost_limit)

    def step(self) -> dict[str, float]:
        o = self.cfg.offline
        self.key, update_key = jax.random.split(self.key)
        t0 = time.perf_counter()
        self.state, metrics = self.update_many(self.state, self.buffer, update_key, {}, num_steps=o.steps_per_call)
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - t0
        self.counters["steps"] += o.steps_per_call
        out = {f"loss/{k}": float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        out["perf/updates_per_s"] = o.steps_per_call / max(elapsed, 1e-9)
        s = self.counters["steps"]
        if s % o.eval_every == 0 or s == o.steps:
            out.update(self.evaluate())
        return out

    def checkpoint_arrays(self) -> dict:
        from flax.serialization import to_state_dict

        return {
            "agent": to_state_dict(self.state),
            "key": self.key,
            "obs_mean": self.obs_mean,
            "obs_std": self.obs_std,
        }

    def host_state(self) -> dict:
        return {
            "counters": dict(self.counters),
            "algo": self.cfg.algo,
            "task": self.task.name,
            "obs_dim": self.task.obs_dim,
            "act_dim": self.task.act_dim,
            "cost_limit": self.cost_limit,
            "dataset": self.cfg.dataset,
            "dataset_transitions": int(self.dataset.num_transitions),
        }

    def restore(self, arrays: dict, host: dict) -> None:
        from flax.serialization import from_state_dict

        self.state = from_state_dict(self.state, arrays["agent"])
        self.key = jnp.asarray(arrays["key"], jnp.uint32)
        self.obs_mean = np.asarray(arrays["obs_mean"], np.float32)
        self.obs_std = np.asarray(arrays["obs_std"], np.float32)
        self.counters = dict(host["counters"])


def _peek_task(path) -> str | None:
    import json

    import h5py

    try:
        with h5py.File(path, "r") as f:
            meta = f.attrs.get("o2o_metadata")
            return json.loads(meta).get("task") if meta else None
    except OSError:
        return None  # the loader reports what is wrong with the file


def _check_dataset(dataset, task, safe: bool, name: str) -> None:
    if dataset.obs_dim != task.obs_dim or dataset.act_dim != task.act_dim:
        raise DatasetError(
            f"{name}: observation/action widths {dataset.obs_dim}/{dataset.act_dim} do not match task {task.name} "
            f"({task.obs_dim}/{task.act_dim}); the dataset is for another task"
        )
    if safe and not dataset.has_costs:
        raise DatasetError(f"{name}: the dataset has no costs, which a safe algorithm needs")


def run_pretrain(cfg, out_dir, *, resume: bool = False, progress: bool = True, dataset=None) -> dict:
    from o2o.config import to_dict
    from o2o.loops.online import _progress
    from o2o.runs import MetricsWriter, RunDir

    from o2o.loops.online import upgrade_saved_config

    trainer = OfflineTrainer(cfg, dataset=dataset)
    if resume:
        upgrade_saved_config(out_dir, trainer.cfg)
    rundir = RunDir.create(out_dir, to_dict(trainer.cfg), resume=resume)
    writer = MetricsWriter(rundir)
    if resume:
        arrays, host = rundir.load_checkpoint(template=trainer.checkpoint_arrays())
        trainer.restore(arrays, host)
    o = trainer.cfg.offline
    start = time.perf_counter()
    last_eval: dict[str, float] = {}
    with _progress(progress) as bar:
        tid = bar.add_task(f"{cfg.algo} on {trainer.cfg.dataset}", total=o.steps, completed=trainer.counters["steps"], status="")
        while trainer.counters["steps"] < o.steps:
            metrics = trainer.step()
            s = trainer.counters["steps"]
            writer.write(s, metrics)
            last_eval = {k: v for k, v in metrics.items() if k.startswith("eval/")} or last_eval
            status = f"{metrics['perf/updates_per_s']:.0f} upd/s"
            if "eval/return" in metrics:
                status += f" | eval R {metrics['eval/return']:.1f}" + (f" C {metrics['eval/cost']:.1f}" if "eval/cost" in metrics else "")
            bar.update(tid, completed=s, status=status)
            if s % o.checkpoint_every == 0 or s == o.steps:
                writer.flush()
                rundir.save_checkpoint(s, arrays=trainer.checkpoint_arrays(), host_state=trainer.host_state())
    writer.close()
    summary = {
        "algo": cfg.algo,
        "task": trainer.task.name,
        "dataset": trainer.cfg.dataset,
        "seed": cfg.seed,
        "cost_limit": trainer.cost_limit,
        "steps": trainer.counters["steps"],
        "wall_time_s": time.perf_counter() - start,
        **{f"final_{k.replace('/', '_')}": v for k, v in (last_eval or trainer.evaluate()).items()},
    }
    rundir.write_summary(summary)
    return summary
