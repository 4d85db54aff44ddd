"""Offline-to-online fine-tuning: pre-trained run -> bridge -> online loop, one run directory.

    o2o finetune --method marvel --pretrained runs/cpq-BallCircle-s0 --seed 0 --out runs/ft

    1. load the pre-trained run (config + latest checkpoint), check it fits the task and the method
    2. build the online agent: copy the parts the method starts from (actor, critics), fresh optimisers
    3. bridge (Marvel: VPA on the pre-trained run's own dataset, policy frozen); its metrics go to
       ``bridge/metrics.csv`` and the aligned agent to ``bridge/checkpoints/`` (read by
       ``o2o diagnose-critic`` and reused by ``--resume``)
    4. the online loop (``loops.online``) from that agent, with the method's multiplier controller

Config resolution (later wins): dataclass defaults < ``<algo>.yaml`` < ``finetune-<family>.yaml``
< the method's fixed keys < ``finetune-<family>-<Task>.yaml`` (the authors' per-task values)
< ``<method>-<Task>.yaml`` < ``--config FILE`` < ``--set``. The network shapes then follow the
pre-trained run. The resolved config is what the run directory records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import field
from functools import lru_cache
from pathlib import Path

import jax

from o2o.bridge.vpa import VPAConfig, check_vpa_config
from o2o.errors import ConfigError, RunDirError
from o2o.methods import MethodSpec, get_method


@lru_cache(maxsize=None)
def finetune_config_class(method: str) -> type:
    """``o2o finetune --method M``'s config: the online algorithm's training config plus the method,
    the pre-trained run and the bridge's settings."""
    from o2o.runconfig import train_config_class
    spec = get_method(method)
    base = train_config_class(spec.algo)
    extra = [
        ("method", str, field(default=method, metadata={"help": "offline-to-online method (o2o.methods)"})),
        ("pretrained", str | None, field(default=None, metadata={"help": "pre-trained run directory (o2o pretrain)"})),
    ]
    if spec.family == "ocr-cft":
        from o2o.bridge.ocr import OCRConfig

        extra.append(("ocr", OCRConfig, field(default_factory=OCRConfig, metadata={"help": "OCR-CFT: re-evaluation, alignment, constraint, replay"})))
    else:
        extra.append(("vpa", VPAConfig, field(default_factory=VPAConfig, metadata={"help": "value pre-alignment (methods with VPA)"})))
    fields = [(f.name, f.type, f) for f in dataclasses.fields(base)] + extra
    # dataclasses.fields() returns Field objects already bound to names; rebuild clean ones
    clean = []
    for name, typ, f in fields:
        kwargs = {"metadata": f.metadata}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = f.default_factory
        clean.append((name, typ, field(**kwargs)))
    return dataclasses.make_dataclass("FinetuneConfig", clean, frozen=True)


def resolve_finetune_config(
    method: str,
    pretrained: str | None = None,
    task: str | None = None,
    seed: int | None = None,
    *,
    layer: dict | None = None,
    config_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    require_pretrained: bool = True,
    absolute_pretrained: bool = True,
):
    """Resolve a fine-tuning config (order in the module docstring); ``layer`` is a caller's budget
    (the pipeline's), applied just below the user's ``--config`` file. The config records the
    pre-trained run as an absolute path, so that the run resumes from any working directory;
    ``absolute_pretrained=False`` keeps the path as given (a sweep's, part of its runs' identity)."""
    from o2o.bridge.pretrained import adopt_shapes, load_pretrained
    from o2o.config import apply_overrides, load_yaml, update_from_dict
    from o2o.envs import get_task
    from o2o.presets import preset_path

    spec = get_method(method)
    cls = finetune_config_class(method)
    cfg = cls()
    user = load_yaml(config_file) if config_file else {}
    pretrained = pretrained or user.get("pretrained")
    pre = None
    if spec.needs_pretrained and (pretrained or require_pretrained):
        if not pretrained:
            raise ConfigError(f"method '{method}' starts from a pre-trained run: pass --pretrained RUN_DIR (o2o pretrain)")
        # a start without critics needs fresh ones (vpa.init: fresh): checked once the config is known
        pre = load_pretrained(pretrained, task=task, need_cost_critic=False)
        task_name = pre.task
    elif pretrained and not (task or user.get("task")):  # the task of the given pre-trained run
        pre = load_pretrained(pretrained)
        task_name = pre.task
    else:
        task_name = get_task(task or user.get("task") or cfg.task).name
        if pretrained:
            pre = load_pretrained(pretrained, task=task_name)
    layers = [
        preset_path(spec.algo),
        preset_path(f"finetune-{spec.family}"),
        # OCR-CFT: one file per online algorithm (o2sac and its plain-SAC ablations share finetune-ocr-cft-sac)
        preset_path(f"finetune-{spec.family}-{spec.algo.removeprefix('o2')}") if spec.family == "ocr-cft" else None,
        ("method:" + method, _nested(spec.overrides)),
        preset_path(f"finetune-{spec.family}-{task_name}"),
        preset_path(f"{method}-{task_name}"),
        ("budget", layer or {}),
        (config_file, user),
    ]
    for layer in layers:
        if layer is None:
            continue
        path, data = (layer, load_yaml(layer)) if isinstance(layer, Path) else layer
        try:
            cfg = update_from_dict(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    if pretrained and absolute_pretrained:
        pretrained = os.path.abspath(pretrained)
    cfg = update_from_dict(cfg, {"method": method, "task": task_name, "pretrained": str(pretrained) if pretrained else None})
    if seed is not None:
        cfg = update_from_dict(cfg, {"seed": seed})
    cfg = apply_overrides(cfg, list(overrides))
    if pre is not None and get_task(cfg.task).name != pre.task:
        raise ConfigError(f"pre-trained run '{pretrained}' is for task {pre.task}, not {cfg.task}")
    if spec.family == "ocr-cft":
        from o2o.bridge.ocr import adopt_ocr_shapes, check_ocr_config, resolve_ocr_defaults

        if pre is not None and (spec.init_actor or spec.init_critics):
            cfg = dataclasses.replace(cfg, agent=adopt_ocr_shapes(cfg.agent, pre, spec.algo, actor=spec.init_actor, critics=spec.init_critics))
        cfg = resolve_ocr_defaults(cfg, pre.config.dataset if pre is not None else None)
        check_ocr_config(cfg.ocr)
        return cfg
    if pre is not None and (spec.vpa or spec.init_critics) and cfg.vpa.init == "pretrained" and not hasattr(pre.state, "cost_critic"):
        what = "no critics to align; VPA can fit fresh ones" if spec.vpa else "no critics to start from; start fresh ones"
        raise ConfigError(f"pre-trained run '{pretrained}' ({pre.algo}) has {what}: --set vpa.init=fresh")
    if pre is not None and (spec.init_actor or spec.init_critics):
        cfg = dataclasses.replace(cfg, agent=adopt_shapes(cfg.agent, pre))
    check_vpa_config(cfg.vpa)
    return cfg


def _needs_cost_critic(spec: MethodSpec) -> bool:
    return spec.family == "safe" and (spec.init_critics or spec.vpa)


def _nested(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def build_agent(cfg, spec: MethodSpec, pre, key):
    """The online agent the method starts from (before any bridge)."""
    from o2o.agents import get_online_agent
    from o2o.bridge.pretrained import to_sac_lag
    from o2o.envs import get_task

    if spec.family == "ocr-cft":
        from o2o.bridge.ocr import build_ocr_agent, online_kind, same_class

        observations = None
        if pre is not None and spec.init_actor and not same_class(pre.algo, spec.algo):
            from o2o.loops.ocr import load_offline_dataset

            data = load_offline_dataset(pre, get_task(cfg.task))
            observations = (data.observations - pre.obs_mean) / pre.obs_std
            if online_kind(spec.algo) == "ppo":  # PPO's actor sees its own normalisation of the raw observation
                observations = data.observations
        return build_ocr_agent(cfg, spec, pre, key, observations)
    if pre is None or not (spec.init_actor or spec.init_critics):
        task = get_task(cfg.task)
        return get_online_agent(spec.algo).module.init(key, task.obs_dim, task.act_dim, cfg.agent)
    if spec.algo != "sac-lag":
        raise ConfigError(f"method '{spec.name}': no converter from {pre.algo} to {spec.algo}")
    copy_critics = spec.init_critics and cfg.vpa.init != "fresh"
    return to_sac_lag(pre, cfg.agent, key, actor=spec.init_actor, critics=copy_critics)


def agent_init_key(seed: int):
    """The key ``build_agent`` draws a fine-tuning run's fresh networks with."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)


def offline_dataset(pre, task):
    from o2o.data import load_hdf5
    from o2o.data.registry import resolve_dataset

    return load_hdf5(resolve_dataset(pre.config.dataset), task=task, require_costs=True,
                     allow_other_task=getattr(pre.config, "allow_other_task", False))


def run_bridge(cfg, spec: MethodSpec, pre, state, bridge_dir: Path, progress: bool = True, resume: bool = False):
    """VPA for methods that have it; writes bridge/metrics.csv and bridge/checkpoints/. Returns the
    aligned state and a summary. Saves its place in bridge/partial/ on a timer and on a stop signal
    (``o2o.runs.partial``); with ``resume`` it continues from there, with the numbers of an
    uninterrupted VPA."""
    from o2o.bridge.vpa import offline_buffer, run_vpa
    from o2o.envs import get_task
    from o2o.progress import training_progress
    from o2o.runs import MetricsWriter
    from o2o.runs.checkpoint import save_checkpoint
    from o2o.runs.partial import BridgeCheckpoints, discard_partial

    task = get_task(cfg.task)
    dataset = offline_dataset(pre, task)
    buffer = offline_buffer(dataset, pre.obs_mean, pre.obs_std, timeouts_terminal=cfg.vpa.timeouts_terminal)
    bridge_dir.mkdir(parents=True, exist_ok=True)
    ckpts = BridgeCheckpoints(bridge_dir, resume=resume)
    writer = MetricsWriter(bridge_dir, wandb=False)  # bridge/tb: TensorBoard against VPA gradient steps
    writer.truncate_after(ckpts.step)  # rows after the place it continues from (all, afresh)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0xB41D6E)
    with training_progress(progress) as bar:
        tid = bar.add_task(f"VPA {cfg.task} seed {cfg.seed}", total=cfg.vpa.steps, completed=ckpts.step, status="")

        def from_partial(template, key):
            return (*ckpts.restore(template, key), ckpts.step, ckpts.point["last"]) if ckpts.point else None

        def on_call(step, metrics, state, key):
            where = f"VPA step {step} of {cfg.vpa.steps}"
            ckpts.check_losses(metrics, writer, where)
            writer.write(step, metrics)
            bar.update(tid, completed=step, status=f"Q {metrics['vpa_q_mean']:.2f} Qc {metrics['vpa_qc_mean']:.2f}")
            ckpts.after_call(step, state, key, writer, where, final=step == cfg.vpa.steps, last=metrics)

        state, last = run_vpa(state, buffer, cfg.vpa, key, on_call=on_call, resume=from_partial)
    writer.close()
    summary = {"stage": "vpa", "steps": cfg.vpa.steps, "dataset": pre.config.dataset, "transitions": int(dataset.num_transitions),
               "wall_time_s": ckpts.elapsed(), **last}
    save_checkpoint(bridge_dir / "checkpoints", cfg.vpa.steps, arrays={"agent": _state_dict(state)}, host_state=summary)
    discard_partial(bridge_dir)
    return state, summary


def _state_dict(state):
    from flax.serialization import to_state_dict

    return to_state_dict(state)


def load_bridge(bridge_dir: Path, template_state):
    """The aligned agent saved by ``run_bridge`` (None when the bridge did not finish)."""
    from flax.serialization import from_state_dict

    from o2o.runs.checkpoint import latest_checkpoint, load_checkpoint

    if latest_checkpoint(bridge_dir / "checkpoints") is None:
        return None
    arrays, host = load_checkpoint(bridge_dir / "checkpoints", template={"agent": _state_dict(template_state)})
    return from_state_dict(template_state, arrays["agent"]), host


def check_finetune_config(cfg) -> None:
    """Every value check of a fine-tuning config (its loop's, its family's bridge, a safe task's
    controller), before anything is built or written; ``o2o finetune`` and ``o2o sweep`` share it."""
    from o2o.agents import get_online_agent
    from o2o.envs import get_task
    from o2o.lagrange import make_controller

    spec = get_method(cfg.method)
    if get_online_agent(spec.algo).on_policy:  # PPO: its own loop section (loops/onpolicy.py)
        from o2o.loops.onpolicy import check_config
    else:
        from o2o.loops.online import check_config
    check_config(cfg)
    if spec.family == "ocr-cft":
        from o2o.bridge.ocr import check_ocr_config

        check_ocr_config(cfg.ocr)
    else:
        check_vpa_config(cfg.vpa)
    task = get_task(cfg.task)
    if task.safe:  # a bad controller setting fails here, before the bridge runs or anything is written
        make_controller(cfg.lagrange, cfg.online.cost_limit if cfg.online.cost_limit is not None else task.cost_limit)


def run_finetune(cfg, out_dir, *, resume: bool = False, progress: bool = True) -> dict:
    """Fine-tune into ``out_dir`` (or continue it). Returns the summary written to summary.json."""
    from o2o.bridge.pretrained import load_pretrained
    from o2o.config import to_dict
    from o2o.loops.online import upgrade_saved_config
    from o2o.runs import RunDir
    from o2o.runs.rundir import FINETUNE, plain_config, read_config, hold_runs, refusal, resume_diffs, write_config

    spec = get_method(cfg.method)
    ocr = spec.family == "ocr-cft"
    check_finetune_config(cfg)
    out = Path(out_dir)
    with contextlib.ExitStack() as hold:  # the run's lock, held until the summary is written
        if resume:  # locked first: a run in use is refused before the pre-trained run loads
            if not out.is_dir():
                raise RunDirError(f"cannot resume '{out}': no such directory; start a new run with --out {out}")
            hold.enter_context(hold_runs([out]))
        pre = None
        if cfg.pretrained:
            fresh = not ocr and cfg.vpa.init == "fresh"
            pre = load_pretrained(cfg.pretrained, task=cfg.task, need_cost_critic=_needs_cost_critic(spec) and not fresh)
        elif spec.needs_pretrained:
            raise ConfigError(f"method '{cfg.method}' needs a pre-trained run: pass --pretrained RUN_DIR")
        state = build_agent(cfg, spec, pre, agent_init_key(cfg.seed))  # also the template of every checkpoint
        obs_stats = pre.obs_stats if (pre is not None and spec.init_actor) else None
        if resume:
            upgrade_saved_config(out, cfg)  # saved before o2o added config keys: compared with them at their defaults
            diffs, raised = resume_diffs(read_config(out), to_dict(cfg))
            if diffs:
                raise RunDirError(refusal(out, diffs))
            has_online = RunDir.open(out).latest_checkpoint() is not None
            if raised and not has_online:  # stopped in the bridge: the online stage will run to the raised budget
                write_config(out, plain_config(to_dict(cfg)))
            rundir = hold.enter_context(RunDir.create(out, to_dict(cfg), kind=FINETUNE, resume=True)) if has_online else RunDir.open(out)
        else:
            rundir = hold.enter_context(RunDir.create(out, to_dict(cfg), kind=FINETUNE))
            has_online = False
        return _finetune(cfg, spec, pre, state, obs_stats, out, rundir, resume=resume, has_online=has_online, progress=progress)


def _finetune(cfg, spec, pre, state, obs_stats, out: Path, rundir, *, resume: bool, has_online: bool, progress: bool) -> dict:
    """``run_finetune`` in the locked run directory ``rundir``: the bridge (or its saved result), then
    the online stage; writes and returns the summary."""
    from o2o.bridge.pretrained import reset_optimisers
    from o2o.loops.online import OnlineTrainer, run_online

    ocr = spec.family == "ocr-cft"
    bridge_summary = None
    if ocr:
        trainer, bridge_summary = _ocr_stage(cfg, spec, pre, state, out, resume=resume, has_online=has_online, progress=progress)
    elif not has_online:
        if spec.vpa:
            loaded = load_bridge(out / "bridge", state) if resume else None
            if loaded is not None:
                state, bridge_summary = loaded
            else:
                state, bridge_summary = run_bridge(cfg, spec, pre, state, out / "bridge", progress, resume=resume)
            state = reset_optimisers(state)
    if not ocr:
        trainer = OnlineTrainer(cfg, progress=progress, agent_state=state, obs_stats=obs_stats)
    if not has_online:
        # iteration 0: the policy the online stage starts from, on the evaluation episodes
        from o2o.runs import MetricsWriter

        with MetricsWriter(rundir, x="env_steps") as w:
            w.truncate_after(-1)  # a resumed run that never reached its first online checkpoint starts over
            w.write(0, {**trainer.evaluate(), "env_steps": 0, "episodes": 0, "updates": 0})
    summary = run_online(
        cfg, out, resume=has_online, progress=progress, trainer=trainer, rundir=rundir,
        description=f"{cfg.method} {cfg.task} seed {cfg.seed}",
    )
    if bridge_summary is None and (out / "bridge" / "checkpoints").exists():
        from o2o.runs.checkpoint import load_checkpoint

        _, bridge_summary = load_checkpoint(out / "bridge" / "checkpoints")
    summary = {"method": cfg.method, "pretrained": cfg.pretrained, **summary}
    if bridge_summary is not None:
        summary["bridge" if ocr else "vpa"] = {k: v for k, v in bridge_summary.items() if k != "stage"}
    rundir.write_summary(summary)
    return summary


def _ocr_stage(cfg, spec, pre, state, out: Path, *, resume: bool, has_online: bool, progress: bool):
    """OCR-CFT: the trainer (also the bridge's evaluator), and the bridge run or loaded from out/bridge/.
    Returns (trainer, bridge summary or None)."""
    from functools import partial

    from o2o.loops.ocr import evaluate_actor, make_ocr_trainer, run_ocr_bridge
    from o2o.runs.partial import discard_partial
    from o2o.runs.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    trainer = make_ocr_trainer(cfg, spec, pre, state, None, progress=progress)
    if has_online:  # the online checkpoint holds the agent and the reference policy
        return trainer, None
    bridge_dir = out / "bridge"
    template = {"agent": _state_dict(state), "reference": state.actor.params}
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
        save_checkpoint(bridge_dir / "checkpoints", 1, arrays={"agent": _state_dict(state), "reference": reference}, host_state=summary)
        discard_partial(bridge_dir)
    trainer.state = state
    trainer._init_reference(reference, spec.constraint)
    return trainer, summary
