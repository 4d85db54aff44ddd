"""Collect transitions from several copies of one env with one batched policy call per step.

The envs run in this process, one after another (Bullet and MuJoCo steps take 0.1-1 ms, so
subprocess workers would spend more on pickling than they save on two cores). Each env is a
``SeededEnv`` with its own seed, derived from ``(seed, stream, env index)`` by
``np.random.SeedSequence``, so the envs differ from one another and a run is reproducible.

Two ways to collect:

- ``collect(policy, num_steps=n)``: exactly ``n`` env steps in total. Envs may stop mid-episode and
  carry on at the next call (online training).
- ``collect(policy, num_episodes=n)``: run until ``n`` episodes have finished. An episode, once
  started, is always finished (so short episodes are not favoured), envs that are not needed any
  more stop stepping, and at the end no env is mid-episode (evaluation, dataset generation).

Envs are reset lazily, at the first step of their next episode, so a finished env costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from o2o.envs.make import SeededEnv, make_env
from o2o.envs.registry import Task, get_task
from o2o.errors import RunDirError

Policy = Callable[[np.ndarray], np.ndarray]
"""``policy(observations [num_envs, obs_dim] float32) -> actions [num_envs, act_dim]``."""

#: Seed stream of the envs ``evaluate_policy`` creates, so that they never replay the training
#: envs' episodes when given the same seed.
EVAL_STREAM = 1


@dataclass
class Rollout:
    """Transitions in the D4RL layout, each episode contiguous (env 0's steps, then env 1's, ...).

    ``terminals`` marks true terminations only (the agent died); ``timeouts`` marks the time-limit
    cut, where the value of ``next_observations`` must still be bootstrapped. A segment may also
    end with neither (an episode that goes on at the next ``collect`` call).
    """

    observations: np.ndarray
    """[N, obs_dim] float32"""
    actions: np.ndarray
    """[N, act_dim] float32, the executed action (clipped to the action space)"""
    rewards: np.ndarray
    """[N] float32"""
    costs: np.ndarray
    """[N] float32 (0 for tasks without costs)"""
    next_observations: np.ndarray
    """[N, obs_dim] float32"""
    terminals: np.ndarray
    """[N] bool"""
    timeouts: np.ndarray
    """[N] bool"""
    episode_returns: np.ndarray
    """[E] float64, undiscounted return of each episode that finished during this call (whole
    episode, including steps taken in earlier calls), in the same env-major order as the steps"""
    episode_costs: np.ndarray
    """[E] float64"""
    episode_lengths: np.ndarray
    """[E] int64"""
    num_steps: int
    """N, the number of transitions"""


@dataclass
class _Episode:
    """The episode an env is in the middle of, with what an exact resume needs."""

    episode_seed: int
    observation: np.ndarray
    actions: list[np.ndarray] = field(default_factory=list)
    episode_return: float = 0.0
    episode_cost: float = 0.0
    length: int = 0


@dataclass
class _Segment:
    """One env's transitions and finished episodes during one ``collect`` call."""

    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    next_observations: list[np.ndarray] = field(default_factory=list)
    terminals: list[bool] = field(default_factory=list)
    timeouts: list[bool] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    episode_costs: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


def env_seed(seed: int, env_index: int, stream: int = 0) -> int:
    """The seed of env ``env_index``: independent across indices and streams."""
    seed_sequence = np.random.SeedSequence(seed, spawn_key=(stream, env_index))
    return int(seed_sequence.generate_state(1, np.uint32)[0])


class Collector:
    """``num_envs`` copies of ``task`` stepped together in this process."""

    def __init__(self, task: Task | str, num_envs: int, seed: int, *, stream: int = 0):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.task = get_task(task)
        self.num_envs = num_envs
        self.envs: list[SeededEnv] = [make_env(self.task, env_seed(seed, i, stream))
                                      for i in range(num_envs)]
        space = self.envs[0].action_space
        self._action_low = space.low.astype(np.float32)
        self._action_high = space.high.astype(np.float32)
        self._episodes: list[_Episode | None] = [None] * num_envs
        # The policy's input batch, updated in place: row i is env i's latest observation.
        self._policy_input = np.zeros((num_envs, self.task.obs_dim), np.float32)
        self.total_steps = 0
        """Env steps taken by all envs since creation (restored by ``load_state_dict``)."""
        self.total_episodes = 0
        """Episodes finished by all envs since creation."""

    @property
    def in_episode(self) -> list[bool]:
        """For each env, whether it is mid-episode (its next step continues that episode)."""
        return [episode is not None for episode in self._episodes]

    # ----------------------------------------------------------------------------------- collect
    def collect(self, policy: Policy, *, num_episodes: int | None = None,
                num_steps: int | None = None) -> Rollout:
        """Step the envs with ``policy`` for ``num_steps`` env steps or ``num_episodes`` episodes.

        In episode mode, envs that are mid-episode when the call starts finish their episode and
        it counts; if more of them are mid-episode than ``num_episodes``, all are still finished.
        """
        if (num_episodes is None) == (num_steps is None):
            raise ValueError("give exactly one of num_episodes and num_steps")
        segments = [_Segment() for _ in range(self.num_envs)]
        if num_steps is not None:
            remaining = num_steps
            while remaining > 0:
                active = list(range(min(self.num_envs, remaining)))
                self._step(policy, active, segments)
                remaining -= len(active)
        else:
            started = sum(episode is not None for episode in self._episodes)
            while True:
                active = []
                for i, episode in enumerate(self._episodes):
                    if episode is None:  # at a boundary: start another episode only if needed
                        if started >= num_episodes:
                            continue
                        started += 1
                    active.append(i)
                if not active:
                    break
                self._step(policy, active, segments)
        return self._to_rollout(segments)

    def evaluate(self, policy: Policy,
                 num_episodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run ``num_episodes`` whole episodes; return their (returns, costs, lengths)."""
        if any(episode is not None for episode in self._episodes):
            raise ValueError("evaluate() needs every env at an episode boundary; evaluate with a "
                             "Collector of its own (as evaluate_policy does)")
        rollout = self.collect(policy, num_episodes=num_episodes)
        return rollout.episode_returns, rollout.episode_costs, rollout.episode_lengths

    def _step(self, policy: Policy, active: list[int], segments: list[_Segment]) -> None:
        """One policy call for all envs, then one step of each env in ``active``.

        Idle envs are given their last observation (zeros before their first episode) so the
        policy always sees a [num_envs, obs_dim] batch and a jitted policy never recompiles;
        their actions are discarded.
        """
        for i in active:
            if self._episodes[i] is None:
                observation, _ = self.envs[i].reset()
                self._episodes[i] = _Episode(self.envs[i].episode_seed, observation)
                self._policy_input[i] = observation
        actions = np.asarray(policy(self._policy_input.copy()), dtype=np.float32)
        if actions.shape != (self.num_envs, self.task.act_dim):
            raise ValueError(f"policy returned actions of shape {actions.shape}, expected "
                             f"{(self.num_envs, self.task.act_dim)}")
        # np.clip is several times slower on small arrays; NaN propagates, so the check sees it.
        actions = np.minimum(np.maximum(actions, self._action_low), self._action_high)
        if not np.isfinite(actions).all() and not np.isfinite(actions[active]).all():
            from o2o.errors import DivergedError

            raise DivergedError("the policy returned non-finite actions (NaN or inf): its parameters are not finite")

        for i in active:
            episode, segment, action = self._episodes[i], segments[i], actions[i]
            next_observation, reward, terminated, truncated, info = self.envs[i].step(action)
            cost = info["cost"]
            segment.observations.append(episode.observation)
            segment.actions.append(action)
            segment.rewards.append(reward)
            segment.costs.append(cost)
            segment.next_observations.append(next_observation)
            segment.terminals.append(terminated)
            segment.timeouts.append(truncated and not terminated)
            episode.actions.append(action)
            episode.episode_return += reward
            episode.episode_cost += cost
            episode.length += 1
            episode.observation = next_observation
            self._policy_input[i] = next_observation
            self.total_steps += 1
            if terminated or truncated:
                segment.episode_returns.append(episode.episode_return)
                segment.episode_costs.append(episode.episode_cost)
                segment.episode_lengths.append(episode.length)
                self._episodes[i] = None
                self.total_episodes += 1

    def _to_rollout(self, segments: list[_Segment]) -> Rollout:
        def joined(name: str, dtype: type, width: int | None = None) -> np.ndarray:
            rows = [row for segment in segments for row in getattr(segment, name)]
            if not rows:
                return np.zeros((0,) if width is None else (0, width), dtype)
            return np.stack(rows).astype(dtype, copy=False) if width else np.array(rows, dtype)

        observations = joined("observations", np.float32, self.task.obs_dim)
        return Rollout(
            observations=observations,
            actions=joined("actions", np.float32, self.task.act_dim),
            rewards=joined("rewards", np.float32),
            costs=joined("costs", np.float32),
            next_observations=joined("next_observations", np.float32, self.task.obs_dim),
            terminals=joined("terminals", bool),
            timeouts=joined("timeouts", bool),
            episode_returns=joined("episode_returns", np.float64),
            episode_costs=joined("episode_costs", np.float64),
            episode_lengths=joined("episode_lengths", np.int64),
            num_steps=len(observations),
        )

    # ------------------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this collector is (JSON-serialisable).

        For an env mid-episode this is the episode seed and the actions taken so far: replaying
        them rebuilds the simulator state bit for bit, which no simulator snapshot API offers for
        both PyBullet and MuJoCo.
        """
        envs = []
        for env, episode in zip(self.envs, self._episodes):
            entry: dict[str, Any] = {"rng": env.get_state(), "episode": None}
            if episode is not None:
                entry["episode"] = {
                    "episode_seed": episode.episode_seed,
                    "actions": [action.tolist() for action in episode.actions],
                    "episode_return": episode.episode_return,
                    "episode_cost": episode.episode_cost,
                    "length": episode.length,
                }
            envs.append(entry)
        return {"task": self.task.name, "num_envs": self.num_envs, "total_steps": self.total_steps,
                "total_episodes": self.total_episodes, "envs": envs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``: generators, counters, and mid-episode envs by replay."""
        if state["task"] != self.task.name or state["num_envs"] != self.num_envs:
            raise RunDirError(
                f"collector state is for {state['task']} with {state['num_envs']} envs, but this "
                f"collector runs {self.task.name} with {self.num_envs}; resume with the run's own "
                f"task and num_envs")
        for i, (env, entry) in enumerate(zip(self.envs, state["envs"])):
            env.set_state(entry["rng"])
            self._episodes[i] = None
            if entry["episode"] is not None:
                self._episodes[i] = self._replay(i, entry["episode"])
                self._policy_input[i] = self._episodes[i].observation
        self.total_steps = state["total_steps"]
        self.total_episodes = state["total_episodes"]

    def _replay(self, env_index: int, recorded: dict[str, Any]) -> _Episode:
        """Re-create env ``env_index``'s mid-episode state from its seed and recorded actions."""
        env = self.envs[env_index]
        observation, _ = env.reset_episode(recorded["episode_seed"])
        episode = _Episode(env.episode_seed, observation)
        ended = False
        for action in recorded["actions"]:
            action = np.asarray(action, dtype=np.float32)
            observation, reward, terminated, truncated, info = env.step(action)
            episode.actions.append(action)
            episode.episode_return += reward
            episode.episode_cost += info["cost"]
            episode.length += 1
            episode.observation = observation
            ended = ended or terminated or truncated
        expected = (recorded["episode_return"], recorded["episode_cost"], recorded["length"])
        if ended or (episode.episode_return, episode.episode_cost, episode.length) != expected:
            raise RunDirError(
                f"replaying env {env_index}'s episode of {self.task.env_id} did not reproduce the "
                f"recorded return/cost/length {expected}; the simulator behaves differently from "
                f"the run that saved this state (other package versions?); resume with the same "
                f"versions or start a fresh run")
        return episode

    # ---------------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Close every env (disconnects the PyBullet clients)."""
        for env in self.envs:
            env.close()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate_policy(task: Task | str, policy: Policy, num_episodes: int, seed: int,
                    num_envs: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``num_episodes`` episodes of ``policy`` on fresh envs; return (returns, costs, lengths).

    The envs use the evaluation seed stream, so they never repeat the episodes of a training
    ``Collector`` built with the same ``seed``. ``num_envs`` (the policy's batch size) defaults to
    one env per episode, at most 10. To evaluate often during training, keep a
    ``Collector(task, num_envs, seed, stream=EVAL_STREAM)`` and call its ``evaluate``: creating
    envs costs up to 0.4 s each (Drone).
    """
    num_envs = num_envs or max(1, min(num_episodes, 10))
    with Collector(task, num_envs, seed, stream=EVAL_STREAM) as collector:
        return collector.evaluate(policy, num_episodes)
