"""Networks: the tanh-Gaussian log-probability against a numerical reference, ensembles, actors."""

import jax
import jax.numpy as jnp
import numpy as np

from o2o.nn import CriticEnsemble, DeterministicActor, TanhGaussianActor, tanh_gaussian_log_prob, tanh_gaussian_sample


def reference_log_prob(a, mean, std):
    """Change of variables in float64: p_a(a) = prod_i N(atanh a_i; mean_i, std_i) / (1 - a_i^2)."""
    from scipy import stats  # imported where used: SciPy costs a test process ~2 s to import

    u = np.arctanh(a.astype(np.float64))
    return np.sum(stats.norm.logpdf(u, mean, std) - np.log1p(-(a.astype(np.float64) ** 2)), axis=-1)


def test_sample_log_prob_matches_change_of_variables():
    key = jax.random.PRNGKey(0)
    mean = jnp.array([[0.3, -1.2, 2.0], [0.0, 0.5, -0.7]], jnp.float32)
    log_std = jnp.array([[-0.5, 0.2, -1.0], [0.0, -2.0, 0.4]], jnp.float32)
    for i in range(5):
        a, logp = tanh_gaussian_sample(jax.random.fold_in(key, i), mean, log_std)
        a64 = np.asarray(a, np.float64)
        if np.any(np.abs(a64) > 0.999):  # float32 tanh saturates; the reference needs atanh(a)
            continue
        ref = reference_log_prob(a64, np.asarray(mean), np.exp(np.asarray(log_std)))
        np.testing.assert_allclose(np.asarray(logp), ref, rtol=2e-3, atol=2e-3)


def test_log_prob_of_given_actions_and_stability_at_large_preactivation():
    mean = jnp.array([[4.0]], jnp.float32)
    log_std = jnp.array([[-1.0]], jnp.float32)
    a = jnp.array([[0.995]], jnp.float32)
    ref = reference_log_prob(np.array([[0.995]]), np.array([[4.0]]), np.exp(-1.0))
    np.testing.assert_allclose(np.asarray(tanh_gaussian_log_prob(mean, log_std, a)), ref, rtol=1e-4)
    # sampling far in the tail must give finite log-probabilities (the exact log-det, no eps)
    _, logp = tanh_gaussian_sample(jax.random.PRNGKey(1), jnp.full((1000, 2), 8.0), jnp.zeros((1000, 2)))
    assert np.all(np.isfinite(np.asarray(logp)))


def test_density_integrates_to_one():
    from scipy import integrate

    mean, log_std = 0.7, -0.3
    f = lambda a: float(np.exp(tanh_gaussian_log_prob(jnp.array([[mean]]), jnp.array([[log_std]]), jnp.array([[a]]))[0]))
    total, _ = integrate.quad(f, -1 + 1e-7, 1 - 1e-7, limit=200)
    assert abs(total - 1.0) < 1e-3


def test_critic_ensemble_members_differ_and_shapes():
    net = CriticEnsemble((32, 32), num_critics=3, layer_norm=True)
    obs, act = jnp.ones((5, 4)), jnp.ones((5, 2))
    params = net.init(jax.random.PRNGKey(0), obs, act)
    q = net.apply(params, obs, act)
    assert q.shape == (3, 5)
    assert float(jnp.std(q[:, 0])) > 0  # independently initialised members


def test_actors_bounded():
    obs = jax.random.normal(jax.random.PRNGKey(0), (64, 5)) * 100
    det = DeterministicActor((16,), 3)
    a = det.apply(det.init(jax.random.PRNGKey(1), obs), obs)
    assert a.shape == (64, 3) and float(jnp.max(jnp.abs(a))) <= 1.0
    act = TanhGaussianActor((16,), 3)
    mean, log_std = act.apply(act.init(jax.random.PRNGKey(2), obs), obs)
    assert float(log_std.min()) >= -5.0 - 1e-6 and float(log_std.max()) <= 2.0 + 1e-6
