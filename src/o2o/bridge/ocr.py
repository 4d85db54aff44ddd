"""OCR-CFT's settings (config section ``ocr``) and the conversion of any pre-trained actor into the online
algorithm's policy class (Luo et al. 2024: "general" offline-to-online RL, any offline algorithm to any of
SAC, TD3, PPO).

    pre-trained actor   online policy        conversion
    tanh-Gaussian       SAC / PPO            copied as it is (CQL, IQL, BC, CPQ, ... -> o2sac, o2ppo)
    deterministic       TD3                  copied as it is (TD3+BC -> o2td3; the state layout is TD3's)
    tanh-Gaussian       TD3                  behaviour cloning: MSE of pi(s) to the mode tanh(mean_off(s))
    deterministic       SAC / PPO            behaviour cloning: max likelihood of pi_off(s) + N(0, clone_noise^2)

Cloning runs ``ocr.clone_steps`` steps on the offline dataset's states; the clone is then pi_off for the
re-evaluation and alignment stages. Critics are copied only by methods that start from them (naive
fine-tuning, the no-re-evaluation ablation): CQL's / TD3+BC's critic ensembles, IQL's V for PPO.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from o2o.bridge.config import REFERENCE_RULES, REPLAY_MODES, OCRConfig, check_ocr_config  # noqa: F401  (the section, defined below the bridges)
from o2o.errors import ConfigError


PAPER_THRESHOLD_STEPS = 100_000  # the paper's loosening of tau_t, in env steps

# tau_t (start, end) per online algorithm and dataset kind (spec: 100k-step linear loosening)
THRESHOLDS = {
    ("sac", False): (0.125, 2.0), ("sac", True): (0.005, 0.125),
    ("td3", False): (0.0025, 0.04), ("td3", True): (2.5e-5, 6.25e-4),
    ("ppo", False): (0.0, 0.0), ("ppo", True): (0.0, 0.0),  # O2PPO has no lambda
}




def online_kind(algo: str) -> str:
    """sac | td3 | ppo: the evaluation rule and policy class of an online algorithm."""
    return {"sac": "sac", "o2sac": "sac", "td3": "td3", "o2td3": "td3", "ppo": "ppo"}[algo]


def bridge_stages(spec, algo: str, reeval_steps: int, align_steps: int) -> dict[str, int]:
    """The bridge stages a fine-tuning method runs before its online phase, with their gradient steps:
    re-evaluation where the method has it, alignment where it has it and the online algorithm is SAC or
    TD3 (O2PPO's alignment is an auxiliary loss of its online updates, not a bridge stage); a stage with
    0 steps is skipped. ``o2o.loops.ocr.run_ocr_bridge`` runs these, a sweep's progress line counts them."""
    stages = {}
    if spec.reeval and reeval_steps > 0:
        stages["reeval"] = reeval_steps
    if spec.align and online_kind(algo) in ("sac", "td3") and align_steps > 0:
        stages["align"] = align_steps
    return stages


def actor_kind(offline_algo: str) -> str:
    """The policy class of an offline agent's actor (``o2o.nn``: tanh-gaussian, gaussian, deterministic)."""
    from o2o.agents import get_offline_agent

    return get_offline_agent(offline_algo).module.POLICY


def same_class(offline_algo: str, algo: str) -> bool:
    """Whether the offline actor loads into the online algorithm's policy as it is (else it is cloned)."""
    from o2o.agents import get_online_agent

    return actor_kind(offline_algo) == get_online_agent(algo).module.POLICY


def resolve_ocr_defaults(cfg, dataset_name: str | None):
    """Fill the dataset-dependent settings left at None (expert flag, alpha, tau_0 and tau_end) and the
    lambda learning rate for the loosening's length: with the paper's 100k env steps it is the agent's
    ``lambda_lr``; over T env steps it is scaled by 100k / T (the dual takes T / 100k as many steps, so
    log lambda can move as far as in the paper). Applied once, to a freshly layered config."""
    o = cfg.ocr
    expert = o.expert_data if o.expert_data is not None else ("expert" in (dataset_name or "").lower())
    kind = online_kind(cfg.algo)
    start, end = THRESHOLDS[(kind, expert)]
    changes = {"expert_data": expert}
    if o.reeval_alpha is None:
        changes["reeval_alpha"] = 0.5 if expert else 0.2
    if o.threshold_start is None:
        changes["threshold_start"] = start
    if o.threshold_end is None:
        changes["threshold_end"] = end
    scale = o.lambda_lr_scale if o.lambda_lr_scale is not None else PAPER_THRESHOLD_STEPS / max(o.threshold_steps, 1)
    changes["lambda_lr_scale"] = float(scale)
    agent = cfg.agent
    if hasattr(agent, "lambda_lr") and scale != 1.0:  # o2sac / o2td3: the dual's step size for this schedule
        agent = dataclasses.replace(agent, lambda_lr=float(agent.lambda_lr * scale))
    return dataclasses.replace(cfg, agent=agent, ocr=dataclasses.replace(o, **changes))


def adopt_ocr_shapes(agent_cfg, pre, algo: str, *, actor: bool, critics: bool):
    """The online agent config with the shapes of what is copied from the pre-trained run."""
    src = pre.config.agent
    names = {f.name for f in dataclasses.fields(agent_cfg)}
    changes = {}
    if (actor and same_class(pre.algo, algo)) or critics:
        changes["hidden_dims"] = tuple(src.hidden_dims)
        for k in ("log_std_min", "log_std_max"):
            if k in names and hasattr(src, k):
                changes[k] = getattr(src, k)
    if critics:
        if online_kind(algo) == "ppo":
            changes["value_hidden_dims"] = tuple(src.hidden_dims)
        else:
            changes.update({k: getattr(src, k) for k in ("num_critics", "critic_layer_norm") if hasattr(src, k)})
    return dataclasses.replace(agent_cfg, **{k: v for k, v in changes.items() if k in names})


def check_pretrained_fits(pre, task) -> None:
    """The pre-trained actor acts in the task's action space and its observation statistics fit the
    task's observations; a one-line error otherwise (before any training)."""
    params = pre.state.actor.params["params"]
    last = sorted(k for k in params if k.startswith("Dense_"))
    out_dims = {int(np.shape(params[k]["bias"])[-1]) for k in last} if last else set()
    if not out_dims:  # deterministic actor: MLP inside
        mlp = params.get("MLP_0", {})
        dense = sorted((k for k in mlp if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
        out_dims = {int(np.shape(mlp[dense[-1]]["bias"])[-1])} if dense else set()
    if out_dims and out_dims != {task.act_dim}:
        raise ConfigError(
            f"pre-trained run '{pre.path}': its actor outputs {sorted(out_dims)[0]} action dimensions, task {task.name} has {task.act_dim}; "
            "pre-train on this task's dataset"
        )
    mean, std = np.asarray(pre.obs_mean), np.asarray(pre.obs_std)
    if mean.shape != (task.obs_dim,) or std.shape != (task.obs_dim,) or not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ConfigError(
            f"pre-trained run '{pre.path}': its observation normalisation (mean/std of shape {mean.shape}) does not fit task "
            f"{task.name} ({task.obs_dim} observations, finite, std > 0); pre-train on this task's dataset"
        )


# ------------------------------------------------------------------------------------- behaviour cloning


def clone_actor(student, teacher_apply, teacher_params, observations: np.ndarray, *, teacher: str, to: str, steps: int,
                batch_size: int, learning_rate: float, noise: float, key) -> tuple:
    """Fit ``student`` (a TrainState) to the teacher actor on ``observations`` (normalised as the
    actors see them). ``teacher`` and ``to`` are the two policy classes (``o2o.nn``): a deterministic
    student fits the teacher's mode by MSE, a stochastic one maximises the likelihood of the teacher's
    mode plus N(0, noise^2). Returns (params, final loss)."""
    from o2o.agents.common import adam, make_update_many
    from o2o.bridge.pretrained import fresh_train_state
    from o2o.nn import DETERMINISTIC, policy_log_prob, policy_mode

    student = fresh_train_state(student, student.params, adam(learning_rate))

    def teacher_action(obs, key):
        mode = policy_mode(teacher, teacher_apply(teacher_params, obs))
        if to != DETERMINISTIC:
            mode = jnp.clip(mode + noise * jax.random.normal(key, mode.shape), -1.0, 1.0)
        return mode

    def update(state, batch, key):
        target = jax.lax.stop_gradient(teacher_action(batch["observations"], key))

        def loss(params):
            if to == DETERMINISTIC:
                return ((state.apply_fn(params, batch["observations"]) - target) ** 2).mean()
            return -policy_log_prob(to, state.apply_fn(params, batch["observations"]), target, clip=0.999).mean()

        value, grads = jax.value_and_grad(loss)(state.params)
        return state.apply_gradients(grads=grads), {"clone_loss": value}

    def sample(data, key):
        index = jax.random.randint(key, (batch_size,), 0, data.shape[0])
        return {"observations": data[index]}

    many = make_update_many(update, sample)
    metrics = {"clone_loss": float("nan")}
    data = jnp.asarray(observations, jnp.float32)
    if steps > 0:
        student, metrics = many(student, data, key, {}, num_steps=steps)
    return student.params, float(metrics["clone_loss"])


# ------------------------------------------------------------------------------------- the online agent


def build_ocr_agent(cfg, spec, pre, key, observations: np.ndarray | None = None):
    """The online agent of an OCR-CFT-family method before the bridge: the pre-trained actor copied
    or cloned into the online policy class, critics copied only when the method starts from them.
    ``observations``: normalised dataset states for cloning (needed only across policy classes)."""
    from o2o.agents import get_online_agent
    from o2o.bridge.pretrained import check_same_tree, fresh_train_state
    from o2o.envs import get_task

    task = get_task(cfg.task)
    module = get_online_agent(cfg.algo).module
    init_key, clone_key = jax.random.split(key)
    state = module.init(init_key, task.obs_dim, task.act_dim, cfg.agent)
    if pre is None or not (spec.init_actor or spec.init_critics):
        return state
    check_pretrained_fits(pre, task)
    kind = online_kind(cfg.algo)
    src = pre.state
    copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)
    if spec.init_actor:
        if same_class(pre.algo, cfg.algo):
            check_same_tree(state.actor.params, src.actor.params, "actor")
            state = state.replace(actor=fresh_train_state(state.actor, src.actor.params))
            if kind == "td3":
                state = state.replace(target_actor_params=copy(src.actor.params))
        else:
            if observations is None:
                raise ConfigError("cloning the pre-trained actor into another policy class needs the offline dataset")
            o = cfg.ocr
            params, _ = clone_actor(
                state.actor, src.actor.apply_fn, src.actor.params, observations,
                teacher=actor_kind(pre.algo), to=module.POLICY, steps=o.clone_steps, batch_size=o.clone_batch_size,
                learning_rate=o.clone_lr, noise=o.clone_noise, key=clone_key,
            )
            state = state.replace(actor=fresh_train_state(state.actor, params))
            if kind == "td3":
                state = state.replace(target_actor_params=copy(params))
        if kind == "ppo":
            from o2o.agents.ppo import running_stats_from

            state = state.replace(obs_stats=running_stats_from(pre.obs_mean, pre.obs_std))
    if spec.init_critics:
        if kind == "ppo":
            if not hasattr(src, "value"):
                raise ConfigError(f"pre-trained {pre.algo} has no state-value network to start PPO's from (iql has one)")
            check_same_tree(state.value.params, src.value.params, "value network")
            state = state.replace(value=fresh_train_state(state.value, src.value.params))
        else:
            if not hasattr(src, "critic"):
                raise ConfigError(f"pre-trained {pre.algo} has no critic to start {cfg.algo}'s from")
            check_same_tree(state.critic.params, src.critic.params, "critics")
            target = src.target_critic_params if hasattr(src, "target_critic_params") else src.critic.params
            state = state.replace(critic=fresh_train_state(state.critic, src.critic.params), target_critic_params=copy(target))
            if kind == "sac" and hasattr(src, "temperature"):
                state = state.replace(temperature=fresh_train_state(state.temperature, src.temperature.params))
    return state
