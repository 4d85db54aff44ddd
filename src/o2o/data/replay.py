"""Replay buffers that live on the device and are sampled inside the jitted update.

A ``ReplayBuffer`` is a pytree of fixed-capacity arrays plus ``size`` and ``ptr`` counters, so a jitted
``lax.scan`` of K gradient steps can draw every minibatch itself (no host round trip per step).
Appending happens once per iteration from the host: the new rows are padded to a power-of-two bucket
(a handful of compiled shapes) and scattered in with out-of-range indices dropped.

Offline/online mixing (RLPD's symmetric sampling, OCR-CFT's "half" replay) draws a fixed fraction of
each minibatch from an offline buffer and the rest from the online one.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

# The transition fields every buffer stores (D4RL names). terminals/timeouts as float32 {0, 1}.
FIELDS = ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")


@flax.struct.dataclass
class ReplayBuffer:
    data: dict[str, jax.Array]
    size: jax.Array  # int32 scalar: number of valid rows
    ptr: jax.Array  # int32 scalar: next row to write (ring buffer)

    @property
    def capacity(self) -> int:
        return int(self.data["rewards"].shape[0])


def replay_init(obs_dim: int, act_dim: int, capacity: int) -> ReplayBuffer:
    data = {
        "observations": jnp.zeros((capacity, obs_dim), jnp.float32),
        "actions": jnp.zeros((capacity, act_dim), jnp.float32),
        "rewards": jnp.zeros((capacity,), jnp.float32),
        "costs": jnp.zeros((capacity,), jnp.float32),
        "next_observations": jnp.zeros((capacity, obs_dim), jnp.float32),
        "terminals": jnp.zeros((capacity,), jnp.float32),
        "timeouts": jnp.zeros((capacity,), jnp.float32),
    }
    return ReplayBuffer(data=data, size=jnp.zeros((), jnp.int32), ptr=jnp.zeros((), jnp.int32))


def _field(transitions, name: str):
    if isinstance(transitions, Mapping):
        return transitions.get(name)
    return getattr(transitions, name, None)


def _as_rows(transitions) -> dict[str, np.ndarray]:
    """The D4RL fields as float32 host arrays; missing costs/timeouts (unconstrained data) are zeros."""
    rows = {}
    for name in FIELDS:
        value = _field(transitions, name)
        if value is None:
            if name not in ("costs", "timeouts"):
                raise KeyError(f"transitions lack '{name}'")
            value = np.zeros(len(np.asarray(_field(transitions, "rewards"))), np.float32)
        rows[name] = np.asarray(value, np.float32)
    return rows


@partial(jax.jit, donate_argnums=(0,))
def _insert(buffer: ReplayBuffer, rows: dict[str, jax.Array], count: jax.Array) -> ReplayBuffer:
    capacity = buffer.data["rewards"].shape[0]
    bucket = rows["rewards"].shape[0]
    offsets = jnp.arange(bucket, dtype=jnp.int32)
    index = (buffer.ptr + offsets) % capacity
    index = jnp.where(offsets < count, index, capacity)  # padded rows -> out of range -> dropped
    data = {k: buffer.data[k].at[index].set(rows[k], mode="drop") for k in buffer.data}
    return ReplayBuffer(
        data=data,
        size=jnp.minimum(buffer.size + count, capacity).astype(jnp.int32),
        ptr=((buffer.ptr + count) % capacity).astype(jnp.int32),
    )


def replay_state_dict(buffer: ReplayBuffer) -> dict:
    """The buffer as a checkpoint holds it: the rows written so far only (all of them once the ring has
    wrapped) and its counters (the ring has wrapped iff ``ptr`` is neither 0 nor ``size``)."""
    n = int(buffer.size)
    return {"data": {k: np.asarray(v[:n]) for k, v in buffer.data.items()}, "size": np.asarray(buffer.size),
            "ptr": np.asarray(buffer.ptr)}


def replay_from_state_dict(template: ReplayBuffer, state: dict) -> ReplayBuffer:
    """The buffer ``replay_state_dict`` saved, at ``template``'s capacity: the rows never written are
    zeros, as they were (a resume is bit-identical). A checkpoint holding every row loads as it is."""
    capacity = template.capacity
    data = {}
    for name, like in template.data.items():
        saved = np.asarray(state["data"][name], like.dtype)
        if saved.shape[0] > capacity or saved.shape[1:] != like.shape[1:]:
            raise ValueError(f"checkpoint replay column '{name}' has shape {saved.shape}, the buffer {like.shape}")
        rows = np.zeros(like.shape, like.dtype)
        rows[: saved.shape[0]] = saved
        data[name] = jnp.asarray(rows)
    return ReplayBuffer(data=data, size=jnp.asarray(state["size"], jnp.int32), ptr=jnp.asarray(state["ptr"], jnp.int32))


def replay_add(buffer: ReplayBuffer, transitions) -> ReplayBuffer:
    """Append transitions (a mapping or object with the D4RL field names); returns the new buffer.
    The old buffer's arrays are donated (do not use it afterwards)."""
    rows = _as_rows(transitions)
    count = rows["rewards"].shape[0]
    if count == 0:
        return buffer
    if count > buffer.capacity:  # keep only the newest rows, as a ring buffer would
        rows = {k: v[-buffer.capacity :] for k, v in rows.items()}
        count = buffer.capacity
    bucket = 1 << max(6, int(np.ceil(np.log2(count))))
    padded = {k: np.concatenate([v, np.zeros((bucket - count,) + v.shape[1:], v.dtype)]) for k, v in rows.items()}
    return _insert(buffer, padded, jnp.asarray(count, jnp.int32))


def replay_from_dataset(dataset, capacity: int | None = None) -> ReplayBuffer:
    """A buffer pre-filled with a whole offline dataset (any object with the D4RL field names)."""
    rows = _as_rows(dataset)
    n = rows["rewards"].shape[0]
    capacity = max(capacity or n, n)
    buffer = replay_init(rows["observations"].shape[1], rows["actions"].shape[1], capacity)
    data = {k: buffer.data[k].at[:n].set(jnp.asarray(v)) for k, v in rows.items()}
    return ReplayBuffer(data=data, size=jnp.asarray(n, jnp.int32), ptr=jnp.asarray(n % capacity, jnp.int32))


def replay_sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """Uniform sample of ``batch_size`` valid rows (with replacement). Jit-able."""
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return {k: v[index] for k, v in buffer.data.items()}


def mixed_sample(
    offline: ReplayBuffer, online: ReplayBuffer, key: jax.Array, batch_size: int, offline_ratio: float
) -> dict[str, jax.Array]:
    """A minibatch with round(offline_ratio * batch_size) rows from ``offline`` and the rest from
    ``online`` (both uniform). Jit-able; the split is static."""
    n_off = int(round(offline_ratio * batch_size))
    n_on = batch_size - n_off
    k_off, k_on = jax.random.split(key)
    if n_on == 0:
        return replay_sample(offline, k_off, batch_size)
    if n_off == 0:
        return replay_sample(online, k_on, batch_size)
    a = replay_sample(offline, k_off, n_off)
    b = replay_sample(online, k_on, n_on)
    return {k: jnp.concatenate([a[k], b[k]], axis=0) for k in a}


def replay_to_numpy(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    """The valid rows in insertion order (oldest first), on the host."""
    size, ptr, cap = int(buffer.size), int(buffer.ptr), buffer.capacity
    order = np.arange(size) if size < cap else (np.arange(cap) + ptr) % cap
    return {k: np.asarray(v)[order] for k, v in buffer.data.items()}
