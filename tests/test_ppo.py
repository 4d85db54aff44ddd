"""PPO: GAE with a timeout vs a termination against hand-computed numbers (alone and through the loop's
rollout layout), the clipped surrogate and value losses by hand, reward scaling and running statistics,
the Gaussian policy's log-probability, entropy and clipped samples by hand, an IQL actor initialising PPO, learning-rate annealing,
learning Pendulum, and an exactly resumed run."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

from o2o.agents import get_online_agent, iql, ppo
from o2o.errors import ConfigError
from o2o.loops.online import make_trainer, run_online
from o2o.runconfig import train_config_class
from o2o.loops.onpolicy import OnPolicyTrainer
from o2o.nn import gaussian_entropy, gaussian_log_prob
from o2o.presets import resolve_train_config
from o2o.runs import read_metrics_csv

# ------------------------------------------------------------------------------------ advantages

# One env, 4 steps; gamma 0.9, lambda 0.8. V(s'_t) = V(s_{t+1}) inside an episode; at t = 1 the episode
# ends and s'_1 is its last observation (V 2.5), s_2 the next episode's first; the segment ends
# mid-episode after t = 3 (bootstrap V(s'_3) = 3).
R = jnp.array([1.0, 2.0, 3.0, 4.0])
V = jnp.array([0.5, 1.0, 1.5, 2.0])
V_NEXT = jnp.array([1.0, 2.5, 2.0, 3.0])


def test_gae_timeout_bootstraps_by_hand():
    timeouts = jnp.array([0.0, 1.0, 0.0, 0.0])
    adv, ret = ppo.gae(R, V, V_NEXT, jnp.zeros(4), timeouts, gamma=0.9, lam=0.8)
    # delta = r + 0.9 V(s') - V(s) = [1.4, 3.25, 3.3, 4.7]
    # A_3 = 4.7 (segment end); A_2 = 3.3 + 0.72 * 4.7; A_1 = 3.25 (episode end); A_0 = 1.4 + 0.72 * 3.25
    np.testing.assert_allclose(np.asarray(adv), [3.74, 3.25, 6.684, 4.7], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret), [4.24, 4.25, 8.184, 6.7], rtol=1e-6)


def test_gae_termination_does_not_bootstrap_by_hand():
    terminals = jnp.array([0.0, 1.0, 0.0, 0.0])
    adv, ret = ppo.gae(R, V, V_NEXT, terminals, terminals, gamma=0.9, lam=0.8)
    # delta_1 = 2 - 1.0 = 1.0 (no V(s'_1)); A_0 = 1.4 + 0.72 * 1.0
    np.testing.assert_allclose(np.asarray(adv), [2.12, 1.0, 6.684, 4.7], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret), [2.62, 2.0, 8.184, 6.7], rtol=1e-6)


def test_gae_batched_rows_are_independent():
    terminals = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # row 0: the timeout case, row 1: termination
    ends = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    adv, _ = ppo.gae(jnp.stack([R, R]), jnp.stack([V, V]), jnp.stack([V_NEXT, V_NEXT]), terminals, ends, 0.9, 0.8)
    np.testing.assert_allclose(np.asarray(adv), [[3.74, 3.25, 6.684, 4.7], [2.12, 1.0, 6.684, 4.7]], rtol=1e-6)


def _hand_state(**cfg) -> ppo.PPOState:
    """A PPO state whose value function is V(s) = 10 s_0 (so values are known), no normalisation."""
    cfg = ppo.PPOConfig(hidden_dims=(8,), normalize_observations=False, scale_rewards=False, **cfg)
    state = ppo.init(jax.random.PRNGKey(0), 2, 1, cfg)
    value = TrainState.create(apply_fn=lambda p, obs: p["w"] * obs[..., 0], params={"w": jnp.float32(10.0)}, tx=optax.sgd(0.0))
    return state.replace(value=value)


def test_prepare_batch_from_the_collector_layout_by_hand():
    """Two envs x 4 steps: env 0 has the timeout at t = 1, env 1 a termination there."""
    state = _hand_state(gamma=0.9, gae_lambda=0.8)
    obs = jnp.zeros((2, 4, 2)).at[..., 0].set(V / 10.0)
    next_obs = jnp.zeros((2, 4, 2)).at[..., 0].set(V_NEXT / 10.0)
    flags = jnp.array([0.0, 1.0, 0.0, 0.0], bool)
    u = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 1)), jnp.float32)
    rollout = {
        "observations": obs,
        "next_observations": next_obs,
        "raw_actions": u,
        "rewards": jnp.stack([R, R]),
        "terminals": jnp.stack([jnp.zeros(4, bool), flags]),
        "timeouts": jnp.stack([flags, jnp.zeros(4, bool)]),
    }
    _, batch, _, _ = jax.jit(ppo.prepare_batch)(state, rollout, jnp.zeros(2))
    # flattened env-major, like the collector's rollout
    np.testing.assert_allclose(np.asarray(batch["advantages"]), [3.74, 3.25, 6.684, 4.7, 2.12, 1.0, 6.684, 4.7], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(batch["returns"]), [4.24, 4.25, 8.184, 6.7, 2.62, 2.0, 8.184, 6.7], rtol=1e-5)
    # pi_old is the current policy: log-probabilities of the recorded samples, so the first ratio is 1
    mean, log_std = state.actor.apply_fn(state.actor.params, obs.reshape(8, 2))
    np.testing.assert_allclose(np.asarray(batch["log_probs"]), np.asarray(gaussian_log_prob(u.reshape(8, 1), mean, log_std)), rtol=1e-5)


# ------------------------------------------------------------------------------------ losses


def test_clipped_surrogate_by_hand():
    ratios = jnp.array([1.5, 0.5, 1.5, 0.5, 1.1])
    advantages = jnp.array([1.0, 1.0, -1.0, -1.0, 2.0])
    old = jnp.array([-1.0, 0.3, 2.0, -4.0, 0.0])
    loss, info = ppo.clipped_surrogate_loss(old + jnp.log(ratios), old, advantages, 0.2)
    # per sample -min(rho A, clip(rho) A): -1.2 (clipped gain), -0.5, 1.5 (unclipped loss), 0.8 (clipped), -2.2
    assert float(loss) == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8 - 2.2) / 5, rel=1e-5)
    assert float(info["clip_fraction"]) == pytest.approx(0.8)
    kl = np.mean([(r - 1) - math.log(r) for r in [1.5, 0.5, 1.5, 0.5, 1.1]])
    assert float(info["approx_kl"]) == pytest.approx(kl, rel=1e-5)
    # gradient: zero where the clip is active and the objective cannot improve further
    grad = jax.grad(lambda lp: ppo.clipped_surrogate_loss(lp, old, advantages, 0.2)[0])(old + jnp.log(ratios))
    np.testing.assert_allclose(np.asarray(grad), [0.0, -0.5 / 5, 1.5 / 5, 0.0, -2.2 / 5], rtol=1e-5, atol=1e-7)


def test_value_loss_by_hand():
    values, old, returns = jnp.array([1.0, 3.0]), jnp.array([0.0, 2.9]), jnp.array([2.0, 0.0])
    # unclipped: 1/2 mean(1, 9) = 2.5; clipped: V_clip = [0.2, 3.0] -> max((1, 9), (3.24, 9)) -> 1/2 mean(3.24, 9) = 3.06
    assert float(ppo.value_loss(values, old, returns, None)) == pytest.approx(2.5)
    assert float(ppo.value_loss(values, old, returns, 0.2)) == pytest.approx(3.06, rel=1e-6)


def test_discounted_return_trace_restarts_at_episode_ends():
    rewards = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    ends = jnp.array([[False, True, False, False]])
    trace, carry = ppo.discounted_return_trace(rewards, ends, 0.5, jnp.array([8.0]))
    # G_0 = 0.5 * 8 + 1 = 5; G_1 = 2.5 + 2 = 4.5 (episode ends); G_2 = 3; G_3 = 1.5 + 4 = 5.5
    np.testing.assert_allclose(np.asarray(trace), [[5.0, 4.5, 3.0, 5.5]])
    np.testing.assert_allclose(np.asarray(carry), [5.5])


def test_running_stats_equal_the_moments_of_everything_seen():
    rng = np.random.default_rng(0)
    a, b = rng.normal(2.0, 3.0, (50, 3)), rng.normal(-1.0, 0.5, (70, 3))
    stats = ppo.running_stats_update(ppo.running_stats_update(ppo.running_stats_init((3,)), jnp.asarray(a)), jnp.asarray(b))
    both = np.concatenate([a, b])
    np.testing.assert_allclose(np.asarray(stats.mean), both.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), both.var(0), rtol=1e-4)


def test_gaussian_policy_log_prob_entropy_and_clipped_samples_by_hand():
    mean, log_std = jnp.array([[0.3, -1.0]]), jnp.array([[-0.5, 0.2]])
    u = jnp.array([[0.7, -2.0]])
    # log N(u; m, s) = sum_i -(u_i - m_i)^2 / (2 s_i^2) - log s_i - log(2 pi) / 2, the sample unclipped
    by_hand = sum(
        -((ui - mi) ** 2) / (2.0 * math.exp(2.0 * li)) - li - 0.5 * math.log(2.0 * math.pi)
        for ui, mi, li in [(0.7, 0.3, -0.5), (-2.0, -1.0, 0.2)]
    )
    assert float(gaussian_log_prob(u, mean, log_std)[0]) == pytest.approx(by_hand, rel=1e-5)
    assert float(gaussian_entropy(log_std)[0]) == pytest.approx(-0.5 + 0.2 + math.log(2.0 * math.pi * math.e), rel=1e-5)
    # acting: the executed action is the sample clipped to [-1, 1]; the rollout keeps the sample itself
    cfg = ppo.PPOConfig(hidden_dims=(8,), init_log_std=1.0, normalize_observations=False)
    policy = ppo.policy_of(ppo.init(jax.random.PRNGKey(0), 3, 2, cfg))
    actions, raw = ppo.sample_actions(policy, jnp.zeros((256, 3)), jax.random.PRNGKey(1))
    assert float(jnp.abs(raw).max()) > 1.5 and float(jnp.abs(actions).max()) <= 1.0
    np.testing.assert_array_equal(np.asarray(actions), np.clip(np.asarray(raw), -1.0, 1.0))


# ------------------------------------------------------------------------------------ state


def test_initial_log_std_and_an_iql_actor_loading_into_ppo():
    cfg = ppo.PPOConfig(hidden_dims=(16, 16), init_log_std=-0.5)
    state = ppo.init(jax.random.PRNGKey(0), 3, 2, cfg)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
    _, log_std = state.actor.apply_fn(state.actor.params, obs)
    np.testing.assert_allclose(np.asarray(log_std), -0.5)  # state-independent: exactly the initial value
    # O2PPO: the IQL actor is the same module, so its parameters are PPO's actor parameters as they are
    offline = iql.init(jax.random.PRNGKey(1), 3, 2, iql.IQLConfig(hidden_dims=(16, 16)))
    state = state.replace(actor=state.actor.replace(params=offline.actor.params))
    np.testing.assert_allclose(
        np.asarray(ppo.act(state, obs, None, True)), np.asarray(iql.act(offline, obs, None, True)), rtol=1e-5, atol=1e-6
    )


def test_learning_rate_annealing_is_set_by_the_host():
    state = ppo.init(jax.random.PRNGKey(0), 2, 1, ppo.PPOConfig(hidden_dims=(8,), value_hidden_dims=(8,), minibatch_size=4, num_epochs=1))
    batch = {
        "observations": jnp.ones((8, 2)), "raw_actions": jnp.zeros((8, 1)), "log_probs": jnp.zeros(8),
        "values": jnp.zeros(8), "advantages": jnp.arange(8.0), "returns": jnp.ones(8),
    }
    new, metrics = jax.jit(ppo.update)(state, batch, jax.random.PRNGKey(0), 0.25)
    assert float(new.actor.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.25 * 3e-4)
    assert float(new.value.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.25 * 3e-4)
    assert int(new.actor.step) == 2 and np.isfinite(float(metrics["policy_loss"]))
    fixed = ppo.init(jax.random.PRNGKey(0), 2, 1, ppo.PPOConfig(hidden_dims=(8,), value_hidden_dims=(8,), minibatch_size=4, num_epochs=1, anneal_lr=False))
    fixed, _ = jax.jit(ppo.update)(fixed, batch, jax.random.PRNGKey(0), 0.25)
    assert float(fixed.actor.opt_state.hyperparams["learning_rate"]) == pytest.approx(3e-4)


def test_ppo_config_and_dispatch():
    assert get_online_agent("ppo").on_policy
    cls = train_config_class("ppo")
    assert {"algo", "task", "seed", "agent", "online"} == {f for f in cls.__dataclass_fields__}
    cfg = resolve_train_config("ppo", "Pendulum", 0)
    assert cfg.agent.minibatch_size == 64 and cfg.online.steps_per_iteration == 2048
    assert isinstance(make_trainer(cfg, progress=False), OnPolicyTrainer)
    with pytest.raises(ConfigError, match="minibatch_size"):
        make_trainer(resolve_train_config("ppo", "Pendulum", 0, overrides=["agent.minibatch_size=100"]))
    with pytest.raises(ConfigError, match="multiple of online.num_envs"):
        make_trainer(resolve_train_config("ppo", "Pendulum", 0, overrides=["online.num_envs=3"]))


# ------------------------------------------------------------------------------------ the loop


def test_ppo_learns_pendulum(tmp_path):
    """Random Pendulum policies score about -1250; PPO (gamma 0.9 as RL-Zoo's Pendulum settings) reaches
    better than -700 in 60k env steps (about -220 on this seed)."""
    overrides = [
        "agent.gamma=0.9",
        "agent.actor_lr=1e-3",
        "agent.value_lr=1e-3",
        "agent.anneal_lr=false",
        "agent.minibatch_size=128",
        "online.iterations=15",
        "online.steps_per_iteration=4096",
        "online.num_envs=4",
        "online.eval_every=15",
        "online.checkpoint_every=15",
    ]
    summary = run_online(resolve_train_config("ppo", "Pendulum", 0, overrides=overrides), tmp_path / "run", progress=False)
    assert summary["env_steps"] == 61440
    assert summary["final_eval_return"] > -700, summary


def test_resumed_ppo_run_equals_uninterrupted(tmp_path):
    # 2 envs x 75 steps per iteration leaves Pendulum's 200-step episodes mid-way at the checkpoint
    overrides = [
        "agent.hidden_dims=[16, 16]",
        "agent.value_hidden_dims=[16, 16]",
        "agent.minibatch_size=50",
        "agent.num_epochs=2",
        "online.iterations=4",
        "online.steps_per_iteration=150",
        "online.num_envs=2",
        "online.eval_every=2",
        "online.eval_episodes=2",
        "online.checkpoint_every=2",
    ]
    cfg = resolve_train_config("ppo", "Pendulum", 3, overrides=overrides)
    full = run_online(cfg, tmp_path / "full", progress=False)

    class Interrupted(Exception):
        pass

    def interrupt_in_iteration_3(trainer, metrics):
        if trainer.counters["iteration"] == 3:  # after the checkpoint of iteration 2, before row 3 is written
            raise Interrupted

    # the same config (the learning rate anneals over all 4 iterations), stopped part-way
    with pytest.raises(Interrupted):
        run_online(cfg, tmp_path / "resumed", progress=False, after_iteration=interrupt_in_iteration_3)
    resumed = run_online(cfg, tmp_path / "resumed", resume=True, progress=False)

    a = read_metrics_csv(tmp_path / "full" / "metrics.csv")
    b = read_metrics_csv(tmp_path / "resumed" / "metrics.csv")
    assert set(a) == set(b)
    for k in a:
        if not k.startswith("perf/"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("env_steps", "updates", "final_eval_return"):
        assert full[k] == resumed[k], k
