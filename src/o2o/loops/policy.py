"""The deterministic policy of any run directory: ``load_policy(RUN_DIR)``.

One loader for every run kind, read from the run's ``config.yaml``:

    pre-training  (o2o pretrain: ``offline`` section, no ``method``)  ``bridge.pretrained.load_pretrained``
    training      (o2o train)                                        ``make_trainer`` + its checkpoint
    fine-tuning   (o2o finetune: ``method``)                         ``make_trainer`` + its checkpoint

The stage directories of ``o2o marvel`` / ``o2o ocr`` / ``o2o demo`` and a sweep's runs are ordinary run
directories of these kinds. ``o2o eval``, ``o2o eval --render``, ``o2o export`` and ``o2o.load_policy``
all load through here, so they act with the same numbers as the run's own evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from o2o.errors import RunDirError
from o2o.runconfig import load_run_config

from o2o.runs.rundir import FINETUNE, PRETRAIN, TRAIN, run_info


class Policy:
    """A run's deterministic policy on raw observations: ``policy(obs) -> action``.

    ``obs`` is one observation ``[observation_dim]`` (-> ``[action_dim]``) or a batch ``[B,
    observation_dim]`` (-> ``[B, action_dim]``), NumPy in and out; actions are in the agent's box
    [-1, 1]^action_dim, which ``o2o.make_env`` maps onto the task's own bounds. The run's observation
    normalisation (pre-training statistics, PPO's running statistics) is applied inside.

    Attributes: ``task`` (name), ``observation_dim``, ``action_dim``, ``algo``, ``kind`` (pretrain,
    train or finetune), ``run_dir``, ``checkpoint`` (the checkpoint directory it was read from),
    ``step`` (gradient steps of a pre-training run, iterations of an online one), and what ``o2o
    export`` writes: ``actor_params`` (the actor network's parameters), ``obs_mean``, ``obs_std`` and
    ``obs_clip`` (normalised observation = clip((obs - obs_mean) / obs_std, -obs_clip, obs_clip); no
    clip when None).
    """

    def __init__(self, act: Callable[[np.ndarray], np.ndarray], *, task, algo: str, kind: str, run_dir: Path,
                 checkpoint: Path, step: int, seed: int, cost_limit: float | None, actor_params: Any,
                 obs_mean: np.ndarray, obs_std: np.ndarray, obs_clip: float | None = None):
        self._act = act  # batched: [B, obs_dim] raw observations -> [B, act_dim]
        self._task = task  # the registry's Task
        self.task = task.name
        self.observation_dim = task.obs_dim
        self.action_dim = task.act_dim
        self.algo, self.kind, self.run_dir, self.checkpoint, self.step = algo, kind, run_dir, checkpoint, step
        self.seed, self.cost_limit = seed, cost_limit
        self.actor_params = actor_params
        self.obs_mean = np.asarray(obs_mean, np.float32)
        self.obs_std = np.asarray(obs_std, np.float32)
        self.obs_clip = obs_clip

    def __call__(self, obs) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.observation_dim:
            raise ValueError(
                f"{self.task} observations have shape [{self.observation_dim}] or [B, {self.observation_dim}], got {list(obs.shape)}"
            )
        if obs.ndim == 1:
            return np.asarray(self._act(obs[None]))[0]
        return np.asarray(self._act(obs))

    def evaluate(self, num_episodes: int, seed: int | None = None) -> dict[str, float]:
        """Deterministic evaluation on the task: mean return (raw, normalised), and for a safe task the
        episode cost, C/kappa and safety; on the run's evaluation episodes unless ``seed`` is given."""
        from o2o.loops.evaluation import evaluation_metrics

        return evaluation_metrics(self._task, self._act, num_episodes, self.seed if seed is None else seed, self.cost_limit)

    def __repr__(self) -> str:
        return (f"Policy({self.algo} on {self.task}: {self.observation_dim} -> {self.action_dim}, "
                f"{self.kind} run {self.run_dir}, {self.checkpoint.name})")


def checkpoint_dir(run_dir: str | Path, checkpoint: int | str | Path | None = None) -> Path:
    """The checkpoint directory of ``run_dir`` to load: the latest, or ``checkpoint`` given as a step
    (``ckpt_<step>``) or as a path. A run without one, or without that step, is a one-line error."""
    from o2o.runs.checkpoint import checkpoint_step, latest_checkpoint, list_checkpoints
    from o2o.runs.rundir import CHECKPOINTS_DIRNAME

    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"run directory '{run}' does not exist; check the path")
    kind = run_info(run)["kind"]
    ckpts = run / CHECKPOINTS_DIRNAME
    if checkpoint is None:
        latest = latest_checkpoint(ckpts) if ckpts.is_dir() else None
        if latest is None:
            command = {PRETRAIN: "pretrain", TRAIN: "train", FINETUNE: "finetune"}[kind]
            raise RunDirError(f"run '{run}' has no checkpoint yet (it stopped before its first save); "
                              f"continue it with `o2o {command} --resume {run}`")
        return latest
    if isinstance(checkpoint, (int, np.integer)) or str(checkpoint).isdigit():
        path = ckpts / f"ckpt_{int(checkpoint)}"
        if not path.is_dir():
            steps = [checkpoint_step(p) for p in list_checkpoints(ckpts)] if ckpts.is_dir() else []
            have = f"it has {', '.join(map(str, steps))}" if steps else "it has none"
            raise RunDirError(f"run '{run}' has no checkpoint {int(checkpoint)}; {have} (pass one of those, or none for the latest)")
        return path
    path = Path(checkpoint)
    if not path.is_dir():
        raise RunDirError(f"checkpoint '{path}' does not exist; pass a step of {run}/checkpoints/ckpt_<step> or a ckpt_<step> directory")
    return path


def load_policy(run_dir: str | Path, checkpoint: int | str | Path | None = None) -> Policy:
    """The deterministic policy of the run in ``run_dir`` at its latest checkpoint, or at ``checkpoint``
    (a step or a ``ckpt_<step>`` directory). Every kind of run directory; a missing checkpoint, a
    checkpoint of another architecture or a directory that is not a run is a one-line ``O2OError``."""
    from o2o.runs.rundir import read_config

    run = Path(run_dir)
    ckpt = checkpoint_dir(run, checkpoint)
    saved = read_config(run)
    kind = run_info(run)["kind"]
    if kind == PRETRAIN:
        return _pretrain_policy(run, ckpt)
    return _online_policy(run, ckpt, saved, kind)


def _pretrain_policy(run: Path, ckpt: Path) -> Policy:
    from o2o.bridge.pretrained import load_pretrained
    from o2o.envs import get_task
    from o2o.loops.offline import offline_policy

    pre = load_pretrained(run, checkpoint=ckpt, policy_only_ok=True)
    act = offline_policy(pre.algo, pre.state.actor, pre.obs_mean, pre.obs_std)
    return Policy(act, task=get_task(pre.task), algo=pre.algo, kind=PRETRAIN, run_dir=run, checkpoint=ckpt, step=pre.step,
                  seed=pre.config.seed, cost_limit=pre.cost_limit, actor_params=pre.state.actor.params,
                  obs_mean=pre.obs_mean, obs_std=pre.obs_std)


def _online_policy(run: Path, ckpt: Path, saved: dict, kind: str) -> Policy:
    """A training or fine-tuning run: its trainer built from the saved config is the template its
    checkpoint is checked and restored against (as ``o2o train --resume`` does)."""
    from o2o.loops.online import make_trainer
    from o2o.runconfig import train_config_class
    from o2o.runs.checkpoint import load_checkpoint

    if kind == FINETUNE:
        from o2o.runconfig import finetune_config_class

        cfg = load_run_config(finetune_config_class(saved["method"]), saved)
    else:
        cfg = load_run_config(train_config_class(saved.get("algo", "sac")), saved)
    trainer = make_trainer(cfg, progress=False)
    try:
        template = trainer.checkpoint_template()
        if hasattr(cfg, "ocr"):  # OCR-CFT runs also checkpoint their reference policy
            template["reference"] = trainer.state.actor.params
        arrays, host = load_checkpoint(ckpt, template=template, host_template=trainer.host_state())
        trainer.restore(arrays, host)
    finally:
        trainer.collector.close()  # the policy keeps no environment
    act = trainer.deterministic_policy()
    if trainer.spec.on_policy:  # PPO normalises with its own running statistics, clipped
        state = trainer.state
        if state.config.normalize_observations:
            from o2o.agents.ppo import STATS_EPS

            mean = np.asarray(state.obs_stats.mean, np.float32)
            std = np.sqrt(np.asarray(state.obs_stats.var, np.float64) + STATS_EPS).astype(np.float32)
            clip = float(state.config.observation_clip)
        else:
            mean, std, clip = np.zeros(trainer.task.obs_dim, np.float32), np.ones(trainer.task.obs_dim, np.float32), None
    else:
        mean, std, clip = trainer.obs_mean, trainer.obs_std, None
    return Policy(act, task=trainer.task, algo=cfg.algo, kind=kind, run_dir=run, checkpoint=ckpt,
                  step=int(trainer.counters["iteration"]), seed=cfg.seed, cost_limit=trainer.cost_limit,
                  actor_params=trainer.state.actor.params, obs_mean=mean, obs_std=std, obs_clip=clip)
