"""Online collection speed: env steps/s of o2o's ``Collector`` vs the raw env step rate.

For each task (default BallCircle, CarRun, Hopper):
- raw env: ``gym.make(env_id)`` (no wrappers beyond what gym.make adds), a random NumPy policy,
  ``step`` in a loop with ``reset`` at episode ends: the rate the simulator itself allows;
- o2o ``Collector(task, num_envs, seed).collect(policy, num_steps=n)`` for num_envs 1 and 4 with
  (i) a random NumPy policy (the collector's own bookkeeping cost), (ii) the jitted o2o SAC
  actor, ``sac.actor_actions(state.actor, obs, jax.random.fold_in(key, step), deterministic=False)``
  with the per-step key made on the host ("host fold_in"), and (iii) the same with ``fold_in``
  inside the jitted call ("fold_in in jit", what ``OnlineTrainer.policy_step`` does). One batched
  policy call per env step of all envs.

Envs are created once per contestant (creation is not timed) and the repeats are interleaved.

    .venv/bin/python benchmarks/bench_collection.py            # full run (~3-5 min)
    .venv/bin/python benchmarks/bench_collection.py --quick    # smoke test
    .venv/bin/python benchmarks/bench_collection.py --tasks BallCircle Hopper --num-envs 1 4

Writes ``benchmarks/results/collection.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    interleaved,
    load_average,
    load_note,
    machine_info,
    markdown_table,
    print_table,
    write_results,
)


def raw_env_contestant(task, seed: int = 0):
    import gymnasium as gym
    import numpy as np

    if task.family == "bullet":
        import bullet_safety_gym  # noqa: F401  (registers the Safety*-v0 ids)
    env = gym.make(task.env_id)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    shape = env.action_space.shape
    env.reset(seed=seed)

    def run(steps: int) -> None:
        for _ in range(steps):
            action = rng.uniform(low, high, shape).astype(np.float32)
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    return run, env


def random_policy(num_envs: int, act_dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1.0, 1.0, (num_envs, act_dim)).astype(np.float32)


def sac_policy(obs_dim: int, act_dim: int, seed: int = 0, fused: bool = False):
    """The jitted o2o SAC actor as a collection policy. ``fused=False``: the per-step key made on the
    host, ``jax.random.fold_in(key, step)``, then ``sac.actor_actions``; ``fused=True``: fold_in inside
    the jitted call (what ``OnlineTrainer``'s ``policy_step`` does)."""
    import jax
    import numpy as np

    from o2o.agents import sac

    state = sac.init(jax.random.PRNGKey(seed), obs_dim, act_dim, sac.SACConfig())
    base = jax.random.PRNGKey(seed + 1)
    step = [0]

    @jax.jit
    def fused_step(actor, obs, key, i):
        return sac.actor_actions(actor, obs, jax.random.fold_in(key, i), deterministic=False)

    def policy(obs):
        step[0] += 1
        if fused:
            return np.asarray(fused_step(state.actor, obs, base, step[0]))
        key = jax.random.fold_in(base, step[0])
        return np.asarray(sac.actor_actions(state.actor, obs, key, deterministic=False))

    return policy


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short repeats: a smoke test")
    p.add_argument("--tasks", nargs="*", default=["BallCircle", "CarRun", "Hopper"])
    p.add_argument("--num-envs", nargs="*", type=int, default=[1, 4])
    p.add_argument("--steps", type=int, default=None, help="env steps per timed repeat (default 2000, quick 200)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 2)")
    p.add_argument("--name", default="collection")
    args = p.parse_args(argv)

    from o2o.envs import Collector, get_task

    steps = args.steps or (200 if args.quick else 2000)
    repeats = args.repeats or (2 if args.quick else 5)
    info = machine_info()
    before = load_average()
    print(f"machine: {info['cores']} cores, {info['cpu']}, load {before}")

    rows, results, closers = [], {}, []
    for name in args.tasks:
        task = get_task(name)
        contestants = {}
        raw_run, env = raw_env_contestant(task)
        closers.append(env)
        contestants["raw env (gym.make, random numpy policy)"] = (raw_run, steps)
        for n in args.num_envs:
            collector = Collector(task, n, seed=0)
            closers.append(collector)
            rand = random_policy(n, task.act_dim)
            actor = sac_policy(task.obs_dim, task.act_dim)
            actor_fused = sac_policy(task.obs_dim, task.act_dim, fused=True)
            steps_n = max(n, steps // n * n)
            contestants[f"Collector num_envs={n}, random numpy policy"] = (
                lambda k, c=collector, pol=rand: c.collect(pol, num_steps=k), steps_n)
            contestants[f"Collector num_envs={n}, SAC actor, host fold_in"] = (
                lambda k, c=collector, pol=actor: c.collect(pol, num_steps=k), steps_n)
            contestants[f"Collector num_envs={n}, SAC actor, fold_in in jit"] = (
                lambda k, c=collector, pol=actor_fused: c.collect(pol, num_steps=k), steps_n)
        print(f"{task.name} ({task.env_id}, obs {task.obs_dim}, act {task.act_dim}):")
        timings = interleaved(contestants, repeats=repeats, warmup=1)
        raw = timings["raw env (gym.make, random numpy policy)"].median
        results[task.name] = {}
        for cname, t in timings.items():
            overhead_us = (1e6 / t.median - 1e6 / raw) if cname.startswith("Collector") else 0.0
            rows.append([task.name, cname, t.median, t.best, f"{min(t.rates):.0f}-{max(t.rates):.0f}",
                         f"{100 * t.median / raw:.0f}%", f"{overhead_us:+.0f}" if cname.startswith("Collector") else "-"])
            results[task.name][cname] = {**t.as_dict(), "fraction_of_raw": t.median / raw,
                                         "overhead_us_per_step": overhead_us}
    for c in closers:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass
    after = load_average()
    note = load_note(before, after)
    headers = ["task", "collection", "env steps/s (median)", "best", "range", "% of raw", "extra us/step"]
    title = "Online collection: env steps/s (all envs together) vs the raw env step rate"
    print_table(title, headers, rows)
    facts = [
        f"Command: `{info['command']}` ({repeats} interleaved repeats of {steps} env steps).",
        f"Machine: {info['cores']} cores ({info['cpu']}); jax {info['jax']}; {note}.",
        "Raw env: `gym.make(env_id)` stepped with uniform random actions, reset at episode ends. "
        "Collector: `Collector(task, num_envs, seed=0).collect(policy, num_steps=n)`; the SAC actor is "
        "`sac.actor_actions` (jitted, untrained 2x256 actor) with a per-step key from `jax.random.fold_in`, "
        "made on the host (host fold_in) or inside one jitted call with the actor (fold_in in jit). "
        "extra us/step = 1e6/rate - 1e6/raw rate (per env step of all envs together).",
    ]
    print("\n".join(facts))
    md = f"## {title}\n\n{markdown_table(headers, rows)}\n\n" + "\n".join(f"- {f}" for f in facts) + "\n"
    payload = {"machine": info, "load_before": before, "load_after": after, "quick": args.quick,
               "steps": steps, "repeats": repeats, "results": results}
    paths = write_results(args.name, payload, md)
    print("wrote", *map(str, paths))
    return payload


if __name__ == "__main__":
    main()
