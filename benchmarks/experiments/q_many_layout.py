"""A/B of the layout of cql.q_many (also used by CPQ and BEAR-Lag): Q of n sampled actions per state
evaluated as a [B, n] batch (before) or as one flattened [B * n] batch (now), same numbers up to
float reassociation. One process, both trainers compiled first, then interleaved repeats.

    .venv/bin/python benchmarks/experiments/q_many_layout.py cql Hopper-medium
    .venv/bin/python benchmarks/experiments/q_many_layout.py cpq BallCircle-dsrl
"""
import time, jax, jax.numpy as jnp, numpy as np, sys
from o2o.agents import cql
from o2o.presets import resolve_pretrain_config
from o2o.loops.offline import OfflineTrainer
old_q = lambda apply_fn, params, o, a: apply_fn(params, jnp.broadcast_to(o[:, None, :], a.shape[:2] + o.shape[-1:]), a)
new_q = cql.q_many
algo, ds = sys.argv[1], sys.argv[2]
cfg = resolve_pretrain_config(algo, ds, overrides=["offline.steps_per_call=50","offline.eval_every=1000000","offline.steps=1000000"])
res = {}
import o2o.agents.cpq as cpq, o2o.agents.bear_lag as bl
def setq(f):
    cql.q_many = f
    for m in (cpq, bl):
        if hasattr(m, "q_many"): m.q_many = f
trainers = {}
for name, f in (("old", old_q), ("new", new_q)):
    setq(f)
    from o2o.loops import offline
    offline._update_many.cache_clear()
    tr = OfflineTrainer(cfg); tr.step(); trainers[name] = tr
times = {"old": [], "new": []}
for r in range(3):
    for name in ("old", "new"):
        t = time.perf_counter(); trainers[name].step(); times[name].append(time.perf_counter() - t)
for k, v in times.items(): print(algo, k, f"{50/np.median(v):.2f} upd/s", [round(50/x,2) for x in v])
print("ratio new/old", np.median(times["old"]) / np.median(times["new"]))
