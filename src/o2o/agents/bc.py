"""Behaviour cloning by maximum likelihood, and BC-Safe (BC on the episodes that satisfy the cost limit).

    actor:  L(theta) = -E_{(s,a)~D}[ log pi_theta(a|s) ]     (tanh-Gaussian, exact log-density)

BC-Safe (the DSRL/OSRL baseline, Liu et al. 2023, "Datasets and Benchmarks for Offline Safe RL") is
the same loss on a filtered dataset: only episodes whose undiscounted episode cost is <= the cost limit
kappa. The filtering is the data pipeline's job, done once on the host with
``filter_safe_trajectories(dataset, cost_limit)``; the agent itself is plain BC.

Choices: OSRL's BC regresses a deterministic tanh-MLP with MSE; o2o fits the tanh-Gaussian actor by
likelihood instead, so the result is a stochastic policy a SAC-style fine-tuner can start from
(its mode tanh(mean) is the deterministic policy). Dataset actions are clipped to +-(1 - 1e-6) before
atanh. Defaults follow OSRL's BC config: 2x256, Adam 1e-3, batch 512.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from o2o.agents import sac
from o2o.agents.common import adam
from o2o.errors import DatasetError
from o2o.nn import TanhGaussianActor, tanh_gaussian_log_prob, shared_module

act = sac.act
actor_actions = sac.actor_actions
POLICY = sac.POLICY


@dataclass(frozen=True)
class BCConfig:
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of the actor"})
    actor_lr: float = field(default=1e-3, metadata={"help": "actor Adam learning rate (OSRL: 1e-3)"})
    batch_size: int = field(default=512, metadata={"help": "minibatch size (OSRL: 512)"})
    action_clip: float = field(default=1.0 - 1e-6, metadata={"help": "dataset actions clipped to +-this before atanh"})
    log_std_min: float = field(default=-5.0, metadata={"help": "lower bound of the actor's log std"})
    log_std_max: float = field(default=2.0, metadata={"help": "upper bound of the actor's log std"})


@flax.struct.dataclass
class BCState:
    actor: TrainState
    config: BCConfig = flax.struct.field(pytree_node=False)


def init(key: jax.Array, obs_dim: int, act_dim: int, cfg: BCConfig) -> BCState:
    actor_def = shared_module(TanhGaussianActor, tuple(cfg.hidden_dims), act_dim, cfg.log_std_min, cfg.log_std_max)
    params = actor_def.init(key, jnp.zeros((1, obs_dim), jnp.float32))
    return BCState(actor=TrainState.create(apply_fn=actor_def.apply, params=params, tx=adam(cfg.actor_lr)), config=cfg)


def bc_loss(actor_params, apply_fn, observations, actions, action_clip: float = 1.0 - 1e-6) -> tuple[jax.Array, dict]:
    """-E[log pi(a|s)] of the dataset actions."""
    mean, log_std = apply_fn(actor_params, observations)
    log_prob = tanh_gaussian_log_prob(mean, log_std, actions, clip=action_clip)
    loss = -log_prob.mean()
    mse = ((jnp.tanh(mean) - actions) ** 2).mean()  # diagnostic: how far the mode is from the data
    return loss, {"bc_loss": loss, "bc_mode_mse": mse, "log_std_mean": log_std.mean()}


def update(state: BCState, batch: dict, key: jax.Array) -> tuple[BCState, dict]:
    del key  # maximum likelihood needs no sampling
    grads, info = jax.grad(bc_loss, has_aux=True)(
        state.actor.params, state.actor.apply_fn, batch["observations"], batch["actions"], state.config.action_clip
    )
    return state.replace(actor=state.actor.apply_gradients(grads=grads)), info


def filter_safe_trajectories(dataset: Any, cost_limit: float):
    """The episodes of ``dataset`` whose undiscounted episode cost is <= ``cost_limit`` (BC-Safe's data).

    Works on any object with ``episode_costs()`` and ``select_episodes(mask)`` (``o2o.data.Dataset``).
    Raises ``DatasetError`` when no episode qualifies, since BC on nothing is not a result.
    """
    costs = dataset.episode_costs()
    mask = costs <= cost_limit
    if not mask.any():
        raise DatasetError(
            f"no episode has cost <= {cost_limit} (lowest is {float(costs.min()) if costs.size else 'n/a'}); "
            "BC-Safe needs at least one safe episode: raise the cost limit or use other data"
        )
    return dataset.select_episodes(mask)
