"""Tests of o2o.envs: registry against the real envs, reproducible seeding, collection, resume,
scores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from o2o.envs import (Collector, evaluate_policy, get_task, is_safe, list_tasks, make_env,
                      normalized_cost, normalized_return)
from o2o.envs.collector import EVAL_STREAM
from o2o.errors import O2OError, RunDirError, UnknownTaskError


def global_rng_fingerprint() -> tuple:
    state = np.random.get_state()
    return state[1].tobytes(), state[2], state[3], state[4]


def random_policy(act_dim: int, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return lambda obs: scale * rng.uniform(-1.0, 1.0, (obs.shape[0], act_dim))


def run_episode(env, actions: np.ndarray, episode_seed: int | None = None) -> np.ndarray:
    """Observations of one episode (or its first len(actions) steps) under fixed actions."""
    obs, _ = env.reset() if episode_seed is None else env.reset_episode(episode_seed)
    trajectory = [obs]
    for action in actions:
        obs, _, terminated, truncated, _ = env.step(action)
        trajectory.append(obs)
        if terminated or truncated:
            break
    return np.array(trajectory)


# ------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("task", list_tasks(), ids=lambda t: t.name)
def test_registry_matches_real_env(task):
    env = make_env(task, seed=0)
    try:
        assert env.spec.max_episode_steps == task.horizon
        assert env.observation_space.shape == (task.obs_dim,)
        assert env.observation_space.dtype == np.float32
        assert env.action_space.shape == (task.act_dim,)
        before = global_rng_fingerprint()
        obs, info = env.reset()
        assert global_rng_fingerprint() == before
        assert obs.dtype == np.float32 and obs.shape == (task.obs_dim,)
        assert isinstance(info["episode_seed"], int)
        rng = np.random.default_rng(0)
        for _ in range(20):
            # SeededEnv swaps the global RNG only around a Bullet reset: check no step draws.
            before = global_rng_fingerprint()
            obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, task.act_dim))
            assert global_rng_fingerprint() == before
            assert obs.dtype == np.float32 and isinstance(reward, float)
            assert type(info["cost"]) is float
            assert info["cost"] in (0.0, 1.0) if task.safe else info["cost"] == 0.0
            if terminated or truncated:
                env.reset()
    finally:
        env.close()
    assert (task.cost_limit == 20.0) == task.safe == (task.family == "bullet")
    assert task.ref_source == {"bullet": "DSRL", "mujoco": "D4RL", "classic": "none"}[task.family]


def test_get_task_accepts_names_and_env_ids_in_any_case():
    assert get_task("hopper") is get_task("Hopper-v4") is get_task("HOPPER")
    assert get_task("SafetyBallCircle-v0").name == "BallCircle"
    assert get_task("ballcircle").env_id == "SafetyBallCircle-v0"
    assert get_task(get_task("Pendulum")).horizon == 200
    assert len(list_tasks()) == 13


def test_unknown_task_names_the_known_ones():
    with pytest.raises(UnknownTaskError, match=r"unknown task 'Foo'; known tasks: .*BallCircle"):
        get_task("Foo")
    assert issubclass(UnknownTaskError, O2OError)


def test_importing_o2o_envs_does_not_import_simulators():
    code = ("import sys, o2o.envs; o2o.envs.get_task('hopper'); "
            "print(sorted(m for m in ('gymnasium', 'pybullet', 'mujoco') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("name", ["BallCircle", "CarRun"])
def test_same_seed_gives_same_episode_whatever_came_before(name):
    task = get_task(name)
    actions = np.random.default_rng(1).uniform(-1, 1, (40, task.act_dim)).astype(np.float32)
    env_a, env_b = make_env(task, seed=3), make_env(task, seed=3)
    np.random.seed(123)  # BSG would draw spawns from here without the wrapper
    first = run_episode(env_a, actions)
    np.random.seed(456)
    assert np.array_equal(first, run_episode(env_b, actions))
    # Replaying the episode seed after other episodes (different motor commands, on CarRun
    # PyBullet's restoreState keeps them) still gives the same episode.
    run_episode(env_a, -actions)
    assert np.array_equal(first, run_episode(env_a, actions, episode_seed=env_b.episode_seed))
    # A different seed gives a different start, and successive episodes differ too.
    other_seed = make_env(task, seed=4)
    assert not np.array_equal(first[0], run_episode(other_seed, actions[:1])[0])
    assert not np.array_equal(first[0], run_episode(env_b, actions[:1])[0])
    for env in (env_a, env_b, other_seed):
        env.close()


def test_envs_in_one_process_do_not_share_the_global_rng():
    task = get_task("BallCircle")
    actions = np.random.default_rng(2).uniform(-1, 1, (30, task.act_dim)).astype(np.float32)

    def alone(seed: int) -> list[np.ndarray]:
        env = make_env(task, seed)
        episodes = [run_episode(env, actions) for _ in range(3)]
        env.close()
        return episodes

    # The second env also swaps the global RNG around every step: that must change nothing.
    expected = [alone(10), alone(11)]
    envs = [make_env(task, 10), make_env(task, 11, isolate_step_rng=True)]
    caller = global_rng_fingerprint()
    interleaved: list[list[list[np.ndarray]]] = [[], []]
    for _ in range(3):
        obs = [env.reset()[0] for env in envs]
        for i in range(2):
            interleaved[i].append([obs[i]])
        for action in actions:
            for i, env in enumerate(envs):
                interleaved[i][-1].append(env.step(action)[0])
    assert global_rng_fingerprint() == caller
    for i in range(2):
        for episode, reference in zip(interleaved[i], expected[i]):
            assert np.array_equal(np.array(episode), reference)


def test_wrapper_rng_state_resumes_the_episode_seed_sequence():
    env = make_env("Pendulum", seed=0)
    env.reset()
    state = json.loads(json.dumps(env.get_state()))
    seeds = [env.reset()[1]["episode_seed"] for _ in range(3)]
    other = make_env("Pendulum", seed=99)
    other.set_state(state)
    assert [other.reset()[1]["episode_seed"] for _ in range(3)] == seeds
    env.reset(seed=0)  # an explicit seed re-seeds the generator
    assert env.reset()[1]["episode_seed"] == seeds[0]


# ----------------------------------------------------------------------------------- collector
def test_a_replaced_time_limit_lets_an_episode_run_past_the_task_horizon():
    task = get_task("Pendulum")
    env = make_env(task, 0, max_episode_steps=task.horizon + 7)
    env.reset()
    ends = [env.step(np.zeros(1, np.float32))[3] for _ in range(task.horizon + 7)]
    assert not any(ends[:-1]) and ends[-1]  # truncated at the new limit, not at the task's
    env.close()


def test_monte_carlo_values_continue_past_the_time_limit_unless_told_to_end_there():
    """o2o diagnose-critic: a pair 5 steps before the time limit gets the whole horizon of steps by
    default (the value a critic bootstrapping through time limits estimates), 5 with to_episode_end."""
    from o2o.experiments.diagnose import _monte_carlo, tail_horizon

    assert tail_horizon(0.99) == 688 and 0.99**688 < 1e-3 <= 0.99**687
    task = get_task("Pendulum")
    env = make_env(task, 3)
    _, info = env.reset()
    env.close()
    prefix = np.zeros((task.horizon - 5, 1), np.float32)
    calls = []

    def policy(obs):
        calls.append(len(obs))
        return np.zeros((len(obs), 1), np.float32)

    args = (task, info["episode_seed"], prefix, np.zeros(1, np.float32), policy, 2, 40, 1.0, 1.0)
    ended, _ = _monte_carlo(*args, past_time_limit=False)
    assert len(calls) == 4 and ended.shape == (2,)  # the pair's step, then pi0 for the 4 left
    calls.clear()
    past, _ = _monte_carlo(*args, past_time_limit=True)
    assert len(calls) == 39 and np.all(past < ended)  # 40 steps of Pendulum's negative rewards
    np.testing.assert_allclose(ended, ended[0])  # same actions, same state: the rollouts agree


def test_collector_envs_start_differently():
    with Collector("BallCircle", num_envs=3, seed=0) as collector:
        rollout = collector.collect(random_policy(2), num_steps=3)
    first = rollout.observations  # env-major, one step each: the three initial observations
    assert len({row.tobytes() for row in first}) == 3
    with Collector("Pendulum", 2, seed=0) as train, \
            Collector("Pendulum", 2, seed=0, stream=EVAL_STREAM) as evaluation:
        policy = random_policy(1)
        assert not np.array_equal(train.collect(policy, num_steps=2).observations,
                                  evaluation.collect(policy, num_steps=2).observations)


def check_episode_structure(rollout, horizon: int) -> None:
    """Each episode is contiguous, with next_obs[t] == obs[t+1] inside it and its stats right."""
    ends = np.flatnonzero(rollout.terminals | rollout.timeouts)
    assert len(ends) == len(rollout.episode_lengths)
    starts = np.concatenate([[0], ends[:-1] + 1])
    assert np.array_equal(ends - starts + 1, rollout.episode_lengths)
    for start, end, ret, cost in zip(starts, ends, rollout.episode_returns, rollout.episode_costs):
        assert np.array_equal(rollout.next_observations[start:end],
                              rollout.observations[start + 1:end + 1])
        assert ret == pytest.approx(rollout.rewards[start:end + 1].sum(dtype=np.float64), rel=1e-5)
        assert cost == rollout.costs[start:end + 1].sum()
    assert not (rollout.terminals & rollout.timeouts).any()
    assert np.array_equal(rollout.timeouts, np.isin(np.arange(rollout.num_steps), ends)
                          & ~rollout.terminals)
    assert (rollout.episode_lengths[rollout.timeouts[ends]] == horizon).all()


def test_episode_mode_finishes_every_started_episode():
    with Collector("BallRun", num_envs=3, seed=1) as collector:
        rollout = collector.collect(random_policy(2), num_episodes=4)
        assert collector.in_episode == [False, False, False]
        assert collector.total_episodes == 4 and collector.total_steps == rollout.num_steps
    # The Ball never dies: every episode is cut by the time limit, none is a termination.
    assert np.array_equal(rollout.episode_lengths, [100] * 4) and rollout.num_steps == 400
    assert not rollout.terminals.any() and rollout.timeouts.sum() == 4
    assert rollout.observations.dtype == rollout.actions.dtype == rollout.costs.dtype == np.float32
    check_episode_structure(rollout, horizon=100)


def test_terminations_are_terminals_not_timeouts():
    with Collector("Hopper", num_envs=2, seed=0) as collector:
        rollout = collector.collect(random_policy(3), num_episodes=3)
    assert len(rollout.episode_lengths) == 3
    assert (rollout.episode_lengths < 1000).all()  # a random Hopper falls
    assert rollout.terminals.sum() == 3 and not rollout.timeouts.any()
    assert not rollout.costs.any()
    check_episode_structure(rollout, horizon=1000)


def test_steps_mode_takes_exactly_num_steps_and_continues_episodes():
    with Collector("BallCircle", num_envs=3, seed=2) as collector:
        policy = random_policy(2)
        first = collector.collect(policy, num_steps=7)
        assert first.num_steps == 7 and len(first.episode_lengths) == 0
        assert collector.in_episode == [True, True, True]
        second = collector.collect(policy, num_steps=600)
        assert second.num_steps == 600 and collector.total_steps == 607
    # Each env took >= 202 steps in all, so each finished one whole 200-step episode.
    assert np.array_equal(second.episode_lengths, [200, 200, 200])
    assert second.timeouts.sum() == 3


def test_normalised_actions_map_onto_the_env_bounds():
    env = make_env("Pendulum", 0)
    assert env.action_space.low.tolist() == [-1.0] and env.action_space.high.tolist() == [1.0]
    env.reset()
    env.step(np.array([0.5], np.float32))
    assert env.unwrapped.last_u == pytest.approx(1.0)  # 0.5 in [-1, 1] is 1.0 torque in [-2, 2]


def test_actions_are_clipped_and_the_executed_action_is_stored():
    with Collector("Pendulum", num_envs=2, seed=0) as collector:  # agents act in [-1, 1] (env: [-2, 2])
        rollout = collector.collect(random_policy(1, scale=10.0), num_steps=50)
        assert np.abs(rollout.actions).max() == 1.0
        assert set(np.unique(np.abs(rollout.actions))) >= {1.0}
        with pytest.raises(ValueError, match="shape"):
            collector.collect(lambda obs: np.zeros((1, 1)), num_steps=1)


@pytest.mark.parametrize("name", ["BallCircle", "Hopper"])
def test_resumed_collection_equals_uninterrupted(name):
    task = get_task(name)

    def policy(obs: np.ndarray) -> np.ndarray:  # deterministic in obs, so both runs see the same
        weights = np.linspace(-1.0, 1.0, task.obs_dim * task.act_dim).reshape(task.obs_dim, -1)
        return np.tanh(3.0 * obs @ weights) + 0.3 * np.sin(100.0 * obs[:, :task.act_dim])

    with Collector(task, num_envs=2, seed=5) as original:
        original.collect(policy, num_steps=150)
        assert any(original.in_episode)
        state = json.loads(json.dumps(original.state_dict()))
        uninterrupted = original.collect(policy, num_steps=300)
    assert len(uninterrupted.episode_lengths) >= 2  # new episodes start after the resume point
    with Collector(task, num_envs=2, seed=999) as resumed:  # the seed is overwritten by the state
        resumed.load_state_dict(state)
        replayed = resumed.collect(policy, num_steps=300)
        assert resumed.total_steps == 450
    for field in ("observations", "actions", "rewards", "costs", "next_observations",
                  "terminals", "timeouts", "episode_returns", "episode_costs", "episode_lengths"):
        assert np.array_equal(getattr(uninterrupted, field), getattr(replayed, field)), field

    with Collector(task, num_envs=1, seed=0) as wrong:
        with pytest.raises(RunDirError, match="num_envs"):
            wrong.load_state_dict(state)


def test_evaluate_policy_is_reproducible_and_runs_whole_episodes():
    returns, costs, lengths = evaluate_policy("Pendulum", random_policy(1), num_episodes=3, seed=0,
                                              num_envs=2)
    assert np.array_equal(lengths, [200, 200, 200]) and not costs.any()
    again = evaluate_policy("Pendulum", random_policy(1), num_episodes=3, seed=0, num_envs=2)
    assert np.array_equal(returns, again[0])


# -------------------------------------------------------------------------------------- scores
def test_normalized_return_dsrl_and_d4rl():
    # BallCircle (DSRL): R_min 0.3831, R_max 881.4634; the midpoint is 440.92325.
    assert normalized_return("BallCircle", 440.92325) == pytest.approx(0.5)
    assert normalized_return("BallCircle", 0.3831) == pytest.approx(0.0)
    # Hopper (D4RL): -20.272305 -> 0, 3234.3 -> 100, (3234.3 - 20.272305) / 2 -> 50.
    scores = normalized_return("hopper", np.array([-20.272305, 3234.3, 1607.0138475]))
    assert isinstance(scores, np.ndarray)
    assert scores == pytest.approx([0.0, 100.0, 50.0])
    assert isinstance(normalized_return("Hopper", 3234.3), float)


def test_normalized_cost_and_safety():
    assert normalized_cost(10, 20.0) == 0.5
    assert normalized_cost(0, 0.0) == 1.0  # eps = 1 when kappa = 0
    assert normalized_cost(3, 0.0) == 4.0
    assert is_safe(20, 20.0) is True and is_safe(21, 20.0) is False
    assert is_safe(0, 0.0) is True and is_safe(1, 0.0) is False
    assert np.array_equal(is_safe(np.array([5.0, 20.0, 25.0]), 20.0), [True, True, False])
    assert normalized_cost(np.array([0.0, 40.0]), 20.0) == pytest.approx([0.0, 2.0])
