"""o2o's Python API in one script (docs/api.md): pre-train, fine-tune, load both policies, act, export.

    python examples/api_example.py [OUT_DIR]      # tiny budgets: well under a minute on 2 CPU cores

Without OUT_DIR the runs go to a new temporary directory.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

import o2o
from o2o.export import numpy_policy  # NumPy only: acts with an exported policy without JAX

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="o2o-api-"))

# 1. Pre-train BC-Safe on the embedded BallCircle dataset (200 gradient steps).
pretrained, summary = o2o.pretrain("bc-safe", "BallCircle-dsrl-small", out=out / "pretrain", progress=False, overrides={
    "offline.steps": 200, "offline.steps_per_call": 100, "offline.eval_every": 200, "offline.eval_episodes": 1,
    "agent.hidden_dims": [32, 32]})
print(f"pre-trained {pretrained}: eval return {summary['final_eval_return']:.1f}, cost {summary['final_eval_cost']:.1f}")

# 2. Fine-tune it online with Marvel: VPA fits fresh critics to the policy, then SAC-Lag with the aPID multiplier.
finetuned, summary = o2o.finetune("marvel", pretrained, out=out / "finetune", progress=False, overrides={
    "vpa.init": "fresh", "vpa.steps": 100, "vpa.steps_per_call": 50, "online.iterations": 1, "online.episodes_per_iteration": 1,
    "online.updates_per_iteration": 10, "online.eval_episodes": 1, "online.replay_capacity": 1000})
print(f"fine-tuned  {finetuned}: eval return {summary['final_eval_return']:.1f}, cost {summary['final_eval_cost']:.1f}")


# 3. Load both policies and play one episode each on the env o2o trains on.
def episode(policy, seed=0):
    env = o2o.make_env(policy.task, seed)
    (obs, _), ret, cost, done = env.reset(), 0.0, 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        ret, cost, done = ret + reward, cost + info["cost"], terminated or truncated
    return ret, cost


for run in (pretrained, finetuned):
    policy = o2o.load_policy(run)  # deterministic, observation normalisation inside: policy(obs) -> action
    print(f"{policy.kind:>9} {policy.algo} policy ({policy.observation_dim} -> {policy.action_dim}): "
          "episode return {:.1f}, cost {:.0f}".format(*episode(policy)))

# 4. Export the fine-tuned policy as plain arrays and check the NumPy forward pass against it.
path = o2o.export_policy(finetuned, out / "policy.npz")
exported, policy = numpy_policy(path), o2o.load_policy(finetuned)
obs = np.random.default_rng(0).normal(size=(1000, exported.observation_dim)).astype(np.float32)
difference = float(np.max(np.abs(exported(obs) - policy(obs))))
print(f"exported {path}: max |numpy_policy - load_policy| over 1000 observations = {difference:.1e}")
assert difference < 1e-5
