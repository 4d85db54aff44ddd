"""Lagrange multiplier controllers (host side).

A controller turns measured episode costs into the multiplier lambda >= 0 that SAC-Lag's actor loss
uses. Each controller is fed J_t = the mean undiscounted episode cost of the latest batch of rollouts
(not a critic estimate) and the cost limit kappa; ``update(J)`` returns the new lambda. Costs may be a
vector (one entry and one multiplier per cost signal); scalars are treated as length-1 vectors.

    fixed:        lambda_t = lambda_0
    dual ascent:  lambda_t = [lambda_{t-1} + eta (J_t - kappa)]_+             (projected gradient ascent)
    PID:          (Stooke, Achiam & Abbeel 2020, "Responsive Safety in RL by PID Lagrangian Methods")
                  e_t   = J_t - kappa
                  P_t   = a_p P_{t-1} + (1 - a_p) e_t                          (EMA of the error; a_p = 0 -> raw)
                  I_t   = clip(I_{t-1} + K_i e_t, 0, lambda_max)                (anti-windup)
                  Jbar_t = a_d Jbar_{t-1} + (1 - a_d) J_t
                  D_t   = [Jbar_t - Jbar_{t-d}]_+                              (one-sided, lag d)
                  lambda_t = [K_p P_t + I_t + K_d D_t]_+

    aPID:         (Marvel) the PID with a_p = a_d = 0.9, d = 10 and gains adapted to the recent cost
                  (see ``AdaptivePID``)
With ``relative_error`` every controller sees the cost in units of the limit, J / kappa against 1 (for
kappa < 1: J against kappa, unscaled), so that its gains mean the same for every limit: the error of a
2x violation is 1. With ``limit_margin`` m the set point is (1 - m) kappa instead of kappa.

State is plain numbers (``state_dict`` / ``load_state_dict``) so checkpoints hold it as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from o2o.errors import ConfigError


@dataclass(frozen=True)
class LagrangeConfig:
    controller: Literal["fixed", "dual-ascent", "pid", "apid"] = field(
        default="dual-ascent", metadata={"help": "multiplier controller: fixed | dual-ascent | pid | apid"}
    )
    init_lambda: float = field(default=0.0, metadata={"help": "initial multiplier lambda_0 (>= 0)"})
    dual_lr: float = field(default=0.01, metadata={"help": "dual ascent step eta per cost measurement"})
    max_lambda: float | None = field(default=None, metadata={"help": "optional upper clip of lambda"})
    cadence: Literal["measurement", "minibatch"] = field(
        default="measurement",
        metadata={"help": "measurement: one controller update per new episode-cost measurement; minibatch: one per "
                  "gradient step with the same measurement (Marvel's released code)"},
    )
    kp: float = field(default=0.01, metadata={"help": "PID/aPID proportional gain K_p (per unit of episode-cost error)"})
    ki: float = field(default=0.005, metadata={"help": "PID/aPID integral gain K_i"})
    kd: float = field(default=0.01, metadata={"help": "PID/aPID derivative gain K_d (on cost increases only)"})
    ema_p: float | None = field(default=None, metadata={"help": "EMA coefficient a_p of the proportional error; None: pid 0 (raw), apid 0.9"})
    ema_d: float | None = field(default=None, metadata={"help": "EMA coefficient a_d of the cost for the derivative; None: pid 0, apid 0.9"})
    d_delay: int | None = field(default=None, metadata={"help": "lag tau of the derivative (cost measurements); None: pid 1, apid 10"})
    proportional_tanh: bool = field(default=False, metadata={"help": "P term K_p tanh(e~) instead of K_p e~ (the ICLR text's variant)"})
    adapt_rate_p: float = field(default=0.05, metadata={"help": "aPID: gain adaptation rate alpha of K_p"})
    adapt_rate_i: float = field(default=0.05, metadata={"help": "aPID: gain adaptation rate beta of K_i"})
    adapt_rate_d: float = field(default=0.05, metadata={"help": "aPID: gain adaptation rate gamma of K_d"})
    adapt_window: int = field(default=10, metadata={"help": "aPID: window W of smoothed costs the adaptation looks at"})
    gain_bound: float = field(default=10.0, metadata={"help": "aPID: every gain stays in [K0 / b, b K0]"})
    gain_update: Literal["bounded", "exp", "raw"] = field(
        default="bounded",
        metadata={"help": "aPID gain factor: bounded (factor clipped to [1/2, 2]), exp (exp of the rate term), raw "
                  "(the released rule; the factor can go negative and only the gain clip catches it)"},
    )
    adapt_relative: Literal["mean", "max"] = field(
        default="mean",
        metadata={"help": "aPID: the relative error of the gain adaptation: mean ((m - kappa) / m, Marvel's: at most "
                  "+alpha per update above kappa, unbounded below it) or max ((m - kappa) / max(m, kappa): "
                  "within [-alpha, +alpha] both ways; o2o's, docs/algorithms.md)"},
    )
    gain_floor: float | None = field(
        default=None,
        metadata={"help": "aPID: lower bound of an adapted gain as a fraction of K0; None = 1 / gain_bound (the paper's "
                  "[K0/10, 10 K0]); o2o's Marvel preset 0.75, so that a violation after a long safe stretch meets gains "
                  "of at least 0.75 K0"},
    )
    limit_margin: float = field(
        default=0.0,
        metadata={"help": "the controller's set point is (1 - margin) kappa: a margin under the limit for the noise of a "
                  "policy that rides it (evaluation still against kappa)"},
    )
    relative_error: bool = field(
        default=False,
        metadata={"help": "measure the cost in units of the limit (J / kappa against 1): gains independent of kappa"},
    )
    kd_reset: bool = field(default=False, metadata={"help": "aPID: reset K_d to K0_d when the cost signal changes regime"})
    kd_reset_z: float = field(default=4.0, metadata={"help": "aPID: change-point z-score between the two halves of 2W smoothed costs"})
    kd_reset_min_shift: float = field(default=0.1, metadata={"help": "aPID: ... and a mean shift of at least this fraction of kappa"})


class Controller:
    """Common shape of every controller: vector state, ``update(cost) -> lambda``, serialisable."""

    name = "base"

    def __init__(self, cfg: LagrangeConfig, cost_limit, num_costs: int = 1):
        if cfg.init_lambda < 0:
            raise ConfigError(f"lagrange.init_lambda must be >= 0, got {cfg.init_lambda}")
        if cfg.max_lambda is not None and cfg.max_lambda < 0:
            raise ConfigError(f"lagrange.max_lambda must be >= 0, got {cfg.max_lambda}")
        if not 0.0 <= cfg.limit_margin < 1.0:
            raise ConfigError(f"lagrange.limit_margin must be in [0, 1), got {cfg.limit_margin}")
        if cfg.cadence not in ("measurement", "minibatch"):
            raise ConfigError(f"lagrange.cadence must be measurement | minibatch, got '{cfg.cadence}'")
        self.cfg = cfg
        self.cost_limit = np.broadcast_to(np.asarray(cost_limit, np.float64), (num_costs,)).copy()
        # the units the controller works in: kappa (relative_error) or raw cost
        self.unit = np.maximum(self.cost_limit, 1.0) if cfg.relative_error else np.ones_like(self.cost_limit)
        self.limit = (1.0 - cfg.limit_margin) * self.cost_limit / self.unit  # the set point, in the controller's units
        self.value = np.full((num_costs,), cfg.init_lambda, np.float64)
        self.num_updates = 0

    def set_cost_limit(self, cost_limit) -> None:
        """Move kappa during a run (a schedule of targets, as the behaviour runs of ``o2o data generate``
        follow): the set point moves with it; the units of ``relative_error`` stay those of the first kappa."""
        self.cost_limit[:] = np.broadcast_to(np.asarray(cost_limit, np.float64), self.cost_limit.shape)
        self.limit = (1.0 - self.cfg.limit_margin) * self.cost_limit / self.unit

    def _clip(self, lam: np.ndarray) -> np.ndarray:
        lam = np.maximum(lam, 0.0)
        if self.cfg.max_lambda is not None:
            lam = np.minimum(lam, self.cfg.max_lambda)
        return lam

    def update(self, episode_cost) -> np.ndarray:
        cost = np.broadcast_to(np.asarray(episode_cost, np.float64), self.value.shape) / self.unit
        self.value = self._clip(self._step(cost))
        self.num_updates += 1
        return self.value.copy()

    def _step(self, cost: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def lagrange(self) -> np.ndarray:
        return self.value.copy()

    def diagnostics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"name": self.name, "value": self.value.tolist(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ConfigError(f"checkpoint holds a '{state.get('name')}' controller, config asks for '{self.name}'")
        self.value = np.asarray(state["value"], np.float64)
        self.num_updates = int(state["num_updates"])


class FixedLambda(Controller):
    name = "fixed"

    def _step(self, cost):
        return self.value


class DualAscent(Controller):
    name = "dual-ascent"

    def __init__(self, cfg, cost_limit, num_costs=1):
        super().__init__(cfg, cost_limit, num_costs)
        if cfg.dual_lr <= 0:
            raise ConfigError(f"lagrange.dual_lr must be > 0, got {cfg.dual_lr}")

    def _step(self, cost):
        return self.value + self.cfg.dual_lr * (cost - self.limit)


class PID(Controller):
    """PID Lagrangian with the anti-windup integral and a one-sided, lagged derivative (Stooke et al.
    2020). The integral starts at lambda_0 so that ``init_lambda`` means the same for every controller.
    The smoothed cost and the error EMA start at the first measurement (not at 0, which would read as
    a cost increase and kick the derivative on the first updates)."""

    name = "pid"
    default_ema_p, default_ema_d, default_d_delay = 0.0, 0.0, 1

    def __init__(self, cfg, cost_limit, num_costs=1):
        super().__init__(cfg, cost_limit, num_costs)
        for gain in ("kp", "ki", "kd"):
            if getattr(cfg, gain) < 0:
                raise ConfigError(f"lagrange.{gain} must be >= 0, got {getattr(cfg, gain)}")
        self.ema_p = self.default_ema_p if cfg.ema_p is None else cfg.ema_p
        self.ema_d = self.default_ema_d if cfg.ema_d is None else cfg.ema_d
        self.d_delay = self.default_d_delay if cfg.d_delay is None else cfg.d_delay
        for coef in ("ema_p", "ema_d"):
            if not 0.0 <= getattr(self, coef) < 1.0:
                raise ConfigError(f"lagrange.{coef} must be in [0, 1), got {getattr(self, coef)}")
        if self.d_delay < 1:
            raise ConfigError(f"lagrange.d_delay must be >= 1, got {self.d_delay}")
        shape = self.value.shape
        self.gains0 = {g: np.full(shape, getattr(cfg, g), np.float64) for g in ("kp", "ki", "kd")}
        self.gains = {g: v.copy() for g, v in self.gains0.items()}
        self.integral = self.value.copy()
        self.error_ema = np.zeros_like(self.value)
        self.cost_history: list[list[float]] = []  # smoothed costs cbar, oldest first
        self.terms = {"p": np.zeros(shape), "i": self.integral.copy(), "d": np.zeros(shape)}

    @property
    def history_length(self) -> int:
        return self.d_delay + 1

    def _step(self, cost):
        error = cost - self.limit
        first = not self.cost_history
        self.error_ema = error if first else self.ema_p * self.error_ema + (1 - self.ema_p) * error
        # anti-windup: the integral stays in [0, max_lambda] (no upper bound without max_lambda)
        self.integral = np.clip(self.integral + self.gains["ki"] * error, 0.0, self.cfg.max_lambda)
        previous = cost if first else np.asarray(self.cost_history[-1])
        smoothed = cost if first else self.ema_d * previous + (1 - self.ema_d) * cost
        self.cost_history = (self.cost_history + [smoothed.tolist()])[-self.history_length :]
        lagged = np.asarray(self.cost_history[-(self.d_delay + 1)] if len(self.cost_history) > self.d_delay else self.cost_history[0])
        derivative = np.maximum(smoothed - lagged, 0.0)
        p = np.tanh(self.error_ema) if self.cfg.proportional_tanh else self.error_ema
        self.terms = {"p": self.gains["kp"] * p, "i": self.integral.copy(), "d": self.gains["kd"] * derivative}
        return self.terms["p"] + self.terms["i"] + self.terms["d"]

    def diagnostics(self) -> dict[str, float]:
        """First constraint's P, I, D terms and gains (for the metrics log)."""
        out = {f"lagrange_{k}": float(v[0]) for k, v in self.terms.items()}
        out.update({f"lagrange_{g}": float(v[0]) for g, v in self.gains.items()})
        return out

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "integral": self.integral.tolist(),
            "error_ema": self.error_ema.tolist(),
            "cost_history": self.cost_history,
            "gains": {g: v.tolist() for g, v in self.gains.items()},
            "terms": {k: v.tolist() for k, v in self.terms.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.integral = np.asarray(state["integral"], np.float64)
        self.error_ema = np.asarray(state["error_ema"], np.float64)
        self.cost_history = [list(c) for c in state["cost_history"]]
        if "gains" in state:
            self.gains = {g: np.asarray(v, np.float64) for g, v in state["gains"].items()}
        if "terms" in state:
            self.terms = {k: np.asarray(v, np.float64) for k, v in state["terms"].items()}


class AdaptivePID(PID):
    """Marvel's adaptive PID (aPID): the PID above with a_p = a_d = 0.9, tau = 10 by default, and gains
    that adapt to the recent smoothed cost after every update (the new gains act from the next one).

        W = the last ``adapt_window`` smoothed costs cbar;  m = mean(W) + 0.1;  s = std(W)
        m > kappa:  K_p *= 1 + alpha (m - kappa) / m ;  K_i *= 1 + beta (m - kappa) / m
        else:       K_p *= 1 - alpha (kappa - m) / m ;  K_i *= 1 - beta (kappa - m) / m
        K_d *= 1 + gamma s / m
        every gain clipped to [K0 / b, b K0]

    The rule is asymmetric: above kappa the relative error (m - kappa) / m is below 1, so a gain grows by
    at most 1 + alpha per update; below kappa it is unbounded (m = 0.1 against kappa = 20 gives -199),
    so a safe stretch drives K_p and K_i to K0 / b within a few updates, and a violation that follows
    meets the smallest gains. ``adapt_relative="max"`` (o2o's option, not the paper's) divides by
    max(m, kappa) instead: the relative error lies in [-1, 1] both ways; ``gain_floor`` raises the lower
    bound of the adapted gains (o2o's Marvel preset: 0.75 K0).

    ``gain_update``: "raw" applies the factors as written (when m << kappa the factor is negative and
    only the clip hides it: the gain jumps to K0 / b in one step); "bounded" (default) clips each factor
    to [1/2, 2]; "exp" uses exp(rate term), always positive. With ``kd_reset`` K_d returns to K0_d when
    the smoothed cost changes regime: the last 2W values split in halves whose means differ by more than
    ``kd_reset_z`` standard errors and by more than ``kd_reset_min_shift`` kappa; after a reset the test
    waits 2W updates (both halves must come from the new regime)."""

    name = "apid"
    default_ema_p, default_ema_d, default_d_delay = 0.9, 0.9, 10

    def __init__(self, cfg, cost_limit, num_costs=1):
        super().__init__(cfg, cost_limit, num_costs)
        for rate in ("adapt_rate_p", "adapt_rate_i", "adapt_rate_d"):
            if getattr(cfg, rate) < 0:
                raise ConfigError(f"lagrange.{rate} must be >= 0, got {getattr(cfg, rate)}")
        if cfg.adapt_window < 2:
            raise ConfigError(f"lagrange.adapt_window must be >= 2, got {cfg.adapt_window}")
        if cfg.gain_bound < 1:
            raise ConfigError(f"lagrange.gain_bound must be >= 1, got {cfg.gain_bound}")
        if cfg.gain_floor is not None and not 0 < cfg.gain_floor <= 1:
            raise ConfigError(f"lagrange.gain_floor must be in (0, 1] or null, got {cfg.gain_floor}")
        if cfg.gain_update not in ("bounded", "exp", "raw"):
            raise ConfigError(f"lagrange.gain_update must be bounded | exp | raw, got '{cfg.gain_update}'")
        if cfg.adapt_relative not in ("mean", "max"):
            raise ConfigError(f"lagrange.adapt_relative must be mean | max, got '{cfg.adapt_relative}'")
        if cfg.kd_reset_z <= 0:
            raise ConfigError(f"lagrange.kd_reset_z must be > 0, got {cfg.kd_reset_z}")
        self.kd_resets = 0
        self.since_reset = 0

    @property
    def history_length(self) -> int:
        return max(self.d_delay + 1, 2 * self.cfg.adapt_window)

    def _factor(self, rate_term: np.ndarray) -> np.ndarray:
        if self.cfg.gain_update == "exp":
            return np.exp(rate_term)
        factor = 1.0 + rate_term
        return np.clip(factor, 0.5, 2.0) if self.cfg.gain_update == "bounded" else factor

    def regime_change(self) -> np.ndarray:
        """Per constraint: did the smoothed cost shift between the two halves of the last 2W values?"""
        w = self.cfg.adapt_window
        if len(self.cost_history) < 2 * w or self.since_reset < 2 * w:
            return np.zeros(self.value.shape, bool)
        hist = np.asarray(self.cost_history[-2 * w :], np.float64)  # [2W, num_costs]
        old, new = hist[:w], hist[w:]
        shift = np.abs(new.mean(0) - old.mean(0))
        stderr = np.sqrt((old.var(0, ddof=1) + new.var(0, ddof=1)) / w) + 1e-8
        return (shift > self.cfg.kd_reset_z * stderr) & (shift > self.cfg.kd_reset_min_shift * self.limit)

    def _step(self, cost):
        lam = super()._step(cost)
        cfg = self.cfg
        window = np.asarray(self.cost_history[-cfg.adapt_window :], np.float64)
        # m > 0: the paper's 0.1 cost units; with relative_error 0.005 kappa (0.1 at kappa = 20)
        m = window.mean(0) + (0.005 if cfg.relative_error else 0.1)
        s = window.std(0)
        scale = m if cfg.adapt_relative == "mean" else np.maximum(m, self.limit)
        rel = (m - self.limit) / scale
        self.gains["kp"] = self.gains["kp"] * self._factor(cfg.adapt_rate_p * rel)
        self.gains["ki"] = self.gains["ki"] * self._factor(cfg.adapt_rate_i * rel)
        self.gains["kd"] = self.gains["kd"] * self._factor(cfg.adapt_rate_d * s / m)
        self.since_reset += 1
        if cfg.kd_reset:
            reset = self.regime_change()
            if reset.any():
                self.gains["kd"] = np.where(reset, self.gains0["kd"], self.gains["kd"])
                self.kd_resets += int(reset.sum())
                self.since_reset = 0
        floor = 1.0 / cfg.gain_bound if cfg.gain_floor is None else cfg.gain_floor
        for g in self.gains:
            self.gains[g] = np.clip(self.gains[g], self.gains0[g] * floor, self.gains0[g] * cfg.gain_bound)
        return lam

    def diagnostics(self) -> dict[str, float]:
        return {**super().diagnostics(), "lagrange_kd_resets": float(self.kd_resets)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kd_resets": self.kd_resets, "since_reset": self.since_reset}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.kd_resets = int(state["kd_resets"])
        self.since_reset = int(state["since_reset"])


CONTROLLERS = {c.name: c for c in (FixedLambda, DualAscent, PID, AdaptivePID)}


def make_controller(cfg: LagrangeConfig, cost_limit, num_costs: int = 1) -> Controller:
    try:
        cls = CONTROLLERS[cfg.controller]
    except KeyError:
        raise ConfigError(
            f"unknown lagrange.controller '{cfg.controller}'; choose one of: {', '.join(CONTROLLERS)}"
        ) from None
    return cls(cfg, cost_limit, num_costs)
