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
                  I_t   = [I_{t-1} + K_i e_t]_+                                 (anti-windup: never below 0)
                  Jbar_t = a_d Jbar_{t-1} + (1 - a_d) J_t
                  D_t   = [Jbar_t - Jbar_{t-d}]_+                              (one-sided, lag d)
                  lambda_t = [K_p P_t + I_t + K_d D_t]_+

Marvel's adaptive PID (gain adaptation) comes with the Marvel work.
State is plain numbers (``state_dict`` / ``load_state_dict``) so checkpoints hold it as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from o2o.errors import ConfigError


@dataclass(frozen=True)
class LagrangeConfig:
    controller: Literal["fixed", "dual-ascent", "pid"] = field(
        default="dual-ascent", metadata={"help": "multiplier controller: fixed | dual-ascent | pid"}
    )
    init_lambda: float = field(default=0.0, metadata={"help": "initial multiplier lambda_0 (>= 0)"})
    dual_lr: float = field(default=0.01, metadata={"help": "dual ascent step eta per cost measurement"})
    max_lambda: float | None = field(default=None, metadata={"help": "optional upper clip of lambda"})
    kp: float = field(default=0.02, metadata={"help": "PID proportional gain (per unit of episode-cost error)"})
    ki: float = field(default=0.005, metadata={"help": "PID integral gain"})
    kd: float = field(default=0.02, metadata={"help": "PID derivative gain (on cost increases only)"})
    ema_p: float = field(default=0.0, metadata={"help": "PID: EMA coefficient of the proportional error (0 = raw)"})
    ema_d: float = field(default=0.0, metadata={"help": "PID: EMA coefficient of the cost for the derivative"})
    d_delay: int = field(default=1, metadata={"help": "PID: lag d of the derivative (cost measurements)"})


class Controller:
    """Common shape of every controller: vector state, ``update(cost) -> lambda``, serialisable."""

    name = "base"

    def __init__(self, cfg: LagrangeConfig, cost_limit, num_costs: int = 1):
        if cfg.init_lambda < 0:
            raise ConfigError(f"lagrange.init_lambda must be >= 0, got {cfg.init_lambda}")
        if cfg.max_lambda is not None and cfg.max_lambda < 0:
            raise ConfigError(f"lagrange.max_lambda must be >= 0, got {cfg.max_lambda}")
        self.cfg = cfg
        self.cost_limit = np.broadcast_to(np.asarray(cost_limit, np.float64), (num_costs,)).copy()
        self.value = np.full((num_costs,), cfg.init_lambda, np.float64)
        self.num_updates = 0

    def _clip(self, lam: np.ndarray) -> np.ndarray:
        lam = np.maximum(lam, 0.0)
        if self.cfg.max_lambda is not None:
            lam = np.minimum(lam, self.cfg.max_lambda)
        return lam

    def update(self, episode_cost) -> np.ndarray:
        cost = np.broadcast_to(np.asarray(episode_cost, np.float64), self.value.shape)
        self.value = self._clip(self._step(cost))
        self.num_updates += 1
        return self.value.copy()

    def _step(self, cost: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def lagrange(self) -> np.ndarray:
        return self.value.copy()

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
        return self.value + self.cfg.dual_lr * (cost - self.cost_limit)


class PID(Controller):
    """PID Lagrangian with the anti-windup integral and a one-sided, lagged derivative (Stooke et al.
    2020). The integral starts at lambda_0 so that ``init_lambda`` means the same for every controller."""

    name = "pid"

    def __init__(self, cfg, cost_limit, num_costs=1):
        super().__init__(cfg, cost_limit, num_costs)
        for gain in ("kp", "ki", "kd"):
            if getattr(cfg, gain) < 0:
                raise ConfigError(f"lagrange.{gain} must be >= 0, got {getattr(cfg, gain)}")
        for coef in ("ema_p", "ema_d"):
            if not 0.0 <= getattr(cfg, coef) < 1.0:
                raise ConfigError(f"lagrange.{coef} must be in [0, 1), got {getattr(cfg, coef)}")
        if cfg.d_delay < 1:
            raise ConfigError(f"lagrange.d_delay must be >= 1, got {cfg.d_delay}")
        self.integral = self.value.copy()
        self.error_ema = np.zeros_like(self.value)
        self.cost_history: list[list[float]] = []  # Jbar_{t-d}, ..., Jbar_t

    def _step(self, cost):
        cfg = self.cfg
        error = cost - self.cost_limit
        first = not self.cost_history
        self.error_ema = error if first else cfg.ema_p * self.error_ema + (1 - cfg.ema_p) * error
        self.integral = np.maximum(self.integral + cfg.ki * error, 0.0)
        previous = np.asarray(self.cost_history[-1]) if not first else cost
        smoothed = cost if first else cfg.ema_d * previous + (1 - cfg.ema_d) * cost
        self.cost_history = (self.cost_history + [smoothed.tolist()])[-(cfg.d_delay + 1) :]
        lagged = np.asarray(self.cost_history[0])
        derivative = np.maximum(smoothed - lagged, 0.0)
        return cfg.kp * self.error_ema + self.integral + cfg.kd * derivative

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "integral": self.integral.tolist(),
            "error_ema": self.error_ema.tolist(),
            "cost_history": self.cost_history,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.integral = np.asarray(state["integral"], np.float64)
        self.error_ema = np.asarray(state["error_ema"], np.float64)
        self.cost_history = [list(c) for c in state["cost_history"]]


CONTROLLERS = {c.name: c for c in (FixedLambda, DualAscent, PID)}


def make_controller(cfg: LagrangeConfig, cost_limit, num_costs: int = 1) -> Controller:
    try:
        cls = CONTROLLERS[cfg.controller]
    except KeyError:
        raise ConfigError(
            f"unknown lagrange.controller '{cfg.controller}'; choose one of: {', '.join(CONTROLLERS)}"
        ) from None
    return cls(cfg, cost_limit, num_costs)
