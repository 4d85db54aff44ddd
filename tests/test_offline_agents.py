"""Offline agents: each loss against a hand-computed case, the terminal-vs-timeout rule in every critic
target, CPQ's OOD cost term really moving the cost critic, and every algorithm learning a small task.

The learning tasks are cheap contextual bandits: s ~ U(-1, 1)^2, the best action is t(s) = tanh(W s),
r = 1 - ||a - t(s)||^2 / 2, data from a noisy-good behaviour policy (t(s) + N(0, 0.3^2), 20% uniform).
A uniform random policy scores about 0.27. The safe variant adds c = 1[a_0 > 0.5]; t_0(s) > 0.5 for
about a third of the states, so the safe answer differs from the unconstrained one (which pays cost
in ~0.32 of the states; a random policy in 0.25). CPQ learns about cost only through its reward
bootstrap cut, so its task has a second step: the costly action leads to a state that costs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.agents import OFFLINE_AGENTS, bc, bear_lag, cpq, cql, get_offline_agent, iql, td3bc
from o2o.agents.common import adam, make_update_many
from o2o.config import config_help
from o2o.data import Dataset
from o2o.data.replay import replay_from_dataset, replay_sample
from o2o.errors import ConfigError, DatasetError
from o2o.nn import CriticEnsemble
from o2o.nn.vae import gaussian_kl, vae_kl, vae_train_state, vae_update

# ------------------------------------------------------------------------------------ tiny tasks

W = np.array([[1.5, 0.5], [-0.5, 1.5]], np.float32)


def best_action(s):
    return np.tanh(s[:, :2] @ W.T)


def reward_fn(s, a):
    return 1.0 - 0.5 * ((a - best_action(s)) ** 2).sum(-1)


def cost_fn(a):
    return (a[:, 0] > 0.5).astype(np.float32)


def behaviour(rng, s):
    a = np.clip(best_action(s) + 0.3 * rng.standard_normal((len(s), 2)), -1.0, 1.0)
    uniform = rng.random(len(s)) < 0.2
    a[uniform] = rng.uniform(-1.0, 1.0, (int(uniform.sum()), 2))
    return a.astype(np.float32)


def bandit_dataset(n=3000, seed=0) -> Dataset:
    """One-step episodes (every step terminal)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)
    a = behaviour(rng, s)
    return Dataset(
        observations=s,
        actions=a,
        rewards=reward_fn(s, a),
        costs=cost_fn(a),
        next_observations=rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32),
        terminals=np.ones(n, bool),
        timeouts=np.zeros(n, bool),
    )


def two_step_dataset(n_episodes=1500, seed=0) -> Dataset:
    """Two-step episodes for CPQ, whose cost signal acts through the reward bootstrap: observations are
    (s, danger); the first step is the bandit above at danger = 0, an action with a_0 > 0.5 leads to a
    danger = 1 state whose step costs 1 (a state cost, as Bullet-Safety-Gym's); the second step is a
    fresh bandit; then the episode ends."""
    rng = np.random.default_rng(seed)
    s1, s2, s3 = (rng.uniform(-1.0, 1.0, (n_episodes, 2)).astype(np.float32) for _ in range(3))
    a1, a2 = behaviour(rng, s1), behaviour(rng, s2)
    danger = cost_fn(a1)
    zeros = np.zeros(n_episodes, np.float32)
    o1 = np.column_stack([s1, zeros])
    o2 = np.column_stack([s2, danger])
    o3 = np.column_stack([s3, zeros])

    def interleave(first, second):
        return np.stack([first, second], axis=1).reshape((2 * n_episodes,) + first.shape[1:])

    return Dataset(
        observations=interleave(o1, o2),
        actions=interleave(a1, a2),
        rewards=interleave(reward_fn(s1, a1), reward_fn(s2, a2)),
        costs=interleave(zeros, danger),
        next_observations=interleave(o2, o3),
        terminals=interleave(np.zeros(n_episodes, bool), np.ones(n_episodes, bool)),
        timeouts=np.zeros(2 * n_episodes, bool),
    )


def replay_dataset_dict(ds: Dataset) -> dict:
    return {k: np.asarray(v, np.float32) for k, v in ds.as_dict().items()}


EVAL_STATES = np.random.default_rng(123).uniform(-1.0, 1.0, (2000, 2)).astype(np.float32)
RANDOM_REWARD = float(reward_fn(EVAL_STATES, np.random.default_rng(7).uniform(-1, 1, (2000, 2))).mean())


@functools.cache
def update_many_for(module, batch_size: int):
    """One jitted K-step function per (algorithm, batch size), so runs with equal shapes share a compile."""
    return make_update_many(module.update, functools.partial(replay_sample, batch_size=batch_size))


def train(name: str, dataset: Dataset, steps: int, capacity: int | None = None, **overrides):
    spec = get_offline_agent(name)
    cfg = spec.config_cls(**overrides)
    buffer = replay_from_dataset(dataset, capacity=capacity)
    state = spec.module.init(jax.random.PRNGKey(0), dataset.obs_dim, dataset.act_dim, cfg)
    state, metrics = update_many_for(spec.module, cfg.batch_size)(state, buffer, jax.random.PRNGKey(1), {}, steps)
    return spec, state, metrics


def evaluate(spec, state, observations=EVAL_STATES):
    """(mean reward, mean cost) of the deterministic policy on the evaluation states' first step."""
    a = np.asarray(spec.module.act(state, jnp.asarray(observations), jax.random.PRNGKey(0), deterministic=True))
    assert np.all(np.abs(a) <= 1.0)
    return float(reward_fn(observations, a).mean()), float(cost_fn(a).mean())


SMALL = dict(hidden_dims=(32, 32), batch_size=128)
SMALL_VAE = dict(vae_hidden_dims=(32, 32), vae_lr=3e-3, reward_scale=1.0)


# ------------------------------------------------------------------------------------ registry and configs


def test_offline_registry_and_configs_document_every_field():
    assert set(OFFLINE_AGENTS) == {"bc", "bc-safe", "cql", "iql", "td3bc", "cpq", "bear-lag"}
    for name, spec in OFFLINE_AGENTS.items():
        rows = config_help(spec.config_cls)
        assert rows and all(row[3] for row in rows), name  # every field has a help text
        for fn in ("init", "update", "act", "actor_actions"):
            assert callable(getattr(spec.module, fn)), (name, fn)
    assert OFFLINE_AGENTS["bc-safe"].filter_safe_episodes and not OFFLINE_AGENTS["bc"].filter_safe_episodes
    with pytest.raises(ConfigError, match="unknown offline algorithm"):
        get_offline_agent("cql-typo")
    with pytest.raises(ConfigError):
        cpq.CPQConfig(horizon=0)
    with pytest.raises(ConfigError):
        cql.CQLConfig(init_temperature=0.0)  # auto temperature is learned in log space


# ------------------------------------------------------------------------------------ losses, by hand


def test_iql_expectile_and_awr_weights():
    # |0.7 - 0| * 1^2 and |0.7 - 1| * (-2)^2, averaged
    assert float(iql.expectile_loss(jnp.array([1.0, -2.0]), 0.7)) == pytest.approx((0.7 * 1 + 0.3 * 4) / 2)
    # tau = 0.5 is half the mean squared error
    assert float(iql.expectile_loss(jnp.array([1.0, -3.0]), 0.5)) == pytest.approx(0.5 * (1 + 9) / 2)
    w = iql.awr_weights(jnp.array([0.0, 1.0, 10.0]), beta=3.0, max_weight=100.0)
    np.testing.assert_allclose(np.asarray(w), [1.0, math.exp(3.0), 100.0], rtol=1e-6)


def test_iql_actor_is_corls_gaussian_with_a_state_independent_std():
    """CORL's / OCR-CFT's GaussianPolicy: mean tanh(f(s)), one log std for every state, the AWR loss on
    the Gaussian density of the dataset action itself; acting takes the mean or a clipped sample."""
    state = iql.init(jax.random.PRNGKey(0), 3, 2, iql.IQLConfig(hidden_dims=(8,)))
    params = state.actor.params["params"]
    assert set(params) == {"MLP_0", "Dense_0", "log_std"} and params["log_std"].shape == (2,)
    log_std_value = jnp.array([-0.3, 0.4])
    actor_params = {"params": {**params, "log_std": log_std_value}}
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    mean, log_std = state.actor.apply_fn(actor_params, obs)
    np.testing.assert_allclose(np.asarray(log_std), np.broadcast_to(np.asarray(log_std_value), (4, 2)))
    assert float(jnp.abs(mean).max()) < 1.0
    actions = jnp.array([[0.9, -0.9], [0.0, 0.5], [-1.0, 1.0], [0.2, 0.2]])
    weights = jnp.array([1.0, 2.0, 0.5, 3.0])
    loss, _ = iql.awr_actor_loss(actor_params, state.actor.apply_fn, obs, actions, weights)
    z = (np.asarray(actions) - np.asarray(mean)) / np.exp(np.asarray(log_std_value))
    log_prob = (-0.5 * z**2 - np.asarray(log_std_value) - 0.5 * math.log(2.0 * math.pi)).sum(-1)
    assert float(loss) == pytest.approx(float(-(np.asarray(weights) * log_prob).mean()), rel=1e-5)
    state = state.replace(actor=state.actor.replace(params=actor_params))
    np.testing.assert_allclose(np.asarray(iql.act(state, obs, None, True)), np.asarray(mean), rtol=1e-6)
    sampled = np.asarray(iql.act(state, jnp.zeros((512, 3)), jax.random.PRNGKey(1), False))
    assert np.abs(sampled).max() <= 1.0 and (np.abs(sampled) == 1.0).any()  # std e^0.4: some samples clipped


def test_td3bc_lambda_and_target_smoothing():
    # lambda = alpha / mean|Q| = 2.5 / 2
    assert float(td3bc.q_weight(jnp.array([1.0, -3.0]), 2.5)) == pytest.approx(1.25)
    # the normaliser carries no gradient: d/dq [lambda(q) * sum q] = lambda
    grad = jax.grad(lambda q: td3bc.q_weight(q, 2.5) * q.sum())(jnp.array([1.0, -3.0]))
    np.testing.assert_allclose(np.asarray(grad), [1.25, 1.25])
    a = jnp.array([[0.9, -0.95, 0.0]] * 2000)
    smoothed = np.asarray(td3bc.smoothed_target_actions(a, jax.random.PRNGKey(0), 0.2, 0.5))
    assert np.all(np.abs(smoothed) <= 1.0)
    assert np.all(np.abs(smoothed[:, 2]) <= 0.5) and np.abs(smoothed[:, 2]).max() > 0.45  # noise clipped at 0.5


def test_td3bc_policy_delay_updates_actor_every_second_step():
    cfg = td3bc.TD3BCConfig(hidden_dims=(8,), policy_delay=2)
    state = td3bc.init(jax.random.PRNGKey(0), 2, 2, cfg)
    batch = {k: jnp.asarray(v[:16]) for k, v in replay_dataset_dict(bandit_dataset(64)).items()}
    update = jax.jit(td3bc.update)
    history = [state]
    for i in range(4):
        state, _ = update(state, batch, jax.random.PRNGKey(i))
        history.append(state)
    leaves = [jax.tree_util.tree_leaves(s.actor.params) for s in history]
    changed = [not all(np.array_equal(x, y) for x, y in zip(a, b)) for a, b in zip(leaves[:-1], leaves[1:])]
    assert changed == [True, False, True, False]  # steps 0 and 2 update the actor, 1 and 3 skip it
    assert int(state.step) == 4


def test_bc_log_likelihood_by_hand():
    zeros = lambda params, obs: (jnp.zeros((obs.shape[0], 2)), jnp.zeros((obs.shape[0], 2)))  # noqa: E731
    obs = jnp.zeros((1, 3))
    # a = 0: log N(0; 0, 1) per dimension, tanh Jacobian 1 -> loss = log(2 pi)
    loss, _ = bc.bc_loss(None, zeros, obs, jnp.zeros((1, 2)))
    assert float(loss) == pytest.approx(math.log(2 * math.pi), rel=1e-5)
    # a = tanh(1): log N(1; 0, 1) - log(1 - tanh(1)^2) per dimension
    per_dim = -0.5 - 0.5 * math.log(2 * math.pi) - math.log(1 - math.tanh(1.0) ** 2)
    loss, _ = bc.bc_loss(None, zeros, obs, jnp.full((1, 2), math.tanh(1.0)))
    assert float(loss) == pytest.approx(-2 * per_dim, rel=1e-4)


def test_filter_safe_trajectories():
    ds = Dataset(
        observations=np.zeros((6, 1)), actions=np.zeros((6, 1)), rewards=np.arange(6.0),
        costs=np.array([0, 0, 3, 4, 30, 0]), next_observations=np.zeros((6, 1)),
        terminals=np.array([0, 1, 0, 1, 0, 0], bool), timeouts=np.array([0, 0, 0, 0, 0, 1], bool),
    )  # episodes: costs 0, 7, 30
    safe = bc.filter_safe_trajectories(ds, cost_limit=7.0)
    np.testing.assert_array_equal(safe.episode_costs(), [0.0, 7.0])
    np.testing.assert_array_equal(safe.rewards, [0, 1, 2, 3])
    with pytest.raises(DatasetError, match="no episode"):
        bc.filter_safe_trajectories(ds, cost_limit=-1.0)


def test_cql_logsumexp_on_a_constant_critic():
    k, b, n, c = 2, 3, 4, 0.7
    q = jnp.full((k, b, n), c)
    q_data = jnp.full((k, b), c)
    log_pi_cur, log_pi_next = jnp.full((b, n), -1.0), jnp.full((b, n), -2.0)
    # plain: 3n + 1 equal terms
    lse = cql.cql_logsumexp(q, q, q, q_data, log_pi_cur, log_pi_next, act_dim=2, importance_sample=False)
    np.testing.assert_allclose(np.asarray(cql.cql_gap(q_data, lse)), math.log(3 * n + 1), rtol=1e-5)
    # importance sampled: n terms each of c - 2 log 0.5, c + 2, c + 1 (data action left out)
    lse = cql.cql_logsumexp(q, q, q, q_data, log_pi_cur, log_pi_next, act_dim=2, importance_sample=True)
    expected = math.log(n * (math.exp(2 * math.log(2)) + math.exp(2.0) + math.exp(1.0)))
    np.testing.assert_allclose(np.asarray(cql.cql_gap(q_data, lse)), expected, rtol=1e-5)
    # temperature: temp * logsumexp(q / temp) of equal terms = c + temp * log(count)
    lse = cql.cql_logsumexp(q, q, q, q_data, log_pi_cur, log_pi_next, 2, False, temp=0.5)
    np.testing.assert_allclose(np.asarray(lse), c + 0.5 * math.log(3 * n + 1), rtol=1e-5)
    assert float(cql.cql_gap(q_data, lse + 5.0, clip_max=1.0).mean()) == pytest.approx(1.0)


def test_cql_alpha_prime_rises_while_the_gap_exceeds_its_target():
    cfg = cql.CQLConfig(cql_lagrange=True, cql_target_action_gap=5.0, cql_alpha=2.0)
    params = {"log_alpha_prime": jnp.asarray(1.0)}
    # loss = -e^1 * 2 * mean(gap - 5); d/dlog_alpha' = -e * 2 * (mean gap - 5)
    for gap, sign in ((jnp.array([7.0, 9.0]), -1.0), (jnp.array([1.0, 2.0]), 1.0)):
        assert float(cql.alpha_prime_loss(params, gap, cfg)) == pytest.approx(-math.e * 2.0 * (float(gap.mean()) - 5.0), rel=1e-5)
        grad = float(jax.grad(cql.alpha_prime_loss)(params, gap, cfg)["log_alpha_prime"])
        assert np.sign(grad) == sign  # descent raises alpha' when the gap is too large, lowers it otherwise


def test_cpq_threshold_and_bootstrap_cut():
    gamma, horizon, kappa = 0.99, 300, 20.0
    assert cpq.cost_threshold(kappa, horizon, gamma) == pytest.approx(kappa * (1 - 0.99**300) / (0.01 * 300))
    assert cpq.cost_threshold(kappa, horizon, gamma) == pytest.approx(6.33973, rel=1e-5)
    assert cpq.cost_threshold(kappa, horizon, 1.0) == kappa  # undiscounted: the limit itself
    assert cpq.cost_threshold(0.3, 1, 0.9) == pytest.approx(0.3)  # one step: kappa
    y = cpq.constraint_penalized_target(
        rewards=jnp.array([1.0, 1.0, 1.0, 1.0]),
        terminals=jnp.array([0.0, 0.0, 1.0, 0.0]),
        next_q=jnp.full(4, 10.0),
        next_qc=jnp.array([0.5, 2.0, 0.5, 1.0]),
        threshold=1.0,
        gamma=0.9,
        reward_scale=2.0,
    )
    # safe next action: bootstrap; unsafe: cut; terminal: cut; exactly at the threshold counts as safe
    np.testing.assert_allclose(np.asarray(y), [2 + 9, 2, 2, 2 + 9])


def _random_batch(n: int, obs_dim: int, act_dim: int) -> dict:
    """A batch with rewards in [-3, 7] and 0/1 costs, no terminals (the clip_targets tests)."""
    rng = np.random.default_rng(0)
    return {
        "observations": jnp.asarray(rng.standard_normal((n, obs_dim)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, (n, act_dim)), jnp.float32),
        "rewards": jnp.asarray(rng.uniform(-3, 7, n), jnp.float32),
        "costs": jnp.asarray(rng.integers(0, 2, n), jnp.float32),
        "next_observations": jnp.asarray(rng.standard_normal((n, obs_dim)), jnp.float32),
        "terminals": jnp.zeros(n, jnp.float32),
    }


def test_cpq_clipped_targets_stay_in_the_range_of_a_discounted_sum():
    assert cpq.value_bounds((0.0, 1.0), 0.99) == pytest.approx((0.0, 100.0))
    assert cpq.value_bounds((-3.0, 7.0), 0.99, 0.1) == pytest.approx((-30.0, 70.0))
    assert cpq.value_bounds((0.5, 2.0), 0.9) == pytest.approx((0.5, 20.0))  # one step's minimum: a cut bootstrap
    obs_dim, act_dim = 3, 2
    batch = _random_batch(64, obs_dim, act_dim)
    cfg = cpq.CPQConfig(hidden_dims=(16, 16), vae_hidden_dims=(16, 16), clip_targets=True, reward_range=(-3.0, 7.0),
                        cost_range=(0.0, 1.0))
    state = cpq.init(jax.random.PRNGKey(0), obs_dim, act_dim, cfg)
    # diverged critics: targets far outside what a discounted sum of the data's values can be
    blow_up = functools.partial(jax.tree_util.tree_map, lambda x: 300.0 * x)
    state = state.replace(target_critic_params=blow_up(state.target_critic_params),
                          target_cost_critic_params=blow_up(state.target_cost_critic_params))
    key = jax.random.PRNGKey(1)
    loose = state.replace(config=cpq.CPQConfig(**{**cfg.__dict__, "clip_targets": False}))
    yc, yc_loose = cpq.cost_critic_target(state, batch, key), cpq.cost_critic_target(loose, batch, key)
    y, y_loose = cpq.reward_critic_target(state, batch, key), cpq.reward_critic_target(loose, batch, key)
    assert float(jnp.abs(yc_loose).max()) > 100 and float(jnp.abs(y_loose).max()) > 70  # the case is a real one
    assert float(yc.min()) >= 0.0 and float(yc.max()) <= 100.0 + 1e-4
    assert float(y.min()) >= -30.0 - 1e-4 and float(y.max()) <= 70.0 + 1e-4
    inside = (yc_loose >= 0) & (yc_loose <= 100)  # targets already in range are untouched
    np.testing.assert_allclose(np.asarray(yc)[np.asarray(inside)], np.asarray(yc_loose)[np.asarray(inside)])


def _cpq_with_cost_values(cost_fn):
    """A small CPQ state (l = 6.34 at kappa 20, T 300) whose cost critic says ``cost_fn(params, obs, actions)``
    ([2, B]), and a random batch: the actor-loss tests."""
    batch = _random_batch(32, 3, 2)
    cfg = cpq.CPQConfig(hidden_dims=(16, 16), vae_hidden_dims=(16, 16))
    state = cpq.init(jax.random.PRNGKey(0), 3, 2, cfg)
    return batch, cfg, state.replace(cost_critic=state.cost_critic.replace(apply_fn=cost_fn))


def test_bear_lag_clipped_targets_stay_in_the_range_of_a_discounted_sum():
    obs_dim, act_dim = 3, 2
    batch = _random_batch(64, obs_dim, act_dim)
    cfg = bear_lag.BEARLagConfig(hidden_dims=(16, 16), vae_hidden_dims=(16, 16), clip_targets=True,
                                 reward_range=(-3.0, 7.0), cost_range=(0.0, 1.0))
    state = bear_lag.init(jax.random.PRNGKey(0), obs_dim, act_dim, cfg)
    # diverged critics: targets far outside what a discounted sum of the data's values can be, the cost
    # critic's far below 0 among them (what BEAR-Lag's did on BallCircle)
    blow_up = functools.partial(jax.tree_util.tree_map, lambda x: 300.0 * x)
    state = state.replace(target_critic_params=blow_up(state.target_critic_params),
                          target_cost_critic_params=blow_up(state.target_cost_critic_params))
    key = jax.random.PRNGKey(1)
    loose = state.replace(config=bear_lag.BEARLagConfig(**{**cfg.__dict__, "clip_targets": False}))
    (y, yc), (y_loose, yc_loose) = bear_lag.critic_targets(state, batch, key), bear_lag.critic_targets(loose, batch, key)
    assert float(yc_loose.min()) < -100 and float(jnp.abs(y_loose).max()) > 70  # the case is a real one
    assert float(yc.min()) >= 0.0 and float(yc.max()) <= 100.0 + 1e-4  # 0/1 costs, gamma 0.99
    assert float(y.min()) >= -30.0 - 1e-4 and float(y.max()) <= 70.0 + 1e-4  # reward scale 0.1
    inside = np.asarray((y_loose >= -30) & (y_loose <= 70))
    np.testing.assert_allclose(np.asarray(y)[inside], np.asarray(y_loose)[inside])
    with pytest.raises(ConfigError, match="reward_range and cost_range"):
        bear_lag.critic_targets(state.replace(config=bear_lag.BEARLagConfig(hidden_dims=(16, 16), clip_targets=True)), batch, key)


def test_cpq_ood_term_raises_the_cost_critic_on_policy_actions():
    batch = {k: jnp.asarray(v) for k, v in replay_dataset_dict(bandit_dataset(128)).items()}
    target_qc = batch["costs"]
    cost_critic = CriticEnsemble((16,), num_critics=2)
    params = cost_critic.init(jax.random.PRNGKey(0), batch["observations"], batch["actions"])
    apply_fn = cost_critic.apply
    actions = jax.random.uniform(jax.random.PRNGKey(3), (128, 10, 2), minval=-1.0, maxval=1.0)  # "policy" samples
    pairs = (jnp.repeat(batch["observations"], 10, axis=0), actions.reshape(-1, 2))  # (state, action) pairs
    mask = jnp.ones((128 * 10,))

    @jax.jit
    def grads(weight):
        return jax.grad(lambda p: cpq.cost_critic_loss(p, apply_fn, batch, target_qc, *pairs, mask, weight)[0])(params)

    g0, g1 = grads(0.0), grads(1.0)
    difference = sum(float(jnp.abs(a - b).sum()) for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)))
    assert difference > 1e-3  # the OOD term reaches the online cost critic (OSRL's version has no gradient)

    @jax.jit
    def ood_qc(p):
        return cql.q_many(apply_fn, p, batch["observations"], actions).mean()

    def ood_qc_after_sgd_step(g):
        return float(ood_qc(jax.tree_util.tree_map(lambda p, d: p - 1e-2 * d, params, g)))

    before = float(ood_qc(params))
    assert ood_qc_after_sgd_step(g1) > ood_qc_after_sgd_step(g0)
    assert ood_qc_after_sgd_step(g1) - before > ood_qc_after_sgd_step(g0) - before + 1e-4


def test_cpq_reward_cql_term_against_a_hand_computed_case():
    """Two critics Q_i(s, a) = v_i . a on one state: the loss is the Bellman error plus alpha_r times the
    importance-sampled log-sum-exp minus Q(data), summed over critics, computed here with numpy."""
    v = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)

    def apply_fn(params, obs, act):
        return (params["v"] @ act.T) + 0.0 * obs.sum(-1)  # [K, rows]

    obs, data_action, target = jnp.zeros((1, 3)), jnp.asarray([[0.2, -0.4]]), jnp.asarray([0.3])
    samples = {
        "random_actions": jnp.asarray([[[0.5, 0.5], [-1.0, 0.0]]]),
        "current_actions": jnp.asarray([[[0.1, 0.9], [0.0, -0.5]]]),
        "current_log_probs": jnp.asarray([[-1.0, 0.5]]),
        "next_actions": jnp.asarray([[[0.3, -0.2], [-0.6, 0.6]]]),
        "next_log_probs": jnp.asarray([[0.2, -0.3]]),
    }
    loss, _ = cpq.conservative_critic_loss({"v": jnp.asarray(v)}, apply_fn, obs, data_action, target, samples, 2.0)
    expected = 0.0
    for vi in v:
        q_data = float(vi @ np.array([0.2, -0.4]))
        parts = [vi @ np.array(a) - 2 * math.log(0.5) for a in ([0.5, 0.5], [-1.0, 0.0])]
        parts += [vi @ np.array(a) - lp for a, lp in (([0.3, -0.2], 0.2), ([-0.6, 0.6], -0.3))]
        parts += [vi @ np.array(a) - lp for a, lp in (([0.1, 0.9], -1.0), ([0.0, -0.5], 0.5))]
        lse = math.log(sum(math.exp(p) for p in parts))
        expected += (q_data - 0.3) ** 2 + 2.0 * (lse - q_data)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    plain, _ = cpq.critic_loss({"v": jnp.asarray(v)}, apply_fn, obs, data_action, target)
    zero, _ = cpq.conservative_critic_loss({"v": jnp.asarray(v)}, apply_fn, obs, data_action, target, samples, 0.0)
    assert float(zero) == pytest.approx(float(plain))
    # the plain log-sum-exp: the samples' values as they are, with the data action among them
    no_is, _ = cpq.conservative_critic_loss({"v": jnp.asarray(v)}, apply_fn, obs, data_action, target, samples, 2.0, False)
    expected = 0.0
    for vi in v:
        q_data = float(vi @ np.array([0.2, -0.4]))
        actions = ([0.5, 0.5], [-1.0, 0.0], [0.2, -0.4], [0.3, -0.2], [-0.6, 0.6], [0.1, 0.9], [0.0, -0.5])
        lse = math.log(sum(math.exp(vi @ np.array(a)) for a in actions))
        expected += (q_data - 0.3) ** 2 + 2.0 * (lse - q_data)
    assert float(no_is) == pytest.approx(expected, rel=1e-5)


def test_cpq_reward_cql_option_lowers_reward_values_off_the_data_and_leaves_the_cost_critic():
    data = bandit_dataset(256)
    batch = {k: jnp.asarray(v) for k, v in replay_dataset_dict(data).items()}
    batch["next_observations"] = batch["observations"]
    base = dict(hidden_dims=(32, 32), vae_hidden_dims=(16, 16), batch_size=256, actor_lr=3e-4)
    states = {alpha: cpq.init(jax.random.PRNGKey(0), 2, 2, cpq.CPQConfig(**base, reward_cql_alpha=alpha)) for alpha in (0.0, 1.0)}
    keys = jax.random.split(jax.random.PRNGKey(1), 50)
    after_one = {}
    for alpha, state in states.items():
        step = jax.jit(cpq.update)
        after_one[alpha], _ = step(state, batch, keys[0])
        for key in keys:
            state, _ = step(state, batch, key)
        states[alpha] = state
    # one update: the cost critic, VAE and OOD weight are the same with and without the option (to float32
    # rounding: the two configurations are two compiled programs, whose fusions may round differently)
    def untouched(state):
        return jax.tree_util.tree_leaves((state.cost_critic.params, state.vae.params, state.log_ood_weight))

    for a, b in zip(untouched(after_one[0.0]), untouched(after_one[1.0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
    assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(after_one[0.0].critic.params)[0]),
                           np.asarray(jax.tree_util.tree_leaves(after_one[1.0].critic.params)[0]))
    uniform = jax.random.uniform(jax.random.PRNGKey(7), (256, 10, 2), minval=-1.0, maxval=1.0)

    def gap(state):  # mean reward value of uniform actions minus that of the data's actions
        q_unif = cql.q_many(state.critic.apply_fn, state.critic.params, batch["observations"], uniform).mean()
        return float(q_unif - state.critic.apply_fn(state.critic.params, batch["observations"], batch["actions"]).mean())

    assert gap(states[1.0]) < gap(states[0.0]) - 0.05, (gap(states[0.0]), gap(states[1.0]))


def test_cpq_hinge_ood_term_pushes_only_the_actions_below_the_cap():
    """ood_penalty=hinge: -w E_nu[min(Qc, c)]. An OOD action whose cost value is already above c gets no
    push; the others get the linear term's push (mean over all flagged actions, as in the linear term)."""
    batch = {k: jnp.asarray(v) for k, v in replay_dataset_dict(bandit_dataset(64)).items()}
    target_qc = batch["costs"]
    cost_critic = CriticEnsemble((16,), num_critics=2)
    params = cost_critic.init(jax.random.PRNGKey(0), batch["observations"], batch["actions"])
    apply_fn = cost_critic.apply
    actions = jax.random.uniform(jax.random.PRNGKey(3), (64, 6, 2), minval=-1.0, maxval=1.0)
    mask = (jax.random.uniform(jax.random.PRNGKey(4), (64, 6)) < 0.5).astype(jnp.float32)
    qc_ood = cql.q_many(apply_fn, params, batch["observations"], actions)  # [2, 64, 6]

    pairs = (jnp.repeat(batch["observations"], 6, axis=0), actions.reshape(-1, 2))  # (state, action) pairs

    def grads(weight, m=mask, cap=None, scale=1.0):
        def loss(p):
            full, _ = cpq.cost_critic_loss(p, apply_fn, batch, target_qc, *pairs, m.reshape(-1), weight, cap)
            bellman, _ = cpq.cost_critic_loss(p, apply_fn, batch, target_qc, *pairs, m.reshape(-1), 0.0)
            return bellman + scale * (full - bellman)  # the Bellman part, plus the OOD part scaled
        return jax.tree_util.tree_leaves(jax.grad(loss)(params))

    def close(a, b):
        return all(np.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b))

    lo, hi = float(qc_ood.min()), float(qc_ood.max())
    assert close(grads(1.0, cap=hi + 1.0), grads(1.0))  # every OOD value below the cap: the linear term
    assert close(grads(1.0, cap=lo - 1.0), grads(0.0))  # every OOD value above the cap: no push at all
    # a cap in the middle: per critic, only the flagged actions below it are pushed, normalised by all flagged
    cap = float(jnp.median(qc_ood))
    below = (qc_ood < cap).astype(jnp.float32) * mask[None]  # [2, B, M]
    assert 0 < float(below.sum()) < 2 * float(mask.sum())  # a real split
    expected = []
    for k in range(2):  # the linear term of critic k over its own below-cap actions, rescaled to the full count
        leaves_k = grads(1.0, m=below[k], scale=float(below[k].sum()) / float(mask.sum()))
        expected.append(leaves_k)
    bellman_only = grads(0.0)
    hinge = grads(1.0, cap=cap)
    # the ensemble's parameters carry a leading critic axis: critic k's slice comes from expected[k]
    for got, base, e0, e1 in zip(hinge, bellman_only, expected[0], expected[1]):
        want = np.stack([np.asarray(e0)[0], np.asarray(e1)[1]]) if got.shape[:1] == (2,) else None
        assert want is not None, "every critic-ensemble parameter has a leading ensemble axis"
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
        assert not np.allclose(np.asarray(got), np.asarray(base))


@pytest.mark.parametrize("data_quantile", [None, 0.9])
def test_cpq_ood_set_is_the_quantile_rule_over_all_candidates(data_quantile):
    """ood_actions returns only the top-KL candidates (the only ones the batch-quantile rule can flag):
    the pairs it flags are exactly those the rule flags among all B x M policy samples."""
    data = bandit_dataset(96)
    cfg = cpq.CPQConfig(hidden_dims=(16, 16), vae_hidden_dims=(16, 16), num_ood_actions=7, ood_data_quantile=data_quantile)
    state = cpq.init(jax.random.PRNGKey(0), 2, 2, cfg)
    batch = {k: jnp.asarray(v) for k, v in replay_dataset_dict(data).items()}
    key = jax.random.PRNGKey(5)
    obs, actions, mask = cpq.ood_actions(state, batch["observations"], key, batch["actions"])
    # the rule applied to every candidate, from the same samples
    all_actions, _ = cql.sample_actions(state.actor, batch["observations"], jax.random.split(key)[0], 7)
    all_obs = jnp.repeat(batch["observations"], 7, axis=0)
    all_actions = all_actions.reshape(-1, 2)
    kl = vae_kl(state.vae.params, state.vae.apply_fn, all_obs, all_actions)
    flagged = kl >= jnp.quantile(kl, cfg.ood_quantile)
    if data_quantile is not None:
        kl_data = vae_kl(state.vae.params, state.vae.apply_fn, batch["observations"], batch["actions"])
        flagged = flagged & (kl >= jnp.quantile(kl_data, data_quantile))
    assert actions.shape == (cpq.flagged_count(96 * 7, 0.75), 2) and obs.shape == (actions.shape[0], 2)
    want = {tuple(np.round(np.r_[o, a], 6)) for o, a in zip(np.asarray(all_obs)[np.asarray(flagged)],
                                                            np.asarray(all_actions)[np.asarray(flagged)])}
    got = {tuple(np.round(np.r_[o, a], 6)) for o, a in zip(np.asarray(obs)[np.asarray(mask) > 0],
                                                          np.asarray(actions)[np.asarray(mask) > 0])}
    assert len(want) > 0 and got == want


def test_flagged_count_matches_jnp_quantile():
    for n in (4, 10, 97, 5120):
        values = jax.random.normal(jax.random.PRNGKey(n), (n,))
        for q in (0.0, 0.5, 0.75, 0.9, 1.0):
            assert cpq.flagged_count(n, q) == int((values >= jnp.quantile(values, q)).sum()), (n, q)


def test_cpq_vae_flags_out_of_distribution_actions():
    """After fitting the VAE, actions far from the data get flagged more often than the data's own."""
    batch = {k: jnp.asarray(v) for k, v in replay_dataset_dict(bandit_dataset(128)).items()}
    vae = vae_train_state(jax.random.PRNGKey(0), 2, 2, (32, 32), None, adam(3e-3))

    @jax.jit
    def fit(vae):
        return jax.lax.fori_loop(0, 300, lambda i, v: vae_update(v, batch, jax.random.PRNGKey(i), 0.5)[0], vae)

    vae = fit(vae)
    kl_data = np.asarray(vae_kl(vae.params, vae.apply_fn, batch["observations"], batch["actions"]))
    far = -jnp.sign(batch["actions"]) * 0.99  # the opposite corner of the box
    kl_far = np.asarray(vae_kl(vae.params, vae.apply_fn, batch["observations"], far))
    assert np.mean(kl_far > np.quantile(kl_data, 0.75)) > 0.5
    assert gaussian_kl(jnp.zeros(3), jnp.zeros(3)) == pytest.approx(0.0)
    assert float(gaussian_kl(jnp.ones(2), jnp.zeros(2))) == pytest.approx(0.5)  # mean over dims of mu^2 / 2


def test_bear_mmd_kernels_soft_clip_and_pid():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 10, 2))
    for kernel in ("gaussian", "laplacian"):
        same = np.asarray(bear_lag.mmd(x, x, kernel, sigma=20.0))
        np.testing.assert_allclose(same, 1e-3, rtol=1e-3)  # sqrt(0 + 1e-6)
        assert np.all(np.asarray(bear_lag.mmd(x, x + 10.0, kernel, sigma=20.0)) > 0.3)
    # the same samples in another order, kernel as wide as BEAR-Lag's preset (sigma 50): MMD^2 is 0, and
    # float32 cancellation put some estimates below -1e-6 (NaN under the square root; BEAR-Lag seed 3 on
    # BallCircle at step 19,041)
    rng = np.random.default_rng(0)
    wide = rng.uniform(-1, 1, (12800, 50, 2)).astype(np.float32)
    values = np.asarray(bear_lag.mmd(jnp.asarray(wide), jnp.asarray(wide[:, rng.permutation(50)]), "gaussian", 50.0))
    assert np.all(np.isfinite(values)) and values.max() < 3e-3
    # one sample each at distance 2: MMD^2 = 2 - 2 k(x, y)
    a, b = jnp.zeros((1, 1, 1)), jnp.full((1, 1, 1), 2.0)
    assert float(bear_lag.mmd(a, b, "gaussian", 0.5)[0]) == pytest.approx(math.sqrt(2 - 2 * math.exp(-4.0) + 1e-6), rel=1e-5)
    assert float(bear_lag.mmd(a, b, "laplacian", 0.5)[0]) == pytest.approx(math.sqrt(2 - 2 * math.exp(-2.0) + 1e-6), rel=1e-5)

    q = jnp.array([[1.0], [3.0]])
    assert float(bear_lag.soft_clipped(q, 0.75)[0]) == pytest.approx(1.5)  # 0.75 min + 0.25 max
    assert float(bear_lag.soft_clipped(q, 0.75, pessimistic_is_max=True)[0]) == pytest.approx(2.5)

    pid, gains = bear_lag.pid_init(), (0.1, 0.003, 0.001)
    lagranges = []
    for error in (1.0, 2.0, -1.0, -5.0):
        pid, lam = bear_lag.pid_step(pid, jnp.asarray(error), *gains)
        lagranges.append(float(lam))
    # e=1: 0.1 + 0.003*1 + 0.001*1; e=2: 0.2 + 0.003*3 + 0.001*1; e=-1: 0.003*2; e=-5: integral clipped at 0
    np.testing.assert_allclose(lagranges, [0.104, 0.21, 0.006, 0.0], atol=1e-7)
    assert float(pid.integral) == 0.0


# ------------------------------------------------------------------------------------ terminals, not timeouts


def _targets(name, state, batch, key):
    if name == "cql":
        return [cql.reward_critic_target(state, batch, key)]
    if name == "iql":
        return [iql.critic_target(state.value, batch, state.config.gamma)]
    if name == "td3bc":
        return [td3bc.critic_target(state, batch, key)]
    if name == "cpq":
        return [cpq.reward_critic_target(state, batch, key), cpq.cost_critic_target(state, batch, key)]
    return list(bear_lag.critic_targets(state, batch, key))


@pytest.mark.parametrize("name", ["cql", "iql", "td3bc", "cpq", "bear-lag"])
def test_timeouts_bootstrap_terminals_do_not(name):
    spec = get_offline_agent(name)
    overrides = {"hidden_dims": (8,)} | ({"vae_hidden_dims": (8,), "horizon": 10} if spec.safe else {})
    state = spec.module.init(jax.random.PRNGKey(0), 2, 2, spec.config_cls(**overrides))
    base = {k: jnp.asarray(v[:8]) for k, v in replay_dataset_dict(bandit_dataset(8)).items()}
    base["costs"] = jnp.ones(8)
    running = {**base, "terminals": jnp.zeros(8), "timeouts": jnp.zeros(8)}
    truncated = {**running, "timeouts": jnp.ones(8)}
    ended = {**running, "terminals": jnp.ones(8)}
    key = jax.random.PRNGKey(5)
    for y_run, y_trunc, y_end, immediate in zip(
        _targets(name, state, running, key), _targets(name, state, truncated, key), _targets(name, state, ended, key),
        [base["rewards"] * getattr(state.config, "reward_scale", 1.0), base["costs"]],
    ):
        np.testing.assert_array_equal(np.asarray(y_run), np.asarray(y_trunc))  # a timeout changes nothing
        np.testing.assert_allclose(np.asarray(y_end), np.asarray(immediate), rtol=1e-6)  # a terminal cuts
        assert not np.allclose(np.asarray(y_run), np.asarray(y_end))


# ------------------------------------------------------------------------------------ learning


UNSAFE_STATES = EVAL_STATES[best_action(EVAL_STATES)[:, 0] > 0.5]


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("bc", dict(actor_lr=3e-3)),
        ("td3bc", dict(actor_lr=3e-3, critic_lr=3e-3)),
        ("iql", dict(actor_lr=3e-3, critic_lr=3e-3, value_lr=3e-3)),
        ("cql", dict(actor_lr=3e-3, critic_lr=3e-3, temperature_lr=3e-3, cql_alpha=1.0)),
    ],
)
def test_unconstrained_agents_beat_random_on_a_bandit(name, overrides):
    spec, state, metrics = train(name, bandit_dataset(), steps=300, **SMALL, **overrides)
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    reward, _ = evaluate(spec, state)
    assert reward > RANDOM_REWARD + 0.5, (reward, RANDOM_REWARD)  # random ~0.27, best 1.0, data ~0.80


def test_bc_safe_learns_the_safe_part_of_the_data():
    data = bandit_dataset()
    safe_data = bc.filter_safe_trajectories(data, cost_limit=0.0)  # one-step episodes: keep the cost-free ones
    assert 0 < safe_data.num_episodes < data.num_episodes and safe_data.costs.sum() == 0
    # the same buffer capacity as the BC test, so the compiled update is shared
    spec, state, _ = train("bc-safe", safe_data, steps=300, capacity=len(data), **SMALL, actor_lr=3e-3)
    reward, cost = evaluate(spec, state)
    _, cost_on_unsafe_states = evaluate(spec, state, UNSAFE_STATES)
    assert reward > RANDOM_REWARD + 0.4, reward
    assert cost < 0.05 and cost_on_unsafe_states < 0.15, (cost, cost_on_unsafe_states)


def test_bear_lag_keeps_cost_low_and_beats_random():
    spec, state, metrics = train(
        "bear-lag", bandit_dataset(), steps=400, **SMALL, **SMALL_VAE,
        actor_lr=3e-3, critic_lr=3e-3, cost_critic_lr=3e-3, cost_limit=0.05, horizon=1, pid_kp=1.0, pid_ki=0.01,
    )
    reward, cost = evaluate(spec, state)
    assert float(metrics["lagrange"]) > 0.0  # the PID controller had to act: the data's cost is 0.27
    assert reward > RANDOM_REWARD + 0.4, reward
    assert cost < 0.1, cost  # random 0.25, unconstrained ~0.32


def test_cpq_avoids_the_costly_state_and_beats_random():
    data = two_step_dataset()
    spec, state, metrics = train(
        "cpq", data, steps=600, **SMALL, **SMALL_VAE,
        actor_lr=1e-3, critic_lr=3e-3, cost_critic_lr=3e-3, gamma=0.9, cost_limit=0.2, horizon=2,
        init_ood_weight=0.02, ood_weight_lr=0.05,  # w scaled to the tiny threshold l = 0.19
    )
    first_step = np.column_stack([EVAL_STATES, np.zeros(len(EVAL_STATES), np.float32)])
    a = np.asarray(spec.module.act(state, jnp.asarray(first_step), jax.random.PRNGKey(0), deterministic=True))
    reward, cost = float(reward_fn(first_step, a).mean()), float(cost_fn(a).mean())
    assert reward > RANDOM_REWARD + 0.4, reward
    assert cost < 0.08, cost  # random 0.25, unconstrained ~0.32, data 0.27
