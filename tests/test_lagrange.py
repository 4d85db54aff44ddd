"""Multiplier controllers respond to scripted episode-cost sequences."""

import json

import numpy as np
import pytest

from o2o.errors import ConfigError
from o2o.lagrange import LagrangeConfig, make_controller


def test_dual_ascent_rises_under_violation_and_falls_to_zero_when_satisfied():
    c = make_controller(LagrangeConfig(controller="dual-ascent", init_lambda=0.0, dual_lr=0.01), cost_limit=20.0)
    values = [c.update(40.0)[0] for _ in range(10)]  # sustained 2x violation
    assert np.all(np.diff(values) > 0)
    np.testing.assert_allclose(values[-1], 10 * 0.01 * 20.0)
    for _ in range(100):
        lam = c.update(0.0)[0]  # satisfied: projected back to zero, never negative
    assert lam == 0.0


def test_a_moved_cost_limit_moves_the_set_point():
    """set_cost_limit (the schedule of `o2o data generate`'s behaviour runs): the next step measures the
    error against the new kappa, with the margin applied to it; relative_error keeps its first unit."""
    c = make_controller(LagrangeConfig(controller="dual-ascent", dual_lr=0.01), cost_limit=5.0)
    assert c.update(86.0)[0] == pytest.approx(0.81)
    c.set_cost_limit(80.0)
    assert c.update(56.0)[0] == pytest.approx(0.81 + 0.01 * (56.0 - 80.0))
    p = make_controller(LagrangeConfig(controller="pid", kp=1.0, ki=0.0, kd=0.0, limit_margin=0.5, relative_error=True), cost_limit=20.0)
    assert p.update(30.0)[0] == pytest.approx((30.0 - 10.0) / 20.0)  # set point 0.5 kappa, in units of kappa
    p.set_cost_limit(40.0)
    assert p.update(30.0)[0] == pytest.approx((30.0 - 20.0) / 20.0)  # set point 0.5 x 40, still in units of the first kappa


def test_fixed_lambda_never_moves_and_state_round_trips():
    c = make_controller(LagrangeConfig(controller="fixed", init_lambda=0.65), cost_limit=20.0)
    for cost in (0.0, 100.0, 20.0):
        assert c.update(cost)[0] == pytest.approx(0.65)
    d = make_controller(LagrangeConfig(controller="dual-ascent", dual_lr=0.1), cost_limit=[10.0, 5.0], num_costs=2)
    d.update([20.0, 0.0])
    e = make_controller(LagrangeConfig(controller="dual-ascent", dual_lr=0.1), cost_limit=[10.0, 5.0], num_costs=2)
    e.load_state_dict(d.state_dict())
    np.testing.assert_allclose(e.lagrange, [1.0, 0.0])  # one multiplier per constraint
    with pytest.raises(ConfigError):
        make_controller(LagrangeConfig(controller="fixed"), 20.0).load_state_dict(d.state_dict())


def test_bad_controller_settings_are_refused():
    with pytest.raises(ConfigError, match="init_lambda"):
        make_controller(LagrangeConfig(init_lambda=-1.0), 20.0)
    with pytest.raises(ConfigError, match="dual_lr"):
        make_controller(LagrangeConfig(controller="dual-ascent", dual_lr=0.0), 20.0)


def test_pid_responds_to_violation_with_anti_windup_and_one_sided_derivative():
    cfg = LagrangeConfig(controller="pid", kp=0.1, ki=0.01, kd=0.5, init_lambda=0.0)
    c = make_controller(cfg, cost_limit=20.0)
    lam = [c.update(x)[0] for x in (20.0, 40.0, 40.0)]
    # step 1: no error; step 2: P = 0.1*20, I = 0.2, D = 0.5*(40-20); step 3: D gone, I = 0.4
    np.testing.assert_allclose(lam, [0.0, 2.0 + 0.2 + 10.0, 2.0 + 0.4])
    # long satisfaction: the integral stops at 0 (anti-windup), lambda is 0 and a cost decrease
    # never pushes lambda up (one-sided derivative)
    for _ in range(200):
        lam = c.update(0.0)[0]
    assert lam == 0.0 and c.integral[0] == 0.0
    # after windup protection, a new violation raises lambda at once (not after unwinding a debt)
    assert c.update(30.0)[0] > 0.0
    state = c.state_dict()
    d = make_controller(cfg, cost_limit=20.0)
    d.load_state_dict(state)
    assert d.update(25.0)[0] == c.update(25.0)[0]


def test_pid_rejects_negative_gains():
    with pytest.raises(ConfigError, match="kp"):
        make_controller(LagrangeConfig(controller="pid", kp=-1.0), 20.0)


# ------------------------------------------------------------------------------------- adaptive PID


def _apid(**kw):
    return make_controller(LagrangeConfig(controller="apid", **kw), cost_limit=20.0)


def test_apid_defaults_are_marvels_and_a_sustained_violation_raises_lambda():
    c = _apid()
    assert (c.ema_p, c.ema_d, c.d_delay) == (0.9, 0.9, 10)
    lam = [c.update(40.0)[0] for _ in range(15)]  # sustained 2x violation
    assert np.all(np.diff(lam) > 0)
    # the gains grew (m > kappa): K_p, K_i up by 1 + 0.05 (m - kappa) / m per update
    m = 40.0 + 0.1
    np.testing.assert_allclose(c.gains["kp"][0], 0.01 * (1 + 0.05 * (m - 20) / m) ** 15, rtol=1e-9)
    # first update by hand: e~ = e = 20, I = K_i e, D = 0 (the smoothed cost starts at the first measurement)
    d = _apid()
    np.testing.assert_allclose(d.update(40.0)[0], 0.01 * 20 + 0.005 * 20)


def test_apid_satisfaction_brings_lambda_to_zero_and_anti_windup_holds():
    c = _apid()
    for _ in range(10):
        c.update(60.0)
    assert c.lagrange[0] > 0.5
    for _ in range(150):
        lam = c.update(0.0)[0]
    assert lam == 0.0 and c.integral[0] == 0.0  # the integral stops at 0, never negative
    # after a long satisfied stretch a violation acts at once (no wound-up negative integral to undo)
    assert c.update(60.0)[0] > 0.0


def test_apid_gains_stay_in_bounds_and_the_raw_rule_defect_is_reachable():
    for rule in ("bounded", "exp", "raw"):
        c = _apid(gain_update=rule)
        rng = np.random.default_rng(0)
        for cost in np.concatenate([np.full(30, 200.0), np.zeros(30), rng.uniform(0, 100, 60)]):
            c.update(cost)
            for g in ("kp", "ki", "kd"):
                k0 = c.gains0[g][0]
                assert k0 / 10 - 1e-15 <= c.gains[g][0] <= 10 * k0 + 1e-15
    # m << kappa: the released rule's factor 1 - 0.05 (20 - 0.1) / 0.1 is negative; only the clip catches it,
    # so K_p drops to K0/10 in one step. The bounded rule at most halves it.
    raw, bounded = _apid(gain_update="raw"), _apid(gain_update="bounded")
    raw.update(0.0), bounded.update(0.0)
    assert raw.gains["kp"][0] == pytest.approx(0.01 / 10)
    assert bounded.gains["kp"][0] == pytest.approx(0.01 / 2)


def test_apid_kd_only_grows_without_reset_and_resets_on_a_regime_change_only():
    rng = np.random.default_rng(1)
    stationary = _apid(kd_reset=True)
    for _ in range(200):
        stationary.update(20.0 + rng.normal(0, 3.0))
    assert stationary.kd_resets == 0

    shifted = _apid(kd_reset=True)
    noise = np.random.default_rng(2)
    for _ in range(40):
        shifted.update(5.0 + noise.normal(0, 1.0))
    kd_before = shifted.gains["kd"][0]
    for _ in range(15):
        shifted.update(60.0 + noise.normal(0, 1.0))
    assert shifted.kd_resets >= 1
    assert shifted.gains["kd"][0] < max(kd_before, shifted.gains0["kd"][0] * 1.5)

    never = _apid(kd_reset=False)
    kd = [never.gains["kd"][0]]
    for cost in [5.0] * 40 + [60.0] * 15 + [0.0] * 30:
        never.update(cost)
        kd.append(never.gains["kd"][0])
    assert np.all(np.diff(kd) >= 0) and never.kd_resets == 0  # the paper's limitation: K_d only grows


def test_apid_vector_constraints_and_state_round_trip():
    cfg = LagrangeConfig(controller="apid")
    c = make_controller(cfg, cost_limit=[20.0, 5.0], num_costs=2)
    for _ in range(8):
        c.update([40.0, 0.0])
    assert c.lagrange[0] > 0.3 and c.lagrange[1] == 0.0
    d = make_controller(cfg, cost_limit=[20.0, 5.0], num_costs=2)
    d.load_state_dict(json.loads(json.dumps(c.state_dict())))  # checkpoints hold it as JSON
    for cost in ([30.0, 10.0], [10.0, 1.0], [50.0, 7.0]):
        np.testing.assert_allclose(c.update(cost), d.update(cost))
    np.testing.assert_allclose(c.gains["kd"], d.gains["kd"])


def test_negative_gains_and_bad_adaptation_settings_are_refused():
    for key in ("kp", "ki", "kd", "adapt_rate_p"):
        with pytest.raises(ConfigError, match=key):
            _apid(**{key: -0.1})
    with pytest.raises(ConfigError, match="gain_bound"):
        _apid(gain_bound=0.5)
    with pytest.raises(ConfigError, match="ema_p"):
        _apid(ema_p=1.0)


def test_apid_mean_rule_collapses_gains_on_a_safe_start_and_the_max_rule_does_not():
    """Marvel's relative error (m - kappa) / m is unbounded below kappa: ten safe measurements put K_p and
    K_i at their floor, and a violation that follows moves lambda slowly. Divided by max(m, kappa) it stays
    within [-1, 1]: each gain moves by at most a factor 1 -+ alpha per update, both ways."""
    script = np.concatenate([np.zeros(10), np.full(10, 100.0)])
    runs = {}
    for rule in ("mean", "max"):
        c = _apid(adapt_relative=rule)
        kps, lams = [], []
        for cost in script:
            before = dict(c.gains)
            c.update(cost)
            kps.append(c.gains["kp"][0])
            lams.append(c.lagrange[0])
            if rule == "max":
                for g in ("kp", "ki"):
                    ratio = c.gains[g][0] / before[g][0]
                    assert 1 - 0.05 - 1e-12 <= ratio <= 1 + 0.05 + 1e-12
        runs[rule] = (np.array(kps), np.array(lams))
    kp_mean, lam_mean = runs["mean"]
    kp_max, lam_max = runs["max"]
    assert kp_mean[9] == pytest.approx(0.01 / 10)  # the floor K0 / b after the safe stretch
    assert kp_max[9] > 0.5 * 0.01  # 0.95 ** 10 of K0 at worst
    assert lam_max[-1] > 2 * lam_mean[-1]  # the same violation, answered with larger gains
    assert lam_max[-1] > lam_max[10] > 0
    with pytest.raises(ConfigError, match="adapt_relative"):
        _apid(adapt_relative="median")


# ------------------------------------------------------------------ o2o's Marvel controller (the preset)


def _preset_controller(method: str = "marvel", task: str = "BallCircle"):
    """The multiplier controller a fine-tuning run of ``method`` gets from the presets, and its limit."""
    from o2o.envs import get_task
    from o2o.loops.finetune import resolve_finetune_config

    cfg = resolve_finetune_config(method, task=task, require_pretrained=False)
    kappa = cfg.online.cost_limit if cfg.online.cost_limit is not None else get_task(task).cost_limit
    return make_controller(cfg.lagrange, kappa), kappa


def _script(controller, costs):
    return np.array([controller.update(c)[0] for c in costs])


@pytest.mark.parametrize("safe_start", [0, 100])
@pytest.mark.parametrize("violation", [1.05, 1.2, 2.0, 5.0])
def test_marvel_controller_keeps_raising_lambda_while_a_violation_lasts(safe_start, violation):
    """Sustained violation, with or without a long safe stretch before it: lambda never falls while the
    cost stays over the limit (the paper's rule after a safe start peaks after ~10 measurements and then
    falls: its integral sits at the gain floor and the derivative fades)."""
    c, kappa = _preset_controller()
    _script(c, np.zeros(safe_start))
    lam = _script(c, np.full(60, violation * kappa))
    assert np.all(np.diff(lam) >= 0)
    assert lam[29] > lam[9] > 0
    assert lam[-1] > lam[29] or lam[-1] == c.cfg.max_lambda  # still rising, or held at the cap


def test_marvel_controller_lowers_lambda_once_the_cost_is_back_under_the_limit():
    c, kappa = _preset_controller()
    raised = _script(c, np.full(20, 2.0 * kappa))[-1]
    state = c.state_dict()
    lam = _script(c, np.full(100, 0.5 * (1 - c.cfg.limit_margin) * kappa))  # half the set point: a steady decrease
    assert lam[0] < raised and np.all(np.diff(lam) <= 0) and lam[-1] < lam[0]
    c.load_state_dict(state)
    lam = _script(c, np.zeros(400))  # far under it: below half within 100 measurements, back to zero
    assert lam[0] < raised and np.all(np.diff(lam) <= 0) and lam[99] < 0.5 * raised and lam[-1] == 0.0


def test_marvel_controller_meets_a_late_violation_with_gains_no_lower_than_three_quarters():
    c, kappa = _preset_controller()
    gains0 = {g: v.copy() for g, v in c.gains0.items()}
    _script(c, np.zeros(200))  # a long safe start
    _script(c, [2.0 * kappa])
    for g in ("kp", "ki", "kd"):
        assert c.gains[g][0] >= 0.75 * gains0[g][0] * (1 - 1e-12)
    # the paper's rule (marvel-paper) has them at K0 / 10 by then
    p, _ = _preset_controller("marvel-paper")
    _script(p, np.zeros(200))
    _script(p, [2.0 * kappa])
    assert p.gains["ki"][0] <= 0.1 * p.gains0["ki"][0] * 1.03


def _lagged_plant(controller, kappa, steepness, lag, seed, steps=120):
    """A policy whose episode cost answers the multiplier with a lag and whose need for a multiplier grows
    as it learns: cost = kappa exp(s (need_t - lambda_eff)), lambda_eff the lagged multiplier, need_t
    rising from -0.5 to 1, 20% noise, capped at 10 kappa."""
    rng = np.random.default_rng(seed)
    lam = effective = 0.0
    costs = []
    for t in range(steps):
        need = min(1.0, -0.5 + t / 30)
        effective = lag * effective + (1 - lag) * lam
        cost = float(np.clip(kappa * np.exp(steepness * (need - effective)) * (1 + 0.2 * rng.standard_normal()), 0, 10 * kappa))
        lam = controller.update(cost)[0]
        costs.append(cost)
    return np.array(costs)


@pytest.mark.parametrize("steepness,lag", [(1.0, 0.5), (3.0, 0.8), (6.0, 0.9)])
def test_marvel_controller_holds_a_cost_near_the_limit_without_swinging_to_zero(steepness, lag):
    """Closed loop on the lagged plant: after the transient the cost sits at the set point (1 - margin)
    kappa, under the limit, neither alternating between violations and zero nor staying over."""
    for seed in range(3):
        c, kappa = _preset_controller()
        target = (1 - c.cfg.limit_margin) * kappa
        tail = _lagged_plant(c, kappa, steepness, lag, seed)[-50:]
        assert 0.85 * target <= tail.mean() <= kappa
        assert tail.min() > 0.25 * target  # never swung back to (near) zero cost
        assert np.mean(tail > 1.5 * kappa) <= 0.05


def test_relative_error_makes_the_gains_independent_of_the_limit():
    cfg = LagrangeConfig(controller="apid", relative_error=True, kp=0.5, ki=0.1, kd=0.1)
    lams = []
    for kappa in (10.0, 20.0, 40.0):
        c = make_controller(cfg, kappa)
        lams.append(_script(c, kappa * np.array([0.0, 0.5, 2.0, 2.0, 3.0, 1.0, 0.2])))
    np.testing.assert_allclose(lams[0], lams[1], rtol=1e-12)
    np.testing.assert_allclose(lams[0], lams[2], rtol=1e-12)


def test_max_lambda_bounds_the_integral_too():
    """Anti-windup at the top: with max_lambda the integral is clipped there, so lambda comes down as
    soon as the cost is back under the limit instead of unwinding a hidden excess first."""
    c = make_controller(LagrangeConfig(controller="pid", kp=0.0, ki=1.0, kd=0.0, max_lambda=2.0), cost_limit=1.0)
    _script(c, np.full(50, 5.0))  # the unclipped integral would be 200
    assert c.integral[0] == 2.0
    assert c.update(0.5)[0] == pytest.approx(1.5)
    with pytest.raises(ConfigError, match="gain_floor"):
        make_controller(LagrangeConfig(controller="apid", gain_floor=0.0), 20.0)
