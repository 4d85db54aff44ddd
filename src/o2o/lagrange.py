"""Lagrange multiplier controllers (host side).

A controller turns measured episode costs into the multiplier lambda >= 0 that SAC-Lag's actor loss
uses. Each controller is fed J_t = the mean undiscounted episode cost of the latest batch of rollouts
(not a critic estimate) and the cost limit kappa; ``update(J)`` returns the new lambda. Costs may be a
vector (one entry and one multiplier per cost signal); scalars are treated as length-1 vectors.

    fixed:        lambda_t = lambda_0
    dual ascent:  lambda_t = [lambda_{t-1} + eta (J_t - kappa)]_+             (projected gradient ascent)

PID and adaptive PID (Stooke et al. 2020; Marvel's aPID) come with the Marvel work.
State is plain numbers (``state_dict`` / ``load_state_dict``) so checkpoints hold it as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from o2o.errors import ConfigError


@dataclass(frozen=True)
class LagrangeConfig:
    controller: Literal["fixed", "dual-ascent"] = field(
        default="dual-ascent", metadata={"help": "multiplier controller: fixed | dual-ascent"}
    )
    init_lambda: float = field(default=0.0, metadata={"help": "initial multiplier lambda_0 (>= 0)"})
    dual_lr: float = field(default=0.01, metadata={"help": "dual ascent step eta per cost measurement"})
    max_lambda: float | None = field(default=None, metadata={"help": "optional upper clip of lambda"})


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


CONTROLLERS = {c.name: c for c in (FixedLambda, DualAscent)}


def make_controller(cfg: LagrangeConfig, cost_limit, num_costs: int = 1) -> Controller:
    try:
        cls = CONTROLLERS[cfg.controller]
    except KeyError:
        raise ConfigError(
            f"unknown lagrange.controller '{cfg.controller}'; choose one of: {', '.join(CONTROLLERS)}"
        ) from None
    return cls(cfg, cost_limit, num_costs)
