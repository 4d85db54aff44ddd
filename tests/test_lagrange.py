"""Multiplier controllers respond to scripted episode-cost sequences."""

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
