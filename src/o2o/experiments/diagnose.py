"""Does VPA align the critics? (Marvel, Table 1.)

For a fine-tuning run with VPA, the critics before VPA (the pre-trained run's) and after (the run's
``bridge/``) are scored against Monte-Carlo returns of the policy they evaluate (the frozen
pre-trained policy pi0) by Spearman rank correlation, for the reward critic (min over the ensemble)
and the cost critic (the ensemble reduction the agent uses).

State-action pairs come from two sources:
- ``policy``: states visited by pi0's own (stochastic) episodes, with the action pi0 took there;
- ``random``: states visited by uniformly random episodes, with the random action taken there (the
  paper's "random rollouts": actions pi0 would rarely choose).
Dataset state-actions cannot be used: an observation does not determine the simulator state, and the
datasets do not record simulator states. The simulator is put back into a recorded state exactly by
re-running its episode from the episode seed with the recorded actions (``SeededEnv.reset_episode``:
every episode is a pure function of its seed and actions), then the pair's action is taken and pi0
followed ``rollouts`` times with different policy samples; the Monte-Carlo value is their mean,
discounted with the critic's gamma, rewards in the critic's units (times the reward scale).

How far a rollout goes decides what is measured. The critics bootstrap through time limits (only
``terminals`` cut the target), so what they estimate is the infinite-horizon discounted value; by
default each rollout therefore continues past the task's time limit until gamma^k falls below
``TAIL`` (688 steps at gamma 0.99) or the episode terminates. Ending at the time limit instead
(``to_episode_end``; always with ``discounted=False``) gives a state late in an episode a fraction of
that value which its observation does not show (on a 200-step task, 57% of it on average at gamma
0.99). The standard error of each pair's mean over its rollouts is reported beside the errors:
an exact critic's mean absolute error against a few rollouts is of that size, not 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from o2o.errors import ConfigError, RunDirError
from o2o.runconfig import load_run_config

TAIL = 1e-3
"""Default rollout length: until the discount gamma^k is below this (continuing past the time limit)."""


def tail_horizon(gamma: float) -> int:
    """Steps after which gamma^k < ``TAIL``: the default Monte-Carlo horizon of a discounted critic."""
    return int(np.ceil(np.log(TAIL) / np.log(gamma)))


def _episodes(task, behaviour, count: int, seed: int):
    """``count`` whole episodes: (episode_seed, observations [T], actions [T])."""
    from o2o.envs import make_env

    env = make_env(task, seed)
    out = []
    for _ in range(count):
        obs, info = env.reset()
        observations, actions = [], []
        done = False
        while not done:
            a = behaviour(obs)
            observations.append(obs)
            actions.append(a)
            obs, _, term, trunc, _ = env.step(a)
            done = term or trunc
        out.append((info["episode_seed"], np.asarray(observations), np.asarray(actions)))
    env.close()
    return out


def _monte_carlo(task, episode_seed, prefix, action, policy_batch, rollouts: int, horizon, gamma: float, reward_scale: float,
                 past_time_limit: bool):
    """Discounted (reward, cost) of each of ``rollouts`` continuations after restoring the state, [rollouts] each."""
    from o2o.envs import make_env

    limit = len(prefix) + horizon + 1 if past_time_limit else None
    envs = [make_env(task, 0, max_episode_steps=limit) for _ in range(rollouts)]
    obs = []
    for env in envs:
        o, _ = env.reset_episode(episode_seed)
        for a in prefix:
            o, *_ = env.step(a)
        obs.append(o)
    returns = np.zeros(rollouts)
    costs = np.zeros(rollouts)
    alive = np.ones(rollouts, bool)
    actions = np.repeat(action[None], rollouts, 0)
    k = 0
    while alive.any() and (horizon is None or k < horizon):
        for i, env in enumerate(envs):
            if not alive[i]:
                continue
            o, r, term, trunc, info = env.step(actions[i])
            returns[i] += gamma**k * reward_scale * r
            costs[i] += gamma**k * info["cost"]
            obs[i] = o
            alive[i] = not (term or trunc)
        k += 1
        if alive.any() and (horizon is None or k < horizon):
            actions = policy_batch(np.asarray(obs))
    for env in envs:
        env.close()
    return returns, costs


def monte_carlo_pairs(task, actor, obs_stats, reward_scale: float, gamma: float, *, pairs: int, rollouts: int,
                      horizon: int | None, past_time_limit: bool, seed: int = 0, progress: bool = True) -> dict[str, dict]:
    """State-actions of each source (``policy``: pi0's own episodes; ``random``: uniformly random ones)
    with the discounted Monte-Carlo returns and costs of pi0 (``actor``, stochastic) after them:
    ``{source: {"observations": [pairs, obs] (raw), "actions": [pairs, act], "returns": [pairs, rollouts],
    "costs": [pairs, rollouts]}}``."""
    from o2o.agents.sac import actor_actions
    from o2o.progress import training_progress

    mean, std = obs_stats
    key = jax.random.PRNGKey(seed)
    step = [0]

    def policy_batch(obs):
        step[0] += 1
        return np.asarray(actor_actions(actor, jnp.asarray((obs - mean) / std), jax.random.fold_in(key, step[0]), False))

    rng = np.random.default_rng(seed)
    behaviours = {
        "policy": lambda o: policy_batch(o[None])[0],
        "random": lambda o: rng.uniform(-1, 1, task.act_dim).astype(np.float32),
    }
    out = {}
    with training_progress(progress) as bar:
        tid = bar.add_task(f"diagnose-critic {task.name}", total=2 * pairs, completed=0, status="")
        for src_i, (source, behaviour) in enumerate(behaviours.items()):
            episodes = _episodes(task, behaviour, max(4, pairs // 16), seed * 1000 + src_i)
            chosen = [(e, int(rng.integers(len(episodes[e][1]) - 1))) for e in rng.integers(len(episodes), size=pairs)]
            S, A, G, Gc = [], [], [], []
            for e, t in chosen:
                ep_seed, observations, actions = episodes[e]
                g, gc = _monte_carlo(task, ep_seed, actions[:t], actions[t], policy_batch, rollouts, horizon, gamma, reward_scale,
                                     past_time_limit)
                S.append(observations[t]); A.append(actions[t]); G.append(g); Gc.append(gc)
                bar.advance(tid)
            out[source] = {"observations": np.asarray(S), "actions": np.asarray(A), "returns": np.asarray(G), "costs": np.asarray(Gc)}
    return out


def monte_carlo_summary(sample: dict) -> dict:
    """Mean Monte-Carlo return and cost of a source, and the mean standard error of a pair's value."""
    G, Gc = sample["returns"], sample["costs"]
    rollouts = G.shape[1]
    se = (lambda x: float(x.std(axis=1, ddof=1).mean() / np.sqrt(rollouts))) if rollouts > 1 else (lambda x: None)
    return {"mc_return_mean": float(G.mean()), "mc_cost_mean": float(Gc.mean()),
            "mc_return_standard_error": se(G), "mc_cost_standard_error": se(Gc)}


def score_critics(state, sample: dict, obs_stats, cost_reduce: str) -> dict:
    """A SAC-Lag state's reward critic (min over the ensemble) and cost critic (``cost_reduce``) against a
    source's Monte-Carlo values (each pair's mean over its rollouts): Spearman, means, mean absolute error."""
    from scipy.stats import spearmanr

    from o2o.agents.sac_lag import reduce_costs

    mean, std = obs_stats
    S = jnp.asarray((sample["observations"] - mean) / std)
    A = jnp.asarray(sample["actions"])
    G, Gc = sample["returns"].mean(axis=1), sample["costs"].mean(axis=1)
    q = np.asarray(state.critic.apply_fn(state.critic.params, S, A).min(axis=0))
    qc = np.asarray(reduce_costs(state.cost_critic.apply_fn(state.cost_critic.params, S, A), cost_reduce))
    return {
        "reward_spearman": _spearman(spearmanr, q, G),
        "cost_spearman": _spearman(spearmanr, qc, Gc),
        "q_mean": float(q.mean()),
        "qc_mean": float(qc.mean()),
        "reward_abs_error": float(np.abs(q - G).mean()),
        "cost_abs_error": float(np.abs(qc - Gc).mean()),
    }


def diagnose_critic(run_dir, *, pairs: int = 64, rollouts: int = 3, horizon: int | None = None, discounted: bool = True,
                    to_episode_end: bool = False, seed: int = 0, progress: bool = True):
    from o2o.bridge.pretrained import load_pretrained
    from o2o.config import load_yaml
    from o2o.envs import get_task
    from o2o.loops.finetune import agent_init_key, build_agent
    from o2o.loops.marvel import load_bridge
    from o2o.runconfig import finetune_config_class
    from o2o.methods import get_method
    from o2o.runs.rundir import FINETUNE, run_info

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise RunDirError(f"'{run_dir}' is not a run directory (no config.yaml)")
    if run_info(run_dir)["kind"] != FINETUNE:
        raise ConfigError(f"'{run_dir}' is not a fine-tuning run; diagnose-critic reads runs of `o2o finetune` with VPA")
    saved = load_yaml(run_dir / "config.yaml")
    cfg = load_run_config(finetune_config_class(saved["method"]), saved)
    if not get_method(cfg.method).vpa:
        raise ConfigError(f"'{run_dir}' ran method '{cfg.method}', which has no VPA stage to compare before/after")
    if pairs < 2 or rollouts < 1:
        raise ConfigError("--pairs must be >= 2 and --rollouts >= 1")
    if horizon is not None and horizon < 1:
        raise ConfigError(f"--horizon must be >= 1 (got {horizon})")
    task = get_task(cfg.task)
    spec = get_method(cfg.method)
    pre = load_pretrained(cfg.pretrained, task=task.name, need_cost_critic=cfg.vpa.init == "pretrained")
    before = build_agent(cfg, spec, pre, agent_init_key(cfg.seed))  # the critics VPA started from
    loaded = load_bridge(run_dir / "bridge", before)
    if loaded is None:
        raise RunDirError(f"'{run_dir}/bridge' holds no aligned agent (the run stopped during VPA); resume the run first")
    after, _ = loaded
    a = cfg.agent
    gamma = a.gamma if discounted else 1.0
    # past the time limit only for a discounted value: an undiscounted sum has no horizon of its own
    past_time_limit = discounted and not to_episode_end
    if horizon is None and past_time_limit:
        horizon = tail_horizon(gamma)
    result = {"run": str(run_dir), "task": task.name, "method": cfg.method, "pretrained": cfg.pretrained, "pairs": pairs,
              "rollouts": rollouts, "gamma": gamma, "horizon": horizon, "past_time_limit": past_time_limit,
              "time_limit": task.horizon, "sources": {}}
    samples = monte_carlo_pairs(task, before.actor, pre.obs_stats, a.reward_scale, gamma, pairs=pairs, rollouts=rollouts,
                                horizon=horizon, past_time_limit=past_time_limit, seed=seed, progress=progress)
    for source, sample in samples.items():
        entry = monte_carlo_summary(sample)
        for name, state in (("before", before), ("after", after)):
            entry[name] = score_critics(state, sample, pre.obs_stats, a.cost_reduce)
        result["sources"][source] = entry
    out = run_dir / "diagnose_critic.json"
    out.write_text(json.dumps(result, indent=2))
    md = out.with_suffix(".md")
    md.write_text(format_table(result))
    return result, md


def _spearman(spearmanr, x, y) -> float | None:
    if np.std(x) == 0 or np.std(y) == 0:
        return None  # undefined (e.g. no cost anywhere): reported as n/a, not as 0
    return float(spearmanr(x, y).statistic)


def format_table(result: dict) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:+.3f}"
    num = lambda v: "n/a" if v is None else f"{v:.2f}"
    if result.get("past_time_limit"):
        reach = f"{result['horizon']} steps after the pair, past the task's {result['time_limit']}-step time limit"
    elif result.get("horizon") is not None:
        reach = f"at most {result['horizon']} steps after the pair, ending at the time limit"
    else:
        reach = "to the episode's end"
    lines = [
        f"# Critic vs Monte-Carlo: {result['task']} ({result['run']})",
        "",
        f"Spearman rank correlation of the critics with Monte-Carlo returns of the pre-trained policy; {result['pairs']} "
        f"state-actions per source, {result['rollouts']} rollouts each ({reach}), gamma {result['gamma']}. MC s.e.: the "
        "mean standard error of a pair's Monte-Carlo value (an exact critic's error is of that size).",
        "",
        "| source | critic | before VPA | after VPA | MC mean | MC s.e. | critic mean before | after | mean abs. error before | after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for source, e in result["sources"].items():
        b, a = e["before"], e["after"]
        lines.append(f"| {source} | reward Q | {fmt(b['reward_spearman'])} | {fmt(a['reward_spearman'])} | {e['mc_return_mean']:.2f} | "
                     f"{num(e.get('mc_return_standard_error'))} | "
                     f"{b['q_mean']:.2f} | {a['q_mean']:.2f} | {b['reward_abs_error']:.2f} | {a['reward_abs_error']:.2f} |")
        lines.append(f"| {source} | cost Qc | {fmt(b['cost_spearman'])} | {fmt(a['cost_spearman'])} | {e['mc_cost_mean']:.2f} | "
                     f"{num(e.get('mc_cost_standard_error'))} | "
                     f"{b['qc_mean']:.2f} | {a['qc_mean']:.2f} | {b['cost_abs_error']:.2f} | {a['cost_abs_error']:.2f} |")
    return "\n".join(lines) + "\n"
