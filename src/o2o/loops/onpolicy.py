"""The on-policy training loop (PPO): collect a fresh rollout -> advantages -> epochs of minibatch updates.

    for each iteration:
        collect ``steps_per_iteration`` env steps from ``num_envs`` env copies with the current
            stochastic policy (one batched policy call per step; each env contributes
            steps_per_iteration / num_envs consecutive steps, carrying its episode over to the next
            iteration when the segment ends mid-episode)
        scale rewards, evaluate V(s), V(s'), log pi_old(a|s), compute GAE     (one jitted call)
        [advantage_fn: a caller may reshape the advantages, e.g. O2PPO's auxiliary advantage]
        ``num_epochs`` x (rollout / minibatch_size) gradient steps                 (one jitted call)
        merge the rollout's observations into the normalisation statistics
        every E iterations: deterministic evaluation (fixed evaluation seeds)
        log metrics; checkpoint every C iterations (and at the end)

There is no replay buffer. The trainer has the same surface as ``OnlineTrainer`` (``iteration``,
``evaluate``, ``checkpoint_arrays``, ``host_state``, ``restore``, ``counters``), so
``o2o.loops.online.run_online`` drives it with the same run directory, metrics and exact resume.
The checkpoint holds the agent (networks, optimisers, observation and return statistics), the RNG
key, each env's discounted-return carry (reward scaling), the collector (per-env RNG and any
episode in progress) and the counters.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents import AgentSpec, get_online_agent
from o2o.errors import ConfigError
from o2o.loops.divergence import check_losses


def check_config(cfg) -> None:
    o, a = cfg.online, cfg.agent
    for name in ("iterations", "steps_per_iteration", "num_envs", "eval_every", "eval_episodes", "checkpoint_every"):
        if getattr(o, name) <= 0:
            raise ConfigError(f"online.{name} must be > 0, got {getattr(o, name)}")
    if o.steps_per_iteration % o.num_envs:
        raise ConfigError(
            f"online.steps_per_iteration ({o.steps_per_iteration}) must be a multiple of online.num_envs ({o.num_envs})"
        )
    if a.minibatch_size <= 0 or o.steps_per_iteration % a.minibatch_size:
        raise ConfigError(
            f"agent.minibatch_size ({a.minibatch_size}) must be > 0 and divide online.steps_per_iteration ({o.steps_per_iteration})"
        )
    if a.num_epochs <= 0:
        raise ConfigError(f"agent.num_epochs must be > 0, got {a.num_epochs}")
    if not 0 < a.gamma <= 1 or not 0 <= a.gae_lambda <= 1 or a.clip_ratio <= 0:
        raise ConfigError("agent.gamma must be in (0, 1], agent.gae_lambda in [0, 1], agent.clip_ratio > 0")
    if o.cost_limit is not None and o.cost_limit < 0:
        raise ConfigError(f"online.cost_limit must be >= 0, got {o.cost_limit}")


# One compiled function each per (agent config, shapes) per process, shared by every trainer.
@lru_cache(maxsize=None)
def _jitted(module):
    return (
        jax.jit(module.prepare_batch),
        jax.jit(module.update, donate_argnums=(0,)),
        jax.jit(module.observe, donate_argnums=(0,)),
    )


@jax.jit
def _sample_step(policy, observations, key, step):
    from o2o.agents.ppo import sample_actions

    return sample_actions(policy, observations, jax.random.fold_in(key, step))


class OnPolicyTrainer:
    """Owns everything of one on-policy run; ``run_online`` drives it."""

    def __init__(self, cfg, rundir=None, *, progress: bool = True, agent_state=None,
                 advantage_fn: Callable[["OnPolicyTrainer", dict], dict] | None = None):
        """``agent_state``: start from this agent (e.g. a PPO state whose actor is a pre-trained one).
        ``advantage_fn(trainer, batch) -> batch`` may change the batch between GAE and the update."""
        from o2o.envs import Collector, get_task

        check_config(cfg)
        self.cfg = cfg
        self.rundir = rundir
        self.progress = progress
        self.spec: AgentSpec = get_online_agent(cfg.algo)
        if not self.spec.on_policy:
            raise ConfigError(f"algorithm '{cfg.algo}' is off-policy; it trains with loops.online.OnlineTrainer")
        self.task = get_task(cfg.task)
        self.cost_limit = cfg.online.cost_limit if cfg.online.cost_limit is not None else self.task.cost_limit
        module = self.spec.module
        root = jax.random.PRNGKey(cfg.seed)
        init_key, self.key = jax.random.split(root)
        self.state = agent_state if agent_state is not None else module.init(init_key, self.task.obs_dim, self.task.act_dim, cfg.agent)
        self.collector = Collector(self.task, cfg.online.num_envs, cfg.seed)
        self.return_carry = np.zeros(cfg.online.num_envs, np.float32)
        self.advantage_fn = advantage_fn
        self.counters = {
            "iteration": 0,
            "env_steps": 0,
            "episodes": 0,
            "updates": 0,
            "cumulative_cost": 0.0,
            "violating_episodes": 0,
        }
        self._prepare, self._update, self._observe = _jitted(module)

    # ------------------------------------------------------------------ policies
    def _make_policy(self, key, raw: list) -> Callable[[np.ndarray], np.ndarray]:
        """The sampling policy; it records each call's unclipped sample u in ``raw``."""
        policy_params = self.spec.module.policy_of(self.state)
        counter = [0]

        def policy(obs: np.ndarray) -> np.ndarray:
            counter[0] += 1
            actions, u = jax.device_get(_sample_step(policy_params, obs, key, counter[0]))
            raw.append(u)
            return actions

        return policy

    def deterministic_policy(self) -> Callable[[np.ndarray], np.ndarray]:
        policy_params = self.spec.module.policy_of(self.state)
        act = self.spec.module.actor_actions
        key = jax.random.PRNGKey(0)
        return lambda obs: np.asarray(act(policy_params, obs, key, True))

    # ------------------------------------------------------------------ one iteration
    def _segments(self, rollout, raw: list) -> dict:
        """The rollout as [num_envs, T, ...] arrays. Every policy call stepped every env (the step count
        is a multiple of num_envs), and the rollout is env-major, so row e is env e's T steps in order."""
        n_envs = self.cfg.online.num_envs
        T = rollout.num_steps // n_envs
        u = np.stack(raw).transpose(1, 0, 2)  # [num_envs, T, act_dim]
        out = {
            name: getattr(rollout, name).reshape((n_envs, T) + getattr(rollout, name).shape[1:])
            for name in ("observations", "rewards", "next_observations", "terminals", "timeouts")
        }
        out["raw_actions"] = u
        executed = rollout.actions.reshape(n_envs, T, -1)
        if u.shape != executed.shape or not np.allclose(np.clip(u, -1.0, 1.0), executed, atol=1e-5):
            raise RuntimeError("on-policy rollout: recorded samples do not match the executed actions")
        return out

    def iteration(self) -> dict[str, float]:
        o = self.cfg.online
        metrics: dict[str, float] = {}
        self.key, collect_key, update_key = jax.random.split(self.key, 3)
        raw: list[np.ndarray] = []
        t0 = time.perf_counter()
        rollout = self.collector.collect(self._make_policy(collect_key, raw), num_steps=o.steps_per_iteration)
        collect_time = time.perf_counter() - t0
        self.last_rollout = rollout

        from o2o.loops.evaluation import record_rollout

        c = self.counters
        metrics.update(record_rollout(c, rollout, collect_time, self.cost_limit))

        t0 = time.perf_counter()
        self.state, batch, carry, info = self._prepare(self.state, self._segments(rollout, raw), jnp.asarray(self.return_carry))
        self.return_carry = np.asarray(carry, np.float32)
        if self.advantage_fn is not None:
            batch = self.advantage_fn(self, batch)
        lr_fraction = jnp.asarray(1.0 - c["iteration"] / o.iterations, jnp.float32)
        self.state, update_metrics = self._update(self.state, batch, update_key, lr_fraction)
        self.state = self._observe(self.state, jnp.asarray(rollout.observations))
        update_metrics = jax.device_get({**update_metrics, **info})
        update_time = time.perf_counter() - t0
        a = self.cfg.agent
        num_updates = a.num_epochs * (o.steps_per_iteration // a.minibatch_size)
        c["updates"] += num_updates
        metrics["perf/updates_per_s"] = num_updates / max(update_time, 1e-9)
        losses = {f"loss/{k}": float(v) for k, v in update_metrics.items()}
        check_losses(losses)  # before the evaluation runs a diverged policy
        metrics.update(losses)

        c["iteration"] += 1
        metrics["train/cumulative_cost"] = c["cumulative_cost"]
        metrics["train/violating_episodes"] = float(c["violating_episodes"])
        if c["iteration"] % o.eval_every == 0 or c["iteration"] == o.iterations:
            metrics.update(self.evaluate())
        metrics.update({"env_steps": c["env_steps"], "episodes": c["episodes"], "updates": c["updates"]})
        return metrics

    def evaluate(self, num_episodes: int | None = None) -> dict[str, float]:
        """Deterministic evaluation on fixed evaluation seeds (the same episodes every time)."""
        from o2o.loops.evaluation import evaluation_metrics

        n = num_episodes or self.cfg.online.eval_episodes
        return evaluation_metrics(self.task, self.deterministic_policy(), n, self.cfg.seed, self.cost_limit)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_arrays(self) -> dict:
        from flax.serialization import to_state_dict

        return {"agent": to_state_dict(self.state), "key": self.key, "return_carry": self.return_carry}

    def checkpoint_template(self) -> dict:
        """What a load checks a checkpoint against: ``checkpoint_arrays`` (no replay buffer)."""
        return self.checkpoint_arrays()

    def host_state(self) -> dict:
        return {"counters": dict(self.counters), "collector": self.collector.state_dict()}

    def restore(self, arrays: dict, host: dict) -> None:
        from flax.serialization import from_state_dict

        self.state = from_state_dict(self.state, arrays["agent"])
        self.key = jnp.asarray(arrays["key"], jnp.uint32)
        self.return_carry = np.asarray(arrays["return_carry"], np.float32)
        self.counters = dict(host["counters"])
        self.collector.load_state_dict(host["collector"])
