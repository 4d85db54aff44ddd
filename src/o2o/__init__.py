"""o2o: offline-to-online reinforcement learning, safe and unconstrained, in JAX.

The Python API (docs/api.md); ``import o2o`` stays cheap, each function imports what it needs:

    run, summary = o2o.pretrain("bc-safe", "BallCircle-dsrl-small", out="runs/p", overrides={"offline.steps": 2000})
    run, summary = o2o.finetune("marvel", run, out="runs/f", overrides={"online.iterations": 5})
    run, summary = o2o.train("sac-lag", "BallCircle", out="runs/t")
    policy = o2o.load_policy("runs/f")            # any run directory: deterministic policy(obs) -> action
    env = o2o.make_env("BallCircle", seed=0)      # the seeded gymnasium env o2o trains on
    o2o.export_policy("runs/f", "policy.npz")     # plain arrays; o2o.export.numpy_policy acts with NumPy only
"""

from __future__ import annotations

from o2o.version import __version__  # noqa: F401 (o2o.__version__)

__all__ = ["load_policy", "make_env", "pretrain", "finetune", "train", "export_policy"]


def load_policy(run_dir, checkpoint=None):
    """The deterministic policy of a run directory (``o2o pretrain``, ``train`` or ``finetune``, or a
    stage of ``o2o marvel`` / ``ocr``) at its latest checkpoint or at ``checkpoint`` (a step, or a
    ``ckpt_<step>`` directory): ``policy(obs) -> action`` on NumPy arrays, one observation
    ``[obs_dim]`` or a batch ``[B, obs_dim]``, with the run's observation normalisation applied.
    Attributes ``observation_dim``, ``action_dim``, ``task`` (name); see ``o2o.loops.policy.Policy``."""
    from o2o.loops.policy import load_policy as _load_policy

    return _load_policy(run_dir, checkpoint)


def make_env(task, seed: int = 0, render_size=None):
    """The gymnasium env of ``task`` (name, e.g. ``"BallCircle"``) that o2o trains and evaluates on:
    its time limit, actions in [-1, 1]^act_dim, float32 observations, ``info["cost"]`` on every step,
    and episodes that are a pure function of ``seed`` (``o2o.envs.make.SeededEnv``). With
    ``render_size=(width, height)``, ``env.render()`` returns RGB frames drawn on the CPU."""
    from o2o.envs import make_env as _make_env

    return _make_env(task, seed, render_size=render_size)


def pretrain(algo=None, dataset=None, **options):
    """``o2o pretrain`` as a function: offline pre-training of ``algo`` on ``dataset``; keyword options
    as the command's (``task``, ``steps``, ``seed``, ``seeds``, ``out``, ``resume``, ``defer_eval``,
    ``config``, ``overrides`` as a dict of dotted keys, ``progress``). Returns (run directory,
    summary). Details: ``o2o.api.pretrain``."""
    from o2o.api import pretrain as _pretrain

    return _pretrain(algo, dataset, **options)


def finetune(method=None, pretrained=None, **options):
    """``o2o finetune`` as a function: fine-tune the pre-trained run ``pretrained`` online with
    ``method``; keyword options as the command's (``task``, ``seed``, ``out``, ``resume``, ``config``,
    ``overrides`` as a dict of dotted keys, ``progress``). Returns (run directory, summary). Details:
    ``o2o.api.finetune``."""
    from o2o.api import finetune as _finetune

    return _finetune(method, pretrained, **options)


def train(algo=None, task=None, **options):
    """``o2o train`` as a function: an online agent from scratch on ``task``; keyword options as the
    command's (``seed``, ``out``, ``resume``, ``config``, ``overrides`` as a dict of dotted keys,
    ``progress``). Returns (run directory, summary). Details: ``o2o.api.train``."""
    from o2o.api import train as _train

    return _train(algo, task, **options)


def export_policy(run_dir, out, checkpoint=None):
    """``o2o export`` as a function: the deterministic policy of ``run_dir`` (latest checkpoint, or
    ``checkpoint``) as plain arrays in the .npz file ``out``; ``o2o.export.numpy_policy(out)`` acts
    with it using NumPy only. Returns the path written."""
    from o2o.api import export_policy as _export

    return _export(run_dir, out, checkpoint=checkpoint)[1]
