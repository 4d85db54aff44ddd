"""OCR-CFT end to end after pre-training (Luo et al. 2024): the bridge (re-evaluation -> alignment ->
reference policy) and the constrained online stage, for O2SAC, O2TD3 and O2PPO and their ablations.

    bridge/   (``run_ocr_bridge``; metrics in bridge/metrics.csv, result in bridge/checkpoints/; while it
               runs, partial checkpoints in bridge/partial/ from which a stopped bridge continues)
        re-evaluate: fresh critics (V for PPO) fitted on the offline data, pi_off frozen  (bridge/reeval.py)
        align:       critics aligned to pi_off's anchor, targets frozen, pi_on trained    (bridge/align.py)
        reference:   pi_ref = the better of pi_off and pi_on (evaluation episodes)
    online    (``OCRTrainer`` / ``OCRPPOTrainer`` under ``run_online``)
        replay:      half (each batch 50% offline, 50% online) | all | part | none
        constraint:  KL (O2SAC) / MSE (O2TD3) with lambda = exp(l) and the expectile dual, tau_t loosening
                     linearly; O2PPO's auxiliary advantage from pi_ref
        reference:   every ``ocr.reference_every`` env steps: best so far (evaluation episodes, not counted
                     in env_steps) or replaced unconditionally (interval rule, tau fixed at tau_end / 4)

Everything the online stage depends on (reference policy, best score, next reference step) is in its
checkpoint; the offline replay buffer of the half mode is rebuilt from the dataset on resume.
"""

from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from o2o.bridge.ocr import bridge_stages, online_kind
from o2o.errors import ConfigError
from o2o.runconfig import family_section
from o2o.loops.online import OnlineTrainer
from o2o.loops.onpolicy import OnPolicyTrainer


def _copy(tree):
    return jax.tree_util.tree_map(jnp.array, tree)


def load_offline_dataset(pre, task):
    from o2o.data import load_hdf5
    from o2o.data.registry import resolve_dataset

    return load_hdf5(resolve_dataset(pre.config.dataset), task=task, allow_other_task=getattr(pre.config, "allow_other_task", False))


def normalised_rows(dataset, obs_mean, obs_std) -> dict:
    rows = {k: np.asarray(getattr(dataset, k)) for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    rows["costs"] = np.asarray(dataset.costs) if getattr(dataset, "costs", None) is not None else np.zeros(len(rows["rewards"]), np.float32)
    rows["observations"] = ((rows["observations"] - obs_mean) / obs_std).astype(np.float32)
    rows["next_observations"] = ((rows["next_observations"] - obs_mean) / obs_std).astype(np.float32)
    return rows


def top_trajectories(dataset, n: int):
    """The ``n`` episodes of highest return (the 'part' replay mode)."""
    returns = dataset.episode_returns()
    keep = np.argsort(-returns)[: min(n, len(returns))]
    return dataset.select_episodes(np.sort(keep))


# ===================================================================================== bridge


def evaluate_actor(trainer, params, episodes: int) -> float:
    """Deterministic evaluation return of ``params`` in the trainer's actor (not counted in env_steps)."""
    saved = trainer.state
    trainer.state = saved.replace(actor=saved.actor.replace(params=params))
    try:
        return float(trainer.evaluate(episodes)["eval/return"])
    finally:
        trainer.state = saved


def run_ocr_bridge(cfg, spec, pre, state, bridge_dir: Path, *, evaluator, progress: bool = True, resume: bool = False):
    """Re-evaluation and alignment (as the method has them), then the reference policy. ``evaluator(params,
    episodes) -> return`` evaluates an actor. Returns (state, reference params, summary).

    The bridge saves its place in ``bridge_dir/partial/`` on a timer and on a stop signal
    (``o2o.loops.driver.BridgeCheckpoints``): the agent state and RNG key after a jitted call, the stage and step, the
    finished stages' last metrics. With ``resume`` it continues from there: finished stages are skipped
    (their setup still runs, for the state's structure; their values come from the checkpoint), the
    stage it stopped in continues from the next call, with the numbers an uninterrupted bridge has."""
    from o2o.agents.common import adam
    from o2o.bridge.pretrained import fresh_train_state, reset_optimisers
    from o2o.data.replay import replay_from_dataset
    from o2o.envs import get_task
    from o2o.loops.driver import BridgeCheckpoints, CallStage, drive
    from o2o.runs import MetricsWriter

    o = cfg.ocr
    kind = online_kind(cfg.algo)
    task = get_task(cfg.task)
    dataset = load_offline_dataset(pre, task)
    bridge_dir.mkdir(parents=True, exist_ok=True)
    ckpts = BridgeCheckpoints(bridge_dir, resume=resume)
    point = ckpts.point
    writer = MetricsWriter(bridge_dir, wandb=False)  # bridge/tb: TensorBoard against bridge gradient steps
    writer.truncate_after(ckpts.step)  # rows after the place it continues from (all, afresh)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0x0C2C)
    offline_actor = _copy(state.actor.params)
    summary: dict = {"dataset": pre.config.dataset, "transitions": int(dataset.num_transitions), "offline_algo": pre.algo}
    done: dict = dict(point["done"]) if point else {}  # stage -> its last metrics, for the stages finished
    step = 0

    def run_stage(name, many, state, data, signals, steps):
        nonlocal step, key
        if name in done:  # finished before the bridge stopped: the checkpoint holds its result
            step += steps
            return state, done[name]
        begin, end, last = step, step + steps, {}
        if point is not None and point["stage"] == name:
            state, key = ckpts.restore(state, key)
            step, last = point["step"], point["last"]
        stage = CallStage(many, state, data, key, signals, start=step, steps_per_call=o.steps_per_call,
                          where=lambda p: f"bridge step {p} ({name})",
                          status=lambda m: " ".join(f"{k.split('_', 1)[1]} {v:.2f}" for k, v in list(m.items())[:2]),
                          row=lambda m: {**m, f"stage/{name}": 1.0}, last=last,
                          host=lambda st: {"stage": name, "last": st.last, "done": done})
        drive(stage, [writer], ckpts, end=end, description=f"{name} {cfg.method} {cfg.task} seed {cfg.seed}", progress=progress,
              bar_offset=begin)
        state, key, step = stage.state, stage.key, stage.position
        done[name] = stage.last
        return state, stage.last

    stages = bridge_stages(spec, cfg.algo, o.reeval_steps, o.align_steps)
    if "reeval" in stages:
        from o2o.bridge.reeval import reeval_many

        if kind == "ppo":
            state, data = _ppo_reeval_data(state, dataset, o)
            value_tx = state.value.tx
            state = state.replace(value=fresh_train_state(state.value, state.value.params, adam(o.reeval_lr)))
            state, last = run_stage("reeval", reeval_many("ppo", o.reeval_batch_size), state, data, {}, o.reeval_steps)
            state = state.replace(value=fresh_train_state(state.value, state.value.params, value_tx))
        else:
            buffer = replay_from_dataset(normalised_rows(dataset, pre.obs_mean, pre.obs_std))
            critic_tx = state.critic.tx
            state = state.replace(critic=fresh_train_state(state.critic, state.critic.params, adam(o.reeval_lr)),
                                  target_critic_params=_copy(state.critic.params))
            signals = {"alpha": jnp.asarray(o.reeval_alpha, jnp.float32)} if kind == "sac" else {}
            state, last = run_stage("reeval", reeval_many(kind, o.reeval_batch_size), state, buffer, signals, o.reeval_steps)
            state = state.replace(critic=fresh_train_state(state.critic, state.critic.params, critic_tx))
        summary["reeval"] = {"steps": o.reeval_steps, **last}
    if kind == "sac" and (spec.reeval or spec.align):
        # the online temperature starts at the evaluation alpha (auto-tuned from there)
        state = state.replace(temperature=fresh_train_state(state.temperature, {"log_alpha": jnp.asarray(np.log(o.reeval_alpha), jnp.float32)}))

    aligned = "align" in stages
    if aligned:
        from o2o.bridge.align import align_many

        buffer = replay_from_dataset(normalised_rows(dataset, pre.obs_mean, pre.obs_std))
        state = state.replace(target_critic_params=_copy(state.critic.params))  # Qbar: frozen during alignment
        signals = {"offline_actor_params": offline_actor}
        if kind == "sac":
            signals["alpha"] = jnp.asarray(o.reeval_alpha, jnp.float32)
            many = align_many("sac", o.align_batch_size)
        else:
            many = align_many("td3", o.align_batch_size, o.td3_align_rule, float(o.td3_align_k), float(o.td3_align_sigma))
        state, last = run_stage("align", many, state, buffer, signals, o.align_steps)
        summary["align"] = {"steps": o.align_steps, **last}
    writer.close()

    # after alignment: targets = the aligned critic; pi_ref = the better of pi_off and pi_on
    if kind in ("sac", "td3"):
        state = state.replace(target_critic_params=_copy(state.critic.params))
    reference = offline_actor
    if aligned:
        offline_score = evaluator(offline_actor, o.reference_episodes)
        online_score = evaluator(state.actor.params, o.reference_episodes)
        better = state.actor.params if online_score > offline_score else offline_actor
        reference = _copy(better)
        summary["reference"] = {"offline_return": offline_score, "aligned_return": online_score,
                                "chosen": "aligned" if online_score > offline_score else "offline"}
        if o.actor_after_align == "best":
            state = state.replace(actor=state.actor.replace(params=_copy(better)))
    if kind == "td3":
        state = state.replace(target_actor_params=_copy(state.actor.params))
    state = reset_optimisers(state)
    summary["wall_time_s"] = ckpts.elapsed()
    return state, _copy(reference), summary


def _ppo_reeval_data(state, dataset, o):
    """PPO's Monte-Carlo targets in PPO's units; sets the state's return statistics from the dataset."""
    from o2o.agents.ppo import STATS_EPS, normalize_observations, running_stats_init, running_stats_update
    from o2o.bridge.reeval import discounted_return_trace, episode_ends, monte_carlo_returns

    cfg = state.config
    ends = episode_ends(dataset.terminals, dataset.timeouts, ignore_timeouts=o.reeval_ignore_timeouts)
    rewards = np.asarray(dataset.rewards, np.float32)
    if cfg.scale_rewards:
        trace = discounted_return_trace(rewards, ends, cfg.gamma)
        stats = running_stats_update(running_stats_init(), jnp.asarray(trace))
        state = state.replace(return_stats=stats)
        rewards = np.clip(rewards / np.sqrt(float(stats.var) + STATS_EPS), -cfg.reward_clip, cfg.reward_clip)
    returns = monte_carlo_returns(rewards, dataset.terminals, dataset.timeouts, cfg.gamma, ignore_timeouts=o.reeval_ignore_timeouts)
    obs = normalize_observations(state.obs_stats, jnp.asarray(dataset.observations, jnp.float32), cfg)
    return state, {"observations": obs, "returns": jnp.asarray(returns)}


# ===================================================================================== online stage


class ReferencePolicy:
    """The reference policy rule, shared by both trainers (mixed into them)."""

    def init_reference(self, reference_params, constraint: bool):
        self.constraint = constraint
        self.reference = _copy(reference_params) if reference_params is not None else _copy(self.state.actor.params)
        self.reference_host = {"best_return": None, "next_at": self.cfg.ocr.reference_every}

    def reference_step(self, metrics: dict) -> dict:
        """After an iteration: replace pi_ref by the current policy if the rule says so."""
        o, c, h = self.cfg.ocr, self.counters, self.reference_host
        if not self.constraint or c["env_steps"] < h["next_at"]:
            return {}
        h["next_at"] = (c["env_steps"] // o.reference_every + 1) * o.reference_every
        if o.reference == "interval":
            self.reference = _copy(self.state.actor.params)
            return {"reference/updated": 1.0}
        if h["best_return"] is None:  # the starting reference's score, on the same evaluation episodes
            h["best_return"] = evaluate_actor(self, self.reference, o.reference_episodes)
        if "eval/return" in metrics and self.cfg.online.eval_episodes == o.reference_episodes:
            score = metrics["eval/return"]  # this iteration's evaluation is the same measurement
        else:
            score = float(self.evaluate(o.reference_episodes)["eval/return"])
        updated = score > h["best_return"]
        if updated:
            self.reference = _copy(self.state.actor.params)
            h["best_return"] = score
        return {"reference/return": score, "reference/best_return": h["best_return"], "reference/updated": float(updated)}

    def threshold(self, env_steps):
        o = self.cfg.ocr
        if o.reference == "interval":  # the interval rule keeps tau fixed at tau_end / 4
            return np.full(np.shape(env_steps), o.threshold_end / 4.0)
        from o2o.agents.cft import threshold_schedule

        return threshold_schedule(env_steps, o.threshold_start, o.threshold_end, o.threshold_steps)

    # The reference policy is part of the checkpoint (cooperative with the trainer's own methods).
    def checkpoint_arrays(self):
        return {**super().checkpoint_arrays(), "reference": self.reference}

    def host_state(self):
        return {**super().host_state(), "reference": dict(self.reference_host)}

    def restore(self, arrays, host):
        super().restore(arrays, host)
        self.reference = jax.tree_util.tree_map(jnp.asarray, arrays["reference"])
        self.reference_host = dict(host["reference"])


def _mixed_sample(buffers, key, batch_size, offline_ratio):
    from o2o.data.replay import mixed_sample

    return mixed_sample(buffers[0], buffers[1], key, batch_size, offline_ratio)


@lru_cache(maxsize=None)
def _mixed_update_many(update_fn, batch_size: int, offline_ratio: float):
    from o2o.agents.common import make_update_many

    return make_update_many(update_fn, partial(_mixed_sample, batch_size=batch_size, offline_ratio=offline_ratio))


class OCRTrainer(ReferencePolicy, OnlineTrainer):
    """The off-policy online stage (SAC / TD3 family) with OCR-CFT's replay modes and reference policy."""

    def __init__(self, cfg, *, agent_state, obs_stats, dataset, reference_params, constraint: bool, progress: bool = True):
        from o2o.data.replay import replay_add, replay_from_dataset, replay_init

        super().__init__(cfg, progress=progress, agent_state=agent_state, obs_stats=obs_stats)
        o = cfg.ocr
        mean, std = self.obs_mean, self.obs_std
        self.offline_buffer = None
        if o.replay == "half":
            self.offline_buffer = replay_from_dataset(normalised_rows(dataset, mean, std))
            self.update_many = _mixed_update_many(self.spec.module.update, cfg.agent.batch_size, float(o.offline_ratio))
        elif o.replay in ("all", "part"):
            data = dataset if o.replay == "all" else top_trajectories(dataset, o.part_trajectories)
            budget = cfg.online.iterations * (cfg.online.steps_per_iteration if cfg.online.episodes_per_iteration is None
                                              else cfg.online.episodes_per_iteration * self.task.horizon)
            capacity = max(cfg.online.replay_capacity, int(data.num_transitions) + budget)
            self.buffer = replay_add(replay_init(self.task.obs_dim, self.task.act_dim, capacity), normalised_rows(data, mean, std))
        self.init_reference(reference_params, constraint)

    def update_inputs(self, signals, step_signals, num_steps):
        buffers = (self.offline_buffer, self.buffer) if self.offline_buffer is not None else self.buffer
        if self.constraint:
            steps = self.last_rollout.num_steps
            env_steps = self.counters["env_steps"] - steps + (np.arange(num_steps) + 1) * steps / max(num_steps, 1)
            signals = {**signals, "reference_params": self.reference}
            step_signals = {**(step_signals or {}), "threshold": jnp.asarray(self.threshold(env_steps), jnp.float32)}
        return buffers, signals, step_signals

    def iteration(self):
        metrics = super().iteration()
        metrics.update(self.reference_step(metrics))
        return metrics


class OCRPPOTrainer(ReferencePolicy, OnPolicyTrainer):
    """PPO's online stage with O2PPO's auxiliary advantage from the reference policy."""

    def __init__(self, cfg, *, agent_state, reference_params, constraint: bool, progress: bool = True):
        super().__init__(cfg, progress=progress, agent_state=agent_state, advantage_fn=self._auxiliary if constraint else None)
        self.init_reference(reference_params, constraint)

    def _auxiliary(self, trainer, batch):
        from o2o.bridge.align import o2ppo_batch_advantages

        o = self.cfg.ocr
        w = max(0.0, 1.0 - self.counters["env_steps"] / o.ppo_aux_decay_steps)
        key = jax.random.fold_in(self.key, 0xA0C)
        advantages, log_ref = o2ppo_batch_advantages(
            self.state, self.reference, batch, key, jnp.asarray(w, jnp.float32),
            rule=o.ppo_aux_rule, alpha=float(o.ppo_aux_alpha), beta=float(o.ppo_aux_beta), act_dim=self.task.act_dim,
        )
        self._aux_info = {"aux/mix_weight": w, "aux/log_prob_reference": float(log_ref)}
        return {**batch, "advantages": advantages}

    def iteration(self):
        self._aux_info = {}
        metrics = super().iteration()
        metrics.update(self._aux_info)
        metrics.update(self.reference_step(metrics))
        return metrics


def make_ocr_trainer(cfg, spec, pre, state, reference_params, *, progress: bool = True):
    """The online trainer of an OCR-CFT-family method."""
    from o2o.envs import get_task

    if online_kind(cfg.algo) == "ppo":
        return OCRPPOTrainer(cfg, agent_state=state, reference_params=reference_params, constraint=spec.constraint, progress=progress)
    dataset = load_offline_dataset(pre, get_task(cfg.task)) if (pre is not None and cfg.ocr.replay != "none") else None
    if dataset is None and cfg.ocr.replay != "none":
        raise ConfigError(f"ocr.replay={cfg.ocr.replay} needs the offline dataset of a pre-trained run; use ocr.replay=none")
    obs_stats = pre.obs_stats if (pre is not None and spec.init_actor) else None
    return OCRTrainer(cfg, agent_state=state, obs_stats=obs_stats, dataset=dataset, reference_params=reference_params,
                      constraint=spec.constraint, progress=progress)


# ====================================================================== the family (o2o.loops.finetune)
# OCR-CFT's pieces of a fine-tuning run, composed by o2o.loops.finetune as o2o.loops.marvel's are.

SECTION, CONFIG, SECTION_HELP = family_section("ocr-cft")
SUMMARY_KEY = "bridge"


def algo_preset(spec):
    """One preset per online algorithm (o2sac and its plain-SAC ablations share finetune-ocr-cft-sac)."""
    from o2o.presets import preset_path

    return preset_path(f"finetune-{spec.family}-{spec.algo.removeprefix('o2')}")


def finish_config(cfg, spec, pre, pretrained):
    """The start's network shapes for the parts copied, and the defaults that depend on its dataset."""
    import dataclasses

    from o2o.bridge.ocr import adopt_ocr_shapes, check_ocr_config, resolve_ocr_defaults

    if pre is not None and (spec.init_actor or spec.init_critics):
        cfg = dataclasses.replace(cfg, agent=adopt_ocr_shapes(cfg.agent, pre, spec.algo, actor=spec.init_actor, critics=spec.init_critics))
    cfg = resolve_ocr_defaults(cfg, pre.config.dataset if pre is not None else None)
    check_ocr_config(cfg.ocr)
    return cfg


def check_config(cfg) -> None:
    from o2o.bridge.ocr import check_ocr_config

    check_ocr_config(cfg.ocr)


def needs_cost_critic(spec, cfg) -> bool:
    return False


def build_agent(cfg, spec, pre, key):
    """The O2SAC / O2TD3 / O2PPO agent: the start's actor (copied within its policy class, cloned across
    classes on the offline observations) and critics, as the method has them."""
    from o2o.bridge.ocr import build_ocr_agent, same_class
    from o2o.envs import get_task

    observations = None
    if pre is not None and spec.init_actor and not same_class(pre.algo, spec.algo):
        data = load_offline_dataset(pre, get_task(cfg.task))
        observations = (data.observations - pre.obs_mean) / pre.obs_std
        if online_kind(spec.algo) == "ppo":  # PPO's actor sees its own normalisation of the raw observation
            observations = data.observations
    return build_ocr_agent(cfg, spec, pre, key, observations)


def start(cfg, spec, pre, state, obs_stats, out: Path, *, resume: bool, has_online: bool, progress: bool):
    """The trainer (also the bridge's evaluator), and the bridge run or read back from out/bridge/.
    Returns (trainer, bridge summary or None)."""
    from flax.serialization import to_state_dict

    from o2o.runs.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from o2o.runs.partial import discard_partial

    trainer = make_ocr_trainer(cfg, spec, pre, state, None, progress=progress)
    if has_online:  # the online checkpoint holds the agent and the reference policy
        return trainer, None
    bridge_dir = out / "bridge"
    template = {"agent": to_state_dict(state), "reference": state.actor.params}
    summary = None
    if resume and latest_checkpoint(bridge_dir / "checkpoints") is not None:
        from flax.serialization import from_state_dict

        arrays, summary = load_checkpoint(bridge_dir / "checkpoints", template=template)
        state, reference = from_state_dict(state, arrays["agent"]), arrays["reference"]
    elif not (spec.reeval or spec.align):
        reference = state.actor.params  # nothing to bridge: pi_ref = the starting actor
    else:
        state, reference, summary = run_ocr_bridge(cfg, spec, pre, state, bridge_dir, evaluator=partial(evaluate_actor, trainer),
                                                   progress=progress, resume=resume)
        save_checkpoint(bridge_dir / "checkpoints", 1, arrays={"agent": to_state_dict(state), "reference": reference}, host_state=summary)
        discard_partial(bridge_dir)
    trainer.state = state
    trainer.init_reference(reference, spec.constraint)
    return trainer, summary
