"""OCR-CFT's pieces against hand-computed cases: alignment targets (O2SAC, O2TD3 poster and code), the
expectile dual, the threshold schedule, the reference-policy rule, the half replay mode, PPO's Monte-Carlo
returns with timeouts, O2PPO's auxiliary advantage, and bad input refused before training."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.errors import ConfigError


# ------------------------------------------------------------------------------------- alignment


def test_o2sac_alignment_target_by_hand():
    from o2o.bridge.align import o2sac_alignment_target

    # Qbar(s,a_dot) = 10, alpha = 0.2, log pi_off(a_dot) = 1, log pi_off(a) = -2 -> 10 - 0.2 * 3 = 9.4
    q = o2sac_alignment_target(qbar_a=jnp.array([12.0, 5.0]), qbar_anchor=jnp.array([10.0, 10.0]),
                               log_prob_off_a=jnp.array([-2.0, -2.0]), log_prob_off_anchor=jnp.array([1.0, 1.0]), alpha=0.2)
    np.testing.assert_allclose(q, [9.4, 5.0], rtol=1e-6)  # the min with Qbar(s,a) caps the second


def test_o2sac_alignment_targets_on_networks_are_bounded_by_both_terms():
    from o2o.agents import sac
    from o2o.bridge.align import o2sac_targets
    from o2o.nn import tanh_gaussian_log_prob

    cfg = sac.SACConfig(hidden_dims=(8,))
    state = sac.init(jax.random.PRNGKey(0), 3, 2, cfg)
    offline = sac.init(jax.random.PRNGKey(1), 3, 2, cfg).actor.params
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
    actions, anchor, target, anchor_target = o2sac_targets(state, {"observations": obs}, jax.random.PRNGKey(2), offline, 0.2)
    mean, log_std = state.actor.apply_fn(offline, obs)
    np.testing.assert_allclose(anchor, np.clip(np.tanh(mean), -0.9999, 0.9999), rtol=1e-6)
    qbar = lambda a: np.asarray(state.critic.apply_fn(state.target_critic_params, obs, a).min(0))
    lp = lambda a: np.asarray(tanh_gaussian_log_prob(mean, log_std, a, clip=0.9999))
    by_hand = np.minimum(qbar(anchor) - 0.2 * (lp(anchor) - lp(actions)), qbar(actions))
    np.testing.assert_allclose(target, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(anchor_target, qbar(anchor), rtol=1e-6)


@pytest.mark.parametrize(
    "q_anchor,qbar_tilde,d,poster,code",
    [
        (10.0, 20.0, 0.1, 10 / 1.04, 10 / 1.01),   # poster floors d at sigma; the code uses d (< sigma)
        (10.0, 20.0, 0.5, 10 / 1.25, 10 / 1.04),   # the code caps d at sigma
        (-10.0, -9.0, 0.5, -9.0, -10.4),           # negative Q: poster divides (-8, capped by Qbar), code multiplies
        (10.0, 5.0, 0.5, 5.0, 5.0),                # Qbar(s, a~) below both: the min keeps it
    ],
)
def test_o2td3_alignment_target_poster_and_code_by_hand(q_anchor, qbar_tilde, d, poster, code):
    from o2o.bridge.align import o2td3_alignment_target

    # two critics: the first as in the case, the second far above; each is capped by its own Qbar_j
    args = (jnp.array([[qbar_tilde], [1e6]]), jnp.array([q_anchor]), jnp.array([d]), 1.0, 0.2)
    factor = 1.0 + min(d, 0.2) ** 2
    shrunk = {"poster": q_anchor / (1.0 + max(d**2, 0.04)), "code": q_anchor / factor if q_anchor >= 0 else q_anchor * factor}
    for rule, expected in (("poster", poster), ("code", code)):
        out = np.asarray(o2td3_alignment_target(*args, rule=rule))
        assert out.shape == (2, 1)
        assert out[0, 0] == pytest.approx(expected, rel=1e-6)
        assert out[1, 0] == pytest.approx(shrunk[rule], rel=1e-6)  # not capped: its own Qbar_2 is far above


def test_o2td3_alignment_shrinks_the_frozen_critics_value_per_critic():
    """The target is built from the frozen critics Qbar_j (not the critic being trained): the anchor
    value min_j Qbar_j(s, a_dot) shrunk by the distance, capped by each Qbar_j(s, a~) separately."""
    from o2o.agents import o2td3
    from o2o.agents.td3 import smoothed_target_actions
    from o2o.bridge.align import o2td3_align_update, o2td3_alignment_target

    cfg = o2td3.O2TD3Config(hidden_dims=(8,), batch_size=16)
    state = o2td3.init(jax.random.PRNGKey(0), 3, 2, cfg)
    frozen = jax.tree_util.tree_map(lambda x: 1.5 * x + 0.1, state.critic.params)  # Qbar differs from Q
    state = state.replace(target_critic_params=frozen)
    offline = o2td3.init(jax.random.PRNGKey(7), 3, 2, cfg).actor.params
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
    key = jax.random.PRNGKey(3)
    _, info = o2td3_align_update(state, {"observations": obs}, key, offline, rule="code", k=1.0, sigma=0.2)

    apply = state.actor.apply_fn
    anchor = apply(offline, obs)
    actions = smoothed_target_actions(apply(state.actor.params, obs), key, cfg.policy_noise, cfg.noise_clip)
    d = np.linalg.norm(np.asarray(actions - anchor), axis=-1) / np.sqrt(2)
    qbar = lambda a: np.asarray(state.critic.apply_fn(frozen, obs, a))
    factor = 1.0 + np.minimum(d, 0.2) ** 2
    anchor_q = qbar(anchor).min(0)
    shrunk = np.where(anchor_q >= 0, anchor_q / factor, anchor_q * factor)
    by_hand = np.minimum(qbar(actions), shrunk[None])  # [2, B]: per critic
    assert float(info["align_target_mean"]) == pytest.approx(by_hand.mean(), rel=1e-5)
    assert not np.allclose(by_hand[0], by_hand[1])  # the two critics' targets differ
    q_now = lambda a: np.asarray(state.critic.apply_fn(state.critic.params, obs, a))
    old_rule = np.minimum(qbar(actions).min(0), np.asarray(o2td3_alignment_target(
        jnp.asarray(qbar(actions).min(0))[None], jnp.asarray(q_now(anchor).min(0)), jnp.asarray(d), 1.0, 0.2, "code"))[0])
    assert abs(float(info["align_target_mean"]) - old_rule.mean()) > 1e-3  # not the current critic's anchor value


def test_o2sac_alignment_keeps_alpha_fixed():
    """The temperature stays at the re-evaluation alpha through alignment (the released code's rule)."""
    from o2o.agents import o2sac
    from o2o.bridge.align import align_many
    from o2o.data.replay import replay_from_dataset

    cfg = o2sac.O2SACConfig(hidden_dims=(8,), batch_size=32, init_temperature=0.2, auto_temperature=True)
    state = o2sac.init(jax.random.PRNGKey(0), 3, 2, cfg)
    offline = jax.tree_util.tree_map(jnp.copy, state.actor.params)
    rng = np.random.default_rng(0)
    buf = replay_from_dataset({"observations": rng.normal(size=(64, 3)), "actions": rng.uniform(-1, 1, (64, 2)), "rewards": np.ones(64),
                               "next_observations": rng.normal(size=(64, 3)), "terminals": np.zeros(64)})
    signals = {"offline_actor_params": offline, "alpha": jnp.asarray(0.2, jnp.float32)}
    new, m = align_many("sac", 32)(state, buf, jax.random.PRNGKey(1), signals, num_steps=50)
    assert float(new.temperature.apply_fn(new.temperature.params)) == pytest.approx(0.2, rel=1e-6)
    assert float(m["align_temperature"]) == pytest.approx(0.2, rel=1e-6)
    assert not np.allclose(jax.tree_util.tree_leaves(offline)[0], jax.tree_util.tree_leaves(new.actor.params)[0])  # the actor moved


def test_alignment_keeps_targets_frozen_and_trains_the_actor():
    from o2o.agents import o2td3
    from o2o.bridge.align import align_many
    from o2o.data.replay import replay_from_dataset

    state = o2td3.init(jax.random.PRNGKey(0), 3, 2, o2td3.O2TD3Config(hidden_dims=(8,), batch_size=32))
    offline = jax.tree_util.tree_map(jnp.copy, state.actor.params)
    before = jax.tree_util.tree_map(np.asarray, (state.target_critic_params, state.actor.params))
    rng = np.random.default_rng(0)
    buf = replay_from_dataset({"observations": rng.normal(size=(64, 3)), "actions": rng.uniform(-1, 1, (64, 2)), "rewards": np.ones(64),
                               "next_observations": rng.normal(size=(64, 3)), "terminals": np.zeros(64)})
    state, m = align_many("td3", 32, "code", 1.0, 0.2)(state, buf, jax.random.PRNGKey(1), {"offline_actor_params": offline}, num_steps=10)
    jax.tree_util.tree_map(np.testing.assert_array_equal, before[0], jax.tree_util.tree_map(np.asarray, state.target_critic_params))
    assert not np.allclose(jax.tree_util.tree_leaves(before[1])[0], jax.tree_util.tree_leaves(state.actor.params)[0])
    assert np.isfinite(float(m["align_critic_loss"]))


# ------------------------------------------------------------------------------------- CFT


def test_expectile_dual_weight_by_hand_and_lambda_direction():
    from o2o.agents.cft import dual_step, expectile_dual_weight, init_log_lambda

    # f = [0.5, 0.1], tau = 0.2: u = [-0.3, 0.1] -> mean(0.7 * -0.3, 0.3 * 0.1) = -0.09
    assert float(expectile_dual_weight(jnp.array([0.5, 0.1]), 0.2, 0.7)) == pytest.approx(-0.09)
    lam = lambda ll: float(ll.apply_fn(ll.params))
    violated = satisfied = init_log_lambda(1.0, 0.01)
    for _ in range(20):
        violated = dual_step(violated, jnp.array([0.5, 0.4, 0.1]), 0.2, 0.7)
        satisfied = dual_step(satisfied, jnp.array([0.05, 0.1, 0.3]), 0.2, 0.7)
    assert lam(violated) > 1.1 and lam(satisfied) < 0.9


def _random_batch(n: int = 32, obs_dim: int = 3, act_dim: int = 2) -> dict:
    rng = np.random.default_rng(0)
    return {k: jnp.asarray(v, jnp.float32) for k, v in {
        "observations": rng.normal(size=(n, obs_dim)), "actions": rng.uniform(-1, 1, (n, act_dim)), "rewards": np.ones(n),
        "next_observations": rng.normal(size=(n, obs_dim)), "terminals": np.zeros(n)}.items()}


def test_o2sac_update_raises_lambda_when_far_from_the_reference_and_once_per_dual_period():
    from o2o.agents import o2sac

    cfg = o2sac.O2SACConfig(hidden_dims=(8,), lambda_lr=0.05, dual_every=2)
    state = o2sac.init(jax.random.PRNGKey(0), 3, 2, cfg)
    reference = o2sac.init(jax.random.PRNGKey(5), 3, 2, cfg).actor.params
    reference = jax.tree_util.tree_map(lambda x: x * 30.0, reference)  # a very different pi_ref: large KL
    batch = _random_batch()
    lams = []
    for i in range(4):
        state, m = o2sac.update(state, batch, jax.random.PRNGKey(i), reference, 0.01)
        lams.append(float(m["lambda"]))
        assert float(m["kl_reference"]) > 0.01
    assert lams[0] > 1.0 and lams[1] == lams[0] and lams[2] > lams[1]  # steps 0 and 2 take dual steps


def test_threshold_schedule_and_interval_rule():
    from o2o.agents.cft import threshold_schedule
    from o2o.loops.ocr import ReferencePolicy

    np.testing.assert_allclose(threshold_schedule([0, 50_000, 100_000, 200_000], 0.125, 2.0, 100_000), [0.125, 1.0625, 2.0, 2.0])
    fake = SimpleNamespace(cfg=SimpleNamespace(ocr=SimpleNamespace(reference="interval", threshold_start=0.125, threshold_end=2.0, threshold_steps=100)))
    np.testing.assert_allclose(ReferencePolicy.threshold(fake, np.array([0, 500])), [0.5, 0.5])  # tau_end / 4


class _Scripted:
    """A trainer stand-in whose evaluations return scripted scores."""

    def __init__(self, rule, scores):
        from o2o.agents import sac

        self.cfg = SimpleNamespace(ocr=SimpleNamespace(reference=rule, reference_every=1000, reference_episodes=10),
                                   online=SimpleNamespace(eval_episodes=10))
        self.state = sac.init(jax.random.PRNGKey(0), 3, 2, sac.SACConfig(hidden_dims=(4,)))
        self.counters = {"env_steps": 0}
        self.scores = list(scores)
        self.evaluations = 0

    def evaluate(self, n):
        self.evaluations += 1
        return {"eval/return": self.scores.pop(0)}

    def move(self, steps, value):  # the online actor changes
        self.counters["env_steps"] = steps
        self.state = self.state.replace(actor=self.state.actor.replace(params=jax.tree_util.tree_map(lambda x: x * 0 + value, self.state.actor.params)))


def _ref_value(t):
    return float(jax.tree_util.tree_leaves(t.reference)[0].ravel()[0])


def test_reference_policy_best_so_far_rule():
    from o2o.loops.ocr import ReferencePolicy

    class T(_Scripted, ReferencePolicy):
        pass

    t = T("best", [10.0, 12.0, 11.0])
    t.init_reference(jax.tree_util.tree_map(lambda x: x * 0 + 1.0, t.state.actor.params), constraint=True)
    t.move(500, 2.0)
    assert t.reference_step({}) == {} and _ref_value(t) == 1.0  # before the first 1k env steps: nothing
    t.move(1000, 3.0)
    m = t.reference_step({})  # scores the starting reference (10), then the current policy (12): replaced
    assert m["reference/updated"] == 1.0 and m["reference/best_return"] == 12.0 and _ref_value(t) == 3.0
    t.move(2000, 4.0)
    m = t.reference_step({})  # 11 < 12: kept
    assert m["reference/updated"] == 0.0 and _ref_value(t) == 3.0
    t.move(3000, 5.0)
    m = t.reference_step({"eval/return": 15.0})  # this iteration's evaluation is reused, not repeated
    assert m["reference/updated"] == 1.0 and _ref_value(t) == 5.0 and t.evaluations == 3


def test_reference_policy_interval_rule_replaces_without_evaluating():
    from o2o.loops.ocr import ReferencePolicy

    class T(_Scripted, ReferencePolicy):
        pass

    t = T("interval", [])
    t.init_reference(None, constraint=True)
    t.move(1000, 7.0)
    assert t.reference_step({})["reference/updated"] == 1.0 and _ref_value(t) == 7.0 and t.evaluations == 0


def test_half_replay_batches_are_half_offline():
    from o2o.data.replay import replay_add, replay_from_dataset, replay_init
    from o2o.loops.ocr import _mixed_sample

    rng = np.random.default_rng(0)
    rows = lambda n, r: {"observations": rng.normal(size=(n, 3)), "actions": rng.uniform(-1, 1, (n, 2)), "rewards": np.full(n, r),
                         "next_observations": rng.normal(size=(n, 3)), "terminals": np.zeros(n)}
    offline = replay_from_dataset(rows(500, 1.0))
    online = replay_add(replay_init(3, 2, 1000), rows(40, 0.0))
    batch = jax.jit(lambda k: _mixed_sample((offline, online), k, 256, 0.5))(jax.random.PRNGKey(0))
    assert batch["rewards"].shape == (256,) and float(batch["rewards"].sum()) == 128.0
    assert float(batch["rewards"][:128].min()) == 1.0 and float(batch["rewards"][128:].max()) == 0.0


# ------------------------------------------------------------------------------------- PPO


def test_monte_carlo_returns_cut_at_timeouts_and_terminals():
    from o2o.bridge.reeval import monte_carlo_returns

    r, d = [1.0, 1.0, 1.0, 1.0, 1.0], [0, 0, 0, 1, 0]
    timeouts = [0, 1, 0, 0, 0]
    np.testing.assert_allclose(monte_carlo_returns(r, d, timeouts, 0.5), [1.5, 1.0, 1.5, 1.0, 1.0])
    # the released code's bug: the return runs on across the timeout
    np.testing.assert_allclose(monte_carlo_returns(r, d, timeouts, 0.5, ignore_timeouts=True), [1.875, 1.75, 1.5, 1.0, 1.0])


def test_o2ppo_auxiliary_advantage_by_hand():
    from o2o.bridge.align import o2ppo_advantages

    adv, lp, ent = jnp.array([1.0, -1.0]), jnp.array([-1.0, -3.0]), jnp.array([2.0, 2.0])
    # poster: A + beta alpha (log pi_ref + H) = [1 + 0.5 * 2 * 1, -1 + 0.5 * 2 * -1]
    np.testing.assert_allclose(o2ppo_advantages(adv, lp, ent, rule="poster", alpha=2.0, beta=0.5, mix_weight=0.0, act_dim=3), [2.0, -2.0])
    # code: with w_t = 0 the advantages are PPO's own; with w_t = 1 the mean of A and the scaled A_ref
    np.testing.assert_allclose(o2ppo_advantages(adv, lp, ent, rule="code", alpha=2.0, beta=0.5, mix_weight=0.0, act_dim=3), adv)
    mixed = np.asarray(o2ppo_advantages(adv, lp, ent, rule="code", alpha=2.0, beta=0.5, mix_weight=1.0, act_dim=3))
    # the released rule: x = log pi_ref + H = [1, -1]; A_ref = alpha (softplus(x + 12) - 12) / 3 * std(A), std(A) = 1
    aux = 2.0 * (np.log1p(np.exp(np.array([1.0, -1.0]) + 12.0)) - 12.0) / 3.0 * 1.0
    np.testing.assert_allclose(mixed, (np.array([1.0, -1.0]) + aux) / 2, rtol=1e-5)
    # not rescaled by its own spread: a policy five times as far from pi_ref gets five times the pull
    far = np.asarray(o2ppo_advantages(adv, 5 * lp, 5 * ent, rule="code", alpha=2.0, beta=0.5, mix_weight=1.0, act_dim=3))
    np.testing.assert_allclose(2 * far - adv, 5 * (2 * mixed - adv), rtol=1e-3)
    # far below the floor of -4 per dimension the term saturates at -4 alpha std(A)
    low = np.asarray(o2ppo_advantages(adv, jnp.array([-500.0, -500.0]), ent, rule="code", alpha=2.0, beta=0.5, mix_weight=1.0, act_dim=3))
    np.testing.assert_allclose(2 * low - adv, [-8.0, -8.0], rtol=1e-5)


# ------------------------------------------------------------------------------------- bad input


def test_unknown_method_and_replay_mode_are_refused_before_training(tmp_path, capsys):
    from o2o.cli import main

    out = tmp_path / "x"
    assert main(["--no-progress", "finetune", "--method", "o2sax", "--task", "Hopper", "--out", str(out)]) == 2
    assert "unknown method 'o2sax'" in capsys.readouterr().err
    assert main(["--no-progress", "finetune", "--method", "o2sac-scratch", "--task", "Hopper", "--out", str(out), "--set", "ocr.replay=quarter"]) == 2
    err = capsys.readouterr().err
    assert "unknown replay mode ocr.replay='quarter'" in err and "half, all, part, none" in err
    assert main(["--no-progress", "finetune", "--method", "o2sac", "--task", "Hopper", "--out", str(out)]) == 2
    assert "--pretrained" in capsys.readouterr().err
    assert not out.exists()


def test_pretrained_actor_that_does_not_fit_the_task_is_refused():
    from o2o.agents import sac
    from o2o.bridge.ocr import check_pretrained_fits
    from o2o.envs import get_task

    hopper = get_task("Hopper")
    state = sac.init(jax.random.PRNGKey(0), 11, 3, sac.SACConfig(hidden_dims=(4,)))
    ok = SimpleNamespace(path="run", state=state, obs_mean=np.zeros(11), obs_std=np.ones(11))
    check_pretrained_fits(ok, hopper)
    with pytest.raises(ConfigError, match="outputs 3 action dimensions, task HalfCheetah has 6"):
        check_pretrained_fits(ok, get_task("HalfCheetah"))
    with pytest.raises(ConfigError, match="observation normalisation"):
        check_pretrained_fits(SimpleNamespace(path="run", state=state, obs_mean=np.zeros(17), obs_std=np.ones(17)), hopper)
    with pytest.raises(ConfigError, match="observation normalisation"):
        check_pretrained_fits(SimpleNamespace(path="run", state=state, obs_mean=np.zeros(11), obs_std=np.zeros(11)), hopper)


def test_bridge_stages_as_each_method_has_them():
    """One rule for which stages a method's bridge runs (the bridge and a sweep's progress line use it)."""
    from o2o.bridge.ocr import bridge_stages
    from o2o.methods import get_method

    def stages(method, algo, reeval=500, align=200):
        return bridge_stages(get_method(method), algo, reeval, align)

    assert stages("o2sac", "o2sac") == {"reeval": 500, "align": 200}
    assert stages("o2td3", "o2td3") == {"reeval": 500, "align": 200}
    assert stages("o2sac-no-reeval", "o2sac") == {"align": 200}
    assert stages("o2sac-no-align", "o2sac") == {"reeval": 500}
    assert stages("o2ppo", "ppo") == {"reeval": 500}  # O2PPO aligns inside its online updates
    assert stages("o2sac", "ppo") == {"reeval": 500}  # a transfer to PPO: no alignment stage either
    assert stages("o2sac-naive", "sac") == {} and stages("o2sac-scratch", "sac") == {}
    assert stages("o2sac", "o2sac", reeval=0) == {"align": 200}  # a 0-step stage is skipped


# ------------------------------------------------------------------------------------- O2PPO statistics


def test_o2ppo_keeps_the_offline_observation_statistics_frozen():
    """PPO fine-tuned from an offline start keeps the offline data's observation statistics (as released);
    PPO from scratch keeps updating its running statistics."""
    from o2o.agents import ppo
    from o2o.loops.finetune import resolve_finetune_config

    for method in ("o2ppo", "o2ppo-no-reeval", "o2ppo-no-cft", "o2ppo-naive"):
        assert resolve_finetune_config(method, task="Hopper", require_pretrained=False).agent.freeze_observation_stats, method
    scratch = resolve_finetune_config("o2ppo-scratch", task="Hopper", require_pretrained=False)
    assert not scratch.agent.freeze_observation_stats

    rollout = jnp.asarray(np.random.default_rng(0).normal(3.0, 2.0, size=(2048, 11)), jnp.float32)
    offline = ppo.running_stats_from(np.full(11, 0.5, np.float32), np.full(11, 1.5, np.float32))
    for frozen in (True, False):
        state = ppo.init(jax.random.PRNGKey(0), 11, 3, ppo.PPOConfig(hidden_dims=(8,), freeze_observation_stats=frozen))
        state = state.replace(obs_stats=offline)
        for _ in range(5):
            state = ppo.observe(state, rollout)
        if frozen:
            np.testing.assert_array_equal(np.asarray(state.obs_stats.mean), np.asarray(offline.mean))
            np.testing.assert_array_equal(np.asarray(state.obs_stats.var), np.asarray(offline.var))
        else:
            # drifted toward the rollouts' 3.0 by their weight against the offline count of 1e6: ~2.5 * 10240 / 1010240
            assert float(jnp.abs(state.obs_stats.mean - offline.mean).min()) > 0.02


def test_lambda_learning_rate_follows_the_length_of_the_loosening():
    """Over a loosening of T env steps the dual's learning rate is the paper's times 100k / T (resolved
    once, recorded in the config); at the paper's 100k it is the agent's own; an explicit scale wins."""
    from o2o.loops.finetune import resolve_finetune_config

    def resolved(method, *sets):
        return resolve_finetune_config(method, task="Hopper", require_pretrained=False, overrides=list(sets))

    for method in ("o2sac", "o2td3"):
        paper = resolved(method)
        assert paper.ocr.lambda_lr_scale == 1.0 and paper.agent.lambda_lr == pytest.approx(5e-5)
        short = resolved(method, "ocr.threshold_steps=20000")
        assert short.ocr.lambda_lr_scale == pytest.approx(5.0) and short.agent.lambda_lr == pytest.approx(2.5e-4)
        pinned = resolved(method, "ocr.threshold_steps=20000", "ocr.lambda_lr_scale=1.0")
        assert pinned.agent.lambda_lr == pytest.approx(5e-5)
        again = resolved(method, "ocr.threshold_steps=20000")
        assert again == short  # resolving twice (a resume) gives the same config
    with pytest.raises(ConfigError, match="lambda_lr_scale"):
        resolved("o2td3", "ocr.lambda_lr_scale=-1")


def test_o2td3_dual_steps_on_actor_steps_only():
    """O2TD3's lambda moves on the delayed actor steps (0, 2, ... at policy_delay 2), not on critic-only steps."""
    from o2o.agents import o2td3

    cfg = o2td3.O2TD3Config(hidden_dims=(8,), lambda_lr=0.05, policy_delay=2)
    state = o2td3.init(jax.random.PRNGKey(0), 3, 2, cfg)
    reference = jax.tree_util.tree_map(lambda x: -30.0 * x, o2td3.init(jax.random.PRNGKey(5), 3, 2, cfg).actor.params)
    batch = _random_batch()
    lams = []
    for i in range(4):
        state, m = o2td3.update(state, batch, jax.random.PRNGKey(i), reference, 1e-4)
        lams.append(float(m["lambda"]))
    assert lams[0] > 1.0 and lams[1] == lams[0] and lams[2] > lams[1] and lams[3] == lams[2]


# ------------------------------------------------------------------------------------- policy classes


def test_an_actor_is_copied_within_its_policy_class_and_cloned_across_classes():
    """IQL's Gaussian loads into PPO as it is; into SAC (tanh-Gaussian) and TD3 (deterministic) it is
    cloned, and TD3+BC's deterministic actor into PPO: each student's mode ends near its teacher's."""
    from o2o.agents import iql, ppo, sac, td3, td3bc
    from o2o.bridge.ocr import actor_kind, clone_actor, same_class
    from o2o.nn import policy_mode

    assert [actor_kind(a) for a in ("iql", "cql", "bc-safe", "td3bc")] == ["gaussian", "tanh-gaussian", "tanh-gaussian", "deterministic"]
    assert same_class("iql", "ppo") and same_class("cql", "o2sac") and same_class("td3bc", "o2td3")
    assert not same_class("iql", "o2sac") and not same_class("cql", "ppo") and not same_class("td3bc", "ppo")
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(512, 3)), jnp.float32)
    teachers = {
        "iql": iql.init(jax.random.PRNGKey(1), 3, 2, iql.IQLConfig(hidden_dims=(32,))).actor,
        "td3bc": td3bc.init(jax.random.PRNGKey(2), 3, 2, td3bc.TD3BCConfig(hidden_dims=(32,))).actor,
    }
    # a teacher that acts: scale the output layer up so the modes spread over [-1, 1]
    for name, teacher in teachers.items():
        params = jax.tree_util.tree_map(lambda x: x * 300.0 if x.ndim == 2 and x.shape[-1] == 2 else x, teacher.params)
        teachers[name] = teacher.replace(params=params)
    students = {
        "sac": sac.init(jax.random.PRNGKey(3), 3, 2, sac.SACConfig(hidden_dims=(32,))).actor,
        "td3": td3.init(jax.random.PRNGKey(4), 3, 2, td3.TD3Config(hidden_dims=(32,))).actor,
        "ppo": ppo.init(jax.random.PRNGKey(5), 3, 2, ppo.PPOConfig(hidden_dims=(32,))).actor,
    }
    modules = {"sac": sac, "td3": td3, "ppo": ppo, "iql": iql, "td3bc": td3bc}
    for teacher_name, student_name in (("iql", "sac"), ("iql", "td3"), ("td3bc", "ppo")):
        teacher, student = teachers[teacher_name], students[student_name]
        target = np.asarray(policy_mode(modules[teacher_name].POLICY, teacher.apply_fn(teacher.params, obs)))
        assert np.abs(target).mean() > 0.3
        params, _ = clone_actor(student, teacher.apply_fn, teacher.params, np.asarray(obs), teacher=modules[teacher_name].POLICY,
                                to=modules[student_name].POLICY, steps=1500, batch_size=128, learning_rate=3e-3, noise=0.1,
                                key=jax.random.PRNGKey(6))
        before = np.abs(np.asarray(policy_mode(modules[student_name].POLICY, student.apply_fn(student.params, obs))) - target).mean()
        after = np.abs(np.asarray(policy_mode(modules[student_name].POLICY, student.apply_fn(params, obs))) - target).mean()
        assert after < 0.1 < before, (teacher_name, student_name, before, after)
