"""A run's deterministic policy as plain arrays (``o2o export RUN_DIR --out FILE.npz``) and the NumPy
forward pass that acts with them (``numpy_policy(FILE)``) where JAX is not installed.

This module imports NumPy only: ``numpy_policy`` (with this file copied next to it, if o2o itself is
not installed) is all a robot, a web service or another framework needs.

The file (``np.load(FILE, allow_pickle=False)`` reads it; strings are unicode arrays, no objects):

    format            "o2o-policy-1"
    task, algo        the task's name (o2o tasks) and the algorithm that trained the actor
    actor             "tanh_gaussian" (SAC, SAC-Lag, CPQ, BC-Safe, ...: action = tanh(mean)),
                      "gaussian" (IQL, PPO: the mean, tanh of the mean head's output) or
                      "deterministic" (TD3, TD3+BC: action = tanh(MLP(s)))
    activation        "relu", after each hidden layer (after its layer norm, where there is one)
    num_hidden        H, the number of hidden layers
    obs_mean, obs_std [obs_dim] float32: the network sees clip((obs - obs_mean) / obs_std, -obs_clip, obs_clip)
    obs_clip          float32 scalar (inf: no clip; PPO clips its normalised observations)
    hidden_kernel_i   [in, out] and hidden_bias_i [out], i = 0 .. H-1; hidden_ln_scale_i and
                      hidden_ln_bias_i after a hidden layer that has layer norm (epsilon 1e-6, Flax's)
    out_kernel        [hidden, act_dim] and out_bias [act_dim]: the mean head (tanh-Gaussian, Gaussian) or
                      the output layer (deterministic); the action is tanh of its output, in [-1, 1]^act_dim
                      (o2o's envs map that box onto the task's bounds)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FORMAT = "o2o-policy-1"
LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon


class NumpyPolicy:
    """``policy(obs) -> action`` from an exported file, NumPy only: one observation [obs_dim] ->
    [act_dim], or a batch [B, obs_dim] -> [B, act_dim]. Attributes ``task``, ``algo``, ``actor``,
    ``observation_dim``, ``action_dim`` and ``arrays`` (everything the file holds)."""

    def __init__(self, arrays: dict):
        if str(arrays.get("format")) != FORMAT or str(arrays.get("activation")) != "relu":
            raise ValueError(f"not an o2o policy file of format {FORMAT} (written by `o2o export`)")
        self.arrays = arrays
        self.task, self.algo, self.actor = str(arrays["task"]), str(arrays["algo"]), str(arrays["actor"])
        self.observation_dim, self.action_dim = arrays["obs_mean"].shape[0], arrays["out_bias"].shape[0]

    def __call__(self, obs) -> np.ndarray:
        p = self.arrays
        x = np.clip((np.asarray(obs, np.float32) - p["obs_mean"]) / p["obs_std"], -p["obs_clip"], p["obs_clip"])
        for i in range(int(p["num_hidden"])):
            x = x @ p[f"hidden_kernel_{i}"] + p[f"hidden_bias_{i}"]
            if f"hidden_ln_scale_{i}" in p:  # layer norm over the features, then scale and shift
                x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + LAYER_NORM_EPS)
                x = x * p[f"hidden_ln_scale_{i}"] + p[f"hidden_ln_bias_{i}"]
            x = np.maximum(x, 0.0)  # relu
        return np.tanh(x @ p["out_kernel"] + p["out_bias"])  # the (tanh-)Gaussian's mode, or the deterministic actor


def numpy_policy(path: str | Path) -> NumpyPolicy:
    """The policy exported to ``path`` (``o2o export``), as NumPy code."""
    with np.load(path, allow_pickle=False) as f:
        return NumpyPolicy({k: f[k] for k in f.files})


# ------------------------------------------------------------------------------ writing (o2o export)


def _leaf(tree: dict, *keys: str) -> np.ndarray:
    for k in keys:
        tree = tree[k]
    return np.asarray(tree, np.float32)


def _hidden_layers(mlp: dict) -> list[dict]:
    """The Dense (and LayerNorm) parameters of an ``o2o.nn.MLP``, in order."""
    dense = sorted((k for k in mlp if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
    norms = sorted((k for k in mlp if k.startswith("LayerNorm_")), key=lambda k: int(k.split("_")[1]))
    if set(mlp) - set(dense) - set(norms) or (norms and len(norms) not in (len(dense), len(dense) - 1)):
        raise ValueError(f"unexpected actor layers {sorted(mlp)}")
    layers = []
    for i, name in enumerate(dense):
        layer = {"kernel": _leaf(mlp, name, "kernel"), "bias": _leaf(mlp, name, "bias")}
        if i < len(norms):
            layer["ln_scale"], layer["ln_bias"] = _leaf(mlp, norms[i], "scale"), _leaf(mlp, norms[i], "bias")
        layers.append(layer)
    return layers


def policy_arrays(policy) -> dict[str, np.ndarray]:
    """The file's arrays for a loaded run policy (``o2o.load_policy``): its actor network, the
    observation normalisation and the names. Raises ValueError for an actor of another layout."""
    params = policy.actor_params["params"] if "params" in policy.actor_params else policy.actor_params
    if set(params) in ({"MLP_0", "Dense_0", "Dense_1"}, {"MLP_0", "Dense_0", "log_std"}):
        # TanhGaussianActor (trunk, mean head, log-std head) or GaussianActor (trunk, tanh mean head, log std)
        actor = "tanh_gaussian" if "Dense_1" in params else "gaussian"
        hidden = _hidden_layers(params["MLP_0"])
        out = {"kernel": _leaf(params, "Dense_0", "kernel"), "bias": _leaf(params, "Dense_0", "bias")}
    elif set(params) == {"MLP_0"}:  # DeterministicActor: tanh(MLP(s)), the MLP's last Dense is the output
        actor = "deterministic"
        *hidden, out = _hidden_layers(params["MLP_0"])
    else:
        raise ValueError(f"unexpected actor parameters {sorted(params)}")
    clip = np.inf if policy.obs_clip is None else policy.obs_clip
    arrays = {
        "format": np.array(FORMAT), "task": np.array(policy.task), "algo": np.array(policy.algo), "actor": np.array(actor),
        "activation": np.array("relu"), "num_hidden": np.array(len(hidden), np.int64),
        "obs_mean": np.asarray(policy.obs_mean, np.float32), "obs_std": np.asarray(policy.obs_std, np.float32),
        "obs_clip": np.array(clip, np.float32), "out_kernel": out["kernel"], "out_bias": out["bias"],
    }
    for i, layer in enumerate(hidden):
        arrays.update({f"hidden_{name}_{i}": value for name, value in layer.items()})
    return arrays


def write_policy(policy, path: str | Path) -> Path:
    """Write ``policy_arrays(policy)`` to the .npz file ``path`` atomically (a temporary file renamed)."""
    path = Path(path)
    arrays = policy_arrays(policy)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
