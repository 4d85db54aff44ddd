"""Dataset generation: the grid filter, reproducible checksums, cards, no half-written files."""

import json

import numpy as np
import pytest

from o2o.cli import main
from o2o.config import update_from_dict
from o2o.data import load_hdf5, sha256_data
from o2o.errors import ConfigError
from o2o.loops import datagen
from o2o.loops.datagen import GenerateConfig, generate, grid_filter

TINY_DSRL = {
    "num_agents": 2,
    "iterations": 2,
    "episodes_per_iteration": 1,
    "updates_per_iteration": 5,
    "warmup_episodes": 1,
    "hidden_dims": [16, 16],
    "max_per_bin": 1,
    "cost_bins": 3,
    "return_bins": 3,
}


def tiny_cfg(**kw):
    return update_from_dict(GenerateConfig(), {"task": "BallCircle", "recipe": "dsrl", "dsrl": TINY_DSRL, **kw})


def test_grid_filter_caps_each_cell_and_keeps_sparse_ones():
    # 10 episodes crowd one corner (cost ~0, return ~0); 3 lie alone elsewhere
    costs = np.array([0, 0.1, 0.2, 0.3, 0.1, 0.2, 0, 0.1, 0.3, 0.2, 50, 100, 100])
    returns = np.array([0, 1, 2, 1, 0, 2, 1, 0, 1, 2, 500, 100, 900])
    keep = grid_filter(costs, returns, cost_bins=4, return_bins=4, max_per_bin=2, rng=np.random.default_rng(0))
    assert set(keep[keep >= 10]) == {10, 11, 12}  # every sparse trajectory survives
    assert np.sum(keep < 10) == 2  # the crowded cell is capped
    assert np.all(np.diff(keep) > 0)


def test_generation_is_reproducible_and_writes_a_card(tmp_path, monkeypatch):
    shas = []
    for attempt in ("a", "b"):
        monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / attempt))
        path, meta = generate(tiny_cfg(), progress=False)
        shas.append(meta["sha256"])
        assert path == tmp_path / attempt / "BallCircle-dsrl.hdf5"
        for suffix in (".json", ".md", ".png"):
            assert path.with_suffix(suffix).exists()
    assert shas[0] == shas[1]
    ds = load_hdf5(path, expected_sha256=shas[0])
    assert ds.has_costs and ds.metadata["recipe"] == "dsrl" and ds.metadata["seed"] == 0
    assert ds.metadata["num_episodes"] == ds.num_episodes
    assert ds.metadata["max_episode_cost"] == pytest.approx(ds.episode_costs().max())
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["sha256"] == shas[0] and sidecar["data_sha256"] == sha256_data(ds)
    assert sidecar["data_sha256"] in path.with_suffix(".md").read_text()
    # where it was made: generation is reproducible on one machine, not across CPUs
    assert ds.metadata["machine"] == datagen.machine_description() and "jax " in ds.metadata["machine"]
    assert ds.metadata["machine"] in path.with_suffix(".md").read_text()
    # each behaviour agent's multiplier followed its schedule of targets: dual ascent, lambda += lr (J - kappa_i)
    # with kappa_i moving linearly from the schedule's first value to its last over the iterations
    from o2o.runs import read_metrics_csv

    assert len(ds.metadata["behaviour_runs"]) == TINY_DSRL["num_agents"] == len(ds.metadata["cost_schedule"])
    for run, (start, end) in zip(ds.metadata["behaviour_runs"], ds.metadata["cost_schedule"]):
        m = read_metrics_csv(tmp_path / "b" / run)
        assert start != end and len(m["lagrange"]) == TINY_DSRL["iterations"]
        lam, lr = 0.0, datagen.DSRLRecipe().dual_lr
        for i, (cost, logged) in enumerate(zip(m["train/episode_cost"], m["lagrange"])):
            lam = max(lam + lr * (cost - (start + (end - start) * i / (TINY_DSRL["iterations"] - 1))), 0.0)
            assert logged == pytest.approx(lam, rel=1e-9, abs=1e-12), (run, i)
    # a different seed gives different data
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path / "c"))
    _, meta = generate(tiny_cfg(seed=1), progress=False)
    assert meta["sha256"] != shas[0] and meta["data_sha256"] != sidecar["data_sha256"]


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datagen, "generate_dsrl", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(tiny_cfg(), progress=False)
    assert not list(tmp_path.glob("*.hdf5"))


def test_recipe_task_mismatch_is_refused(capsys):
    with pytest.raises(ConfigError, match="safe task"):
        datagen.check_generate_config(update_from_dict(GenerateConfig(), {"task": "Hopper", "recipe": "dsrl"}))
    with pytest.raises(ConfigError, match="quality"):
        datagen.check_generate_config(update_from_dict(GenerateConfig(), {"task": "Hopper", "recipe": "d4rl"}))
    assert main(["data", "generate", "--task", "BallCircle", "--recipe", "d4rl", "--quality", "medium"]) == 2
    assert "MuJoCo" in capsys.readouterr().err


def test_named_datasets_resolve_in_the_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path))
    assert main(["data", "inspect", "NoSuchSet"]) == 2
    err = capsys.readouterr().err
    assert "no dataset named 'NoSuchSet'" in err and str(tmp_path) in err


def test_embedded_default_dataset_is_valid_and_listed(capsys, tmp_path, monkeypatch):
    """The small BallCircle dataset shipped with the package (regenerate: docs/datasets.md)."""
    path = datagen.EMBEDDED["BallCircle-dsrl-small"]
    sidecar = json.loads(path.with_suffix(".json").read_text())
    from o2o.envs import get_task

    ds = load_hdf5(path, task=get_task("BallCircle"), expected_sha256=sidecar["sha256"])
    costs = ds.episode_costs()
    assert 0.2 <= np.mean(costs <= 20) <= 0.8  # spans the frontier: safe and unsafe episodes
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path))
    assert datagen.resolve_dataset("BallCircle-dsrl-small") == path
    assert main(["data", "list"]) == 0
    assert "BallCircle-dsrl-small" in capsys.readouterr().out


def test_behaviour_quality_warning_by_hand():
    from o2o.envs import get_task
    from o2o.loops.datagen import D4RLRecipe, behaviour_quality_warnings

    medium = {"iteration": 5, "env_steps": 5000, "eval_return": 269.5}
    r = D4RLRecipe()
    # Walker2d: D4RL 100 (815 - 1.629) / (4592.3 - 1.629) = 17.7 < 50 -> one warning naming the score
    (w,) = behaviour_quality_warnings(get_task("Walker2d"), {"iteration": 125, "env_steps": 125000, "eval_return": 815.0}, medium, r)
    assert "D4RL 17.7 < d4rl.min_expert_score 50" in w and "d4rl.iterations" in w
    # Hopper: 100 (2591 + 20.27) / (3234.3 + 20.27) = 80.2 -> none; a higher bar -> one
    hopper_expert = {"iteration": 105, "env_steps": 105000, "eval_return": 2591.1}
    assert behaviour_quality_warnings(get_task("Hopper"), hopper_expert, medium, r) == []
    assert len(behaviour_quality_warnings(get_task("Hopper"), hopper_expert, medium, update_from_dict(r, {"min_expert_score": 81.0}))) == 1
    # a DSRL task has no D4RL reference: nothing to say
    assert behaviour_quality_warnings(get_task("BallCircle"), {"iteration": 1, "env_steps": 1, "eval_return": 0.0}, medium, r) == []


def test_d4rl_recipe_with_a_weak_behaviour_run_warns_everywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path))
    tiny = ["--set", "d4rl.iterations=2", "--set", "d4rl.steps_per_iteration=200", "--set", "d4rl.updates_per_iteration=5",
            "--set", "d4rl.warmup_steps=200", "--set", "d4rl.eval_every=1", "--set", "d4rl.eval_episodes=1",
            "--set", "d4rl.hidden_dims=[16,16]", "--set", "d4rl.transitions=300", "--set", "d4rl.num_envs=1"]
    assert main(["--no-progress", "data", "generate", "--task", "Hopper", "--recipe", "d4rl", "--quality", "medium", *tiny]) == 0
    err = capsys.readouterr().err
    assert "o2o: warning: Hopper-medium: the behaviour run's best snapshot" in err
    meta = json.loads((tmp_path / "Hopper-medium.json").read_text())
    assert len(meta["warnings"]) == 1 and "is not D4RL's medium" in meta["warnings"][0]
    assert "**Warnings**" in (tmp_path / "Hopper-medium.md").read_text()
    assert load_hdf5(tmp_path / "Hopper-medium.hdf5").metadata["warnings"] == meta["warnings"]
    assert main(["data", "inspect", "Hopper-medium"]) == 0
    out = capsys.readouterr().out
    assert "warning: the behaviour run's best snapshot" in out
    assert f"machine: {datagen.machine_description()}" in out  # where it was made, d4rl recipe too


@pytest.mark.parametrize("iterations, eval_every, expected", [(1000, 5, 50), (150, 5, 25), (12, 5, 5), (2, 1, 1)])
def test_behaviour_run_checkpoints_at_most_every_50_iterations(iterations, eval_every, expected):
    r = datagen.D4RLRecipe(iterations=iterations, eval_every=eval_every)
    assert datagen.behaviour_checkpoint_every(r) == expected


def test_d4rl_behaviour_run_uses_the_checkpoint_interval(tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path))
    # 306 one-step iterations: a sixth of the run (51) is above the cap of 50
    tiny = ["--set", "d4rl.iterations=306", "--set", "d4rl.steps_per_iteration=1", "--set", "d4rl.updates_per_iteration=1",
            "--set", "d4rl.warmup_steps=50", "--set", "d4rl.eval_every=40", "--set", "d4rl.eval_episodes=1",
            "--set", "d4rl.hidden_dims=[8,8]", "--set", "d4rl.transitions=100", "--set", "d4rl.num_envs=1"]
    assert main(["--no-progress", "data", "generate", "--task", "Hopper", "--recipe", "d4rl", "--quality", "random", *tiny]) == 0
    (run,) = (tmp_path / "behaviour").iterdir()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["online"]["checkpoint_every"] == 50  # max(eval_every 40, min(306 // 6, 50))


def test_medium_iteration_stops_the_behaviour_run_and_reproduces_the_full_runs_datasets(tmp_path, monkeypatch):
    """d4rl.medium_iteration: medium / medium-replay from a behaviour run stopped at that snapshot hold
    the same transitions as from the uninterrupted run, and 'expert' later resumes the stopped run to
    the same result."""
    tiny = ["--set", "d4rl.iterations=4", "--set", "d4rl.steps_per_iteration=100", "--set", "d4rl.updates_per_iteration=5",
            "--set", "d4rl.warmup_steps=100", "--set", "d4rl.eval_every=2", "--set", "d4rl.eval_episodes=1",
            "--set", "d4rl.hidden_dims=[8,8]", "--set", "d4rl.transitions=200", "--set", "d4rl.num_envs=1",
            "--set", "d4rl.medium_iteration=2"]

    def gen(root, quality):
        monkeypatch.setenv("O2O_DATA_DIR", str(root))
        assert main(["--no-progress", "data", "generate", "--task", "Hopper", "--recipe", "d4rl", "--quality", quality, *tiny]) == 0
        return root / f"Hopper-{quality}"

    full, partial = tmp_path / "full", tmp_path / "partial"
    gen(full, "expert")  # the whole behaviour run first
    for q in ("medium-replay", "medium"):
        a, b = gen(full, q), gen(partial, q)
        assert sha256_data(load_hdf5(a.with_suffix(".hdf5"))) == sha256_data(load_hdf5(b.with_suffix(".hdf5")))
    meta = json.loads((partial / "Hopper-medium.json").read_text())
    assert meta["behaviour_stopped_at"] == 2 and meta["expert_snapshot"] is None and meta["medium_snapshot"]["iteration"] == 2
    (run,) = (partial / "behaviour").iterdir()
    assert not (run / "summary.json").exists()  # unfinished, resumable
    assert json.loads((full / "Hopper-medium.json").read_text())["medium_snapshot"]["iteration"] == 2
    b = gen(partial, "expert")  # resumes the stopped run to its end
    assert (run / "summary.json").exists()
    assert sha256_data(load_hdf5(b.with_suffix(".hdf5"))) == sha256_data(load_hdf5((full / "Hopper-expert.hdf5")))


@pytest.mark.parametrize("m", [3, 0, 6])
def test_medium_iteration_must_name_a_snapshot(m):
    cfg = update_from_dict(GenerateConfig(), {"task": "Hopper", "recipe": "d4rl", "quality": "medium", "d4rl": {"iterations": 4, "eval_every": 2, "medium_iteration": m}})
    with pytest.raises(ConfigError, match="names no snapshot"):
        datagen.check_generate_config(cfg)
