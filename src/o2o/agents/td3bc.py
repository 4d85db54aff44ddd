"""TD3+BC (Fujimoto & Gu, 2021, "A Minimalist Approach to Offline Reinforcement Learning").

TD3 with a behaviour-cloning term in the actor loss:

    critic:  L(phi_i) = E[(Q_i(s,a) - y)^2],
             y = r_scale r + gamma (1 - terminal) min_j Qbar_j(s', a~'),
             a~' = clip(pibar(s') + clip(eps, -c, c), -1, 1),  eps ~ N(0, sigma^2)   (target policy smoothing)
    actor:   L(theta) = -lambda E[Q_1(s, pi(s))] + E[(pi(s) - a)^2],
             lambda = alpha / E[|Q_1(s, pi(s))|]       (stop-gradient: normalises the Q scale away)
    delay:   the actor and both targets (actor and critics, Polyak tau) update every d-th step.

Defaults are the paper's and CORL's: alpha 2.5, sigma 0.2, c 0.5, d 2, 2x256, Adam 3e-4, tau 0.005,
batch 256. Both the paper and CORL normalise observations with the dataset's mean and std; that is the
data pipeline's job here (normalise the dataset and wrap the env), not the agent's.

The state, the critic step and the delayed actor step are TD3's (``agents/td3.py``, ``delayed_update``);
this module adds only the actor loss. Only ``terminals`` stop bootstrapping (time-limit truncation does not).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from o2o.agents import td3


@dataclass(frozen=True)
class TD3BCConfig:
    hidden_dims: tuple[int, ...] = field(default=(256, 256), metadata={"help": "hidden widths of actor and critics"})
    num_critics: int = field(default=2, metadata={"help": "critics in the ensemble (min over them in the target)"})
    critic_layer_norm: bool = field(default=False, metadata={"help": "LayerNorm in the critics"})
    actor_lr: float = field(default=3e-4, metadata={"help": "actor Adam learning rate"})
    critic_lr: float = field(default=3e-4, metadata={"help": "critic Adam learning rate"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    tau: float = field(default=0.005, metadata={"help": "Polyak rate of the target actor and critics"})
    alpha: float = field(default=2.5, metadata={"help": "Q weight: lambda = alpha / mean|Q|"})
    policy_noise: float = field(default=0.2, metadata={"help": "std of the target policy smoothing noise"})
    noise_clip: float = field(default=0.5, metadata={"help": "clip of the target policy smoothing noise"})
    policy_delay: int = field(default=2, metadata={"help": "actor and targets update every this many critic steps"})
    exploration_noise: float = field(default=0.1, metadata={"help": "std of the Gaussian noise of stochastic act()"})
    reward_scale: float = field(default=1.0, metadata={"help": "reward multiplier in the critic target"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})


# TD3+BC is TD3 with another actor loss: the state, init, target and critic loss are TD3's, so a TD3+BC
# checkpoint loads into online TD3 (``agents/td3.py``) as it is.
TD3BCState = td3.TD3State
init = td3.init
smoothed_target_actions = td3.smoothed_target_actions
critic_target = td3.critic_target
critic_loss = td3.critic_loss
actor_actions = td3.actor_actions
act = td3.act
POLICY = td3.POLICY


# ---------------------------------------------------------------- losses (pure functions)


def q_weight(q: jax.Array, alpha: float) -> jax.Array:
    """lambda = alpha / mean|Q| with the gradient stopped (TD3+BC's normalisation)."""
    return jax.lax.stop_gradient(alpha / jnp.abs(q).mean())


def td3bc_actor_loss(actor_params, state: TD3BCState, batch) -> tuple[jax.Array, dict]:
    """-lambda mean Q_1(s, pi(s)) + mean (pi(s) - a)^2 (first critic, as in the paper)."""
    pi = state.actor.apply_fn(actor_params, batch["observations"])
    q = state.critic.apply_fn(state.critic.params, batch["observations"], pi)[0]
    lmbda = q_weight(q, state.config.alpha)
    bc = ((pi - batch["actions"]) ** 2).mean()
    loss = -lmbda * q.mean() + bc
    return loss, {"actor_loss": loss, "bc_mse": bc, "q_weight": lmbda}


# ---------------------------------------------------------------- update


def update(state: TD3BCState, batch: dict, key: jax.Array) -> tuple[TD3BCState, dict]:
    """One critic step; every ``policy_delay``-th step also an actor step and the target updates."""
    return td3.delayed_update(state, batch, key, td3bc_actor_loss)
