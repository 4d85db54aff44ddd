"""TD3: the critic target against a hand-computed case, the delayed actor and target updates, a TD3+BC
checkpoint loading into online TD3, exploration, learning Pendulum, and an exactly resumed run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.serialization import from_state_dict, to_state_dict
from flax.training.train_state import TrainState
from procs import run_online_optimised

from o2o.agents import get_online_agent, td3, td3bc
from o2o.loops.online import policy_step, policy_step_kwargs, run_online
from o2o.presets import resolve_train_config
from o2o.runs import read_metrics_csv


def _linear_actor(params, obs):
    return params["k"] * obs[:, :1]


def _two_linear_critics(params, obs, act):
    """Q_1 = w1 a + s, Q_2 = w2 a + c2 (1-d action and observation)."""
    q1 = params["w1"] * act[:, 0] + obs[:, 0]
    q2 = params["w2"] * act[:, 0] + params["c2"]
    return jnp.stack([q1, q2])


def _hand_state(**cfg) -> td3.TD3State:
    """Online and target networks differ, so using the wrong ones changes the numbers."""
    tx = optax.sgd(0.1)
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return td3.TD3State(
        actor=TrainState.create(apply_fn=_linear_actor, params={"k": f(0.9)}, tx=tx),
        target_actor_params={"k": f(0.3)},
        critic=TrainState.create(apply_fn=_two_linear_critics, params={"w1": f(-5.0), "w2": f(7.0), "c2": f(0.0)}, tx=tx),
        target_critic_params={"w1": f(2.0), "w2": f(1.0), "c2": f(1.5)},
        step=jnp.zeros((), jnp.int32),
        config=td3.TD3Config(**cfg),
    )


HAND_BATCH = {
    "observations": jnp.zeros((3, 1)),
    "actions": jnp.zeros((3, 1)),
    "next_observations": jnp.array([[1.0], [2.0], [4.0]]),
    "rewards": jnp.array([1.0, 0.5, -1.0]),
    "terminals": jnp.array([0.0, 1.0, 0.0]),
    "timeouts": jnp.array([1.0, 0.0, 0.0]),  # a timeout must not cut the bootstrap
}


def test_critic_target_by_hand():
    state = _hand_state(gamma=0.9, reward_scale=2.0, policy_noise=0.0)
    # a' = clip(0.3 s') = [0.3, 0.6, 1.0 (from 1.2)]; Qbar_1 = 2a' + s' = [1.6, 3.2, 6.0];
    # Qbar_2 = a' + 1.5 = [1.8, 2.1, 2.5]; min = [1.6, 2.1, 2.5]
    # y = 2 r + 0.9 (1 - terminal) min = [2 + 1.44, 1 + 0, -2 + 2.25]
    y = td3.critic_target(state, HAND_BATCH, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(y), [3.44, 1.0, 0.25], rtol=1e-6)


def test_critic_target_smoothing_noise_by_hand():
    state = _hand_state(gamma=0.9, reward_scale=2.0, policy_noise=0.4, noise_clip=0.5)
    key = jax.random.PRNGKey(3)
    noise = np.clip(0.4 * np.asarray(jax.random.normal(key, (3, 1))), -0.5, 0.5)[:, 0]
    a = np.clip(np.array([0.3, 0.6, 1.2]) + noise, -1.0, 1.0)
    s = np.array([1.0, 2.0, 4.0])
    next_q = np.minimum(2.0 * a + s, a + 1.5)
    expected = 2.0 * np.array([1.0, 0.5, -1.0]) + 0.9 * np.array([1.0, 0.0, 1.0]) * next_q
    y = td3.critic_target(state, HAND_BATCH, key)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6)
    assert np.any(np.abs(noise) > 0.05)  # the case really has noise in it


def test_actor_loss_is_minus_first_critic_at_pi():
    state = _hand_state()
    batch = {"observations": jnp.array([[1.0], [-2.0]])}
    # pi(s) = 0.9 s; Q_1(s, pi(s)) = -5 (0.9 s) + s = -3.5 s -> loss = -mean = 3.5 mean(s) = -1.75
    loss, _ = td3.td3_actor_loss(state.actor.params, state, batch)
    assert float(loss) == pytest.approx(-1.75)
    # d loss / dk = -mean(w1 s) = 5 mean(s) (the gradient flows through pi into the online critic)
    grad = jax.grad(lambda p: td3.td3_actor_loss(p, state, batch)[0])(state.actor.params)
    assert float(grad["k"]) == pytest.approx(-2.5)


def _leaves_changed(a, b) -> bool:
    return not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_actor_and_targets_update_every_second_step_only():
    state = td3.init(jax.random.PRNGKey(0), 3, 2, td3.TD3Config(hidden_dims=(8,), policy_delay=2))
    rng = np.random.default_rng(0)
    batch = {
        "observations": jnp.asarray(rng.normal(size=(16, 3)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, (16, 2)), jnp.float32),
        "rewards": jnp.asarray(rng.normal(size=16), jnp.float32),
        "next_observations": jnp.asarray(rng.normal(size=(16, 3)), jnp.float32),
        "terminals": jnp.zeros(16),
        "timeouts": jnp.zeros(16),
    }
    update = jax.jit(td3.update)
    history = [jax.tree_util.tree_map(np.asarray, state)]
    for i in range(5):
        state, _ = update(state, batch, jax.random.PRNGKey(i))
        history.append(jax.tree_util.tree_map(np.asarray, state))
    pairs = list(zip(history[:-1], history[1:]))
    assert [_leaves_changed(a.actor.params, b.actor.params) for a, b in pairs] == [True, False, True, False, True]
    assert [_leaves_changed(a.target_actor_params, b.target_actor_params) for a, b in pairs] == [True, False, True, False, True]
    assert [_leaves_changed(a.target_critic_params, b.target_critic_params) for a, b in pairs] == [True, False, True, False, True]
    assert all(_leaves_changed(a.critic.params, b.critic.params) for a, b in pairs)  # the critics every step
    assert int(state.step) == 5


def test_td3bc_state_loads_into_online_td3():
    """Same state layout: an offline TD3+BC checkpoint (its state dict) restores into an online TD3 state."""
    offline = td3bc.init(jax.random.PRNGKey(1), 4, 2, td3bc.TD3BCConfig(hidden_dims=(16, 16)))
    template = td3.init(jax.random.PRNGKey(2), 4, 2, td3.TD3Config(hidden_dims=(16, 16)))
    online = from_state_dict(template, jax.device_get(to_state_dict(offline)))
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(td3.act(online, obs, None, True)), np.asarray(td3bc.act(offline, obs, None, True)))
    assert online.config == td3.TD3Config(hidden_dims=(16, 16))


def test_exploration_noise_through_the_online_policy_step():
    spec = get_online_agent("td3")
    cfg = td3.TD3Config(hidden_dims=(8,), exploration_noise=0.1)
    state = td3.init(jax.random.PRNGKey(0), 3, 2, cfg)
    obs = jnp.zeros((4000, 3))
    kwargs = policy_step_kwargs(spec.module, cfg)
    mode = np.asarray(policy_step(state.actor, obs, jax.random.PRNGKey(0), 0, deterministic=True, **kwargs))
    noisy = np.asarray(policy_step(state.actor, obs, jax.random.PRNGKey(0), 1, **kwargs))
    assert np.all(np.abs(noisy) <= 1.0)
    assert np.std(noisy - mode) == pytest.approx(0.1, rel=0.05)
    np.testing.assert_array_equal(mode, np.asarray(state.actor.apply_fn(state.actor.params, obs)))


def pendulum_overrides(**extra) -> list[str]:
    return [
        "agent.hidden_dims=[64, 64]",
        "agent.actor_lr=1e-3",
        "agent.critic_lr=1e-3",
        "online.episodes_per_iteration=null",
        "online.steps_per_iteration=200",
        "online.updates_per_iteration=200",
        "online.warmup_steps=1000",
        "online.update_after=1000",
        "online.eval_episodes=5",
    ] + [f"{k}={v}" for k, v in extra.items()]


def test_td3_learns_pendulum(tmp_path):
    """Random Pendulum policies score about -1250; TD3 should reach well above -500 in 6k steps."""
    overrides = pendulum_overrides(**{"online.iterations": 30, "online.eval_every": 30, "online.checkpoint_every": 30})
    summary = run_online_optimised("td3", "Pendulum", 0, overrides, tmp_path / "run")
    assert summary["env_steps"] == 6000
    assert summary["final_eval_return"] > -500, summary


def test_resumed_td3_run_equals_uninterrupted(tmp_path):
    # 150 steps per iteration with 2 envs leaves Pendulum's 200-step episodes mid-way at the checkpoint
    overrides = [
        "agent.hidden_dims=[32, 32]",
        "agent.batch_size=64",
        "online.iterations=4",
        "online.episodes_per_iteration=null",
        "online.steps_per_iteration=150",
        "online.num_envs=2",
        "online.updates_per_iteration=21",  # odd: the delay counter must carry over the checkpoint
        "online.warmup_steps=100",
        "online.update_after=100",
        "online.eval_every=2",
        "online.eval_episodes=2",
        "online.checkpoint_every=2",
    ]
    cfg = resolve_train_config("td3", "Pendulum", 3, overrides=overrides)
    full = run_online(cfg, tmp_path / "full", progress=False)
    half = resolve_train_config("td3", "Pendulum", 3, overrides=overrides + ["online.iterations=2"])
    run_online(half, tmp_path / "resumed", progress=False)
    (tmp_path / "resumed" / "config.yaml").write_text((tmp_path / "full" / "config.yaml").read_text())
    resumed = run_online(cfg, tmp_path / "resumed", resume=True, progress=False)

    a = read_metrics_csv(tmp_path / "full" / "metrics.csv")
    b = read_metrics_csv(tmp_path / "resumed" / "metrics.csv")
    assert set(a) == set(b)
    for k in a:
        if not k.startswith("perf/"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("env_steps", "updates", "final_eval_return"):
        assert full[k] == resumed[k], k
