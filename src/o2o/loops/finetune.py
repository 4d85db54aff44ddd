"""Offline-to-online fine-tuning: pre-trained run -> bridge -> online stage, one run directory.

    o2o finetune --method marvel --pretrained runs/cpq-BallCircle-s0 --seed 0 --out runs/ft

    1. load the pre-trained run (config + latest checkpoint), check it fits the task and the method
    2. build the online agent: copy the parts the method starts from (actor, critics), fresh optimisers
    3. the bridge (Marvel: VPA; OCR-CFT: re-evaluation and alignment), policy-side as the method says;
       its metrics go to ``bridge/metrics.csv`` and its result to ``bridge/checkpoints/`` (read by
       ``o2o diagnose-critic`` and reused by ``--resume``)
    4. the online stage (``loops.online``) from that agent, with the method's controller or constraint

This module composes; each method family holds its own pieces (its config section, config
resolution, agent, bridge and trainer): ``o2o.loops.marvel`` and ``o2o.loops.ocr`` (``family``).
Every stage runs through ``o2o.loops.driver``.

Config resolution (later wins): dataclass defaults < ``<algo>.yaml`` < ``finetune-<family>.yaml``
< the family's per-algorithm preset (OCR-CFT) < the method's fixed keys < ``finetune-<family>-<Task>.yaml``
(the authors' per-task values) < ``<method>-<Task>.yaml`` < ``--config FILE`` < ``--set``. The network
shapes then follow the pre-trained run. The resolved config is what the run directory records.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jax

from o2o.errors import ConfigError, RunDirError
from o2o.methods import MethodSpec, get_method
from o2o.runconfig import finetune_config_class


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
    from o2o.bridge.pretrained import load_pretrained
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
        family(spec).algo_preset(spec),
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
    return family(spec).finish_config(cfg, spec, pre, pretrained)


def family(spec: MethodSpec):
    """The module that holds a method family's pieces (``o2o.loops.marvel``, ``o2o.loops.ocr``)."""
    if spec.family == "ocr-cft":
        from o2o.loops import ocr

        return ocr
    from o2o.loops import marvel

    return marvel


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
    return family(spec).build_agent(cfg, spec, pre, key)


def agent_init_key(seed: int):
    """The key ``build_agent`` draws a fine-tuning run's fresh networks with."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)


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
    family(spec).check_config(cfg)
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
    check_finetune_config(cfg)
    out = Path(out_dir)
    with contextlib.ExitStack() as hold:  # the run's lock, held until the summary is written
        if resume:  # locked first: a run in use is refused before the pre-trained run loads
            if not out.is_dir():
                raise RunDirError(f"cannot resume '{out}': no such directory; start a new run with --out {out}")
            hold.enter_context(hold_runs([out]))
        pre = None
        if cfg.pretrained:
            pre = load_pretrained(cfg.pretrained, task=cfg.task, need_cost_critic=family(spec).needs_cost_critic(spec, cfg))
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
    """``run_finetune`` in the locked run directory ``rundir``: the family's bridge (or its saved
    result) and trainer, then the online stage; writes and returns the summary."""
    from o2o.loops.online import run_online

    fam = family(spec)
    trainer, bridge_summary = fam.start(cfg, spec, pre, state, obs_stats, out, resume=resume, has_online=has_online, progress=progress)
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
        summary[fam.SUMMARY_KEY] = {k: v for k, v in bridge_summary.items() if k != "stage"}
    rundir.write_summary(summary)
    return summary
