"""Device replay buffer: appends, ring wrap-around, uniform sampling of valid rows, offline/online mixing."""

import jax
import jax.numpy as jnp
import numpy as np

from o2o.data.replay import (
    mixed_sample,
    replay_add,
    replay_from_dataset,
    replay_from_state_dict,
    replay_init,
    replay_sample,
    replay_state_dict,
    replay_to_numpy,
)


def rows(start, n, obs_dim=3, act_dim=2):
    idx = np.arange(start, start + n, dtype=np.float32)
    return {
        "observations": np.repeat(idx[:, None], obs_dim, 1),
        "actions": np.repeat(idx[:, None], act_dim, 1) / 1000.0,
        "rewards": idx,
        "costs": idx % 2,
        "next_observations": np.repeat(idx[:, None] + 0.5, obs_dim, 1),
        "terminals": np.zeros(n, np.float32),
        "timeouts": (idx % 10 == 9).astype(np.float32),
    }


def test_append_and_wraparound_keep_newest_rows_in_order():
    buf = replay_init(3, 2, capacity=100)
    buf = replay_add(buf, rows(0, 70))
    assert int(buf.size) == 70 and int(buf.ptr) == 70
    buf = replay_add(buf, rows(70, 50))  # wraps: rows 20..119 remain
    assert int(buf.size) == 100 and int(buf.ptr) == 20
    host = replay_to_numpy(buf)
    np.testing.assert_array_equal(host["rewards"], np.arange(20, 120, dtype=np.float32))
    np.testing.assert_array_equal(host["timeouts"], (np.arange(20, 120) % 10 == 9).astype(np.float32))
    # a batch bigger than the capacity keeps only its newest rows
    buf = replay_add(buf, rows(1000, 250))
    np.testing.assert_array_equal(replay_to_numpy(buf)["rewards"], np.arange(1150, 1250, dtype=np.float32))


def test_sampling_only_returns_valid_rows_and_is_roughly_uniform():
    buf = replay_init(3, 2, capacity=1000)
    buf = replay_add(buf, rows(0, 10))
    batch = jax.jit(lambda b, k: replay_sample(b, k, 5000))(buf, jax.random.PRNGKey(0))
    r = np.asarray(batch["rewards"])
    assert set(np.unique(r)) == set(range(10))  # only the 10 valid rows, never an unfilled slot
    counts = np.bincount(r.astype(int), minlength=10)
    assert counts.min() > 400 and counts.max() < 600
    # columns stay aligned within a sampled row
    np.testing.assert_array_equal(np.asarray(batch["observations"])[:, 0], r)
    np.testing.assert_array_equal(np.asarray(batch["next_observations"])[:, 0], r + 0.5)


def test_mixed_sample_takes_the_ratio_from_each_buffer():
    offline = replay_from_dataset(rows(0, 50))
    online = replay_add(replay_init(3, 2, 100), rows(1000, 20))
    batch = mixed_sample(offline, online, jax.random.PRNGKey(1), 256, offline_ratio=0.25)
    r = np.asarray(batch["rewards"])
    assert r.shape == (256,)
    assert np.sum(r < 1000) == 64 and np.sum(r >= 1000) == 192
    assert np.all(r[:64] < 50) and np.all((r[64:] >= 1000) & (r[64:] < 1020))


def test_replay_from_dataset_and_costs_default():
    d = rows(0, 30)
    d.pop("costs")
    buf = replay_from_dataset(d, capacity=64)
    assert buf.capacity == 64 and int(buf.size) == 30
    np.testing.assert_array_equal(np.asarray(buf.data["costs"][:30]), np.zeros(30))


def test_a_checkpoint_holds_the_written_rows_only_and_restores_the_same_buffer():
    from flax.serialization import msgpack_restore, msgpack_serialize, to_state_dict

    for written in (0, 30, 130):  # empty, partly filled, wrapped
        buf = replay_init(3, 2, capacity=100)
        for start in range(0, written, 50):  # in chunks: the ring wraps part-way (ptr 30 after 130 rows)
            buf = replay_add(buf, rows(start, min(50, written - start)))
        saved = msgpack_restore(msgpack_serialize(replay_state_dict(buf)))  # as a checkpoint file holds it
        assert saved["data"]["observations"].shape == (min(written, 100), 3)
        assert (int(saved["ptr"]) not in (0, int(saved["size"]))) == (written > 100)  # wrapped
        restored = replay_from_state_dict(replay_init(3, 2, capacity=100), saved)
        for name, column in buf.data.items():
            np.testing.assert_array_equal(np.asarray(restored.data[name]), np.asarray(column))
            assert restored.data[name].dtype == column.dtype
        assert int(restored.size) == int(buf.size) and int(restored.ptr) == int(buf.ptr)
    full = msgpack_restore(msgpack_serialize(jax.tree_util.tree_map(np.asarray, to_state_dict(buf))))  # every row (older checkpoints)
    restored = replay_from_state_dict(replay_init(3, 2, capacity=100), full)
    np.testing.assert_array_equal(np.asarray(restored.data["rewards"]), np.asarray(buf.data["rewards"]))
