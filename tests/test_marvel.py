"""Marvel end to end: VPA's targets, methods, the finetune / marvel / diagnose-critic commands, bad input.

One tiny CPQ run on the embedded BallCircle dataset is shared by the module (module fixture)."""

import dataclasses
import json
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.cli import main
from o2o.errors import ConfigError, RunDirError

TINY_PRETRAIN = {"offline": {"steps": 200, "steps_per_call": 100, "eval_every": 200, "eval_episodes": 1, "checkpoint_every": 200},
                 "agent": {"batch_size": 64, "num_ood_actions": 2, "hidden_dims": [32, 32], "vae_hidden_dims": [32, 32]}}
TINY_FINETUNE = [
    "vpa.steps=100", "vpa.steps_per_call=50", "vpa.batch_size=64",
    "online.iterations=2", "online.episodes_per_iteration=1", "online.updates_per_iteration=20",
    "online.eval_every=1", "online.eval_episodes=1", "online.checkpoint_every=1", "agent.batch_size=64",
]


@pytest.fixture(scope="module")
def pretrained(build_once):
    from o2o.loops.offline import run_pretrain
    from o2o.presets import resolve_pretrain_config

    def build(root):
        run_pretrain(resolve_pretrain_config("cpq", "BallCircle-dsrl-small", seed=0, layer=TINY_PRETRAIN), root / "cpq", progress=False)

    return build_once("marvel-cpq", build) / "cpq"


def _cfg(method, pretrained, *extra):
    from o2o.loops.finetune import resolve_finetune_config

    return resolve_finetune_config(method, str(pretrained) if pretrained else None, "BallCircle", 0, overrides=TINY_FINETUNE + list(extra))


# ---------------------------------------------------------------------------------------------- VPA


def test_vpa_target_matches_a_hand_computed_case():
    from o2o.agents import sac_lag
    from o2o.bridge.vpa import vpa_targets
    from o2o.nn import tanh_gaussian_sample

    cfg = sac_lag.SACLagConfig(hidden_dims=(8,), reward_scale=0.1, gamma=0.9, num_cost_critics=2, cost_reduce="max")
    state = sac_lag.init(jax.random.PRNGKey(0), 3, 2, cfg)
    rng = np.random.default_rng(0)
    batch = {
        "observations": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, (4, 2)), jnp.float32),
        "next_observations": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "rewards": jnp.asarray([1.0, 2.0, -1.0, 0.5]),
        "costs": jnp.asarray([0.0, 1.0, 1.0, 0.0]),
        "terminals": jnp.asarray([0.0, 0.0, 1.0, 0.0]),  # a timeout is not terminal: only row 2 stops
    }
    key = jax.random.PRNGKey(7)
    y, y_c = vpa_targets(state, batch, key, 0.2, 0.05)
    # by hand: the same a' ~ pi0(.|s'), min over reward targets, max over cost targets
    mean, log_std = state.actor.apply_fn(state.actor.params, batch["next_observations"])
    a2, logp = tanh_gaussian_sample(key, mean, log_std)
    q = np.asarray(state.critic.apply_fn(state.target_critic_params, batch["next_observations"], a2))
    qc = np.asarray(state.cost_critic.apply_fn(state.target_cost_critic_params, batch["next_observations"], a2))
    r, c, d, logp = map(np.asarray, (batch["rewards"], batch["costs"], batch["terminals"], logp))
    np.testing.assert_allclose(y, 0.1 * r + 0.9 * (1 - d) * (q.min(0) - 0.2 * logp), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_c, c + 0.9 * (1 - d) * (qc.max(0) - 0.05 * logp), rtol=1e-5, atol=1e-6)
    assert y[2] == pytest.approx(0.1 * -1.0) and y_c[2] == pytest.approx(1.0)


def test_vpa_updates_the_critics_only_and_defaults_alpha_from_the_temperature():
    from o2o.agents import sac_lag
    from o2o.bridge.vpa import VPAConfig, vpa_stage
    from o2o.data.replay import replay_from_dataset

    cfg = sac_lag.SACLagConfig(hidden_dims=(16,), init_temperature=0.3, auto_temperature=False)
    state = sac_lag.init(jax.random.PRNGKey(1), 3, 2, cfg)
    actor_before = jax.tree_util.tree_map(np.asarray, state.actor.params)
    critic_before = jax.tree_util.tree_map(np.asarray, state.critic.params)
    n = 256
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(n, 3)).astype(np.float32), "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": np.ones(n, np.float32), "costs": (rng.uniform(size=n) < 0.3).astype(np.float32),
        "next_observations": rng.normal(size=(n, 3)).astype(np.float32),
        "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool),
    }
    stage = vpa_stage(state, replay_from_dataset(data), VPAConfig(steps=200, steps_per_call=50, batch_size=64), jax.random.PRNGKey(2))
    losses = [stage.step()[0]["vpa_critic_loss"] for _ in range(4)]
    assert stage.position == 200
    state, last = stage.state, stage.last
    assert last["vpa_alpha"] == pytest.approx(0.3) and last["vpa_cost_alpha"] == pytest.approx(0.03)
    jax.tree_util.tree_map(np.testing.assert_array_equal, actor_before, jax.tree_util.tree_map(np.asarray, state.actor.params))
    changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, np.asarray(b)), critic_before, state.critic.params)
    assert any(jax.tree_util.tree_leaves(changed))
    assert losses[-1] < losses[0]


def _sac_lag_batch(n=64, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    return {"observations": jnp.asarray(rng.normal(size=(n, obs_dim)), jnp.float32)}


def _edit_output(train_state, scale=1.0, shift=0.0):
    """A critic whose output is ``scale`` times the old plus ``shift`` (the output Dense's kernel and bias)."""
    flat = flax.traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, train_state.params))
    last = max({path[:-1] for path in flat}, key=lambda p: [str(x) for x in p])  # the output Dense
    flat[last + ("kernel",)] = flat[last + ("kernel",)] * scale
    flat[last + ("bias",)] = flat[last + ("bias",)] * scale + shift
    return train_state.replace(params=flax.traverse_util.unflatten_dict(flat))


def _shift_output(train_state, shift):
    return _edit_output(train_state, shift=shift)


def _scale_cost_critic(state, k):
    return state.replace(cost_critic=_edit_output(state.cost_critic, scale=k))


def test_balanced_cost_term_weighs_the_cost_gradient_in_units_of_the_reward_gradient():
    """cost_term: balanced -> the actor's step is g_r + lambda b g_c with b = ||g_r|| / ||g_c||: the cost part
    is lambda times as long as the reward part, the step does not change when the cost critic's scale does,
    and with scale_actor_loss it is divided by 1 + lambda. raw -> the gradient of the paper's loss."""
    from o2o.agents import sac_lag

    def flat(tree):
        return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])

    batch, key, lam = _sac_lag_batch(), jax.random.PRNGKey(3), jnp.float32(0.7)
    raw_cfg = sac_lag.SACLagConfig(hidden_dims=(16,), init_temperature=0.2, auto_temperature=False)
    state = sac_lag.init(jax.random.PRNGKey(4), 3, 2, raw_cfg)
    params = state.actor.params

    def objective_grad(i, s):
        return flat(jax.grad(lambda p: sac_lag.actor_objectives(p, s, batch, key)[0][i])(params))

    g_r, g_c = objective_grad(0, state), objective_grad(1, state)
    b = np.linalg.norm(g_r) / np.linalg.norm(g_c)

    grads, info = sac_lag.lagrangian_actor_grads(params, state, batch, key, lam)
    np.testing.assert_allclose(flat(grads), g_r + 0.7 * g_c, rtol=1e-4, atol=1e-7)  # the paper's loss
    np.testing.assert_allclose(float(info["grad_balance"]), b, rtol=1e-4)
    loss_grads = jax.grad(lambda p: sac_lag.lagrangian_actor_loss(p, state, batch, key, lam)[0])(params)
    np.testing.assert_allclose(flat(grads), flat(loss_grads), rtol=1e-4, atol=1e-7)

    balanced = state.replace(config=dataclasses.replace(raw_cfg, cost_term="balanced", scale_actor_loss=True))
    grads, info = sac_lag.lagrangian_actor_grads(params, balanced, batch, key, lam)
    step = flat(grads) * (1 + 0.7)
    np.testing.assert_allclose(step, g_r + 0.7 * b * g_c, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(step - g_r), 0.7 * np.linalg.norm(g_r), rtol=1e-4)
    assert float(info["lagrange_effective"]) == pytest.approx(0.7 * b, rel=1e-4)

    # a cost critic ten times larger: b ten times smaller, the same step
    scaled = _scale_cost_critic(balanced, 10.0)
    grads10, info10 = sac_lag.lagrangian_actor_grads(params, scaled, batch, key, lam)
    assert float(info10["grad_balance"]) == pytest.approx(b / 10, rel=1e-3)
    np.testing.assert_allclose(flat(grads10), flat(grads), rtol=1e-3, atol=1e-7)


def test_marvel_paper_method_is_the_released_rule():
    from o2o.loops.finetune import resolve_finetune_config

    paper = resolve_finetune_config("marvel-paper", task="BallCircle", require_pretrained=False)
    ours = resolve_finetune_config("marvel", task="BallCircle", require_pretrained=False)
    assert paper.lagrange.cadence == "minibatch" and paper.lagrange.gain_update == "raw" and paper.lagrange.kp == 5e-6
    assert paper.agent.cost_term == "raw" and not paper.agent.scale_actor_loss and paper.lagrange.max_lambda is None
    assert ours.agent.cost_term == "balanced" and ours.agent.scale_actor_loss and ours.lagrange.relative_error
    for cfg in (paper, ours):  # the paper's online schedule
        assert (cfg.online.iterations, cfg.online.episodes_per_iteration, cfg.online.updates_per_iteration, cfg.agent.batch_size) == (100, 5, 20, 64)


def test_vpa_at_the_preset_removes_four_fifths_of_the_start_error_on_zero_reward_data():
    """Data whose rewards and costs are all 0 (true values 0) and critics that start at ~43 (the demo's
    CPQ cost critic): the preset's VPA (steps, target rate) leaves at most a fifth of the error; the same
    steps at the agent's tau = 0.005 leave more than half (the error decays about as gamma^(steps tau))."""
    from o2o.agents import sac_lag
    from o2o.bridge.vpa import run_vpa
    from o2o.data.replay import replay_from_dataset
    from o2o.loops.finetune import resolve_finetune_config

    preset = resolve_finetune_config("marvel", task="BallCircle", require_pretrained=False)
    n, rng = 2048, np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(n, 4)).astype(np.float32), "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": np.zeros(n, np.float32), "costs": np.zeros(n, np.float32), "next_observations": rng.normal(size=(n, 4)).astype(np.float32),
        "terminals": np.zeros(n, bool), "timeouts": np.zeros(n, bool),
    }
    cfg = dataclasses.replace(preset.agent, hidden_dims=(32, 32), num_cost_critics=1)
    assert cfg.gamma == 0.99
    start = sac_lag.init(jax.random.PRNGKey(0), 4, 2, cfg)
    start = start.replace(critic=_shift_output(start.critic, 43.0), cost_critic=_shift_output(start.cost_critic, 43.0))
    start = start.replace(target_critic_params=start.critic.params, target_cost_critic_params=start.cost_critic.params)
    obs, act = jnp.asarray(data["observations"]), jnp.asarray(data["actions"])

    def errors(state):
        q = state.critic.apply_fn(state.critic.params, obs, act).min(axis=0)
        qc = state.cost_critic.apply_fn(state.cost_critic.params, obs, act).max(axis=0)
        return float(jnp.abs(q).mean()), float(jnp.abs(qc).mean())

    e0 = errors(start)
    assert min(e0) > 40
    # the preset's steps and target rate; minibatches of 64 (the error's decay is set by steps x tau)
    vpa = dataclasses.replace(preset.vpa, steps_per_call=preset.vpa.steps // 5, batch_size=64)
    copy = jax.tree_util.tree_map(jnp.array, start)  # run_vpa donates its input
    aligned, _ = run_vpa(start, replay_from_dataset(data), vpa, jax.random.PRNGKey(1))
    slow, _ = run_vpa(copy, replay_from_dataset(data), dataclasses.replace(vpa, tau=0.005), jax.random.PRNGKey(1))
    for before, after, at_tau in zip(e0, errors(aligned), errors(slow)):
        assert after <= before / 5
        assert at_tau > before / 2


# ------------------------------------------------------------------------------------------ methods


def test_methods_fix_their_structure_and_presets_their_values(pretrained):
    from o2o.methods import METHODS

    assert set(METHODS) >= {"marvel", "from-scratch", "warm-start", "vpa-only", "vpa-init", "apid-only", "vpa-pid"}
    marvel = _cfg("marvel", pretrained)
    assert marvel.lagrange.controller == "apid" and marvel.online.warmup_steps == 0
    assert marvel.agent.actor_lr == pytest.approx(5e-5) and marvel.agent.critic_lr == pytest.approx(5e-3)  # authors' BallCircle
    assert marvel.agent.hidden_dims == (32, 32) and marvel.agent.num_cost_critics == 2  # follows the pre-trained run
    assert _cfg("warm-start", pretrained).lagrange.controller == "dual-ascent"
    assert _cfg("vpa-init", pretrained).lagrange.init_lambda == pytest.approx(0.65)
    pid = _cfg("vpa-pid", pretrained).lagrange
    assert (pid.controller, pid.ema_p, pid.d_delay) == ("pid", 0.9, 10)
    scratch = _cfg("from-scratch", None)
    assert scratch.pretrained is None and scratch.lagrange.controller == "apid"
    with pytest.raises(ConfigError, match="unknown method"):
        _cfg("marvle", pretrained)


def test_warm_start_starts_from_the_pretrained_networks(pretrained, tmp_path):
    from o2o.bridge.pretrained import load_pretrained
    from o2o.loops.finetune import build_agent
    from o2o.methods import get_method

    pre = load_pretrained(pretrained)
    cfg = _cfg("warm-start", pretrained)
    state = build_agent(cfg, get_method("warm-start"), pre, jax.random.PRNGKey(0))
    for a, b in [(state.actor.params, pre.state.actor.params), (state.cost_critic.params, pre.state.cost_critic.params),
                 (state.target_critic_params, pre.state.critic.params)]:
        jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    scratch = build_agent(_cfg("from-scratch", None), get_method("from-scratch"), None, jax.random.PRNGKey(0))
    assert not np.allclose(jax.tree_util.tree_leaves(scratch.actor.params)[0], jax.tree_util.tree_leaves(pre.state.actor.params)[0]) \
        if jax.tree_util.tree_leaves(scratch.actor.params)[0].shape == jax.tree_util.tree_leaves(pre.state.actor.params)[0].shape else True
    # vpa.init=fresh: the actor is pi0, the critics are fresh (a start without critics, e.g. BC-Safe)
    fresh = build_agent(_cfg("warm-start", pretrained, "vpa.init=fresh"), get_method("warm-start"), pre, jax.random.PRNGKey(0))
    jax.tree_util.tree_map(np.testing.assert_array_equal, fresh.actor.params, pre.state.actor.params)
    for a, b in [(fresh.critic.params, pre.state.critic.params), (fresh.cost_critic.params, pre.state.cost_critic.params)]:
        assert not any(np.allclose(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)) if x.ndim == 2)


# ------------------------------------------------------------------------------------------ commands


def test_finetune_marvel_then_resume_then_diagnose(pretrained, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["--no-progress", "finetune", "--method", "marvel", "--pretrained", str(pretrained), "--out", str(out)]
    for kv in TINY_FINETUNE:
        args += ["--set", kv]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "marvel" and summary["iterations"] == 2 and summary["vpa"]["steps"] == 100
    assert (out / "bridge" / "metrics.csv").exists()
    # TensorBoard: the online curves against environment steps (the CSV's step is the iteration), VPA's
    # in bridge/tb against its gradient steps
    from o2o.runs import read_metrics_csv
    from tbevents import tb_scalars

    online, vpa = read_metrics_csv(out), read_metrics_csv(out / "bridge")
    scalars, bridge_scalars = tb_scalars(out / "tb"), tb_scalars(out / "bridge" / "tb")
    assert online["step"].tolist() == [0, 1, 2] and online["env_steps"][-1] > 2
    assert [s for s, _ in scalars["eval/return"]] == online["env_steps"][~np.isnan(online["eval/return"])].tolist()
    assert [s for s, _ in bridge_scalars["vpa_critic_loss"]] == vpa["step"].tolist() and vpa["step"][-1] == 100
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[1].startswith("0,")  # iteration 0: the policy fine-tuning starts from, evaluated
    assert "lagrange_kp" in rows[0]  # the controller's gains are logged
    # continuing a finished run is a no-op that keeps its results
    assert main(["--no-progress", "finetune", "--resume", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["iterations"] == 2
    capsys.readouterr()
    assert main(["--no-progress", "diagnose-critic", str(out), "--pairs", "4", "--rollouts", "1", "--horizon", "30"]) == 0
    result = json.loads((out / "diagnose_critic.json").read_text())
    for source in ("policy", "random"):
        for when in ("before", "after"):
            v = result["sources"][source][when]["reward_spearman"]
            assert v is None or -1.0 <= v <= 1.0
    assert "before VPA" in capsys.readouterr().out


def test_marvel_stopped_by_sigterm_in_vpa_continues_it_and_matches_an_uninterrupted_run(pretrained, tmp_path, monkeypatch, capsys):
    """SIGTERM during VPA (o2o.stop): VPA saves its place (bridge/partial/) and the stop is one line;
    `--resume` continues VPA from there (its metrics rows not doubled) and the run ends as an
    uninterrupted one."""
    import os
    import signal

    from o2o.runs import MetricsWriter

    sets = [x for kv in TINY_FINETUNE for x in ("--set", kv)]
    args = lambda out: ["--no-progress", "finetune", "--method", "marvel", "--pretrained", str(pretrained), "--out", str(out), *sets]  # noqa: E731
    assert main(args(tmp_path / "full")) == 0
    write = MetricsWriter.write

    def term_at_vpa_50(self, step, metrics):
        write(self, step, metrics)
        if step == 50 and "vpa_q_mean" in metrics:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(MetricsWriter, "write", term_at_vpa_50)
    out = tmp_path / "stopped"
    capsys.readouterr()
    assert main(args(out)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"after VPA step 50 of 100; checkpoint saved in {out}" in err[0] and f"o2o finetune --resume {out}" in err[0]
    from o2o.runs import load_checkpoint

    assert load_checkpoint(out / "bridge" / "partial")[1]["step"] == 50
    monkeypatch.setattr(MetricsWriter, "write", write)
    assert main(["--no-progress", "finetune", "--resume", str(out)]) == 0
    assert not (out / "bridge" / "partial").exists()
    assert (out / "bridge" / "metrics.csv").read_text() == (tmp_path / "full" / "bridge" / "metrics.csv").read_text()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "full", out))
    assert a["final_eval_return"] == b["final_eval_return"] and a["vpa"]["vpa_q_mean"] == b["vpa"]["vpa_q_mean"]


def test_finetune_bad_input_is_refused_before_training(pretrained, tmp_path, capsys):
    def err(*args):
        assert main(["--no-progress", "finetune", *args, "--out", str(tmp_path / "x")]) == 2
        assert not (tmp_path / "x").exists()
        return capsys.readouterr().err

    assert "for task BallCircle, not CarRun" in err("--method", "marvel", "--pretrained", str(pretrained), "--task", "CarRun")
    assert "does not exist" in err("--method", "marvel", "--pretrained", str(tmp_path / "nope"))
    assert "needs" in err("--method", "marvel") or "pre-trained" in err("--method", "marvel")
    assert "lagrange.kp" in err("--method", "marvel", "--pretrained", str(pretrained), "--set", "lagrange.kp=-1")
    # a run without a checkpoint
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((pretrained / "config.yaml").read_text())
    assert "no checkpoint" in err("--method", "marvel", "--pretrained", str(empty))
    # an offline algorithm without a cost critic
    from o2o.loops.offline import run_pretrain
    from o2o.presets import resolve_pretrain_config

    bc = tmp_path / "bc"
    run_pretrain(resolve_pretrain_config("bc", "BallCircle-dsrl-small", layer={"offline": TINY_PRETRAIN["offline"]}), bc, progress=False)
    assert "vpa.init=fresh" in err("--method", "warm-start", "--pretrained", str(bc))  # no critics to copy
    assert "vpa.init=fresh" in err("--method", "marvel", "--pretrained", str(bc))  # VPA can fit fresh critics


def test_marvel_pipeline_end_to_end_and_reuses_finished_stages(pretrained, tmp_path, capsys):
    import yaml

    budget = tmp_path / "budget.yaml"
    budget.write_text(yaml.safe_dump({"pretrain": TINY_PRETRAIN, "finetune": _nested(TINY_FINETUNE)}))
    root = tmp_path / "pipe"
    args = ["--no-progress", "marvel", "--task", "BallCircle", "--dataset", "BallCircle-dsrl-small", "--methods", "marvel,warm-start",
            "--budget", str(budget), "--out", str(root)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "offline return" in out and "marvel" in out and "warm-start" in out
    report = (root / "report.md").read_text()
    assert "| BallCircle | marvel | 1 |" in report and "| BallCircle | warm-start | 0 |" in report  # over seeds, per seed
    assert "lowest reward, first 10%" in report and "final within the limit" in report
    assert (root / "curves.png").stat().st_size > 10_000
    assert (root / "curves.pdf").read_bytes().startswith(b"%PDF")  # for a paper: the figure as PDF, the table as LaTeX
    tex = (root / "results.tex").read_text()
    assert "\\begin{tabular}" in tex and "BallCircle & marvel & 1 &" in tex and "BallCircle & warm-start & 1 &" in tex
    assert "results.tex" in report
    stamp = (root / "finetune" / "marvel-s0" / "summary.json").stat().st_mtime_ns
    assert main(args) == 0  # everything finished: reused, not re-run
    assert (root / "finetune" / "marvel-s0" / "summary.json").stat().st_mtime_ns == stamp
    # stage directories written by an o2o without keys added since (at their defaults): the same stages
    for stage, section, key in (("pretrain/cpq-s0", "agent", "reward_cql_alpha"), ("finetune/marvel-s0", "lagrange", "kd_reset_min_shift")):
        saved = yaml.safe_load((root / stage / "config.yaml").read_text())
        del saved[section][key]
        (root / stage / "config.yaml").write_text("# Resolved config of this run (o2o 0.0).\n" + yaml.safe_dump(saved))
    assert main(args) == 0
    assert (root / "finetune" / "marvel-s0" / "summary.json").stat().st_mtime_ns == stamp
    written = (root / "finetune/marvel-s0/config.yaml").read_text()  # written back complete, its header kept
    assert "kd_reset_min_shift" in written and written.startswith("# Resolved config of this run (o2o 0.0).\n")
    # a stage directory with another config is refused, not overwritten
    assert main(args + ["--set", "finetune.online.eval_episodes=2"]) == 2
    assert "another config" in capsys.readouterr().err
    # a raised budget is not another config: the finished stages run on to it, the others are reused
    pre_stamp = (root / "pretrain" / "cpq-s0" / "summary.json").stat().st_mtime_ns
    assert main(args + ["--set", "finetune.online.iterations=3"]) == 0
    for method in ("marvel", "warm-start"):
        assert json.loads((root / "finetune" / f"{method}-s0" / "summary.json").read_text())["iterations"] == 3
    assert (root / "pretrain" / "cpq-s0" / "summary.json").stat().st_mtime_ns == pre_stamp


def _nested(overrides):
    out = {}
    for kv in overrides:
        key, value = kv.split("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml_value(value)
    return out


def yaml_value(text):
    import yaml

    return yaml.safe_load(text)


def test_demo_runs_three_seeds_from_bc_safe_and_replaces_only_its_own_outputs(tmp_path, capsys):
    """o2o demo at a tiny budget: BC-Safe -> VPA from fresh critics -> Marvel for seeds 0, 1, 2, one row
    per seed and the wall time. A bad key fails before anything is touched; an --out holding files the
    demo did not write is refused and kept."""
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["--no-progress", "demo", "--out", str(keep)]) == 2
    assert (keep / "notes.txt").read_text() == "mine" and "did not write" in capsys.readouterr().err

    out = tmp_path / "demo"
    tiny = ["pretrain.offline.steps=200", "pretrain.offline.steps_per_call=100", "pretrain.offline.eval_every=200",
            "pretrain.offline.checkpoint_every=200", "pretrain.agent.hidden_dims=[32,32]"] + [f"finetune.{k}" for k in TINY_FINETUNE]
    args = ["--no-progress", "demo", "--out", str(out)] + [x for kv in tiny for x in ("--set", kv)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.findall(r"marvel\s*│\s*(\d)\s*│", printed) == ["0", "1", "2"]  # one row per seed
    assert "wall time" in printed
    assert sorted(p.name for p in (out / "finetune").iterdir()) == ["marvel-s0", "marvel-s1", "marvel-s2"]
    assert sorted(p.name for p in (out / "pretrain").iterdir()) == ["bc-safe-s0", "bc-safe-s1", "bc-safe-s2"]
    assert "| marvel | 2 |" in (out / "report.md").read_text()  # the per-seed table
    marker = out / "finetune" / "marvel-s0" / "summary.json"
    before = marker.stat().st_mtime_ns
    assert main(["--no-progress", "demo", "--out", str(out), "--set", "pretrain.bogus=1"]) == 2  # checked first
    assert "bogus" in capsys.readouterr().err and marker.stat().st_mtime_ns == before
    assert main(["--no-progress", "demo", "--out", str(out), "--dry-run"]) == 0  # its own report, figures and tables are not foreign


def test_a_start_without_optimiser_state_fine_tunes_and_refuses_resume(pretrained, tmp_path, capsys):
    """lab/marvel/pack_starts.py's starts: the pre-trained checkpoint without its optimiser states and the parts
    fine-tuning does not read (targets, CPQ's VAE, its multiplier; read back as zeros) is enough to fine-tune
    from: the SAC-Lag state built from it equals the one built from the full checkpoint (the online stage
    starts fresh optimisers); `o2o pretrain --resume` refuses it."""
    import dataclasses
    import shutil

    import jax
    import numpy as np

    from o2o.bridge.pretrained import load_pretrained, to_sac_lag
    from o2o.loops.finetune import run_finetune
    from o2o.runs.checkpoint import latest_checkpoint, strip_checkpoint

    start = tmp_path / "start"
    shutil.copytree(pretrained, start)
    fields = [f.name for f in dataclasses.fields(load_pretrained(pretrained).state)]
    unread = tuple(f"agent/{k}" for k in fields if k not in ("actor", "critic", "cost_critic", "config"))
    assert "agent/target_critic_params" in unread
    size = (latest_checkpoint(start) / "arrays.msgpack").stat().st_size
    kept, dropped = strip_checkpoint(latest_checkpoint(start), (), "test start", optimiser_only=True, also=unread, drop=True)
    assert kept > 0 and dropped > 0
    assert (latest_checkpoint(start) / "arrays.msgpack").stat().st_size < size / 2  # the file holds what is kept only
    cfg = _cfg("marvel", start)
    full, packed = (to_sac_lag(load_pretrained(p), cfg.agent, jax.random.PRNGKey(0)) for p in (pretrained, start))
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), full, packed)
    assert all(jax.tree_util.tree_leaves(same))
    assert not any(np.any(x) for x in jax.tree_util.tree_leaves(load_pretrained(start).state.target_critic_params))
    bad = tmp_path / "bad"
    shutil.copytree(start, bad)
    host = latest_checkpoint(bad) / "host_state.json"
    host.write_text(host.read_text().replace('"dropped_arrays": [', '"dropped_arrays": "x", "unused": ['))
    with pytest.raises(RunDirError, match="'dropped_arrays' is not a list of array paths"):
        load_pretrained(bad)
    summary = run_finetune(_cfg("marvel", start), tmp_path / "ft", progress=False)
    assert summary["iterations"] == 2
    assert main(["--no-progress", "pretrain", "--resume", str(start)]) == 2
    assert "no optimiser state" in capsys.readouterr().err


def test_ctrl_c_on_finetune_checkpoints_and_names_the_finetune_resume(pretrained, tmp_path, monkeypatch, capsys):
    """Ctrl-C during VPA takes SIGTERM's path: VPA saves its place and the line says `o2o finetune --resume DIR`."""
    import os
    import signal

    from o2o.runs import MetricsWriter, load_checkpoint

    write = MetricsWriter.write

    def int_at_vpa_50(self, step, metrics):
        write(self, step, metrics)
        if step == 50 and "vpa_q_mean" in metrics:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MetricsWriter, "write", int_at_vpa_50)
    out = tmp_path / "stopped"
    sets = [x for kv in TINY_FINETUNE for x in ("--set", kv)]
    capsys.readouterr()
    assert main(["--no-progress", "finetune", "--method", "marvel", "--pretrained", str(pretrained), "--out", str(out), *sets]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert f"stopped by SIGINT after VPA step 50 of 100; checkpoint saved in {out}" in err[-1] and err[-1].endswith(f"`o2o finetune --resume {out}`")
    assert load_checkpoint(out / "bridge" / "partial")[1]["step"] == 50
