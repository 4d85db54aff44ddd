"""Where did an offline run go non-finite? Replays it from one of its checkpoints: the run's own jitted
calls up to the last finite chunk, then that chunk one update at a time with the same per-step keys,
and prints the first update whose metrics or state hold a NaN or inf, with the metrics before it.

    O2O_DATA_DIR=... .venv/bin/python lab/offline/first_nonfinite.py RUN_DIR CHECKPOINT_STEP [--chunks 1]

RUN_DIR is an `o2o pretrain` run (the dataset its config names must resolve); `--chunks` is how many
whole calls (offline.steps_per_call updates each) to run before stepping one update at a time.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("step", type=int)
    p.add_argument("--chunks", type=int, default=1)
    args = p.parse_args()

    from o2o.config import from_dict, load_yaml
    from o2o.data.replay import replay_sample
    from o2o.loops.offline import OfflineTrainer
    from o2o.runconfig import pretrain_config_class
    from o2o.runs.checkpoint import load_checkpoint

    saved = load_yaml(f"{args.run_dir}/config.yaml")
    trainer = OfflineTrainer(from_dict(pretrain_config_class(saved["algo"]), saved))
    arrays, host = load_checkpoint(f"{args.run_dir}/checkpoints/ckpt_{args.step}", template=trainer.checkpoint_arrays())
    trainer.restore(arrays, host)
    for _ in range(args.chunks):
        row = trainer.step()
        print(trainer.counters["steps"], {k: round(v, 4) for k, v in row.items() if k.startswith("loss/")})
    start = trainer.counters["steps"]
    n = trainer.data.call_steps(start)
    trainer.key, update_key = jax.random.split(trainer.key)  # as OfflineTrainer.step, then make_update_many
    keys = jax.random.split(update_key, n)
    update = jax.jit(trainer.spec.module.update)
    state, prev = trainer.state, None
    for i in range(n):
        sample_key, key = jax.random.split(keys[i])
        batch = replay_sample(trainer.buffer, sample_key, trainer.data.agent_cfg.batch_size)
        new, metrics = update(state, batch, key)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items() if np.ndim(v) == 0}
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        bad_state = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(new)
                     if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact) and not bool(jnp.isfinite(x).all())]
        if bad or bad_state:
            print(f"first non-finite update: step {start + i + 1}; metrics {bad}; state {bad_state[:6]}")
            print("this update:", metrics)
            print("the one before:", prev)
            return
        state, prev = new, {k: round(v, 5) for k, v in metrics.items()}
    print(f"no non-finite value in updates {start + 1}-{start + n} taken one at a time (a jitted chunk may round differently)")


if __name__ == "__main__":
    main()
