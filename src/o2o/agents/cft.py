"""Constrained fine-tuning pieces shared by O2SAC and O2TD3 (Luo et al. 2024, OCR-CFT, Sec. 4.3, eq. 20).

    CMDP:    max_pi J(pi)  s.t.  E_s[f(pi(.|s), pi_ref(.|s))] < tau_t
    lambda:  lambda = exp(l), lambda_0 = 1, one Adam step on l per ``dual_every`` gradient steps of
             L(l) = exp(l) * w,   w = mean_j |kappa - 1[u_j > 0]| u_j,   u_j = tau_t - f_j
             (expectile-weighted: violations u_j < 0 weigh kappa = 0.7, satisfied ones 1 - kappa = 0.3;
             w < 0 when the constraint is violated on balance, so the step raises l)
    tau_t:   tau_start + (tau_end - tau_start) min(1, t / T)     (loosens linearly over T env steps)

The host owns tau_t (a per-gradient-step signal); lambda lives in the agent state (``log_lambda``), so it
is updated inside the jitted scan and checkpointed with the networks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from o2o.agents.common import adam


class LogLambda:
    """lambda = exp(l) as a tiny 'module' so it can sit in a TrainState."""

    @staticmethod
    def apply(params):
        return jnp.exp(params["log_lambda"])


def init_log_lambda(init_lambda: float, learning_rate: float) -> TrainState:
    return TrainState.create(
        apply_fn=LogLambda.apply,
        params={"log_lambda": jnp.asarray(np.log(init_lambda), jnp.float32)},
        tx=adam(learning_rate),
    )


def expectile_dual_weight(f: jax.Array, threshold, kappa: float) -> jax.Array:
    """w = mean_j |kappa - 1[u_j > 0]| u_j with u_j = threshold - f_j (f carries no gradient)."""
    u = threshold - jax.lax.stop_gradient(f)
    return (jnp.abs(kappa - (u > 0).astype(u.dtype)) * u).mean()


def dual_loss(params, f: jax.Array, threshold, kappa: float) -> jax.Array:
    """L(l) = exp(l) * w: minimised over l, it pushes lambda up while the constraint is violated."""
    return LogLambda.apply(params) * expectile_dual_weight(f, threshold, kappa)


def dual_step(log_lambda: TrainState, f: jax.Array, threshold, kappa: float) -> TrainState:
    grads = jax.grad(dual_loss)(log_lambda.params, f, threshold, kappa)
    return log_lambda.apply_gradients(grads=grads)


def maybe_dual_step(log_lambda: TrainState, step: jax.Array, every: int, f, threshold, kappa: float) -> TrainState:
    """A dual step on gradient steps 0, every, 2 every, ... (one per env step at O2SAC's 10 updates per step)."""
    if every == 1:
        return dual_step(log_lambda, f, threshold, kappa)
    return jax.lax.cond(step % every == 0, lambda ll: dual_step(ll, f, threshold, kappa), lambda ll: ll, log_lambda)


def threshold_schedule(env_steps, start: float, end: float, steps: int):
    """tau_t: linear from ``start`` to ``end`` over ``steps`` env steps, then ``end`` (numpy, host side)."""
    frac = np.minimum(np.asarray(env_steps, np.float64) / max(steps, 1), 1.0)
    return start + (end - start) * frac
