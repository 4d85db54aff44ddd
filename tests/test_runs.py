"""Run directories, checkpoints and metrics: refusals, exact round trips, crash safety, exact resume."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from flax.training.train_state import TrainState

import o2o.runs.checkpoint as ckpt_mod
from o2o.errors import RunDirError
from o2o.runs import (
    MetricsWriter,
    RunDir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metrics_csv,
    save_checkpoint,
)

CONFIG = {"task": "hopper", "agent": {"actor_lr": 3e-4, "hidden_dims": (256, 256)}, "seed": 0}


# ---------------------------------------------------------------------------------------------- state


@jax.jit
def sgd_step(state, x):
    grads = jax.grad(lambda p: jnp.sum(state.apply_fn(p, x) ** 2))(state.params)
    return state.apply_gradients(grads=grads)


def make_state(seed: int, train_steps: int = 0):
    """A nested pytree like an agent's: a TrainState with Adam, a replay buffer, RNG keys, counters."""
    model = nn.Dense(2)
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 3)))
    actor = TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
    for i in range(train_steps):
        actor = sgd_step(actor, jnp.full((4, 3), float(i + 1)))
    rng = np.random.default_rng(seed)
    return {
        "actor": actor,
        "buffer": {"obs": rng.standard_normal((50, 3)).astype(np.float32), "size": np.int64(50)},
        "key": jax.random.PRNGKey(seed + 1),
        "typed_key": jax.random.key(seed + 2),
        "log_alpha": jnp.array(0.1 * seed, dtype=jnp.float32),
    }


def assert_bit_exact(a, b):
    # compare paths and leaves: the treedefs hold optax closures, which differ between instances
    pa, la = zip(*jax.tree_util.tree_leaves_with_path(a))
    pb, lb = zip(*jax.tree_util.tree_leaves_with_path(b))
    assert pa == pb
    for x, y in zip(la, lb):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


# ---------------------------------------------------------------------------------------------- run dir


def test_create_lays_out_the_run(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG, kind="train", resume=False)
    for sub in ("tb", "checkpoints"):
        assert (run.path / sub).is_dir()
    assert not (run.path / "figures").exists()  # nothing writes plots into a run: no empty folder
    saved = yaml.safe_load(run.config_path.read_text())
    assert saved["agent"]["hidden_dims"] == [256, 256] and saved["agent"]["actor_lr"] == 3e-4
    assert run.resume_step is None
    run.write_summary({"score": np.float32(0.5), "steps": 10})
    assert run.read_summary() == {"score": 0.5, "steps": 10}


def test_create_refuses_an_existing_run_and_overwrites_nothing(tmp_path):
    path = tmp_path / "run"
    RunDir.create(path, CONFIG, kind="train")
    before = (path / "config.yaml").read_bytes()
    with pytest.raises(RunDirError) as err:
        RunDir.create(path, {**CONFIG, "seed": 1}, kind="train")
    assert str(err.value) == (
        f"run directory '{path}' already exists and holds a run; pass --resume {path} to continue "
        f"it or choose another --out"
    )
    assert (path / "config.yaml").read_bytes() == before

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match=r"exists and is not empty \(it holds no o2o run\)"):
        RunDir.create(other, CONFIG, kind="train")
    empty = tmp_path / "empty"
    empty.mkdir()
    RunDir.create(empty, CONFIG, kind="train")  # an empty directory is fine


def test_resume_refuses_a_different_config(tmp_path):
    path = tmp_path / "run"
    run = RunDir.create(path, CONFIG, kind="train")
    run.save_checkpoint(5, arrays={"x": np.zeros(2)}, host_state={})
    changed = {**CONFIG, "agent": {"actor_lr": 1e-4, "hidden_dims": (256, 256)}}
    with pytest.raises(RunDirError) as err:
        RunDir.create(path, changed, kind="train", resume=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot resume '{path}': config differs: agent.actor_lr: 0.0003 -> 0.0001;")
    resumed = RunDir.create(path, CONFIG, kind="train", resume=True)  # tuples vs the lists YAML gave back: equal
    assert resumed.resume_step == 5


def test_resume_needs_a_run_and_a_checkpoint(tmp_path):
    with pytest.raises(RunDirError, match=r"cannot resume .*: no such directory"):
        RunDir.create(tmp_path / "missing", CONFIG, kind="train", resume=True)
    path = tmp_path / "run"
    RunDir.create(path, CONFIG, kind="train")
    with pytest.raises(RunDirError, match=r"cannot resume .*: it has no checkpoint"):
        RunDir.create(path, CONFIG, kind="train", resume=True)
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunDirError, match=r"holds no o2o run \(no config.yaml\)"):
        RunDir.create(tmp_path / "plain", CONFIG, kind="train", resume=True)


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_bit_exact_with_template(tmp_path):
    state = make_state(seed=1, train_steps=3)
    host = {"lagrange": {"integral": 0.125, "prev_error": -1e-7}, "env_steps": 1234, "np": np.float64(2.5)}
    run = RunDir.create(tmp_path / "run", CONFIG, kind="train")
    run.save_checkpoint(3, arrays=state, host_state=host)

    template = make_state(seed=7)  # freshly initialised: other values, python-int step, same shapes
    restored, host_back = run.load_checkpoint(template=template)
    assert isinstance(restored["actor"], TrainState)
    assert_bit_exact(restored, state)
    assert host_back == {**host, "np": 2.5}
    # the restored state keeps training exactly like the original
    grads = jax.tree_util.tree_map(jnp.ones_like, state["actor"].params)
    assert_bit_exact(
        restored["actor"].apply_gradients(grads=grads).opt_state,
        state["actor"].apply_gradients(grads=grads).opt_state,
    )
    assert restored["buffer"]["obs"].flags.writeable  # a host buffer can be appended to again


def test_checkpoint_without_template_gives_numpy_state_dict(tmp_path):
    state = make_state(seed=1, train_steps=3)
    save_checkpoint(tmp_path, 1, arrays=state, host_state={})
    arrays, _ = load_checkpoint(tmp_path / "ckpt_1")
    np.testing.assert_array_equal(arrays["buffer"]["obs"], state["buffer"]["obs"])
    kernel = arrays["actor"]["params"]["params"]["kernel"]
    np.testing.assert_array_equal(kernel, state["actor"].params["params"]["kernel"])


def test_template_mismatch_names_the_leaf_and_shapes(tmp_path):
    save_checkpoint(tmp_path, 1, arrays={"critic": {"kernel": np.zeros((17, 256), np.float32)}}, host_state={})
    with pytest.raises(RunDirError) as err:
        load_checkpoint(tmp_path, template={"critic": {"kernel": np.zeros((11, 256), np.float32)}})
    assert "leaf 'critic/kernel' has shape (17, 256), this config expects (11, 256)" in str(err.value)
    with pytest.raises(RunDirError, match=r"lacks critic/bias"):
        load_checkpoint(
            tmp_path, template={"critic": {"kernel": np.zeros((17, 256), np.float32), "bias": np.zeros(3)}}
        )
    with pytest.raises(RunDirError, match=r"has unexpected critic/kernel"):
        load_checkpoint(tmp_path, template={"critic": {}})
    with pytest.raises(RunDirError, match=r"dtype float32, this config expects float64"):
        load_checkpoint(tmp_path, template={"critic": {"kernel": np.zeros((17, 256), np.float64)}})


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(RunDirError, match=r"holds no checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(RunDirError, match=r"does not exist"):
        load_checkpoint(tmp_path / "nope")

    path = save_checkpoint(tmp_path, 1, arrays={"x": np.arange(100.0)}, host_state={"a": 1})
    data = (path / "arrays.msgpack").read_bytes()
    (path / "arrays.msgpack").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match=r"is corrupt \(arrays.msgpack fails its size/CRC check\)"):
        load_checkpoint(tmp_path)
    (path / "arrays.msgpack").write_bytes(data[:-8] + b"\x00" * 8)
    with pytest.raises(RunDirError, match=r"is corrupt"):
        load_checkpoint(tmp_path)
    (path / "host_state.json").unlink()
    with pytest.raises(RunDirError, match=r"is incomplete: host_state.json is missing"):
        load_checkpoint(tmp_path)
    (tmp_path / "latest").write_text("ckpt_9\n")
    with pytest.raises(RunDirError, match=r"named by 'latest' is missing"):
        load_checkpoint(tmp_path)


def test_keeps_the_last_k_checkpoints(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, arrays={"x": np.full(3, step)}, host_state={"step": step})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_30", "ckpt_40"]
    assert (tmp_path / "latest").read_text().strip() == "ckpt_40"
    save_checkpoint(tmp_path, 40, arrays={"x": np.full(3, -1)}, host_state={"step": 40})  # same step again
    arrays, _ = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(arrays["x"], np.full(3, -1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_30", "ckpt_40", "latest"]


def test_non_json_host_state_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match=r"a object cannot be stored as JSON"):
        save_checkpoint(tmp_path, 1, arrays={"x": np.zeros(1)}, host_state={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def _assert_only_previous_checkpoint(checkpoints_dir, step):
    names = sorted(p.name for p in checkpoints_dir.iterdir())
    assert names == [f"ckpt_{step}", "latest"], names  # no partial checkpoint, no temporaries left
    arrays, host = load_checkpoint(checkpoints_dir)
    assert host == {"step": step}
    np.testing.assert_array_equal(arrays["x"], np.full(3, step))


def test_crash_while_writing_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, arrays={"x": np.full(3, 1)}, host_state={"step": 1})
    real_write = ckpt_mod._write_file

    def crash_on_host_state(path, data):
        if path.name == "host_state.json":
            raise KeyboardInterrupt("killed mid-save")
        real_write(path, data)

    monkeypatch.setattr(ckpt_mod, "_write_file", crash_on_host_state)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, arrays={"x": np.full(3, 2)}, host_state={"step": 2})
    _assert_only_previous_checkpoint(tmp_path, 1)


def test_crash_while_pointing_latest_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, arrays={"x": np.full(3, 1)}, host_state={"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(ckpt_mod.os, "replace", crash)
    with pytest.raises(RunDirError, match=r"cannot write checkpoint ckpt_2 .* \(disk gone\); the latest checkpoint, ckpt_1, is kept"):
        save_checkpoint(tmp_path, 2, arrays={"x": np.full(3, 2)}, host_state={"step": 2})
    monkeypatch.undo()
    arrays, host = load_checkpoint(tmp_path)  # latest still names ckpt_1; ckpt_2 is complete but unused
    assert host == {"step": 1}
    save_checkpoint(tmp_path, 3, arrays={"x": np.full(3, 3)}, host_state={"step": 3})
    assert load_checkpoint(tmp_path)[1] == {"step": 3}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # leftovers cleaned


def test_crash_while_replacing_same_step_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, arrays={"x": np.full(3, 1)}, host_state={"step": 1})
    real_rename = os.rename
    calls = []

    def crash_on_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old ckpt_1 is parked, the new one not yet in place
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "rename", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 1, arrays={"x": np.full(3, 7)}, host_state={"step": 7})
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path).name == ".replaced_ckpt_1"
    arrays, host = load_checkpoint(tmp_path)
    assert host == {"step": 1}
    save_checkpoint(tmp_path, 2, arrays={"x": np.full(3, 2)}, host_state={"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_2", "latest"]


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_union_header_and_read_back(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as m:
        m.write(1, {"train/critic_loss": 1.5, "train/actor_loss": jnp.float32(0.25)})
        m.write(2, {"train/critic_loss": 1.0})
        m.write(2, {"eval/return": 100.0, "train/critic_loss": 0.75})
    text = (tmp_path / "metrics.csv").read_text()
    assert text.splitlines() == [
        "step,train/critic_loss,train/actor_loss,eval/return",
        "1,1.5,0.25,",
        "2,1.0,,",
        "2,0.75,,100.0",
    ]
    cols = read_metrics_csv(tmp_path)
    np.testing.assert_array_equal(cols["step"], [1, 2, 2])
    assert cols["step"].dtype == np.int64
    np.testing.assert_array_equal(cols["eval/return"], [np.nan, np.nan, 100.0])
    with pytest.raises(RunDirError, match=r"does not exist"):
        read_metrics_csv(tmp_path / "nope.csv")


def test_metrics_writes_tensorboard_events(tmp_path):
    with MetricsWriter(tmp_path) as m:
        m.write(1, {"eval/return": 1.0})
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_truncate_after(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as m:
        m.write(1, {"a": 1.0})
        m.write(2, {"a": 2.0})
        m.write(3, {"a": 3.0, "b": 30.0})  # 'b' first appears after the truncation point
        m.truncate_after(2)
        assert m.header == ["step", "a"]
        m.write(3, {"a": 3.5})
    assert (tmp_path / "metrics.csv").read_text() == "step,a\n1,1.0\n2,2.0\n3,3.5\n"


def _log(m, steps):
    for s in steps:
        m.write(s, {"train/loss": 1.0 / s})
        if s >= 5:
            m.write(s, {"eval/return": float(s * 10)})


def test_resumed_run_metrics_equal_an_uninterrupted_run(tmp_path):
    full = RunDir.create(tmp_path / "full", CONFIG, kind="train")
    with MetricsWriter(full) as m:
        _log(m, range(1, 9))

    path = tmp_path / "interrupted"
    run = RunDir.create(path, CONFIG, kind="train")
    m = MetricsWriter(run)
    _log(m, range(1, 4))
    m.flush()
    run.save_checkpoint(3, arrays={"x": np.zeros(1)}, host_state={})
    _log(m, range(4, 7))  # logged, then the process dies before the next checkpoint
    m.close()

    resumed = RunDir.create(path, CONFIG, kind="train", resume=True)
    assert resumed.resume_step == 3
    with MetricsWriter(resumed) as m:
        _log(m, range(4, 9))
    assert (path / "metrics.csv").read_text() == (tmp_path / "full" / "metrics.csv").read_text()
    assert len(list((path / "tb").iterdir())) == 2  # a new events file; the old steps are purged


def test_run_clock_counts_the_time_before_a_resume(monkeypatch):
    """A run's wall time adds up over its invocations; an older checkpoint without one says so."""
    from types import SimpleNamespace

    from o2o.runs import RunClock, clock

    ticks = iter([100.0, 130.0, 150.0, 500.0, 520.0, 530.0, 900.0, 910.0])
    monkeypatch.setattr(clock, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    new = RunClock(None, resumed_from=0)  # t = 100
    assert new.stamp({"counters": {}})["wall_time_s"] == 30.0  # a checkpoint at t = 130
    assert new.summary() == {"wall_time_s": 50.0}  # the end at t = 150: no resume to report

    resumed = RunClock({"wall_time_s": 30.0}, resumed_from=2)  # continues that checkpoint at t = 500
    assert resumed.stamp({})["wall_time_s"] == 50.0
    assert resumed.summary() == {"wall_time_s": 60.0, "resumed_from": 2}

    old = RunClock({"counters": {}}, resumed_from=4)  # a checkpoint from before the record, at t = 900
    assert old.stamp({})["wall_time_s"] is None  # still unknown for the next resume
    summary = old.summary()
    assert summary["wall_time_s"] == 10.0 and summary["resumed_from"] == 4 and "this invocation only" in summary["wall_time_note"]


def test_tensorboard_x_axis_is_a_metric_and_a_resume_purges_in_its_units(tmp_path):
    """An online run's CSV counts iterations but TensorBoard draws against env steps (``x``); resumed from
    iteration 2, the events the interrupted process logged after env step 200 are hidden."""
    from tbevents import tb_scalars

    with MetricsWriter(tmp_path, x="env_steps") as m:
        for it in (1, 2, 3):
            m.write(it, {"env_steps": 100 * it, "a": float(it)})
        with pytest.raises(ValueError, match="must log 'env_steps', its x-axis"):
            m.write(4, {"a": 4.0})
    with MetricsWriter(tmp_path, x="env_steps") as m:
        m.truncate_after(2)  # resumed from iteration 2's checkpoint
        m.write(3, {"env_steps": 300, "a": 3.5})
    assert tb_scalars(tmp_path / "tb")["a"] == [(100, 1.0), (200, 2.0), (300, 3.5)]
    assert read_metrics_csv(tmp_path)["step"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("value, shape, problem", [
    ({"a": 1}, {"a": int}, None),
    ({"a": True}, {"a": int}, "'a' is true or false, expected an integer"),
    ({"a": 1.5}, {"a": float}, None),
    ({}, {"a?": int}, None),
    ({"a": "1"}, {"a?": int}, "'a' is a string, expected an integer"),
    ({"x": "s", "y": 2}, {"*": str}, "'y' is an integer, expected a string"),
    ({"runs": [{"id": "a"}, {"id": None}]}, {"runs": [{"id": str}]}, "'runs[1]/id' is null, expected a string"),
    ({"a": None}, {"a": (float, type(None))}, None),
    ({"a": []}, {"a": (float, type(None))}, "'a' is an array, expected a number or null"),
    ([], {"a": int}, "the file is an array, expected an object"),
    ({"b": 1}, {"a": int}, "'a' is missing"),
    ({"a": {}}, {"a": {"b": int}}, "'a' has no 'b'"),
])
def test_json_shapes(value, shape, problem):
    from o2o.runs.jsonshape import mismatch, shape_of

    assert mismatch(value, shape) == problem
    assert shape_of({"n": 1, "s": "x", "d": {"f": 0.5, "b": False}, "l": [1], "z": None}) == {
        "n": float, "s": str, "d": {"f": float, "b": bool}, "l": list, "z": None}
