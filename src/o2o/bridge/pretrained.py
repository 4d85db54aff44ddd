"""A pre-trained run directory as the online stage sees it, and its conversion into an online agent.

``load_pretrained(RUN_DIR)`` reads the run's resolved config and latest checkpoint (no pickle: msgpack
arrays + JSON) and checks them; ``to_sac_lag`` copies the actor, the reward critics and the cost
critics of a safe offline agent (CPQ, BEAR-Lag, or any agent with those three parts) into a SAC-Lag
state with fresh Adam optimisers and target networks equal to the copied critics. The online agent
takes the pre-trained networks' shapes (hidden widths, ensemble sizes, log-std bounds): whatever the
online config says about them is replaced, and the resolved config records the values used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from o2o.errors import ConfigError, RunDirError

# Fields of the online agent config that must follow the pre-trained networks.
# what the pre-training loop's host state must hold for a fine-tuning run to start from it
PRETRAINED_HOST = {"counters": {"steps": 0}}
SHAPE_FIELDS = ("hidden_dims", "num_critics", "num_cost_critics", "critic_layer_norm", "log_std_min", "log_std_max")


@dataclass
class Pretrained:
    path: Path
    algo: str
    task: str
    config: Any  # the run's PretrainConfig
    state: Any  # the offline agent's state (actor, critics, ...)
    obs_mean: np.ndarray
    obs_std: np.ndarray
    step: int
    cost_limit: float | None

    @property
    def obs_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return self.obs_mean, self.obs_std


def load_pretrained(
    path: str | Path, *, task: str | None = None, need_cost_critic: bool = False, checkpoint: str | Path | None = None,
    policy_only_ok: bool = False,
) -> Pretrained:
    """Read a finished (or checkpointed) ``o2o pretrain`` run: its latest checkpoint, or the checkpoint
    directory ``checkpoint`` of it. Raises a one-line error when the directory is not a pre-training
    run, has no checkpoint, is for another task than ``task``, or has no cost critic where one is
    needed. A checkpoint stripped to its policy (``runs.checkpoint.strip_checkpoint``) is refused
    unless ``policy_only_ok`` (evaluation)."""
    from o2o.agents import OFFLINE_AGENTS, get_offline_agent
    from o2o.config import from_dict, load_yaml
    from o2o.envs import get_task
    from o2o.runconfig import pretrain_config_class
    from o2o.runs import RunDir

    path = Path(path)
    if not path.is_dir():
        if not path.is_absolute():  # a run that recorded it relative is resumed from another directory
            raise RunDirError(f"pre-trained run '{path}' does not exist in the working directory {Path.cwd()}; run from the "
                              f"directory the path is relative to, or train one with `o2o pretrain`")
        raise RunDirError(f"pre-trained run '{path}' does not exist; train one with `o2o pretrain`")
    run = RunDir.open(path)
    saved = load_yaml(run.config_path)
    algo = saved.get("algo")
    if algo not in OFFLINE_AGENTS:
        raise ConfigError(
            f"'{path}' is not an offline pre-training run (algo '{algo}'); pass a directory written by `o2o pretrain`"
        )
    spec = get_offline_agent(algo)
    cfg = from_dict(pretrain_config_class(algo), saved)
    if run.latest_checkpoint() is None:
        raise RunDirError(f"pre-trained run '{path}' has no checkpoint yet; finish it with `o2o pretrain --resume {path}`")
    run_task = get_task(cfg.task)
    if task is not None and get_task(task).name != run_task.name:
        raise ConfigError(f"pre-trained run '{path}' is for task {run_task.name}, not {get_task(task).name}")
    template_state = spec.module.init(jax.random.PRNGKey(0), run_task.obs_dim, run_task.act_dim, cfg.agent)
    template = {
        "agent": template_state,
        "key": jax.random.PRNGKey(0),
        "obs_mean": np.zeros(run_task.obs_dim, np.float32),
        "obs_std": np.ones(run_task.obs_dim, np.float32),
    }
    if checkpoint is None:
        arrays, host = run.load_checkpoint(template=template, host_template=PRETRAINED_HOST)
    else:
        from o2o.runs.checkpoint import load_checkpoint

        arrays, host = load_checkpoint(checkpoint, template=template, host_template=PRETRAINED_HOST)
    from o2o.runs.checkpoint import STRIPPED_KEY

    if host.get(STRIPPED_KEY) and not policy_only_ok:
        raise RunDirError(
            f"pre-trained run '{path}': its checkpoint holds only the policy ({host[STRIPPED_KEY]}); it can be evaluated "
            f"(o2o eval) but not fine-tuned from; use the run's full checkpoints"
        )
    if need_cost_critic and not hasattr(arrays["agent"], "cost_critic"):
        raise ConfigError(
            f"pre-trained run '{path}' ({algo}) has no cost critic; this method needs a safe offline agent with one (cpq, bear-lag)"
        )
    return Pretrained(
        path=path,
        algo=algo,
        task=run_task.name,
        config=cfg,
        state=arrays["agent"],
        obs_mean=np.asarray(arrays["obs_mean"], np.float32),
        obs_std=np.asarray(arrays["obs_std"], np.float32),
        step=int(host["counters"]["steps"]),
        cost_limit=cfg.cost_limit,
    )


def adopt_shapes(agent_cfg, pretrained: Pretrained):
    """The online agent config with the pre-trained networks' shapes."""
    src = pretrained.config.agent
    names = {f.name for f in dataclasses.fields(agent_cfg)}
    changes = {k: getattr(src, k) for k in SHAPE_FIELDS if k in names and hasattr(src, k)}
    if "num_cost_critics" in names and not hasattr(src, "num_cost_critics"):
        changes.pop("num_cost_critics", None)
    return dataclasses.replace(agent_cfg, **changes)


def fresh_train_state(train_state, params, tx=None):
    """A TrainState with ``params`` (copied) and a fresh optimiser state."""
    params = jax.tree_util.tree_map(jnp.array, params)
    tx = tx or train_state.tx
    return train_state.replace(step=jnp.zeros_like(train_state.step), params=params, tx=tx, opt_state=tx.init(params))


def to_sac_lag(pretrained: Pretrained, agent_cfg, key, *, actor: bool = True, critics: bool = True):
    """A SAC-Lag state from the pre-trained networks: actor (``actor``), reward and cost critics with
    their targets (``critics``); anything not copied is freshly initialised. Fresh optimisers."""
    from o2o.agents import sac_lag
    from o2o.envs import get_task

    task = get_task(pretrained.task)
    agent_cfg = adopt_shapes(agent_cfg, pretrained)
    state = sac_lag.init(key, task.obs_dim, task.act_dim, agent_cfg)
    src = pretrained.state
    if actor:
        state = state.replace(actor=fresh_train_state(state.actor, src.actor.params))
    if critics:
        if not hasattr(src, "cost_critic"):
            raise ConfigError(f"pre-trained {pretrained.algo} has no cost critic to start SAC-Lag's from")
        check_same_tree(state.critic.params, src.critic.params, "reward critics")
        check_same_tree(state.cost_critic.params, src.cost_critic.params, "cost critics")
        state = state.replace(
            critic=fresh_train_state(state.critic, src.critic.params),
            target_critic_params=jax.tree_util.tree_map(jnp.array, src.critic.params),
            cost_critic=fresh_train_state(state.cost_critic, src.cost_critic.params),
            target_cost_critic_params=jax.tree_util.tree_map(jnp.array, src.cost_critic.params),
        )
    return state


def reset_optimisers(state):
    """Fresh Adam moments for every trained network the state has (actor, critic, cost critic, value;
    not the temperature): the online stage starts its own optimisation."""
    parts = {name: getattr(state, name) for name in ("actor", "critic", "cost_critic", "value") if hasattr(state, name)}
    return state.replace(**{k: fresh_train_state(v, v.params) for k, v in parts.items()})


def check_same_tree(a, b, what: str) -> None:
    sa = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), a)
    sb = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), b)
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b) or sa != sb:
        raise ConfigError(f"the pre-trained {what} do not have the online agent's shapes ({sb} vs {sa})")
