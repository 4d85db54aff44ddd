"""Dataset in memory and on disk: round trips, the D4RL / DSRL / Minari layouts, episode bookkeeping,
and one clear DatasetError (naming the file) for every kind of bad file."""

from __future__ import annotations

import time
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from o2o.data import Dataset, concatenate, load_hdf5, save_hdf5, sha256_data, sha256_file, validate
from o2o.data import hdf5 as hdf5_module
from o2o.errors import DatasetError

OBS, ACT = 3, 2


def make_dataset(lengths=(3, 2, 4), *, tail_unfinished=True, has_costs=True, seed=0) -> Dataset:
    """Episodes of the given lengths: first ends terminal, the others by timeout, the last maybe unfinished.

    Rewards are 1, 2, 3, ... and costs are 0.5 per step, so per-episode sums are easy to check by hand.
    """
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    ends = np.cumsum(lengths) - 1
    terminals[ends[0]] = True
    timeouts[ends[1:]] = True
    if tail_unfinished:
        timeouts[ends[-1]] = False
    return Dataset(
        observations=rng.normal(size=(n, OBS)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        rewards=np.arange(1, n + 1, dtype=np.float32),
        costs=np.full(n, 0.5 if has_costs else 0.0, np.float32),
        next_observations=rng.normal(size=(n, OBS)).astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
        has_costs=has_costs,
        metadata={"task": "FakeRun", "generator": {"policy": "sac", "seeds": [1, 2]}, "max_cost": 25.0},
    )


def write_raw(path, attrs=None, **arrays) -> None:
    """An HDF5 file written by hand, as another tool (D4RL, DSRL, a buggy script) would."""
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def raw_columns(n=10, *, costs=True, next_obs=True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    columns = {
        "observations": rng.normal(size=(n, OBS)).astype(np.float32),
        "actions": rng.normal(size=(n, ACT)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    columns["timeouts"][-1] = True
    if costs:
        columns["costs"] = rng.integers(0, 2, size=n).astype(np.float32)
    if next_obs:
        columns["next_observations"] = rng.normal(size=(n, OBS)).astype(np.float32)
    return columns


def fake_task(obs_dim=OBS, act_dim=ACT, safe=False):
    return SimpleNamespace(name="FakeRun", obs_dim=obs_dim, act_dim=act_dim, safe=safe)


def assert_one_line_error(excinfo, path, *fragments):
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# ----- round trip and reproducibility ------------------------------------------------------------------


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path):
    ds = make_dataset()
    path = tmp_path / "fake.hdf5"
    save_hdf5(ds, path, metadata={"extra": 3})
    loaded = load_hdf5(path)

    for name, value in ds.as_dict().items():
        np.testing.assert_array_equal(getattr(loaded, name), value)
        assert getattr(loaded, name).dtype == value.dtype
    assert loaded.observations.dtype == np.float32 and loaded.terminals.dtype == np.bool_
    assert loaded.has_costs
    assert loaded.metadata["generator"] == {"policy": "sac", "seeds": [1, 2]}
    assert loaded.metadata["extra"] == 3 and loaded.metadata["max_cost"] == 25.0
    assert loaded.metadata["loaded_from"] == str(path)
    # Top-level scalars are also plain attributes, so h5ls and other tools see them.
    with h5py.File(path, "r") as f:
        assert f.attrs["task"] == "FakeRun"
        assert f["observations"].compression == "gzip"
        assert set(f.keys()) == {"observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts"}


def test_dataset_without_costs_is_saved_without_costs_key(tmp_path):
    path = tmp_path / "nocost.hdf5"
    save_hdf5(make_dataset(has_costs=False), path)
    with h5py.File(path, "r") as f:
        assert "costs" not in f
    loaded = load_hdf5(path)
    assert not loaded.has_costs and not loaded.costs.any()


def test_saving_twice_gives_the_same_checksum(tmp_path):
    ds = make_dataset(lengths=(400, 300, 500))
    first = save_hdf5(ds, tmp_path / "a.hdf5")
    time.sleep(1.1)  # HDF5 timestamps have one-second resolution; they must not reach the file
    second = save_hdf5(ds, tmp_path / "b.hdf5")
    assert first == second == sha256_file(tmp_path / "a.hdf5")
    changed = save_hdf5(ds.replace(rewards=ds.rewards + 1), tmp_path / "c.hdf5")
    assert changed != first
    assert load_hdf5(tmp_path / "a.hdf5", expected_sha256=first).num_transitions == 1200


def test_transitions_checksum_ignores_metadata_and_sees_one_changed_value(tmp_path):
    ds = make_dataset(lengths=(400, 300))
    a = save_hdf5(ds, tmp_path / "a.hdf5", metadata={"code_version": "0.1.0+gaaaaaaa"})
    b = save_hdf5(ds, tmp_path / "b.hdf5", metadata={"code_version": "0.1.0+gbbbbbbb"})
    assert a != b  # the file checksum covers the metadata
    first = sha256_data(load_hdf5(tmp_path / "a.hdf5"))
    assert first == sha256_data(load_hdf5(tmp_path / "b.hdf5")) == sha256_data(ds)
    rewards = ds.rewards.copy()
    rewards[123] = np.nextafter(rewards[123], np.float32(np.inf))  # one ulp in one row
    assert sha256_data(ds.replace(rewards=rewards)) != first
    timeouts = ds.timeouts.copy()
    timeouts[10] = not timeouts[10]
    assert sha256_data(ds.replace(timeouts=timeouts)) != first


def test_n_by_1_columns_are_squeezed(tmp_path):
    columns = raw_columns()
    for key in ("rewards", "costs", "terminals", "timeouts"):
        columns[key] = columns[key][:, None]
    path = tmp_path / "column_vectors.hdf5"
    write_raw(path, **columns)
    loaded = load_hdf5(path)
    assert loaded.rewards.shape == loaded.costs.shape == loaded.terminals.shape == loaded.timeouts.shape == (10,)
    np.testing.assert_array_equal(loaded.rewards, columns["rewards"][:, 0])


# ----- the published layouts ---------------------------------------------------------------------------


def test_d4rl_layout_without_costs_and_with_extra_groups(tmp_path):
    columns = raw_columns(costs=False)
    columns["terminals"] = columns["terminals"].astype(np.float32)  # some D4RL files store flags as floats
    path = tmp_path / "hopper-medium-v2.hdf5"
    write_raw(path, **columns)
    with h5py.File(path, "a") as f:
        f.create_dataset("infos/qpos", data=np.zeros((10, 6)))
        f.create_dataset("infos/action_log_probs", data=np.zeros(10))
        f.create_dataset("metadata/algorithm", data=np.bytes_("SAC"))
        f.create_dataset("metadata/policy/fc0/weight", data=np.zeros((4, 4)))
    loaded = load_hdf5(path, task=fake_task())
    assert not loaded.has_costs
    assert loaded.costs.dtype == np.float32 and not loaded.costs.any()
    assert loaded.timeouts[-1] and loaded.num_episodes == 1
    np.testing.assert_array_equal(loaded.next_observations, columns["next_observations"])
    with pytest.raises(DatasetError, match="costs"):
        loaded.episode_costs()


def d4rl_qlearning_reference(columns):
    """The loop of d4rl.qlearning_dataset (terminate_on_end=False), transcribed."""
    keep = {"observations": [], "next_observations": [], "actions": [], "rewards": [], "terminals": []}
    n = columns["rewards"].shape[0]
    for i in range(n - 1):
        if columns["timeouts"][i]:
            continue
        keep["observations"].append(columns["observations"][i])
        keep["next_observations"].append(columns["observations"][i + 1])
        keep["actions"].append(columns["actions"][i])
        keep["rewards"].append(columns["rewards"][i])
        keep["terminals"].append(bool(columns["terminals"][i]))
    return {key: np.array(value) for key, value in keep.items()}


def test_d4rl_file_without_next_observations_is_read_like_qlearning_dataset(tmp_path):
    columns = raw_columns(n=12, costs=False, next_obs=False)
    # episode 0: steps 0-2 ends terminal; episode 1: 3-6 ends by timeout; 7: terminal AND timeout;
    # episode 3: 8-11 unfinished tail.
    columns["terminals"][:] = False
    columns["timeouts"][:] = False
    columns["terminals"][[2, 7]] = True
    columns["timeouts"][[6, 7]] = True
    path = tmp_path / "old-d4rl.hdf5"
    write_raw(path, **columns)
    loaded = load_hdf5(path)

    reference = d4rl_qlearning_reference(columns)
    for key, value in reference.items():
        np.testing.assert_array_equal(getattr(loaded, key), value)
    assert loaded.metadata["derived_next_observations"] is True
    assert loaded.metadata["dropped_steps"] == 3  # steps 6, 7 and the last row
    # Kept original steps 0,1,2 | 3,4,5 | 8,9,10: the step before each dropped one now ends its episode.
    assert loaded.episodes() == [(0, 3), (3, 6), (6, 9)]
    assert not loaded.has_unfinished_tail


def test_dsrl_layout_with_costs_and_a_terminal_timeout_step(tmp_path):
    columns = raw_columns(n=8)
    columns["terminals"][3] = True
    columns["timeouts"][3] = True  # legitimate: the last allowed step also ended the MDP
    path = tmp_path / "OfflineCarRun-v0-40-8.hdf5"
    write_raw(path, **columns)
    loaded = load_hdf5(path, task=fake_task(safe=True))
    assert loaded.has_costs
    assert loaded.episodes() == [(0, 4), (4, 8)]
    np.testing.assert_allclose(loaded.episode_costs(), [columns["costs"][:4].sum(), columns["costs"][4:].sum()])


def write_minari_episode(f, name, length, *, cost=True, terminated=True, truncated=False, seed=0):
    rng = np.random.default_rng(seed)
    group = f.create_group(name)
    group.create_dataset("observations", data=rng.normal(size=(length + 1, OBS)).astype(np.float32))
    group.create_dataset("actions", data=rng.normal(size=(length, ACT)).astype(np.float32))
    group.create_dataset("rewards", data=np.arange(length, dtype=np.float64) + 100 * seed)
    terminations = np.zeros(length, bool)
    truncations = np.zeros(length, bool)
    terminations[-1] = terminated
    truncations[-1] = truncated
    group.create_dataset("terminations", data=terminations)
    group.create_dataset("truncations", data=truncations)
    if cost:
        group.create_dataset("infos/cost", data=np.ones(length) * seed)
    return group


def test_minari_layout_is_flattened(tmp_path):
    path = tmp_path / "main_data.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["dataset_id"] = "safe-run-expert-v0"
        f.attrs["total_episodes"] = 3
        # Written out of order: episode_10 must come after episode_2, not between 1 and 2.
        write_minari_episode(f, "episode_10", 2, terminated=False, truncated=True, seed=10)
        write_minari_episode(f, "episode_0", 3, seed=0)
        write_minari_episode(f, "episode_2", 4, terminated=False, seed=2)  # recording stopped: no flag
    loaded = load_hdf5(path, task=fake_task(safe=True))

    assert loaded.metadata["source_layout"] == "minari"
    assert loaded.metadata["dataset_id"] == "safe-run-expert-v0" and loaded.metadata["total_episodes"] == 3
    assert loaded.metadata["episodes_closed_with_timeout"] == 1
    assert loaded.has_costs and loaded.num_transitions == 9
    assert loaded.episodes() == [(0, 3), (3, 7), (7, 9)]
    np.testing.assert_allclose(loaded.episode_costs(), [0.0, 8.0, 20.0])
    with h5py.File(path, "r") as f:
        observations = f["episode_2/observations"][()]
    np.testing.assert_array_equal(loaded.observations[3:7], observations[:-1])
    np.testing.assert_array_equal(loaded.next_observations[3:7], observations[1:])  # incl. the final state
    np.testing.assert_array_equal(loaded.terminals, [0, 0, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(loaded.timeouts, [0, 0, 0, 0, 0, 0, 1, 0, 1])


def test_minari_without_costs(tmp_path):
    path = tmp_path / "minari_nocost.hdf5"
    with h5py.File(path, "w") as f:
        write_minari_episode(f, "episode_0", 3, cost=False)
    assert not load_hdf5(path).has_costs
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path, require_costs=True)
    assert_one_line_error(excinfo, path, "no 'costs'")


# ----- episode bookkeeping ---------------------------------------------------------------------------------


def test_episodes_returns_costs_and_lengths_by_hand():
    ds = make_dataset(lengths=(3, 2, 4))  # rewards 1..9
    assert ds.num_transitions == 9 and ds.obs_dim == OBS and ds.act_dim == ACT
    assert ds.has_unfinished_tail
    np.testing.assert_array_equal(ds.episode_ends(), [2, 4, 8])
    assert ds.episodes() == [(0, 3), (3, 5), (5, 9)]
    np.testing.assert_array_equal(ds.episode_lengths(), [3, 2, 4])
    np.testing.assert_allclose(ds.episode_returns(), [1 + 2 + 3, 4 + 5, 6 + 7 + 8 + 9])
    np.testing.assert_allclose(ds.episode_costs(), [1.5, 1.0, 2.0])
    assert not make_dataset(tail_unfinished=False).has_unfinished_tail


def test_select_episodes_by_mask_and_indices_keeps_boundaries():
    ds = make_dataset(lengths=(3, 2, 4))
    by_mask = ds.select_episodes([True, False, True])
    np.testing.assert_allclose(by_mask.episode_returns(), [6, 30])
    assert by_mask.has_unfinished_tail  # the tail is still last

    reordered = ds.select_episodes([2, 1])  # the unfinished tail first: it must not merge with the next
    assert reordered.episodes() == [(0, 4), (4, 6)]
    np.testing.assert_allclose(reordered.episode_returns(), [30, 9])
    assert reordered.timeouts[3] and not ds.timeouts[8]  # the original is untouched
    assert ds.select_episodes([]).num_transitions == 0
    with pytest.raises(ValueError):
        ds.select_episodes([True, False])


def test_concatenate_keeps_episodes_apart_and_refuses_mixed_costs():
    first, second = make_dataset(lengths=(3, 2, 4)), make_dataset(lengths=(2, 2), seed=1)
    both = concatenate([first, second])
    assert both.num_transitions == 13
    assert both.num_episodes == first.num_episodes + second.num_episodes
    np.testing.assert_allclose(both.episode_returns()[:3], first.episode_returns())
    with pytest.raises(DatasetError, match="with and without costs"):
        Dataset.concatenate([first, make_dataset(has_costs=False)])


def test_constructor_casts_and_validates():
    columns = make_dataset().as_dict()
    cast = Dataset(**{**columns, "rewards": columns["rewards"].astype(np.float64), "terminals": columns["terminals"].astype(int)})
    assert cast.rewards.dtype == np.float32 and cast.terminals.dtype == np.bool_
    with pytest.raises(DatasetError, match="different lengths"):
        Dataset(**{**columns, "actions": columns["actions"][:-1]})
    with pytest.raises(DatasetError, match="flags must be 0 or 1"):
        Dataset(**{**columns, "terminals": np.full(9, 0.5)})
    with pytest.raises(DatasetError, match="next_observations are 4-wide"):
        validate({**columns, "next_observations": np.zeros((9, 4))}, "unit")
    overflow = columns["rewards"].astype(np.float64)
    overflow[4] = 1e300  # finite in float64, inf once stored as float32
    with pytest.raises(DatasetError, match="row 4"):
        Dataset(**{**columns, "rewards": overflow}, source="gen")


# ----- bad inputs: each is one DatasetError naming the file ---------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.hdf5"
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path)
    assert_one_line_error(excinfo, path, "no such dataset file", "o2o data list")


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "notes.hdf5"
    path.write_text("observations,actions\n1,2\n")
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path)
    assert_one_line_error(excinfo, path, "not an HDF5 file")


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.hdf5"
    save_hdf5(make_dataset(lengths=(200, 200)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path)
    assert_one_line_error(excinfo, path, "truncated or corrupt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.hdf5"
    path.write_bytes(b"")
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path)
    assert_one_line_error(excinfo, path, "empty")


def test_missing_required_key(tmp_path):
    columns = raw_columns()
    del columns["actions"]
    path = tmp_path / "noactions.hdf5"
    write_raw(path, **columns)
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path)
    assert_one_line_error(excinfo, path, "missing required key 'actions'", "keys present: costs, next_observations, observations")


def test_mismatched_lengths(tmp_path):
    columns = raw_columns()
    columns["rewards"] = columns["rewards"][:7]
    path = tmp_path / "short.hdf5"
    write_raw(path, **columns)
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path)
    assert_one_line_error(excinfo, path, "different lengths", "rewards=7", "observations=10")


@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_values_name_column_and_row(tmp_path, bad, kind):
    columns = raw_columns()
    columns["next_observations"][6, 1] = bad
    columns["next_observations"][8, 0] = bad
    path = tmp_path / "nonfinite.hdf5"
    write_raw(path, **columns)
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path)
    assert_one_line_error(excinfo, path, f"'next_observations' has {kind} at row 6")


def test_string_column(tmp_path):
    columns = raw_columns()
    path = tmp_path / "strings.hdf5"
    write_raw(path, **columns)
    with h5py.File(path, "a") as f:
        del f["rewards"]
        f.create_dataset("rewards", data=np.array(["good"] * 10, dtype=h5py.string_dtype()))
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path)
    assert_one_line_error(excinfo, path, "'rewards' holds non-numeric data")


def test_widths_that_do_not_match_the_task(tmp_path):
    path = tmp_path / "other-task.hdf5"
    write_raw(path, **raw_columns())
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path, task=fake_task(obs_dim=11, act_dim=3))
    assert_one_line_error(excinfo, path, "3/2", "11/3", "another task", "FakeRun")


def test_safe_task_without_costs(tmp_path):
    path = tmp_path / "d4rl-like.hdf5"
    write_raw(path, **raw_columns(costs=False))
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path, task=fake_task(safe=True))
    assert_one_line_error(excinfo, path, "no 'costs' column", "safe task FakeRun")


def test_checksum_mismatch(tmp_path):
    path = tmp_path / "pinned.hdf5"
    actual = save_hdf5(make_dataset(), path)
    expected = "0" * 64
    with pytest.raises(DatasetError) as excinfo:
        load_hdf5(path, expected_sha256=expected)
    assert_one_line_error(excinfo, path, "checksum mismatch", expected, actual)


def test_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "dataset.hdf5"
    new = tmp_path / "new.hdf5"
    old_checksum = save_hdf5(make_dataset(), path)
    written = []

    def fail_on_third_column(f, key, values):
        if len(written) == 2:
            raise RuntimeError("disk on fire")
        written.append(key)
        original(f, key, values)

    original = hdf5_module._write_column
    monkeypatch.setattr(hdf5_module, "_write_column", fail_on_third_column)
    for target in (new, path):
        written.clear()
        with pytest.raises(RuntimeError, match="disk on fire"):
            save_hdf5(make_dataset(seed=5), target)
    assert not new.exists()
    assert sha256_file(path) == old_checksum
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.hdf5"]  # no temp files left behind
