"""Marvel's family of fine-tuning methods (``o2o.methods``: marvel, marvel-paper and their ablations):
a SAC-Lag agent built from a safe offline start, Value Pre-Alignment as the bridge
(``o2o.bridge.vpa``, driven by ``o2o.loops.driver``), then the online SAC-Lag stage with the method's
multiplier controller (``o2o.loops.online``). ``o2o.loops.finetune`` composes a family's pieces:

    SECTION, CONFIG            the family's config section ("vpa": VPAConfig)
    algo_preset(spec)          a preset layer of the family per online algorithm (none here)
    finish_config(...)         the family's part of config resolution (shapes from the start)
    check_config(cfg)          the section's value checks
    needs_cost_critic(...)     whether the start must have a cost critic
    build_agent(...)           the online agent the method starts from
    start(...)                 the bridge (run or read back) and the online trainer
    SUMMARY_KEY                where summary.json keeps the bridge's summary
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from o2o.bridge.vpa import check_vpa_config
from o2o.errors import ConfigError
from o2o.runconfig import family_section

SECTION, CONFIG, SECTION_HELP = family_section("safe")
SUMMARY_KEY = "vpa"


def algo_preset(spec):
    return None


def finish_config(cfg, spec, pre, pretrained):
    """The start's network shapes; a start without critics needs ``vpa.init=fresh`` where the method
    would copy or align them."""
    from o2o.bridge.pretrained import adopt_shapes

    if pre is not None and (spec.vpa or spec.init_critics) and cfg.vpa.init == "pretrained" and not hasattr(pre.state, "cost_critic"):
        what = "no critics to align; VPA can fit fresh ones" if spec.vpa else "no critics to start from; start fresh ones"
        raise ConfigError(f"pre-trained run '{pretrained}' ({pre.algo}) has {what}: --set vpa.init=fresh")
    if pre is not None and (spec.init_actor or spec.init_critics):
        cfg = dataclasses.replace(cfg, agent=adopt_shapes(cfg.agent, pre))
    check_vpa_config(cfg.vpa)
    return cfg


def check_config(cfg) -> None:
    check_vpa_config(cfg.vpa)


def needs_cost_critic(spec, cfg) -> bool:
    return (spec.init_critics or spec.vpa) and cfg.vpa.init != "fresh"


def build_agent(cfg, spec, pre, key):
    """SAC-Lag: fresh, or the start's actor and (unless ``vpa.init=fresh``) critics."""
    from o2o.agents import get_online_agent
    from o2o.bridge.pretrained import to_sac_lag
    from o2o.envs import get_task

    if pre is None or not (spec.init_actor or spec.init_critics):
        task = get_task(cfg.task)
        return get_online_agent(spec.algo).module.init(key, task.obs_dim, task.act_dim, cfg.agent)
    if spec.algo != "sac-lag":
        raise ConfigError(f"method '{spec.name}': no converter from {pre.algo} to {spec.algo}")
    copy_critics = spec.init_critics and cfg.vpa.init != "fresh"
    return to_sac_lag(pre, cfg.agent, key, actor=spec.init_actor, critics=copy_critics)


def offline_dataset(pre, task):
    from o2o.data import load_hdf5
    from o2o.data.registry import resolve_dataset

    return load_hdf5(resolve_dataset(pre.config.dataset), task=task, require_costs=True,
                     allow_other_task=getattr(pre.config, "allow_other_task", False))


def state_dict(state):
    from flax.serialization import to_state_dict

    return to_state_dict(state)


def run_bridge(cfg, spec, pre, state, bridge_dir: Path, progress: bool = True, resume: bool = False):
    """VPA, through the driver; writes bridge/metrics.csv and bridge/checkpoints/. Returns the aligned
    state and a summary. Saves its place in bridge/partial/ on a timer and on a stop signal
    (``o2o.loops.driver.BridgeCheckpoints``); with ``resume`` it continues from there, with the numbers
    of an uninterrupted VPA."""
    from o2o.bridge.vpa import offline_buffer, vpa_stage
    from o2o.envs import get_task
    from o2o.loops.driver import BridgeCheckpoints, drive
    from o2o.runs import MetricsWriter
    from o2o.runs.checkpoint import save_checkpoint
    from o2o.runs.partial import discard_partial

    task = get_task(cfg.task)
    dataset = offline_dataset(pre, task)
    buffer = offline_buffer(dataset, pre.obs_mean, pre.obs_std, timeouts_terminal=cfg.vpa.timeouts_terminal)
    bridge_dir.mkdir(parents=True, exist_ok=True)
    ckpts = BridgeCheckpoints(bridge_dir, resume=resume)
    writer = MetricsWriter(bridge_dir, wandb=False)  # bridge/tb: TensorBoard against VPA gradient steps
    writer.truncate_after(ckpts.step)  # rows after the place it continues from (all, afresh)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0xB41D6E)

    def from_partial(template, key):
        return (*ckpts.restore(template, key), ckpts.step, ckpts.point["last"]) if ckpts.point else None

    stage = vpa_stage(state, buffer, cfg.vpa, key, resume=from_partial)
    drive(stage, [writer], ckpts, end=cfg.vpa.steps, description=f"VPA {cfg.task} seed {cfg.seed}", progress=progress)
    writer.close()
    state, last = stage.state, stage.last
    summary = {"stage": "vpa", "steps": cfg.vpa.steps, "dataset": pre.config.dataset, "transitions": int(dataset.num_transitions),
               "wall_time_s": ckpts.elapsed(), **last}
    save_checkpoint(bridge_dir / "checkpoints", cfg.vpa.steps, arrays={"agent": state_dict(state)}, host_state=summary)
    discard_partial(bridge_dir)
    return state, summary


def load_bridge(bridge_dir: Path, template_state):
    """The aligned agent saved by ``run_bridge`` (None when the bridge did not finish)."""
    from flax.serialization import from_state_dict

    from o2o.runs.checkpoint import latest_checkpoint, load_checkpoint

    if latest_checkpoint(bridge_dir / "checkpoints") is None:
        return None
    arrays, host = load_checkpoint(bridge_dir / "checkpoints", template={"agent": state_dict(template_state)})
    return from_state_dict(template_state, arrays["agent"]), host


def start(cfg, spec, pre, state, obs_stats, out: Path, *, resume: bool, has_online: bool, progress: bool):
    """VPA (run, or read back from out/bridge/ on resume) for the methods that have it, then the online
    trainer. Returns (trainer, bridge summary or None: the online checkpoint holds the agent)."""
    from o2o.bridge.pretrained import reset_optimisers
    from o2o.loops.online import OnlineTrainer

    summary = None
    if not has_online and spec.vpa:
        loaded = load_bridge(out / "bridge", state) if resume else None
        if loaded is not None:
            state, summary = loaded
        else:
            state, summary = run_bridge(cfg, spec, pre, state, out / "bridge", progress, resume=resume)
        state = reset_optimisers(state)
    return OnlineTrainer(cfg, progress=progress, agent_state=state, obs_stats=obs_stats), summary
