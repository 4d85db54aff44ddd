"""What a pre-trained CPQ policy's critics say about its own actions, against what its episodes cost.

CPQ's actor learns only from the sampled actions its cost critic calls safe (agg Qc(s,a) <= l), and
its reward bootstrap is cut wherever the next action's cost value is above l. So the cost critic's
error on the policy's *own* state-actions decides what the policy can learn. For each run this rolls
out the run's deterministic policy on the episodes of the run's own evaluations (so the return and cost
columns repeat its last evaluation's when given as many episodes) and compares, on
every visited (s, pi(s)):

- the cost critic's value agg_k Qc_k(s, a) (the run's ``cost_reduce``) with the Monte-Carlo discounted
  cost-to-go of the same episode from that step (gamma of the run; the time limit cuts the sum, so
  late steps have less ahead of them: compared on the first half of each episode, where at least 100
  of BallCircle's 200 steps remain and gamma^100 = 0.37);
- the fraction of those steps the critic calls unsafe (Qc > l) with the fraction that are (MC > l);
- the reward critic's min_j Q_j(s, a) with the Monte-Carlo discounted (scaled) return.

With ``--dataset`` it also prints the behaviour data's own Monte-Carlo values (the same discounted sums
over the dataset's episodes, all steps): the scale the critics' training metrics ``loss/qc_mean`` and
``loss/q_mean`` (on the data's state-actions, bootstrapped through the policy) can be read against; and,
on the data's states, how much of CQL(H)'s log-sum-exp gradient (``agent.reward_cql_alpha``) falls on
the actor's own actions, importance-sampled and plain (``lse_shares``).

    .venv/bin/python lab/offline/cpq_critic_check.py runs/sweeps/offline-cpq-cpu-ballcircle-25k/runs/*/*/seed*
    .venv/bin/python lab/offline/cpq_critic_check.py RUN_DIR --episodes 5 --dataset BallCircle-dsrl

Prints one markdown table (one row per run). Reads only the run directories (no pickle).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from o2o.bridge.reeval import monte_carlo_returns  # per step, the discounted sum to the episode's end


def check(run: Path, episodes: int) -> dict:
    import jax.numpy as jnp

    from o2o.agents import cpq
    from o2o.agents.sac_lag import reduce_costs
    from o2o.bridge.pretrained import load_pretrained
    from o2o.envs.collector import EVAL_STREAM, Collector
    from o2o.loops.evaluation import EVAL_SEED_OFFSET
    from o2o.loops.offline import offline_policy

    pre = load_pretrained(run, need_cost_critic=True)
    if pre.algo != "cpq":
        raise SystemExit(f"{run}: a {pre.algo} run; this check reads CPQ's critics")
    cfg = pre.config.agent
    state = pre.state
    policy = offline_policy("cpq", state.actor, pre.obs_mean, pre.obs_std)
    # the episodes of the run's own evaluations (o2o.loops.evaluation.evaluation_metrics)
    with Collector(pre.task, min(episodes, 5), pre.config.seed + EVAL_SEED_OFFSET, stream=EVAL_STREAM) as collector:
        rollout = collector.collect(policy, num_episodes=episodes)
    ends = rollout.terminals | rollout.timeouts
    obs = jnp.asarray((rollout.observations - pre.obs_mean) / pre.obs_std)
    actions = jnp.asarray(rollout.actions)
    qc = np.asarray(reduce_costs(state.cost_critic.apply_fn(state.cost_critic.params, obs, actions), cfg.cost_reduce))
    q = np.asarray(state.critic.apply_fn(state.critic.params, obs, actions).min(axis=0))
    mc_cost = monte_carlo_returns(rollout.costs, rollout.terminals, rollout.timeouts, cfg.gamma)
    mc_return = cfg.reward_scale * monte_carlo_returns(rollout.rewards, rollout.terminals, rollout.timeouts, cfg.gamma)
    # steps in the first half of their episode (the MC sums there see at least half the horizon)
    index_in_episode = np.zeros(len(ends), int)
    for i in range(1, len(ends)):
        index_in_episode[i] = 0 if ends[i - 1] else index_in_episode[i - 1] + 1
    first_half = index_in_episode < cfg.horizon // 2
    threshold = cpq.cost_threshold(pre.cost_limit, cfg.horizon, cfg.gamma)
    return {
        "run": str(run),
        "step": pre.step,
        "episodes": len(rollout.episode_returns),
        "return": float(np.mean(rollout.episode_returns)),
        "cost": float(np.mean(rollout.episode_costs)),
        "l": threshold,
        "qc": float(qc[first_half].mean()),
        "mc_cost": float(mc_cost[first_half].mean()),
        "critic_unsafe": float((qc[first_half] > threshold).mean()),
        "mc_unsafe": float((mc_cost[first_half] > threshold).mean()),
        "q": float(q[first_half].mean()),
        "mc_return": float(mc_return[first_half].mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="CPQ pre-training run directories")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run")
    p.add_argument("--dataset", default=None, help="also print this dataset's Monte-Carlo values (the first run's gamma, l, reward scale)")
    args = p.parse_args()
    from o2o.errors import O2OError

    try:
        report(args)
    except O2OError as e:  # not a run, no checkpoint, no cost critic, unknown dataset: one line, not a traceback
        raise SystemExit(f"cpq_critic_check: {e}") from None


def report(args) -> None:
    rows = [check(run, args.episodes) for run in args.runs]
    print("(first half of each episode; l = " + f"{rows[0]['l']:.2f}; Qc = the cost critics' aggregated value on (s, pi(s)); "
          "MC = the discounted sum of the episode's own costs / scaled rewards from that step)\n")
    print("| run | step | return | cost | Qc(s, pi(s)) | MC cost-to-go | critic: unsafe | MC: unsafe | Q(s, pi(s)) | MC return (x reward scale) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = "/".join(Path(r["run"]).parts[-3:])
        print(f"| {name} | {r['step']} | {r['return']:.1f} | {r['cost']:.1f} | {r['qc']:.2f} | {r['mc_cost']:.2f} | "
              f"{100 * r['critic_unsafe']:.0f}% | {100 * r['mc_unsafe']:.0f}% | {r['q']:.2f} | {r['mc_return']:.2f} |")
    if args.dataset:
        from o2o.bridge.pretrained import load_pretrained
        from o2o.data import load_hdf5, sha256_data
        from o2o.loops.datagen import resolve_dataset

        cfg = load_pretrained(args.runs[0]).config.agent
        data = load_hdf5(resolve_dataset(args.dataset))
        mc_cost = monte_carlo_returns(data.costs, data.terminals, data.timeouts, cfg.gamma)
        mc_return = cfg.reward_scale * monte_carlo_returns(data.rewards, data.terminals, data.timeouts, cfg.gamma)
        print(f"\n{args.dataset} (transitions sha256 {sha256_data(data)[:16]}), the behaviour's own values over its "
              f"{data.num_transitions} transitions: MC cost-to-go mean {mc_cost.mean():.2f}, median {np.median(mc_cost):.2f}, "
              f"{100 * (mc_cost <= rows[0]['l']).mean():.0f}% <= l; MC return x {cfg.reward_scale} mean {mc_return.mean():.2f}")
        print("\nThe reward critics' CQL(H) log-sum-exp on 2048 of the data's states (4 actions per source, as "
              "agent.reward_cql_n_actions=4), whether or not the run used agent.reward_cql_alpha: the share of its "
              "gradient on the actor's own actions pi(.|s), importance-sampled (CQL's code: each sample minus its "
              "log density) and plain.\n")
        print("| run | step | log-density of the actor's actions | Q: uniform / actor / data actions | share on the actor's actions: importance-sampled | plain |")
        print("|---|---|---|---|---|---|")
        for run in args.runs:
            r = lse_shares(run, data)
            name = "/".join(Path(run).parts[-3:])
            print(f"| {name} | {r['step']} | {r['log_pi']:.1f} | {r['q_random']:.1f} / {r['q_current']:.1f} / {r['q_data']:.1f} | "
                  f"{100 * r['share_is']:.0f}% | {100 * r['share_plain']:.0f}% |")


def lse_shares(run: Path, data, num_states: int = 2048, n: int = 4) -> dict:
    """How much of the regulariser's push-down lands on the actor's own actions: d lse / d Q(s, a) is the
    softmax weight of that sample among all of them, summed here over the n pi(.|s) samples, averaged over
    states and critics. Importance sampling subtracts log pi(a|s), which for a near-deterministic actor is
    large, so its actions weigh ~exp(-log pi) there."""
    import jax
    import jax.numpy as jnp

    from o2o.agents.cql import cql_logsumexp, cql_samples, q_many
    from o2o.bridge.pretrained import load_pretrained

    pre = load_pretrained(run)
    state = pre.state
    idx = np.random.default_rng(0).choice(data.num_transitions, min(num_states, data.num_transitions), replace=False)
    norm = lambda o: jnp.asarray((o - pre.obs_mean) / pre.obs_std)  # noqa: E731
    batch = {"observations": norm(data.observations[idx]), "next_observations": norm(data.next_observations[idx]),
             "actions": jnp.asarray(data.actions[idx])}
    samples = cql_samples(state.actor, batch, tuple(jax.random.split(jax.random.PRNGKey(0), 3)), n)
    apply_fn, params, obs = state.critic.apply_fn, state.critic.params, batch["observations"]
    q_random, q_current, q_next = (q_many(apply_fn, params, obs, samples[k]) for k in ("random_actions", "current_actions", "next_actions"))
    q_data = apply_fn(params, obs, batch["actions"])
    act_dim = batch["actions"].shape[-1]

    def share(importance_sample: bool) -> float:  # d sum(lse) / d Q(s, a ~ pi(.|s)): each sample's softmax weight
        lse = lambda q_cur: cql_logsumexp(q_random, q_cur, q_next, q_data, samples["current_log_probs"],  # noqa: E731
                                          samples["next_log_probs"], act_dim, importance_sample).sum()
        return float(jax.grad(lse)(q_current).sum(-1).mean())

    return {"step": pre.step, "log_pi": float(samples["current_log_probs"].mean()), "q_random": float(q_random.mean()),
            "q_current": float(q_current.mean()), "q_data": float(q_data.mean()),
            "share_is": share(True), "share_plain": share(False)}


if __name__ == "__main__":
    main()
