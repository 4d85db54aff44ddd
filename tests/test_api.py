"""The Python API (docs/api.md): load_policy for every run kind, make_env, the training functions, the
NumPy export, rendering, and their one-line refusals of bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

import o2o
from o2o.cli import main

# Tiny budgets: every run here takes seconds.
TINY_PRETRAIN = [
    "offline.steps=200", "offline.steps_per_call=100", "offline.eval_every=200", "offline.eval_episodes=1",
    "offline.checkpoint_every=100", "offline.normalize_observations=true", "agent.hidden_dims=[32,32]", "agent.batch_size=64",
]
TINY_ONLINE = [
    "online.warmup_steps=0", "online.update_after=0", "online.iterations=2", "online.episodes_per_iteration=1",
    "online.updates_per_iteration=10", "online.eval_every=2",
    "online.eval_episodes=1", "online.checkpoint_every=1", "online.replay_capacity=1000", "agent.hidden_dims=[32,32]",
    "agent.batch_size=32",
]
TINY_FINETUNE = TINY_ONLINE[:-2] + ["agent.batch_size=32", "vpa.init=fresh", "vpa.steps=100", "vpa.steps_per_call=50", "vpa.batch_size=32"]


def _sets(items):
    return [arg for kv in items for arg in ("--set", kv)]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("o2o: error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def runs(build_once):
    """On BallCircle: a BC-Safe pre-training run (observations normalised), a Marvel fine-tuning run
    from it (SAC-Lag: both tanh-Gaussian actors) and a TD3 training run (the deterministic actor)."""

    def build(root):
        assert main(["--no-progress", "pretrain", "--algo", "bc-safe", "--dataset", "BallCircle-dsrl-small", "--out", str(root / "bcsafe"),
                     *_sets(TINY_PRETRAIN)]) == 0
        assert main(["--no-progress", "finetune", "--method", "marvel", "--pretrained", str(root / "bcsafe"), "--out", str(root / "marvel"),
                     *_sets(TINY_FINETUNE)]) == 0
        assert main(["--no-progress", "train", "--algo", "td3", "--task", "BallCircle", "--out", str(root / "td3"), *_sets(TINY_ONLINE)]) == 0

    root = build_once("api-runs", build)
    return {"pretrain": root / "bcsafe", "finetune": root / "marvel", "td3": root / "td3"}


# ---------------------------------------------------------------------------------------------- 1. load_policy, make_env


def test_import_o2o_stays_cheap():
    code = "import sys, o2o; assert callable(o2o.load_policy) and callable(o2o.make_env); print('jax' in sys.modules, 'gymnasium' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("kind", ["pretrain", "finetune", "td3"])
def test_load_policy_every_run_kind(runs, kind):
    policy = o2o.load_policy(runs[kind])
    assert (policy.task, policy.observation_dim, policy.action_dim) == ("BallCircle", 8, 2)
    obs = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32) * 3
    batch = policy(obs)
    assert batch.shape == (16, 2) and batch.dtype == np.float32 and np.all(np.abs(batch) <= 1)
    np.testing.assert_allclose(policy(obs[3]), batch[3], atol=1e-6)  # one observation -> one action
    np.testing.assert_array_equal(policy(obs), batch)  # deterministic
    with pytest.raises(ValueError, match=r"\[8\]"):
        policy(obs[:, :5])


def test_each_run_records_its_kind_and_resume_refuses_another_kind(runs, capsys, tmp_path):
    import json
    import shutil

    from o2o.runs.rundir import run_info

    expected = {"pretrain": ("pretrain", "bc-safe"), "finetune": ("finetune", "marvel"), "td3": ("train", "td3")}
    for name, (kind, method) in expected.items():
        info = json.loads((runs[name] / "run.json").read_text())
        assert (info["kind"], info["method"]) == (kind, method) and info["o2o_version"] == o2o.__version__
        assert run_info(runs[name]) == info
    for name, command in (("pretrain", "finetune"), ("finetune", "train"), ("td3", "pretrain")):
        code = main(["--no-progress", command, "--resume", str(runs[name])])
        kind = expected[name][0]
        assert code == 2 and one_error_line(capsys.readouterr().err) == (
            f"o2o: error: '{runs[name]}' holds a {kind} run, not a {command} run; continue it with `o2o {kind} --resume {runs[name]}`")
    old = tmp_path / "old"  # a run made before o2o wrote run.json: its kind is read from its config
    shutil.copytree(runs["td3"], old, ignore=shutil.ignore_patterns(".lock"))
    (old / "run.json").unlink()
    assert run_info(old) == {"kind": "train", "method": "td3", "o2o_version": ""}
    assert o2o.load_policy(old).task == "BallCircle"


def test_load_policy_applies_the_runs_observation_normalisation(runs):
    """The policy acts on raw observations: the actor sees (obs - mean) / std of the pre-training data."""
    from o2o.bridge.pretrained import load_pretrained

    pre = load_pretrained(runs["pretrain"])
    assert np.any(pre.obs_mean != 0) and np.any(pre.obs_std != 1)  # normalised by the run
    obs = np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32)
    mean, _ = pre.state.actor.apply_fn(pre.state.actor.params, (obs - pre.obs_mean) / pre.obs_std)
    policy = o2o.load_policy(runs["pretrain"])
    np.testing.assert_allclose(policy(obs), np.tanh(np.asarray(mean)), atol=1e-6)
    unnormalised, _ = pre.state.actor.apply_fn(pre.state.actor.params, obs)
    assert np.max(np.abs(policy(obs) - np.tanh(np.asarray(unnormalised)))) > 1e-3
    # the fine-tuning run starts from this actor and keeps its statistics
    tuned = o2o.load_policy(runs["finetune"])
    np.testing.assert_array_equal(tuned.obs_mean, pre.obs_mean)
    np.testing.assert_array_equal(tuned.obs_std, pre.obs_std)


def test_load_policy_at_a_given_checkpoint(runs):
    latest = o2o.load_policy(runs["pretrain"])
    first = o2o.load_policy(runs["pretrain"], checkpoint=100)
    assert (latest.step, first.step) == (200, 100) and first.checkpoint.name == "ckpt_100"
    obs = np.random.default_rng(2).normal(size=(8, 8)).astype(np.float32)
    assert np.max(np.abs(latest(obs) - first(obs))) > 0  # 100 more gradient steps
    np.testing.assert_array_equal(o2o.load_policy(runs["pretrain"], checkpoint=str(runs["pretrain"] / "checkpoints" / "ckpt_200"))(obs), latest(obs))


def test_eval_command_loads_through_the_same_policy(runs, capsys, tmp_path):
    """o2o eval and load_policy(...).evaluate give the same numbers (one loader)."""
    import shutil

    for kind in ("pretrain", "td3"):
        run = shutil.copytree(runs[kind], tmp_path / kind)  # o2o eval writes eval.json into the run
        assert main(["--no-progress", "eval", str(run), "--episodes", "2"]) == 0
        written = json.loads((run / "eval.json").read_text())
        metrics = o2o.load_policy(run).evaluate(2)
        assert {k: written[k] for k in metrics} == metrics
    capsys.readouterr()


def test_make_env_is_seeded():
    env = o2o.make_env("BallCircle", seed=3)
    first, _ = env.reset()
    assert first.shape == (8,) and env.action_space.shape == (2,)
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert "cost" in info
    again = o2o.make_env("BallCircle", seed=3)
    np.testing.assert_array_equal(again.reset()[0], first)
    env.close()
    again.close()


# ---------------------------------------------------------------------------------------------- 2. pretrain, finetune, train


def _as_dict(items):
    import yaml

    return {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in items)}


def test_pretrain_and_train_functions_are_the_commands(runs, tmp_path):
    """The same options through the function and through the command line: the same run."""
    run, summary = o2o.pretrain("bc-safe", "BallCircle-dsrl-small", out=tmp_path / "p", overrides=_as_dict(TINY_PRETRAIN), progress=False)
    assert run == tmp_path / "p" and summary == json.loads((run / "summary.json").read_text())
    assert (run / "config.yaml").read_text() == (runs["pretrain"] / "config.yaml").read_text()
    obs = np.random.default_rng(3).normal(size=(64, 8)).astype(np.float32)
    np.testing.assert_array_equal(o2o.load_policy(run)(obs), o2o.load_policy(runs["pretrain"])(obs))

    run, summary = o2o.train("td3", "BallCircle", out=tmp_path / "t", overrides=_as_dict(TINY_ONLINE), progress=False)
    cli = json.loads((runs["td3"] / "summary.json").read_text())
    assert (run / "config.yaml").read_text() == (runs["td3"] / "config.yaml").read_text()
    assert summary["updates"] == 20  # the actors learned something to compare
    for key in ("final_eval_return", "final_eval_cost", "train_cumulative_cost", "env_steps", "updates"):
        assert summary[key] == cli[key], key


def test_api_functions_refuse_bad_input_with_one_message(runs, tmp_path):
    from o2o.errors import ConfigError, O2OError

    with pytest.raises(O2OError, match="needs --algo"):
        o2o.train(task="BallCircle")
    with pytest.raises(ConfigError, match="online.iterationz.*iterations"):
        o2o.finetune("marvel", runs["pretrain"], out=tmp_path / "f", overrides={"online.iterationz": 1})
    with pytest.raises(ConfigError, match="overrides must be a dict"):
        o2o.train("sac", "Pendulum", overrides="online.iterations=1")
    assert not (tmp_path / "f").exists()


# ---------------------------------------------------------------------------------------------- 3. o2o export, numpy_policy

NUMPY_SIDE = """
import sys
import numpy as np
from o2o.export import numpy_policy
policy = numpy_policy(sys.argv[1])
np.save(sys.argv[3], policy(np.load(sys.argv[2])))
print(policy.task, policy.actor, policy.observation_dim, policy.action_dim, 'jax' in sys.modules, 'flax' in sys.modules)
"""


@pytest.fixture(scope="module")
def ppo_run(build_once):
    """A PPO run: its actor sees its own running observation statistics, clipped."""
    sets = ["online.iterations=1", "online.steps_per_iteration=64", "online.eval_episodes=1", "agent.hidden_dims=[32,32]",
            "agent.minibatch_size=32", "agent.num_epochs=1"]

    def build(root):
        assert main(["--no-progress", "train", "--algo", "ppo", "--task", "BallCircle", "--out", str(root / "ppo"), *_sets(sets)]) == 0

    return build_once("api-ppo", build) / "ppo"


@pytest.mark.parametrize("kind, actor", [("pretrain", "tanh_gaussian"), ("finetune", "tanh_gaussian"), ("td3", "deterministic"),
                                         ("ppo", "gaussian")])
def test_numpy_policy_reproduces_load_policy(runs, ppo_run, kind, actor, tmp_path, capsys):
    """1,000 observations: the exported NumPy forward pass acts as load_policy does, in a process without JAX."""
    run = ppo_run if kind == "ppo" else runs[kind]
    out = tmp_path / "policy.npz"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"outputs: {out}"
    with np.load(out, allow_pickle=False) as f:  # plain arrays: no object arrays anywhere
        assert all(f[k].dtype != object for k in f.files)
        assert str(f["task"]) == "BallCircle" and str(f["actor"]) == actor
    policy = o2o.load_policy(run)
    obs = (np.random.default_rng(4).normal(size=(1000, 8)) * 3 * policy.obs_std + policy.obs_mean).astype(np.float32)
    np.save(tmp_path / "obs.npy", obs)
    side = subprocess.run([sys.executable, "-c", NUMPY_SIDE, str(out), str(tmp_path / "obs.npy"), str(tmp_path / "act.npy")],
                          capture_output=True, text=True, check=True).stdout.split()
    assert side == ["BallCircle", actor, "8", "2", "False", "False"]  # JAX never imported
    diff = float(np.max(np.abs(np.load(tmp_path / "act.npy") - policy(obs))))
    print(f"{kind}: max |numpy_policy - load_policy| over 1000 observations = {diff:.2e}")
    assert diff < 1e-5


def test_numpy_policy_with_layer_norm():
    """The forward pass's layer-norm branch against Flax's LayerNorm (no o2o actor uses it by default)."""
    import jax
    from types import SimpleNamespace

    from o2o.export import NumpyPolicy, policy_arrays
    from o2o.nn import TanhGaussianActor

    actor = TanhGaussianActor((16, 16), 2, layer_norm=True)
    params = actor.init(jax.random.PRNGKey(0), np.zeros((1, 5), np.float32))
    params = jax.tree_util.tree_map(lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(1), x.shape), params)  # not the init's 1 / 0
    fake = SimpleNamespace(actor_params=params, obs_mean=np.full(5, 0.5), obs_std=np.full(5, 2.0), obs_clip=None, task="T", algo="sac")
    obs = np.random.default_rng(5).normal(size=(100, 5)).astype(np.float32)
    mean, _ = actor.apply(params, (obs - 0.5) / 2.0)
    np.testing.assert_allclose(NumpyPolicy(policy_arrays(fake))(obs), np.tanh(np.asarray(mean)), atol=1e-5)


def test_export_refuses_bad_input(runs, tmp_path, capsys):
    assert main(["export", str(runs["td3"]), "--out", str(tmp_path / "policy.pkl")]) == 2
    assert ".npz" in one_error_line(capsys.readouterr().err)
    assert main(["export", str(runs["td3"]), "--out", str(tmp_path / "p.npz"), "--checkpoint", "7"]) == 2
    assert "no checkpoint 7; it has 1, 2" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "p.npz").exists()


# ---------------------------------------------------------------------------------------------- 4. o2o eval --render


def test_render_writes_a_gif_of_the_episode_with_its_return_and_cost(runs, tmp_path, capsys):
    import imageio.v3 as iio

    gif = tmp_path / "episode.gif"
    assert main(["eval", str(runs["pretrain"]), "--render", str(gif), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"outputs: {gif}" and "episode 1: return" in out
    frames = iio.imread(gif, index=None)
    assert frames.shape == (200, 180, 240, 3)  # BallCircle's 200 steps, one frame each, 240 x 180
    assert gif.stat().st_size < 3_000_000
    scene = frames[-1][40:].astype(int)  # below the text band: the arena, its floor and the ball, not a blank image
    assert scene.std() > 20 and len(np.unique(scene.reshape(-1, 3) // 32, axis=0)) >= 4
    band = frames[-1][:8].astype(int)  # dark band with white text
    assert band.mean() < 100 and band.max() > 200
    # the episode drawn is the policy's on make_env(task, seed): the same return
    env, policy = o2o.make_env("BallCircle", seed=1), o2o.load_policy(runs["pretrain"])
    obs, _ = env.reset()
    ret, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        ret, done = ret + reward, terminated or truncated
    assert f"episode 1: return {ret:.1f}" in out


def test_render_writes_an_mp4_with_imageio_ffmpeg(runs, tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="the video extra (pip install 'o2o[video]'; make installs it)")
    import imageio.v3 as iio

    from o2o.loops.render import render_episodes

    mp4 = tmp_path / "episode.mp4"
    result = render_episodes(o2o.load_policy(runs["pretrain"]), mp4, seed=1, max_frames=40)
    frames = iio.imread(mp4, index=None, plugin="FFMPEG")
    # every 5th of BallCircle's 200 steps at 480 x 360 (ffmpeg pads the height to a multiple of 16)
    assert 40 <= result["frames"] == frames.shape[0] <= 41 and frames.shape[2:] == (480, 3) and frames.shape[1] in (360, 368)
    assert frames[-1][40:].astype(int).std() > 20  # a scene, not a blank image


def test_render_shows_the_bullet_cost_marker_only_on_a_step_with_cost():
    """BSG's red cost sphere around the agent is drawn opaque by TinyRenderer at its initial alpha 0.001:
    hidden until a step has cost, so the frames show the agent itself."""
    env = o2o.make_env("BallCircle", seed=0, render_size=(240, 180))
    env.reset()
    red = lambda frame: int(((frame[..., 0] > 180) & (frame[..., 1] < 60) & (frame[..., 2] < 60)).sum())
    assert red(env.render()) == 0
    env.env.unwrapped.agent._violates_constraints = True  # as BSG sets it on a step with cost
    assert red(env.render()) > 50
    env.close()


def test_render_strides_long_videos(runs, tmp_path, capsys):
    from o2o.loops.render import render_episodes

    result = render_episodes(o2o.load_policy(runs["td3"]), tmp_path / "two.gif", episodes=2, max_frames=100)
    assert result["stride"] == 4 and result["frames"] == 2 * 50 and len(result["returns"]) == 2


# ---------------------------------------------------------------------------------------------- 5. bad input


def _copy_run(src, dst, *, checkpoints=True, config_edit=None):
    import shutil

    shutil.copytree(src, dst, ignore=None if checkpoints else shutil.ignore_patterns("checkpoints"))
    if config_edit:
        text = (dst / "config.yaml").read_text()
        assert config_edit[0] in text
        (dst / "config.yaml").write_text(text.replace(*config_edit))
    return dst


def _refused(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    return one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", [["eval"], ["eval", "--render", "x.gif"], ["export", "--out", "x.npz"]])
def test_run_without_a_checkpoint(runs, tmp_path, capsys, command):
    run = _copy_run(runs["td3"], tmp_path / "fresh", checkpoints=False)
    line = _refused(capsys, command[0], str(run), *command[1:])
    assert "has no checkpoint yet" in line and f"o2o train --resume {run}" in line
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "x.npz").exists()
    from o2o.errors import RunDirError

    with pytest.raises(RunDirError, match="has no checkpoint yet"):
        o2o.load_policy(run)


def test_checkpoint_of_another_architecture(runs, tmp_path, capsys):
    # the run's config says 64 hidden units, its checkpoint holds 32
    wider = _copy_run(runs["pretrain"], tmp_path / "wider", config_edit=("- 32\n  - 32", "- 64\n  - 64"))
    line = _refused(capsys, "eval", str(wider))
    assert "has shape" in line and "(8, 32)" in line and "(8, 64)" in line and "different network size" in line
    assert "different network size" in _refused(capsys, "export", str(wider), "--out", str(tmp_path / "p.npz"))
    # a TD3 checkpoint in a fine-tuning (SAC-Lag) run directory
    import shutil

    mixed = _copy_run(runs["finetune"], tmp_path / "mixed", checkpoints=False)
    shutil.copytree(runs["td3"] / "checkpoints", mixed / "checkpoints")
    line = _refused(capsys, "eval", str(mixed), "--render", str(tmp_path / "m.gif"))
    assert "does not match this agent's state" in line and "different method or config" in line
    assert not (tmp_path / "p.npz").exists() and not (tmp_path / "m.gif").exists()


def test_unknown_render_format_and_other_bad_eval_input(runs, tmp_path, capsys):
    line = _refused(capsys, "eval", str(runs["td3"]), "--render", str(tmp_path / "episode.avi"))
    assert "unknown video format '.avi'" in line and ".gif or .mp4" in line
    assert "'(none)'" in _refused(capsys, "eval", str(runs["td3"]), "--render", str(tmp_path / "episode"))
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        assert "imageio-ffmpeg" in _refused(capsys, "eval", str(runs["td3"]), "--render", str(tmp_path / "episode.mp4"))
    assert "no checkpoint 99; it has 1, 2" in _refused(capsys, "eval", str(runs["td3"]), "--checkpoint", "99")
    assert "holds no o2o run" in _refused(capsys, "eval", str(tmp_path))
    assert "does not exist" in _refused(capsys, "export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.npz"))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- 6. the documented example


def test_api_example_runs(tmp_path):
    """examples/api_example.py (docs/api.md) end to end, as a user runs it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "examples" / "api_example.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith(f"pre-trained {tmp_path / 'pretrain'}") and lines[1].startswith(f"fine-tuned  {tmp_path / 'finetune'}")
    assert "pretrain bc-safe policy (8 -> 2): episode return" in lines[2] and "finetune sac-lag policy (8 -> 2)" in lines[3]
    assert lines[4].startswith(f"exported {tmp_path / 'policy.npz'}: max |numpy_policy - load_policy|")
    assert (tmp_path / "finetune" / "summary.json").is_file()


# ---------------------------------------------------------------------------------------------- optional: Weights & Biases


class _FakeWandbRun:
    def __init__(self, kwargs):
        self.kwargs, self.rows, self.metrics, self.finished = kwargs, [], [], False

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))

    def log(self, row):
        self.rows.append(dict(row))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in ``wandb`` module that records what o2o sends (the real one needs an account or files)."""
    import types

    from o2o.runs.wandb_log import WANDB_PROJECT_ENV

    module = types.ModuleType("wandb")
    module.runs = []
    module.init = lambda **kwargs: module.runs.append(_FakeWandbRun(kwargs)) or module.runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv(WANDB_PROJECT_ENV, "unused")  # restored after the test, whatever --wandb sets
    return module


def test_wandb_logs_every_metrics_row_of_a_run(runs, fake_wandb, tmp_path, capsys):
    out = tmp_path / "td3"
    assert main(["--no-progress", "--wandb", "o2o-tests", "train", "--algo", "td3", "--task", "BallCircle", "--out", str(out),
                 *_sets(TINY_ONLINE)]) == 0
    capsys.readouterr()
    (run,) = fake_wandb.runs
    assert run.kwargs["project"] == "o2o-tests" and run.kwargs["name"] == "td3" and run.kwargs["resume"] == "allow"
    assert run.kwargs["id"] == (out / "wandb_id").read_text().strip() and run.kwargs["config"]["algo"] == "td3"
    assert ("*", "step") in run.metrics and run.finished
    csv = np.genfromtxt(out / "metrics.csv", delimiter=",", names=True)
    assert list(csv["step"]) == [1, 2]  # iterations; W&B's x-axis, as TensorBoard's, is environment steps
    assert [row["step"] for row in run.rows] == list(csv["env_steps"]) and csv["env_steps"][0] > 2
    assert run.rows[-1]["eval/return"] == pytest.approx(float(csv["evalreturn"][-1]))
    # a writer without TensorBoard still logs, the bridge's writer (wandb=False) does not; a run directory keeps its W&B id
    from o2o.runs import MetricsWriter

    with MetricsWriter(out, tensorboard=False) as writer:
        writer.write(3, {"x": 1.0})
    assert fake_wandb.runs[-1].kwargs["id"] == run.kwargs["id"] and fake_wandb.runs[-1].rows == [{"x": 1.0, "step": 3}]
    (tmp_path / "bridge").mkdir()
    with MetricsWriter(tmp_path / "bridge", wandb=False) as writer:
        writer.write(1, {"x": 1.0})
    assert len(fake_wandb.runs) == 2


def test_wandb_without_the_package_is_refused_before_anything_runs(monkeypatch, tmp_path, capsys):
    from o2o.errors import ConfigError
    from o2o.runs.wandb_log import WANDB_PROJECT_ENV

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    monkeypatch.setenv(WANDB_PROJECT_ENV, "unused")
    line = _refused(capsys, "--wandb", "p", "train", "--algo", "td3", "--task", "BallCircle", "--out", str(tmp_path / "r"))
    assert "wandb package is not installed" in line and "pip install wandb" in line
    with pytest.raises(ConfigError, match="pip install wandb"):
        o2o.train("td3", "BallCircle", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
