"""`o2o pretrain`: runs end to end on a small dataset and refuses bad input before training."""

import json

import h5py
import numpy as np
import pytest

from o2o.cli import main
from o2o.data import load_hdf5, sha256_data


def write(path, n=400, obs=8, act=2, costs=True, seed=0):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=rng.normal(size=(n, obs)).astype(np.float32))
        f.create_dataset("next_observations", data=rng.normal(size=(n, obs)).astype(np.float32))
        f.create_dataset("actions", data=rng.uniform(-1, 1, (n, act)).astype(np.float32))
        f.create_dataset("rewards", data=rng.uniform(0, 1, n).astype(np.float32))
        if costs:
            f.create_dataset("costs", data=(rng.uniform(size=n) < 0.1).astype(np.float32))
        f.create_dataset("terminals", data=np.zeros(n, bool))
        f.create_dataset("timeouts", data=np.arange(n) % 200 == 199)


TINY = ["--steps", "20", "--set", "offline.steps_per_call=10", "--set", "offline.eval_every=20",
        "--set", "offline.eval_episodes=1", "--set", "agent.hidden_dims=[16,16]", "--set", "agent.batch_size=32"]


def test_pretrain_runs_and_resumes(tmp_path, capsys):
    data = tmp_path / "bc.hdf5"
    write(data)
    out = tmp_path / "run"
    code = main(["--no-progress", "pretrain", "--algo", "bc-safe", "--dataset", str(data), "--task", "BallCircle", "--out", str(out), *TINY])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "final_eval_return" in stdout and stdout.strip().splitlines()[-1].startswith(f"outputs: {out}")
    assert (out / "checkpoints").exists() and (out / "summary.json").exists()
    # the summary names the transitions it trained on (the checksum `o2o data inspect` prints)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset_sha256"] == sha256_data(load_hdf5(data))
    write(tmp_path / "other.hdf5", seed=1)
    assert summary["dataset_sha256"] != sha256_data(load_hdf5(tmp_path / "other.hdf5"))


@pytest.mark.parametrize(
    "case,args,expect",
    [
        ("no_costs", ["--algo", "cpq", "--task", "BallCircle"], "needs costs"),
        ("other_task", ["--algo", "cql", "--task", "Hopper"], "Hopper"),
        ("bad_limit", ["--algo", "cpq", "--task", "BallCircle", "--set", "cost_limit=0"], "positive cost limit"),
        ("unknown_algo", ["--algo", "cpqq", "--task", "BallCircle"], "unknown offline algorithm"),
    ],
)
def test_pretrain_refuses_bad_input_before_training(tmp_path, capsys, case, args, expect):
    data = tmp_path / f"{case}.hdf5"
    write(data, costs=case != "no_costs")
    out = tmp_path / "run"
    code = main(["--no-progress", "pretrain", "--dataset", str(data), "--out", str(out), *args, *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("o2o: error:") and expect in lines[0]
    assert not out.exists()


def test_example_cpq_config_sets_the_options_it_names():
    """examples/configs/cpq-o2o.yaml (the ninth test's CPQ) resolves over the preset; a renamed key fails here."""
    from pathlib import Path

    from o2o.presets import resolve_pretrain_config

    path = Path(__file__).parents[1] / "examples" / "configs" / "cpq-o2o.yaml"
    agent = resolve_pretrain_config("cpq", "BallCircle-dsrl", config_file=str(path)).agent
    preset = resolve_pretrain_config("cpq", "BallCircle-dsrl").agent
    assert (agent.ood_penalty, agent.clip_targets, agent.reward_cql_alpha) == ("hinge", True, 1.0)
    assert (agent.reward_cql_importance_sample, agent.cost_reduce) == (False, "mean")
    assert (preset.ood_penalty, preset.clip_targets, preset.reward_cql_alpha, preset.cost_reduce) == ("linear", False, 0.0, "max")


def test_observation_normalisation_defaults_by_algorithm_family():
    """Unconstrained offline algorithms standardise observations with the data's mean / std + 1e-3 (CORL);
    the safe ones do not (OSRL); an explicit setting wins. The resolved choice is in the run's config."""
    from o2o.config import from_dict
    from o2o.data import load_hdf5
    from o2o.data.registry import resolve_dataset
    from o2o.loops.offline import OfflineData
    from o2o.runconfig import pretrain_config_class
    data = load_hdf5(resolve_dataset("BallCircle-dsrl-small"))
    obs = np.asarray(data.observations)
    for algo, expected in (("td3bc", True), ("iql", True), ("cql", True), ("cpq", False), ("bc-safe", False)):
        cfg = from_dict(pretrain_config_class(algo), {"dataset": "BallCircle-dsrl-small"})
        shared = OfflineData(cfg)
        assert shared.cfg.offline.normalize_observations is expected, algo
        if expected:
            np.testing.assert_allclose(shared.obs_mean, obs.mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(shared.obs_std, obs.std(0) + 1e-3, rtol=1e-5)
        else:
            np.testing.assert_array_equal(shared.obs_std, np.ones(obs.shape[1], np.float32))
    cfg = from_dict(pretrain_config_class("td3bc"), {"dataset": "BallCircle-dsrl-small", "offline": {"normalize_observations": False}})
    assert OfflineData(cfg).cfg.offline.normalize_observations is False
    # IQL's actor learning rate decays on a cosine over the run (CORL), unless set (0: constant)
    iql = from_dict(pretrain_config_class("iql"), {"dataset": "BallCircle-dsrl-small", "offline": {"steps": 3000}})
    assert OfflineData(iql).cfg.agent.actor_cosine_decay_steps == 3000
    iql = from_dict(pretrain_config_class("iql"), {"dataset": "BallCircle-dsrl-small", "agent": {"actor_cosine_decay_steps": 0}})
    assert OfflineData(iql).cfg.agent.actor_cosine_decay_steps == 0
