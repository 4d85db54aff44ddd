"""Issue #38, must-show 2: an exported policy acts as ``o2o.load_policy`` does, with NumPy only.

    python lab/api/export_check.py OUT_DIR RUN_DIR [RUN_DIR ...]

For each run: ``o2o export RUN --out OUT_DIR/<name>.npz``; 1,000 observations around the run's own
observation statistics (3 std wide, so the normalisation and any clip are exercised); the NumPy
forward pass (``o2o.export.numpy_policy``) in a fresh Python process, which prints whether JAX got
imported after acting; the max abs difference from ``o2o.load_policy(RUN)(obs)`` here.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np

import o2o

NUMPY_SIDE = """
import sys
import numpy as np
from o2o.export import numpy_policy
policy = numpy_policy(sys.argv[1])
np.save(sys.argv[3], policy(np.load(sys.argv[2])))
print(policy.actor, "jax" in sys.modules, "flax" in sys.modules)
"""

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
worst = 0.0
for i, run in enumerate(sys.argv[2:]):
    npz, obs_file, act_file = out / f"policy{i}.npz", out / f"obs{i}.npy", out / f"act{i}.npy"
    subprocess.run([Path(sys.executable).with_name("o2o"), "export", run, "--out", npz], check=True, capture_output=True)
    policy = o2o.load_policy(run)
    rng = np.random.default_rng(i)
    obs = (rng.normal(size=(1000, policy.observation_dim)) * 3 * policy.obs_std + policy.obs_mean).astype(np.float32)
    np.save(obs_file, obs)
    side = subprocess.run([sys.executable, "-c", NUMPY_SIDE, npz, obs_file, act_file], check=True, capture_output=True, text=True)
    actor, jax_imported, flax_imported = side.stdout.split()
    diff = float(np.max(np.abs(np.load(act_file) - policy(obs))))
    worst = max(worst, diff)
    print(f"{policy.kind:>8} {policy.algo:<8} {actor:<13} {run}: max |numpy - load_policy| over {len(obs)} obs = {diff:.1e}; "
          f"numpy side: 'jax' in sys.modules = {jax_imported}, 'flax' = {flax_imported}")
    assert jax_imported == "False" and flax_imported == "False"
print(f"worst: {worst:.1e}")
assert worst < 1e-5
