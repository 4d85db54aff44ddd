"""Pieces every agent shares: the K-updates-per-call scan, optimiser construction, metric helpers."""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any, Callable

import jax
import optax


@lru_cache(maxsize=None)
def adam(learning_rate: float, max_grad_norm: float | None = None) -> optax.GradientTransformation:
    """Adam (optionally after global-norm clipping). Cached: the optimiser is a static part of every
    TrainState, and jit compares static parts by identity, so a new object per agent would recompile
    the update for every new agent (every run of a sweep, every test)."""
    if max_grad_norm is None:
        return optax.adam(learning_rate)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


def make_update_many(
    update_fn: Callable[..., tuple[Any, dict]],
    sample_fn: Callable[[Any, jax.Array], dict],
) -> Callable[..., tuple[Any, dict]]:
    """One jitted call runs ``num_steps`` gradient steps with minibatch sampling inside a ``lax.scan``.

    ``update_fn(state, batch, key, **signals) -> (state, metrics)`` is an agent's single update;
    ``sample_fn(buffers, key) -> batch`` draws a minibatch from device-resident replay buffers.
    ``signals`` (e.g. the Lagrange multiplier) are traced arrays held fixed for the whole call: the host
    owns the controllers and changes them between calls. ``step_signals`` hold one value per gradient
    step (leading axis ``num_steps``), for a controller updated on every minibatch.
    Returns the new state and the metrics averaged over the ``num_steps`` steps.
    """

    @partial(jax.jit, static_argnames=("num_steps",), donate_argnums=(0,))
    def update_many(state, buffers, key, signals: dict, num_steps: int, step_signals: dict | None = None):
        def body(carry, xs):
            step_key, per_step = xs
            sample_key, update_key = jax.random.split(step_key)
            batch = sample_fn(buffers, sample_key)
            return update_fn(carry, batch, update_key, **signals, **per_step)

        xs = (jax.random.split(key, num_steps), step_signals or {})
        state, metrics = jax.lax.scan(body, state, xs)
        return state, jax.tree_util.tree_map(lambda m: m.mean(axis=0), metrics)

    return update_many
