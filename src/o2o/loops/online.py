"""The online training loop: collect -> control -> update, with evaluation, metrics and exact resume.

    for each iteration:
        collect N episodes (or S env steps) with the current stochastic policy (uniform random actions
            during warm-up), from ``num_envs`` env copies with one batched policy call per step
        append them to the device replay buffer
        feed the controller the iteration's mean episode cost -> lambda            (safe agents)
        run M gradient steps in one jitted lax.scan, lambda passed in as a signal
        every E iterations: deterministic evaluation (fixed evaluation seeds)
        log metrics; checkpoint every C iterations (and at the end)

Everything the next iteration depends on - agent state, replay buffer, RNG keys, controller,
collector (per-env RNG and any episode in progress), counters - goes into the checkpoint, so
``--resume`` continues exactly as if never stopped.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache, partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents import AgentSpec, get_online_agent
from o2o.agents.common import make_update_many
from o2o.data.replay import replay_add, replay_from_state_dict, replay_init, replay_sample, replay_state_dict
from o2o.errors import ConfigError
from o2o.loops.divergence import check_losses
from o2o.loops.evaluation import record_rollout
from o2o.lagrange import make_controller
from o2o.runs.clock import RunClock
from o2o.runconfig import load_run_config


def check_config(cfg) -> None:
    """Value checks that types alone cannot express; raise before anything is launched."""
    o = cfg.online
    for name in ("iterations", "steps_per_iteration", "num_envs", "eval_every", "eval_episodes", "checkpoint_every", "replay_capacity"):
        if getattr(o, name) <= 0:
            raise ConfigError(f"online.{name} must be > 0, got {getattr(o, name)}")
    if o.episodes_per_iteration is not None and o.episodes_per_iteration <= 0:
        raise ConfigError(f"online.episodes_per_iteration must be > 0 or null, got {o.episodes_per_iteration}")
    if o.updates_per_iteration < 0:
        raise ConfigError(f"online.updates_per_iteration must be >= 0, got {o.updates_per_iteration}")
    if o.cost_limit is not None and o.cost_limit < 0:
        raise ConfigError(f"online.cost_limit must be >= 0, got {o.cost_limit}")
    a = cfg.agent
    if a.batch_size <= 0 or not 0 < a.gamma <= 1 or not 0 < a.tau <= 1:
        raise ConfigError("agent.batch_size must be > 0, agent.gamma and agent.tau in (0, 1]")


@lru_cache(maxsize=None)
def _update_many(update_fn, batch_size: int):
    """One compiled K-step update per (agent, batch size) per process, shared by every trainer (tests and
    sweeps create many trainers; each new closure would otherwise be re-traced and re-compiled)."""
    return make_update_many(update_fn, partial(_sample, batch_size=batch_size))


def _sample(buffer, key, batch_size):
    return replay_sample(buffer, key, batch_size)


@partial(jax.jit, static_argnames=("deterministic", "actions_fn", "action_kwargs"))
def policy_step(actor, observations, key, step, deterministic=False, actions_fn=None, action_kwargs=()):
    """One batched policy call; the per-step key is folded in on the device (no host-side splits).
    ``actions_fn`` is the agent module's ``actor_actions`` (SAC's when None) and ``action_kwargs`` its
    config-dependent arguments as (name, value) pairs, e.g. TD3's exploration noise."""
    if actions_fn is None:
        from o2o.agents.sac import actor_actions as actions_fn

    return actions_fn(actor, observations, jax.random.fold_in(key, step), deterministic, **dict(action_kwargs))


def policy_step_kwargs(module, agent_cfg) -> dict:
    """How ``policy_step`` acts for an agent module: its ``actor_actions`` and, if the module defines
    ``exploration_kwargs(cfg)``, those arguments (hashable, so they are static under jit)."""
    extra = getattr(module, "exploration_kwargs", None)
    return {"actions_fn": module.actor_actions, "action_kwargs": tuple(sorted(extra(agent_cfg).items())) if extra else ()}


def make_trainer(cfg, **kwargs):
    """The trainer of ``cfg.algo``: ``OnlineTrainer`` (replay, off-policy), or for an on-policy agent
    (PPO) ``loops.onpolicy.OnPolicyTrainer``; both have the surface ``run_online`` drives."""
    if get_online_agent(cfg.algo).on_policy:
        from o2o.loops.onpolicy import OnPolicyTrainer

        return OnPolicyTrainer(cfg, **kwargs)
    return OnlineTrainer(cfg, **kwargs)


class OnlineTrainer:
    """Owns everything of one online run. ``run()`` trains to the configured number of iterations,
    writing metrics and checkpoints through the given run directory."""

    def __init__(self, cfg, rundir=None, *, progress: bool = True, agent_state=None, obs_stats=None):
        """``agent_state``: start from this agent (a pre-trained, bridged one) instead of a fresh init.
        ``obs_stats``: (mean, std) the agent's networks expect observations standardised with (those of
        its offline pre-training); applied to what the policy sees and to what the replay stores."""
        from o2o.envs import Collector, get_task

        check_config(cfg)
        self.cfg = cfg
        self.rundir = rundir
        self.progress = progress
        self.spec: AgentSpec = get_online_agent(cfg.algo)
        self.task = get_task(cfg.task)
        if self.spec.safe and not self.task.safe:
            raise ConfigError(f"algorithm '{cfg.algo}' needs a task with costs; '{self.task.name}' has none (use --algo sac)")
        self.cost_limit = cfg.online.cost_limit if cfg.online.cost_limit is not None else self.task.cost_limit
        obs_dim, act_dim = self.task.obs_dim, self.task.act_dim

        root = jax.random.PRNGKey(cfg.seed)
        init_key, self.key = jax.random.split(root)
        self.state = agent_state if agent_state is not None else self.spec.module.init(init_key, obs_dim, act_dim, cfg.agent)
        self.buffer = replay_init(obs_dim, act_dim, cfg.online.replay_capacity)
        self.controller = make_controller(cfg.lagrange, self.cost_limit) if self.spec.safe else None
        self.collector = Collector(self.task, cfg.online.num_envs, cfg.seed)
        self.np_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7]))
        self.counters = {
            "iteration": 0,
            "env_steps": 0,
            "episodes": 0,
            "updates": 0,
            "cumulative_cost": 0.0,
            "violating_episodes": 0,
        }
        self.update_many = _update_many(self.spec.module.update, cfg.agent.batch_size)
        self.policy_kwargs = policy_step_kwargs(self.spec.module, cfg.agent)
        if obs_stats is None:
            obs_stats = (np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32))
        self.obs_mean, self.obs_std = (np.asarray(x, np.float32) for x in obs_stats)
        if self.obs_mean.shape != (obs_dim,) or self.obs_std.shape != (obs_dim,) or np.any(self.obs_std <= 0):
            raise ConfigError(f"observation statistics must be two arrays of shape ({obs_dim},) with std > 0 for task {self.task.name}")
        self.normalize = bool(np.any(self.obs_mean != 0) or np.any(self.obs_std != 1))

    # ------------------------------------------------------------------ policies
    def _random_policy(self, obs: np.ndarray) -> np.ndarray:
        return self.np_rng.uniform(-1.0, 1.0, (obs.shape[0], self.task.act_dim)).astype(np.float32)

    def _make_policy(self, key) -> Callable[[np.ndarray], np.ndarray]:
        actor = self.state.actor
        counter = [0]

        def policy(obs: np.ndarray) -> np.ndarray:
            counter[0] += 1
            return np.asarray(policy_step(actor, self._norm(obs), key, counter[0], **self.policy_kwargs))

        return policy

    def deterministic_policy(self) -> Callable[[np.ndarray], np.ndarray]:
        """The current actor's mode on raw observations; it holds the actor and the observation
        statistics only, not the trainer (``o2o.load_policy`` keeps it without the replay buffer)."""
        actor, kwargs, key = self.state.actor, self.policy_kwargs, jax.random.PRNGKey(0)
        mean, std, normalize = self.obs_mean, self.obs_std, self.normalize

        def policy(obs: np.ndarray) -> np.ndarray:
            return np.asarray(policy_step(actor, (obs - mean) / std if normalize else obs, key, 0, deterministic=True, **kwargs))

        return policy

    def _norm(self, obs: np.ndarray) -> np.ndarray:
        return (obs - self.obs_mean) / self.obs_std if self.normalize else obs

    def _replay_rows(self, rollout) -> dict:
        rows = {k: getattr(rollout, k) for k in ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")}
        if self.normalize:
            rows["observations"] = self._norm(rows["observations"]).astype(np.float32)
            rows["next_observations"] = self._norm(rows["next_observations"]).astype(np.float32)
        return rows

    # ------------------------------------------------------------------ one iteration
    def iteration(self) -> dict[str, float]:
        cfg, o = self.cfg, self.cfg.online
        metrics: dict[str, float] = {}
        self.key, collect_key, update_key = jax.random.split(self.key, 3)
        warm = self.counters["env_steps"] < o.warmup_steps
        policy = self._random_policy if warm else self._make_policy(collect_key)

        t0 = time.perf_counter()
        if o.episodes_per_iteration is not None:
            rollout = self.collector.collect(policy, num_episodes=o.episodes_per_iteration)
        else:
            rollout = self.collector.collect(policy, num_steps=o.steps_per_iteration)
        collect_time = time.perf_counter() - t0
        self.buffer = replay_add(self.buffer, self._replay_rows(rollout))
        self.last_rollout = rollout

        c = self.counters
        metrics.update(record_rollout(c, rollout, collect_time, self.cost_limit))

        will_update = c["env_steps"] >= o.update_after and o.updates_per_iteration > 0
        signals, step_signals = {}, None
        if self.controller is not None:
            if len(rollout.episode_costs):
                measured = float(np.mean(rollout.episode_costs))
                if cfg.lagrange.cadence == "minibatch" and will_update:
                    # the released code's cadence: one controller step per gradient step, same measurement
                    lams = [self.controller.update(measured)[0] for _ in range(o.updates_per_iteration)]
                    step_signals = {"lagrange": jnp.asarray(lams, jnp.float32)}
                else:
                    self.controller.update(measured)
            lam = self.controller.lagrange
            if step_signals is None:
                signals["lagrange"] = jnp.asarray(lam[0], jnp.float32)
            metrics["lagrange"] = float(lam[0])
            metrics.update(self.controller.diagnostics())

        if will_update:
            t0 = time.perf_counter()
            buffers, signals, step_signals = self.update_inputs(signals, step_signals, o.updates_per_iteration)
            self.state, update_metrics = self.update_many(
                self.state, buffers, update_key, signals, num_steps=o.updates_per_iteration, step_signals=step_signals
            )
            update_metrics = jax.device_get(update_metrics)
            update_time = time.perf_counter() - t0
            c["updates"] += o.updates_per_iteration
            metrics["perf/updates_per_s"] = o.updates_per_iteration / max(update_time, 1e-9)
            losses = {f"loss/{k}": float(v) for k, v in update_metrics.items() if k != "lagrange"}
            check_losses(losses)  # before the next collection or evaluation runs a diverged policy
            metrics.update(losses)

        c["iteration"] += 1
        metrics["train/cumulative_cost"] = c["cumulative_cost"]
        metrics["train/violating_episodes"] = float(c["violating_episodes"])
        if c["iteration"] % o.eval_every == 0 or c["iteration"] == o.iterations:
            metrics.update(self.evaluate())
        metrics.update({"env_steps": c["env_steps"], "episodes": c["episodes"], "updates": c["updates"]})
        return metrics

    def update_inputs(self, signals: dict, step_signals: dict | None, num_steps: int):
        """What the K-step update samples from, and its signals. A subclass adds its own (OCR-CFT:
        offline + online replay, the reference policy, the constraint threshold per step)."""
        return self.buffer, signals, step_signals

    def evaluate(self, num_episodes: int | None = None) -> dict[str, float]:
        """Deterministic evaluation on fixed evaluation seeds (the same episodes every time)."""
        from o2o.loops.evaluation import evaluation_metrics

        n = num_episodes or self.cfg.online.eval_episodes
        return evaluation_metrics(self.task, self.deterministic_policy(), n, self.cfg.seed, self.cost_limit)

    def checkpoint_arrays(self) -> dict:
        from flax.serialization import to_state_dict

        return {
            "agent": to_state_dict(self.state),
            "buffer": replay_state_dict(self.buffer),
            "key": self.key,
            "obs_mean": self.obs_mean,
            "obs_std": self.obs_std,
        }

    def checkpoint_template(self) -> dict:
        """``checkpoint_arrays`` as a load checks a checkpoint against it: the replay columns any number of
        rows up to the capacity (a checkpoint holds the written rows only)."""
        from o2o.runs.checkpoint import Rows

        arrays = self.checkpoint_arrays()
        arrays["buffer"] = {**arrays["buffer"], "data": {k: Rows(v) for k, v in self.buffer.data.items()}}
        return arrays

    def host_state(self) -> dict:
        return {
            "counters": dict(self.counters),
            "controller": self.controller.state_dict() if self.controller is not None else None,
            "collector": self.collector.state_dict(),
            "np_rng": self.np_rng.bit_generator.state,
        }

    def restore(self, arrays: dict, host: dict) -> None:
        from flax.serialization import from_state_dict

        self.state = from_state_dict(self.state, arrays["agent"])
        self.buffer = replay_from_state_dict(self.buffer, arrays["buffer"])
        self.key = jnp.asarray(arrays["key"], jnp.uint32)
        self.obs_mean = np.asarray(arrays["obs_mean"], np.float32)
        self.obs_std = np.asarray(arrays["obs_std"], np.float32)
        self.normalize = bool(np.any(self.obs_mean != 0) or np.any(self.obs_std != 1))
        self.counters = dict(host["counters"])
        if self.controller is not None:
            self.controller.load_state_dict(host["controller"])
        self.collector.load_state_dict(host["collector"])
        self.np_rng.bit_generator.state = host["np_rng"]


# ---------------------------------------------------------------------- driver


def run_online(
    cfg,
    out_dir,
    *,
    resume: bool = False,
    progress: bool = True,
    trainer: OnlineTrainer | None = None,
    before_iteration: Callable[[OnlineTrainer], None] | None = None,
    after_iteration: Callable[[OnlineTrainer, dict], None] | None = None,
    description: str | None = None,
    rundir=None,
    stop_after: int | None = None,
) -> dict:
    """Train ``cfg`` into the run directory ``out_dir`` (or continue it with ``resume``); returns the
    summary also written to ``summary.json``.

    ``stop_after=N`` ends this invocation after iteration N (< the configured iterations) with a
    checkpoint and no summary: the run is unfinished and a later ``resume`` continues it exactly; the
    returned dict is then ``{"stopped_at": N}``.

    ``before_iteration(trainer)`` and ``after_iteration(trainer, metrics)`` let a caller steer or record
    a run (dataset generation moves the cost target and keeps policy snapshots); they must derive
    whatever they change from the trainer's counters so that a resumed run sees the same values."""
    from o2o.config import to_dict
    from o2o.runs import RunDir
    from o2o.runs.rundir import TRAIN, hold_runs

    if rundir is not None:  # a caller that prepared the run (fine-tuning: bridge outputs) passes its RunDir
        trainer = trainer or make_trainer(cfg, progress=progress)
        return _train_online(cfg, trainer, rundir, resume, progress, before_iteration, after_iteration, description, stop_after)
    with hold_runs([out_dir] if resume else []):
        trainer = trainer or make_trainer(cfg, progress=progress)  # validates everything before touching disk
        if resume:
            upgrade_saved_config(out_dir, cfg)
        with RunDir.create(out_dir, to_dict(cfg), kind=TRAIN, resume=resume) as rundir:  # holds the run's lock until the end
            return _train_online(cfg, trainer, rundir, resume, progress, before_iteration, after_iteration, description, stop_after)


class OnlineStage:
    """A trainer (``OnlineTrainer``, ``OnPolicyTrainer`` and their OCR-CFT subclasses) as a driver stage
    (``o2o.loops.driver``): one call is one iteration."""

    def __init__(self, trainer):
        self.trainer = trainer

    @property
    def position(self) -> int:
        return self.trainer.counters["iteration"]

    def next_position(self) -> int:
        return self.position + 1

    def where(self, position: int) -> str:
        return f"iteration {position}"

    def step(self) -> list[dict[str, float]]:
        return [self.trainer.iteration()]

    def status(self, rows) -> str:
        metrics = rows[0]
        status = f"steps {self.trainer.counters['env_steps']}"
        if "train/episode_return" in metrics:
            status += f" | R {metrics['train/episode_return']:.1f}"
        if "train/episode_cost" in metrics:
            status += f" C {metrics['train/episode_cost']:.1f}"
        if "eval/return" in metrics:
            status += f" | eval R {metrics['eval/return']:.1f}"
            if "eval/cost" in metrics:
                status += f" C {metrics['eval/cost']:.1f}"
        return status

    def checkpoint(self, i: int) -> tuple[dict, dict]:
        return self.trainer.checkpoint_arrays(), self.trainer.host_state()

    def template(self, i: int) -> tuple[dict, dict]:
        return self.trainer.checkpoint_template(), self.trainer.host_state()

    def restore(self, loaded) -> None:
        self.trainer.restore(*loaded[0])


def _train_online(cfg, trainer, rundir, resume, progress, before_iteration, after_iteration, description, stop_after) -> dict:
    """``run_online``'s stage in the open run directory ``rundir``, through the driver."""
    from o2o.loops.driver import RunCheckpoints, drive
    from o2o.loops.driver import resume as resume_stage
    from o2o.runs import MetricsWriter
    from o2o.runs.rundir import run_finished

    stage = OnlineStage(trainer)
    host = None
    if resume and rundir.latest_checkpoint() is not None:
        host = resume_stage(stage.restore, [stage.template(0)], [rundir])[0]
        if stage.position >= cfg.online.iterations and rundir.summary_path.is_file():
            raise run_finished(rundir.path)
    writer = MetricsWriter(rundir, x="env_steps")  # TensorBoard's x-axis: environment steps
    if host is not None:
        writer.truncate_after(stage.position)
    clock = RunClock(host, resumed_from=stage.position)

    o = cfg.online
    end = o.iterations if stop_after is None else min(stop_after, o.iterations)
    ckpts = RunCheckpoints([rundir], [clock], every=o.checkpoint_every, end=end, total=o.iterations)
    drive(stage, [writer], ckpts, end=end, progress=progress, description=description or f"{cfg.algo} {cfg.task} seed {cfg.seed}",
          before=None if before_iteration is None else (lambda: before_iteration(trainer)),
          after=None if after_iteration is None else (lambda rows: after_iteration(trainer, rows[0])))
    writer.close()
    if trainer.counters["iteration"] < o.iterations:
        return {"stopped_at": trainer.counters["iteration"]}
    summary = summarize(rundir, trainer, clock)
    rundir.write_summary(summary)
    return summary


def completed_saved_config(saved: dict, cfg) -> dict | None:
    """A config saved by an earlier o2o as this o2o reads it, to compare with ``cfg``: keys added since at
    their defaults, and a pre-trained run recorded relative to this working directory made absolute as
    ``cfg`` has it. None when this o2o cannot read it (a removed or renamed key)."""
    from o2o.config import to_dict

    try:
        completed = to_dict(load_run_config(type(cfg), saved))
    except ConfigError:
        return None
    pretrained, wanted = saved.get("pretrained"), getattr(cfg, "pretrained", None)
    if isinstance(pretrained, str) and wanted and not os.path.isabs(pretrained) and os.path.abspath(pretrained) == wanted:
        completed["pretrained"] = wanted
    return completed


def upgrade_saved_config(out_dir, cfg) -> None:
    """If the saved config, read as this o2o reads it (``completed_saved_config``), equals ``cfg`` (or
    differs by a raised budget), write it back complete so the resume check compares like with like;
    any real difference is still refused by ``RunDir.create``."""
    from pathlib import Path

    import yaml

    from o2o.config import load_yaml, to_dict
    from o2o.runs.checkpoint import write_text_atomic
    from o2o.runs.rundir import resume_diffs

    path = Path(out_dir) / "config.yaml"
    if not path.exists():
        return
    saved = load_yaml(path)
    completed = completed_saved_config(saved, cfg)
    if completed is not None and completed != saved and not resume_diffs(completed, to_dict(cfg))[0]:
        header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
        write_text_atomic(path, header + yaml.safe_dump(completed, sort_keys=False))


def summarize(rundir, trainer: OnlineTrainer, clock: RunClock) -> dict:
    """Final and best evaluation (labelled as such), safety while learning, budget."""
    from o2o.runs import read_metrics_csv

    m = read_metrics_csv(rundir.metrics_path)
    out: dict[str, Any] = {
        "algo": trainer.cfg.algo,
        "task": trainer.task.name,
        "seed": trainer.cfg.seed,
        "cost_limit": trainer.cost_limit,
        "iterations": trainer.counters["iteration"],
        "env_steps": trainer.counters["env_steps"],
        "updates": trainer.counters["updates"],
        "train_cumulative_cost": trainer.counters["cumulative_cost"],
        "train_violating_episodes": trainer.counters["violating_episodes"],
        "train_episodes": trainer.counters["episodes"],
        **clock.summary(),  # wall_time_s: the whole run's, resumes included (o2o.runs.clock)
    }
    if "eval/return" in m:
        ret = m["eval/return"]
        valid = ~np.isnan(ret)
        idx = np.flatnonzero(valid)
        trained = np.flatnonzero(valid & (m["step"] > 0))  # iteration 0 (fine-tuning's start) is not a result of training
        if len(idx):
            out["final_eval_return"] = float(ret[idx[-1]])
            out["final_eval_normalized_return"] = float(m["eval/normalized_return"][idx[-1]])
            out["best_eval_return"] = float(np.max(ret[trained])) if len(trained) else float(ret[idx[-1]])
            if idx[0] != idx[-1] and m["step"][idx[0]] == 0:
                out["start_eval_return"] = float(ret[idx[0]])
                if "eval/cost" in m:
                    out["start_eval_cost"] = float(m["eval/cost"][idx[0]])
            if "eval/cost" in m:
                out["final_eval_cost"] = float(m["eval/cost"][idx[-1]])
            if "eval/normalized_cost" in m:
                out["final_eval_normalized_cost"] = float(m["eval/normalized_cost"][idx[-1]])
                out["final_eval_safe"] = bool(m["eval/normalized_cost"][idx[-1]] <= 1.0)
    return out
