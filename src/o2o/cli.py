"""The ``o2o`` command line.

    o2o tasks                                   the task registry
    o2o train --algo sac-lag --task BallCircle --seed 0 --out runs/x [--set agent.actor_lr=1e-4]
    o2o train --resume runs/x                   continue an interrupted run exactly
    o2o eval RUN_DIR                            evaluate a run's latest checkpoint
    o2o eval RUN_DIR --render episode.gif       a video of the policy, its return and cost drawn on the frames
    o2o export RUN_DIR --out policy.npz         the policy as plain arrays (o2o.export.numpy_policy: NumPy only)
    o2o config --algo sac-lag                   every config key, its type, default and meaning
    o2o demo                                    the Marvel pipeline on the embedded BallCircle dataset, 3 seeds

Bad input (unknown task, wrong config key, broken dataset, ...) ends with one line
``o2o: error: ...`` and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from o2o.errors import O2OError, RunFinished

EPILOG = (
    "Every command ends by printing where its outputs are. Environment: O2O_DATA_DIR (datasets, default "
    "~/.o2o/datasets), O2O_CHECKPOINT_EVERY_S (a training run also checkpoints once this many seconds passed "
    "since its last checkpoint, default 600, 0 = off), O2O_PROGRESS_EVERY (seconds between progress lines off a "
    "terminal, default 60), O2O_WANDB_PROJECT (also log to this Weights & Biases project, as --wandb). Docs: docs/ in "
    "the o2o repository."
)


def _add_config_args(
    p: argparse.ArgumentParser, example: str = "--set agent.actor_lr=1e-4 --set online.iterations=50"
) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML file laid over the presets (same keys as --set)")
    p.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help=f"override one config key, e.g. {example} (repeatable)",
    )


def _add_pipeline_args(p: argparse.ArgumentParser, name: str, example: str) -> None:
    """The arguments every end-to-end pipeline command shares (o2o marvel, o2o ocr)."""
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the --budget file's, else 0)")
    p.add_argument(
        "--pretrain-seed", type=int, default=None,
        help="start every fine-tuning seed from this one pre-training seed (default: one pre-training run per seed)",
    )
    p.add_argument("--budget", metavar="FILE", help="YAML with per-stage budgets {data: ..., pretrain: ..., finetune: ...}, "
                   "optionally naming task, dataset, offline_algo, methods and seeds as defaults of the options (e.g. "
                   "src/o2o/configs/pipeline-demo.yaml)")
    p.add_argument("--dry-run", action="store_true", help="check every stage's config and print the plan (stages, their "
                   "budgets, what is reused or continued) with a rough time estimate; write nothing")
    p.add_argument("--out", metavar="DIR", help=f"pipeline directory (default runs/{name}-<Task>)")
    p.add_argument(
        "--set", dest="overrides", metavar="STAGE.KEY=VALUE", action="append", default=[],
        help=f"override one key of one stage, e.g. {example}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="o2o",
        description="Offline-to-online reinforcement learning, safe and unconstrained, in JAX.",
        epilog=EPILOG,
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs stay quiet)")
    parser.add_argument("--wandb", metavar="PROJECT", help="also log every training run's metrics to this Weights & Biases "
                        "project (sets O2O_WANDB_PROJECT; needs `pip install wandb`; WANDB_MODE=offline keeps them on disk)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("tasks", help="list the tasks: spaces, horizon, cost limit, reference returns")

    p = sub.add_parser(
        "train",
        help="train an online agent (sac, sac-lag, td3, ppo) from scratch",
        description="Train an online agent from scratch into a run directory (config.yaml, metrics.csv, "
        "TensorBoard events in tb/, checkpoints/, summary.json). Config: the algorithm's preset, then the "
        "task's preset, then --config FILE, then --set overrides.",
    )
    p.add_argument("--algo", choices=["sac", "sac-lag", "td3", "ppo"], help="online algorithm")
    p.add_argument("--task", help="task name (see `o2o tasks`), e.g. BallCircle, Hopper")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--out", metavar="DIR", help="run directory to create (default runs/<algo>-<task>-s<seed>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    _add_config_args(p)

    p = sub.add_parser(
        "eval", help="evaluate a run's latest checkpoint (--record: every checkpoint of pre-training runs)",
        description="Deterministic evaluation of the latest checkpoint of RUN_DIR on its task (written to RUN_DIR/eval.json). "
        "With --record (pre-training runs): evaluate every checkpoint not evaluated yet and write the results into the "
        "run's metrics.csv at the checkpoint's step and the final one into summary.json, as a live evaluation would have "
        "(for runs trained with --defer-eval on a machine without the simulator). RUN_DIR may then also be a sweep "
        "directory or any folder: every pre-training run under it is recorded.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, default=None,
                   help="evaluation episodes (default 10; with --record the run's offline.eval_episodes)")
    p.add_argument("--record", action="store_true", help="evaluate every unevaluated checkpoint into metrics.csv and summary.json")
    p.add_argument("--checkpoint", metavar="K", help="evaluate checkpoint K (the step of RUN_DIR/checkpoints/ckpt_K, or its path) instead of the latest")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the evaluation episodes (default: the run's own evaluation episodes; with --render 0)")
    p.add_argument("--render", metavar="FILE", help="play --episodes episodes (default 1) of the policy and write them, with "
                   "their return and cost so far, to FILE.gif (small) or FILE.mp4 (needs imageio-ffmpeg); drawn on the CPU")

    p = sub.add_parser(
        "export",
        help="write a run's deterministic policy as plain arrays (.npz) for a NumPy-only forward pass",
        description="The actor of RUN_DIR's latest checkpoint (or of --checkpoint K) with its architecture, the "
        "observation normalisation and the task's name, as plain arrays in a .npz file (np.load(FILE, allow_pickle=False) "
        "reads it). o2o.export.numpy_policy(FILE) acts with it using NumPy only (no JAX). Any run directory: "
        "o2o pretrain, train, finetune, or a pipeline's stage.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the file to write")
    p.add_argument("--checkpoint", metavar="K", help="export checkpoint K (the step of RUN_DIR/checkpoints/ckpt_K, or its path) instead of the latest")

    p = sub.add_parser(
        "config",
        help="list every config key of an algorithm or method with type, default and help",
        description="Every config key of an online algorithm (o2o train), an offline one (o2o pretrain) or a "
        "fine-tuning method (o2o finetune), with its type, resolved value and meaning.",
    )
    p.add_argument(
        "--algo", default="sac-lag",
        help="online (sac, sac-lag, td3, ppo) or offline (cpq, bear-lag, bc-safe, bc, cql, iql, td3bc) algorithm",
    )
    p.add_argument("--method", default=None, help="show a fine-tuning method's config instead (o2o finetune --method)")
    p.add_argument("--task", default=None, help="show the values resolved for this task's presets")

    p = sub.add_parser(
        "pretrain",
        help="offline pretraining (cpq, bear-lag, bc-safe, bc, cql, iql, td3bc) on a dataset",
        description="Train an offline agent on a dataset (name in the data directory, or path), evaluating it on the "
        "live task every offline.eval_every steps. The run directory's checkpoint holds everything the next stages "
        "need (actor, critics, cost critics, VAE, multipliers, observation statistics). Resumable with --resume.",
    )
    p.add_argument("--algo", help="offline algorithm: cpq, bear-lag, bc-safe, bc, cql, iql, td3bc")
    p.add_argument("--dataset", help="dataset name (o2o data list) or path to an HDF5 file")
    p.add_argument("--task", help="task (default: from the dataset's metadata)")
    p.add_argument("--steps", type=int, help="gradient steps (offline.steps)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the one run (default 0)")
    p.add_argument(
        "--seeds", nargs="+", metavar="S",
        help="train these seeds of the config as ONE vectorised program (seeds as a batch axis, one shared dataset "
        "buffer) into one ordinary run directory per seed, DIR/seed<k>; each seed's numbers are those of its own "
        "--seed run up to float rounding. On a CPU it does not pay (docs/experiments.md, 'Seeds as a batch axis'); on a "
        "GPU it does: 3 CPQ seeds train at 1.93x the updates/s of one on an H200 (docs/benchmarks.md, 'Offline updates "
        "per second on a GPU'). Not with --seed. '0 1 2' or '0,1,2'",
    )
    p.add_argument(
        "--out", metavar="DIR",
        help="run directory (default runs/pretrain-<algo>-<dataset>-s<seed>); with --seeds the folder of the seeds' "
        "run directories DIR/seed<k> (default runs/pretrain-<algo>-<dataset>)",
    )
    p.add_argument(
        "--resume", metavar="DIR",
        help="continue the run in DIR; a folder of --seeds run directories continues all its seeds as one program "
        "(they must be at the same checkpoint step)",
    )
    p.add_argument(
        "--defer-eval", action="store_true",
        help="no evaluation on the live task while training (e.g. on a GPU node without pybullet / MuJoCo); every "
        "checkpoint is kept, to be evaluated later with `o2o eval DIR --record`",
    )
    _add_config_args(p, "--set agent.batch_size=256 --set offline.eval_every=5000 --set cost_limit=10")

    p = sub.add_parser(
        "data",
        help="offline datasets: generate, import, inspect, list",
        description="Offline datasets in the D4RL / DSRL HDF5 layout. Named datasets live in the data directory "
        "($O2O_DATA_DIR, default ~/.o2o/datasets); every command that takes a dataset accepts a name or a path.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    q = dsub.add_parser(
        "generate",
        help="generate a DSRL-like (safe tasks) or D4RL-like (MuJoCo) dataset with o2o's own agents",
        description="dsrl: SAC-Lag behaviour agents trained under moving cost targets, every trajectory kept, then a "
        "grid filter in (cost, return) space. d4rl: one SAC behaviour run with policy snapshots; random / medium / "
        "medium-replay / expert / medium-expert. Behaviour runs are kept under <data dir>/behaviour/ and reused. "
        "Writes NAME.hdf5, NAME.json (metadata + sha256), NAME.md (dataset card) and NAME.png (scatter).",
    )
    q.add_argument("--task", required=True, help="task name, e.g. BallCircle, CarRun, Hopper")
    q.add_argument("--recipe", required=True, choices=["dsrl", "d4rl"])
    q.add_argument("--quality", choices=["random", "medium", "medium-replay", "expert", "medium-expert"], help="d4rl quality")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--name", help="dataset name in the data directory (default <Task>-dsrl or <Task>-<quality>)")
    q.add_argument("--out", metavar="PATH", help="write to this .hdf5 path instead of the data directory")
    _add_config_args(q, "--set dsrl.iterations=40 --set d4rl.transitions=1000000 (keys: docs/datasets.md, o2o/loops/datagen.py)")
    q = dsub.add_parser("import", help="validate a real DSRL / D4RL / Minari file and copy it into the data directory")
    q.add_argument("path", metavar="PATH")
    q.add_argument("--name", help="name in the data directory (default: the file's stem)")
    q.add_argument("--task", help="check the file against this task's spaces (and costs for a safe task)")
    q.add_argument("--sha256", default=None, help="expected sha256 of the file")
    q = dsub.add_parser("inspect", help="validate a dataset and print its statistics (and a scatter with --plot)", description="Load NAME or PATH (D4RL, DSRL, Minari or o2o layout), validate it and print transitions, episodes, return and cost distribution, fraction safe at the cost limit.")
    q.add_argument("path", metavar="NAME|PATH")
    q.add_argument("--task", help="also check the file against this task's spaces (and costs for a safe task)")
    q.add_argument("--cost-limit", type=float, default=None, help="report the fraction of episodes at or below this cost (default: the task's limit, else 20)")
    q.add_argument("--sha256", default=None, help="expected sha256 of the file")
    q.add_argument("--plot", metavar="PNG", help="also write the cost-vs-return scatter (or return histogram) here")
    dsub.add_parser("list", help="the datasets in the data directory")

    p = sub.add_parser(
        "finetune",
        help="offline-to-online fine-tuning of a pre-trained run (marvel, warm-start, from-scratch, ...)",
        description="Start an online agent from a pre-trained run (o2o pretrain) the way METHOD says (which parts are "
        "copied, whether the critics are re-aligned by VPA, which multiplier controller) and fine-tune it online. "
        "Writes the bridge's metrics and aligned agent to RUN_DIR/bridge/, then the online run as o2o train does. "
        "Methods: " + ", ".join(_method_names()) + ". Config keys: o2o config --method METHOD.",
    )
    p.add_argument("--method", help="offline-to-online method, e.g. marvel, warm-start, from-scratch")
    p.add_argument("--pretrained", metavar="RUN_DIR", help="pre-trained run directory (o2o pretrain)")
    p.add_argument("--task", help="task (default: the pre-trained run's)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<method>-<task>-s<seed>)")
    p.add_argument("--resume", metavar="DIR", help="continue the fine-tuning run in DIR")
    _add_config_args(p, "--set online.iterations=40 --set vpa.steps=5000 --set lagrange.kp=0.02")

    p = sub.add_parser(
        "marvel",
        help="end to end: dataset -> CPQ pre-training -> VPA -> aPID fine-tuning, with a report",
        description="The whole safe offline-to-online pipeline for one task: the <Task>-dsrl dataset (generated when "
        "missing), offline pre-training per seed, then fine-tuning with each method, then OUT/report.md (offline vs "
        "fine-tuned policy, reward and cost) and OUT/curves.png. Finished stages are reused, interrupted ones resumed.",
    )
    p.add_argument("--task", help="safe task, e.g. BallCircle, CarRun (default: the --budget file's task)")
    p.add_argument("--dataset", help="dataset name or path (default <Task>-dsrl, generated if missing)")
    p.add_argument("--offline-algo", default=None, help="safe offline algorithm (default cpq; bear-lag)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default marvel), e.g. marvel,warm-start,from-scratch")
    _add_pipeline_args(p, "marvel", "--set finetune.online.iterations=20 --set pretrain.offline.steps=50000")

    p = sub.add_parser(
        "ocr",
        help="end to end: dataset -> offline pre-training -> re-evaluation -> alignment -> constrained fine-tuning (OCR-CFT)",
        description="OCR-CFT for one MuJoCo task: the dataset (<Task>-medium generated when missing), offline pre-training with "
        "each method's own algorithm (o2sac: cql, o2td3: td3bc, o2ppo: iql; --offline-algo for transfers), then each method: "
        "policy re-evaluation, value alignment, constrained fine-tuning; then OUT/report.md and OUT/curves.png. Finished stages "
        "are reused, interrupted ones resumed. Methods: " + ", ".join(m for m in _method_names() if m.startswith("o2")) + ".",
    )
    p.add_argument("--task", help="task, e.g. Hopper, HalfCheetah, Walker2d (default: the --budget file's task)")
    p.add_argument("--dataset", help="dataset name or path (default <Task>-medium, generated with the d4rl recipe if missing)")
    p.add_argument("--method", "--methods", dest="methods", default=None, help="comma-separated methods (default o2sac), e.g. o2sac,o2sac-naive,o2sac-scratch")
    p.add_argument("--offline-algo", default=None, help="pre-train every method from this offline algorithm (default: each method's own)")
    _add_pipeline_args(p, "ocr", "--set finetune.ocr.reeval_steps=50000 --set pretrain.offline.steps=100000")

    p = sub.add_parser(
        "diagnose-critic",
        help="Spearman correlation of the critics with Monte-Carlo returns, before and after VPA",
        description="For a fine-tuning run with VPA: the critics before VPA (the pre-trained run's) and after (RUN_DIR/"
        "bridge), scored against Monte-Carlo returns and costs of the pre-trained policy from state-actions of its own "
        "episodes and of random episodes (the simulator is put back into each recorded state exactly by replaying "
        "its episode). Marvel's Table 1. Writes RUN_DIR/diagnose_critic.json and .md.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--pairs", type=int, default=64, help="state-action pairs per source (default 64)")
    p.add_argument("--rollouts", type=int, default=3, help="Monte-Carlo rollouts per pair (default 3)")
    p.add_argument("--horizon", type=int, default=None,
                   help="Monte-Carlo rollout length after the pair (default: until gamma^k < 1e-3, continuing past the task's "
                   "time limit, as the critics' bootstrap does; 688 steps at gamma 0.99)")
    p.add_argument("--to-episode-end", action="store_true",
                   help="end each rollout at the task's time limit (the values of a finite-horizon task; not what a critic "
                   "that bootstraps through time limits estimates)")
    p.add_argument("--undiscounted", action="store_true",
                   help="undiscounted Monte-Carlo sums, to the episode's end (default: the critic's gamma)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser(
        "demo",
        help="the Marvel pipeline on the embedded BallCircle dataset at a small budget (minutes)",
        description="o2o marvel on the embedded BallCircle-dsrl-small dataset with the budget in o2o/configs/pipeline-demo.yaml, "
        "seeds 0, 1 and 2: BC-Safe pre-training, VPA from fresh critics, Marvel's aPID fine-tuning; prints the offline-vs-fine-tuned "
        "table (one row per seed) and its wall time and writes a report and a learning-curve figure. The demo's own outputs in OUT "
        "are replaced, after every config is checked; an OUT holding other files is refused.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="pipeline directory (default runs/demo; its demo outputs are replaced)")
    p.add_argument("--dry-run", action="store_true", help="check the configs and print the plan with a rough time estimate; write nothing")
    p.add_argument(
        "--set", dest="overrides", metavar="STAGE.KEY=VALUE", action="append", default=[],
        help="override one key of one stage, e.g. --set finetune.online.iterations=5",
    )

    from o2o.experiments.commands import add_parsers as add_experiment_parsers

    add_experiment_parsers(sub, _add_config_args)
    return parser


# ------------------------------------------------------------------------------------ commands


def cmd_tasks(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from o2o.envs import list_tasks

    table = Table(title="o2o tasks")
    for col in ("task", "env id", "family", "horizon", "obs", "act", "cost limit", "ref min", "ref max", "ref"):
        table.add_column(col)
    for t in list_tasks():
        table.add_row(
            t.name, t.env_id, t.family, str(t.horizon), str(t.obs_dim), str(t.act_dim),
            "-" if t.cost_limit is None else f"{t.cost_limit:g}",
            f"{t.ref_min_return:g}", f"{t.ref_max_return:g}", t.ref_source,
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 0


def _print_summary(summary: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['algo']} on {summary['task']} (seed {summary['seed']})", show_header=False)
    labels = [
        ("start_eval_return", "eval return at the start (iteration 0)"),
        ("start_eval_cost", "eval episode cost at the start"),
        ("final_eval_return", "final eval return"),
        ("final_eval_normalized_return", "final eval normalised return"),
        ("best_eval_return", "best eval return (over the curve)"),
        ("final_eval_cost", "final eval episode cost"),
        ("cost_limit", "cost limit kappa"),
        ("final_eval_safe", "final policy safe (C_norm <= 1)"),
        ("train_cumulative_cost", "cumulative training cost"),
        ("train_violating_episodes", "training episodes over kappa"),
        ("train_episodes", "training episodes"),
        ("env_steps", "env steps"),
        ("updates", "gradient updates"),
        ("wall_time_s", "wall time (s)"),
    ]
    for key, label in labels:
        if key in summary and summary[key] is not None:
            v = summary[key]
            table.add_row(label, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def cmd_train(args) -> int:
    from o2o.api import train

    out, summary = train(args.algo, args.task, seed=args.seed, out=args.out, resume=args.resume, config=args.config,
                         overrides=args.overrides, progress=not args.no_progress)
    _print_summary(summary, out)
    print(f"outputs: {out}/ (config.yaml, metrics.csv, tb/, checkpoints/, summary.json)")
    return 0


def cmd_eval(args) -> int:
    from o2o.loops.policy import PRETRAIN, load_policy

    if args.episodes is not None and args.episodes < 1:
        raise O2OError(f"--episodes must be >= 1, got {args.episodes}")
    if args.record:
        if args.checkpoint is not None or args.seed is not None or args.render:
            raise O2OError("--record evaluates every unevaluated checkpoint on the run's own episodes; drop --checkpoint, --seed and --render")
        return _record_evaluations(Path(args.run_dir), args.episodes)
    if args.render:
        return _render(args)
    args.episodes = args.episodes or 10
    policy = load_policy(args.run_dir, args.checkpoint)
    metrics = policy.evaluate(args.episodes, args.seed)
    step = {"steps": policy.step} if policy.kind == PRETRAIN else {"iteration": policy.step}
    result = {"run": str(args.run_dir), **step, "episodes": args.episodes, **metrics}
    if args.checkpoint is not None:
        result["checkpoint"] = str(policy.checkpoint)
    if args.seed is not None:
        result["seed"] = args.seed
    for k, v in result.items():
        print(f"{k:>24}: {v:.3f}" if isinstance(v, float) else f"{k:>24}: {v}")
    out = Path(args.run_dir) / "eval.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"outputs: {out}")
    return 0


def _render(args) -> int:
    """``o2o eval RUN_DIR --render FILE``: a video of the policy's episodes."""
    from o2o.loops.policy import load_policy
    from o2o.loops.render import check_video_path, render_episodes

    path = check_video_path(args.render)  # before the run is loaded
    policy = load_policy(args.run_dir, args.checkpoint)
    result = render_episodes(policy, path, episodes=args.episodes or 1, seed=args.seed or 0)
    for i, ret in enumerate(result["returns"]):
        cost = f"  cost {result['costs'][i]:.1f}" if result["costs"] is not None else ""
        print(f"episode {i + 1}: return {ret:.1f}{cost}")
    print(f"{result['frames']} frames (every {result['stride']} step{'s' if result['stride'] > 1 else ''}) of "
          f"{policy.algo} on {policy.task} from {policy.checkpoint}")
    print(f"outputs: {path}")
    return 0


def cmd_export(args) -> int:
    from o2o.api import export_policy

    policy, path = export_policy(args.run_dir, args.out, checkpoint=args.checkpoint)
    print(f"{policy.algo} policy for {policy.task} ({policy.observation_dim} -> {policy.action_dim}) from {policy.checkpoint}")
    print("act with NumPy only: from o2o.export import numpy_policy; policy = numpy_policy(FILE); action = policy(obs)")
    print(f"outputs: {path}")
    return 0


def _record_evaluations(path: Path, episodes: int | None) -> int:
    """``o2o eval PATH --record``: every pre-training run at or under PATH."""
    from o2o.loops.offline import record_evaluations

    if not path.is_dir():
        raise O2OError(f"'{path}' is not a directory; give a pre-training run directory or a folder holding some")
    if (path / "config.yaml").is_file():
        runs = [path]
    else:  # run directories under it: a config.yaml beside a checkpoints/ folder
        runs = sorted(p.parent for p in path.rglob("config.yaml") if (p.parent / "checkpoints").is_dir())

    def is_pretrain(run: Path) -> bool:
        from o2o.runs.rundir import PRETRAIN, run_info

        try:
            return run_info(run)["kind"] == PRETRAIN
        except O2OError:
            return False

    runs = [r for r in runs if is_pretrain(r)]
    if not (path / "config.yaml").is_file():  # a folder: runs stopped before their first checkpoint are skipped
        from o2o.runs import list_checkpoints

        empty = [r for r in runs if not list_checkpoints(r / "checkpoints")]
        for r in empty:
            print(f"skipped {r}: no checkpoint yet")
        runs = [r for r in runs if r not in empty]
    if not runs:
        raise O2OError(f"no pre-training run (o2o pretrain) at or under '{path}'; --record evaluates pre-training checkpoints")
    from o2o.errors import RunInUseError

    total = 0
    for run in runs:
        try:
            total += len(record_evaluations(run, episodes, echo=print))
        except RunInUseError as err:
            if run == path:
                raise
            print(f"skipped {run}: {err}")  # in a folder, a run another process trains waits for a later --record
    print(f"recorded {total} evaluation(s) in {len(runs)} run(s) under {path}")
    return 0


def cmd_config(args) -> int:
    from o2o.config import config_help, format_value
    from o2o.runconfig import train_config_class
    from o2o.presets import resolve_train_config

    from o2o.agents import OFFLINE_AGENTS, ONLINE_AGENTS

    if args.method:
        from o2o.loops.finetune import resolve_finetune_config
        from o2o.runconfig import finetune_config_class

        cfg = resolve_finetune_config(args.method, None, args.task or "BallCircle", require_pretrained=False)
        rows = config_help(finetune_config_class(args.method))
    elif args.algo in OFFLINE_AGENTS:
        from o2o.runconfig import pretrain_config_class
        from o2o.presets import resolve_pretrain_config

        default = pretrain_config_class(args.algo)()
        cfg = resolve_pretrain_config(args.algo, default.dataset, args.task)
        rows = config_help(pretrain_config_class(args.algo))
    elif args.algo not in ONLINE_AGENTS:
        known = ", ".join([*ONLINE_AGENTS, *OFFLINE_AGENTS])
        raise O2OError(f"unknown algorithm '{args.algo}'; known: {known}")
    else:
        cfg = resolve_train_config(args.algo, args.task)
        rows = config_help(train_config_class(args.algo))
    from o2o.config import to_dict

    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(to_dict(cfg))
    for key, typ, _default, help_text in rows:
        value = format_value(flat[key]) if key in flat else _default
        print(f"{key:<32} {typ:<26} {value:<14} {help_text}")
    return 0


def _method_names() -> list[str]:
    from o2o.methods import METHODS

    return list(METHODS)


def cmd_finetune(args) -> int:
    from o2o.api import finetune

    out, summary = finetune(args.method, args.pretrained, task=args.task, seed=args.seed, out=args.out, resume=args.resume,
                            config=args.config, overrides=args.overrides, progress=not args.no_progress)
    _print_summary({**summary, "algo": f"{summary['method']} ({summary['algo']})"}, out)
    print(f"outputs: {out}/ (config.yaml, bridge/, metrics.csv, tb/, checkpoints/, summary.json)")
    return 0


def _print_pipeline(result, per_seed: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = result.seed_rows if per_seed else result.rows
    table = Table(title=f"offline policy vs fine-tuned policy (deterministic evaluation; cost limit {rows[0]['cost_limit']:g})")
    columns = ("method", "seed" if per_seed else "seeds", "offline return", "offline cost", "fine-tuned return", "fine-tuned cost", "safe",
               "training cost (cumulative)")
    for col in columns:
        table.add_column(col, justify="right" if col not in ("method",) else "left")
    for r in rows:
        table.add_row(
            r["method"], str(r["seed"] if per_seed else r["seeds"]), f"{r['start_return']:.1f}", f"{r['start_cost']:.1f}",
            f"{r['final_return']:.1f}", f"{r['final_cost']:.1f}", "yes" if r["final_normalized_cost"] <= 1 else "NO",
            f"{r['train_cumulative_cost']:.0f}",
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print(f"outputs: {result.root}/ (pretrain/, finetune/, report.md, {result.figure.name} and .pdf, results.tex, results.csv, "
          "safe-finetune.csv)")


def _pipeline_task(args):
    """The task of o2o marvel / o2o ocr: --task, else the one the --budget file names."""
    from o2o.envs import get_task
    from o2o.experiments.pipeline import read_budget_file

    name = args.task or (read_budget_file(args.budget)[1].get("task") if args.budget else None)
    if not name:
        raise O2OError(f"o2o {args.command} needs --task (or a --budget file that names its task)")
    return get_task(name)


def _pipeline_inputs(args, task, methods_default: str, offline_default: str | None):
    """(budget, dataset, offline algorithm, methods, seeds) of o2o marvel / o2o ocr: each option as the
    command line gives it, else as the --budget file names it, else its default."""
    from o2o.experiments.pipeline import read_budget_file

    budget, given = read_budget_file(args.budget) if args.budget else ({}, {})
    if given.get("task"):
        from o2o.envs import get_task

        if get_task(given["task"]).name != task.name:
            raise O2OError(f"{args.budget} is a pipeline for task {given['task']}, not --task {task.name}; pass --task "
                           f"{given['task']} or remove the file's 'task' key")
    methods = args.methods or given.get("methods") or methods_default
    if isinstance(methods, str):
        methods = tuple(m.strip() for m in methods.split(",") if m.strip())
    seeds = args.seeds if args.seeds is not None else given.get("seeds", "0")
    seeds = _seed_list(seeds if isinstance(seeds, str) else [str(x) for x in (seeds if isinstance(seeds, list) else [seeds])])
    return budget, args.dataset or given.get("dataset"), args.offline_algo or given.get("offline_algo") or offline_default, tuple(methods), seeds


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _print_plan(plan, root: Path) -> int:
    print(f"plan for {root}/:")
    for p in plan:
        print(f"  {p.stage:<8}  {p.name:<24}  {p.state:<30}  {'~' + _duration(p.seconds):>8}  {p.work}")
    total = sum(p.seconds for p in plan)
    print(f"estimate: ~{_duration(total)} in all, one stage after another, on a 2-core CPU like the one of docs/benchmarks.md "
          "(rough: its reference rates; a loaded machine is slower, a GPU pre-trains far faster)")
    print("outputs: none written (dry run)")
    return 0


def cmd_marvel(args) -> int:
    from o2o.experiments.pipeline import run_pipeline

    task = _pipeline_task(args)
    if not task.safe:
        raise O2OError(f"o2o marvel needs a safe task (with costs); '{task.name}' has none")
    budget, dataset, offline_algo, methods, seeds = _pipeline_inputs(args, task, "marvel", "cpq")
    root = Path(args.out or f"runs/marvel-{task.name}")
    result = run_pipeline(
        task.name, root=root, dataset=dataset, offline_algo=offline_algo, methods=methods, seeds=seeds,
        budget=budget, overrides=args.overrides, progress=not args.no_progress, pretrain_seed=args.pretrain_seed,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        return _print_plan(result, root)
    _print_pipeline(result)
    return 0


def cmd_ocr(args) -> int:
    from o2o.experiments.pipeline import format_score, run_pipeline
    from o2o.methods import get_method

    task = _pipeline_task(args)
    budget, dataset, offline_algo, methods, seeds = _pipeline_inputs(args, task, "o2sac", None)
    for m in methods:
        if get_method(m).family != "ocr-cft":
            raise O2OError(f"o2o ocr runs OCR-CFT methods (o2sac, o2td3, o2ppo and their ablations); '{m}' is a {get_method(m).family} method")
    root = Path(args.out or f"runs/ocr-{task.name}")
    result = run_pipeline(
        task.name, root=root, dataset=dataset, offline_algo=offline_algo, methods=methods, seeds=seeds,
        budget=budget, overrides=args.overrides, progress=not args.no_progress, pretrain_seed=args.pretrain_seed,
        recipe="d4rl", quality="medium", dry_run=args.dry_run,
    )
    if args.dry_run:
        return _print_plan(result, root)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{task.name}: the policy fine-tuning starts from vs the fine-tuned policy (deterministic evaluation)")
    for col in ("method", "seeds", "start return", "start norm.", "lowest norm., first 10%", "online mean norm.", "final return", "final norm."):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in result.rows:
        table.add_row(r["method"], str(r["seeds"]), f"{r['start_return']:.1f}", f"{r['start_normalized_return']:.1f}",
                      format_score(r["lowest_early_normalized_return"]), format_score(r["online_mean_normalized_return"]),
                      f"{r['final_return']:.1f}", f"{r['final_normalized_return']:.1f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print(f"outputs: {result.root}/ (pretrain/, finetune/, report.md, {result.figure.name} and .pdf, results.tex, results.csv)")
    return 0


def cmd_demo(args) -> int:
    import time

    from o2o.config import load_yaml
    from o2o.experiments.pipeline import run_pipeline
    from o2o.presets import PRESET_DIR

    demo = load_yaml(PRESET_DIR / "pipeline-demo.yaml")
    out = Path(args.out)
    ours = {"pretrain", "finetune", "report.md", "curves.png", "curves.pdf", "results.csv", "results.tex", "safe-finetune.csv"}
    if out.exists() and (not out.is_dir() or any(p.name not in ours for p in out.iterdir())):
        raise O2OError(f"'{out}' holds files o2o demo did not write; the demo replaces its own outputs only: choose another --out")
    start = time.perf_counter()
    result = run_pipeline(
        demo.pop("task"), root=out, dataset=demo.pop("dataset"), offline_algo=demo.pop("offline_algo"),
        methods=tuple(demo.pop("methods")), seeds=tuple(demo.pop("seeds")), budget=demo, overrides=args.overrides,
        progress=not args.no_progress, fresh=True, dry_run=args.dry_run,
    )
    if args.dry_run:
        return _print_plan(result, out)
    _print_pipeline(result, per_seed=True)
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0


def cmd_diagnose_critic(args) -> int:
    from o2o.experiments.diagnose import diagnose_critic

    result, md = diagnose_critic(
        args.run_dir, pairs=args.pairs, rollouts=args.rollouts, horizon=args.horizon,
        discounted=not args.undiscounted, to_episode_end=args.to_episode_end, seed=args.seed, progress=not args.no_progress,
    )
    print(md.read_text())
    print(f"outputs: {md} (+ {md.with_suffix('.json').name})")
    return 0


def cmd_data(args) -> int:
    handlers = {"generate": _data_generate, "import": _data_import, "inspect": _data_inspect, "list": _data_list}
    if args.data_command not in handlers:
        raise O2OError("o2o data needs a sub-command: generate, import, inspect or list (see `o2o data --help`)")
    return handlers[args.data_command](args)


def _data_generate(args) -> int:
    from o2o.config import apply_overrides, load_yaml, update_from_dict
    from o2o.envs import get_task
    from o2o.loops.datagen import GenerateConfig, default_name, generate
    from o2o.data.registry import named_dataset_path

    cfg = GenerateConfig()
    if args.config:
        cfg = update_from_dict(cfg, load_yaml(args.config))
    cfg = update_from_dict(cfg, {"task": get_task(args.task).name, "recipe": args.recipe, "quality": args.quality, "seed": args.seed})
    cfg = apply_overrides(cfg, args.overrides)
    out = Path(args.out) if args.out else named_dataset_path(args.name or default_name(cfg))
    path, meta = generate(cfg, out, progress=not args.no_progress)
    print(f"dataset {meta['name']}: {meta['num_transitions']} transitions, {meta['num_episodes']} episodes, "
          f"return {meta['min_episode_return']:.1f}..{meta['max_episode_return']:.1f}"
          + (f", cost {meta['min_episode_cost']:.0f}..{meta['max_episode_cost']:.0f}" if "min_episode_cost" in meta else "")
          + f", {meta['generation_seconds']} s")
    print(f"sha256: {meta['sha256']} (file); {meta['data_sha256']} (transitions only, `o2o data inspect` prints it)")
    for warning in meta.get("warnings", []):
        print(f"o2o: warning: {path.stem}: {warning}", file=sys.stderr)
    print(f"outputs: {path} (+ {path.with_suffix('.json').name}, {path.with_suffix('.md').name}, {path.with_suffix('.png').name})")
    return 0


def _data_import(args) -> int:
    import shutil

    from o2o.data import load_hdf5, recorded_task, sha256_data, sha256_file
    from o2o.data.hdf5 import minari_main_file
    from o2o.envs import get_task
    from o2o.data.registry import data_dir, named_dataset_path
    from o2o.runs.checkpoint import write_text_atomic

    task = get_task(args.task) if args.task else None
    src = Path(args.path)
    dest = named_dataset_path(args.name or src.stem)
    ds = load_hdf5(src, task=task, expected_sha256=args.sha256)  # validates everything before copying
    if dest.exists():
        raise O2OError(f"a dataset named '{dest.stem}' already exists in {data_dir()}; choose another --name")
    task_name = task.name if task is not None else recorded_task(ds.metadata)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(minari_main_file(src) or src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    checksum = sha256_file(dest)
    record = {"name": dest.stem, "task": task_name, "recipe": "imported", "imported_from": str(src.resolve()),
              "source_layout": ds.metadata["source_layout"], "num_transitions": ds.num_transitions,
              "num_episodes": ds.num_episodes, "sha256": checksum, "data_sha256": sha256_data(ds)}
    write_text_atomic(dest.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    print(f"imported {src} as '{dest.stem}' for task {task_name or '? (none given or recorded)'}: {ds.num_transitions} "
          f"transitions, {ds.num_episodes} episodes, sha256 {checksum}")
    if task_name is None:
        print(f"o2o: warning: {dest.stem} does not say which task it is for: pass --task to o2o pretrain, or import it "
              "again with --task", file=sys.stderr)
    print(f"outputs: {dest} (+ {dest.with_suffix('.json').name})")
    return 0


def _data_list(args) -> int:
    from o2o.data import peek_metadata, recorded_task
    from o2o.errors import DatasetError
    from o2o.data.registry import data_dir, list_datasets

    paths = list_datasets()
    print(f"data directory: {data_dir()}")
    for p in paths:
        try:
            n, meta = peek_metadata(p)
        except (OSError, KeyError, AttributeError, DatasetError):
            print(f"  {p.stem:<32} (unreadable: run `o2o data inspect {p}`)")
            continue
        print(f"  {p.stem:<32} {n:>9} transitions  task {recorded_task(meta) or '?':<12} {meta.get('recipe', 'imported')}")
    if not paths:
        print("  (none: `o2o data generate` or `o2o data import`)")
    print(f"outputs: none written ({len(paths)} datasets)")
    return 0


def _data_inspect(args) -> int:
    import numpy as np

    from o2o.data import load_hdf5, recorded_task, sha256_data, sha256_file
    from o2o.loops.datagen import scatter_png
    from o2o.data.registry import resolve_dataset

    task = None
    if args.task:
        from o2o.envs import get_task

        task = get_task(args.task)
    path = resolve_dataset(args.path)
    ds = load_hdf5(path, task=task, expected_sha256=args.sha256)
    returns, lengths = ds.episode_returns(), ds.episode_lengths()
    print(f"{'file':>22}: {path}")
    print(f"{'transitions':>22}: {ds.num_transitions}")
    print(f"{'episodes':>22}: {len(lengths)} (length {lengths.min()}..{lengths.max()}, mean {lengths.mean():.1f})")
    print(f"{'obs / act dims':>22}: {ds.obs_dim} / {ds.act_dim}")
    print(f"{'terminals / timeouts':>22}: {int(ds.terminals.sum())} / {int(ds.timeouts.sum())}")
    print(f"{'episode return':>22}: min {returns.min():.2f}  median {np.median(returns):.2f}  max {returns.max():.2f}")
    limit = None
    if ds.has_costs:
        costs = ds.episode_costs()
        limit = args.cost_limit if args.cost_limit is not None else (task.cost_limit if task is not None and task.cost_limit is not None else 20.0)
        print(f"{'episode cost':>22}: min {costs.min():.2f}  median {np.median(costs):.2f}  max {costs.max():.2f}")
        print(f"{'safe episodes':>22}: {np.mean(costs <= limit):.1%} at cost limit {limit:g}")
    else:
        print(f"{'costs':>22}: none (unconstrained dataset)")
    recorded = recorded_task(ds.metadata)
    print(f"{'task':>22}: {recorded or '? (the file does not say; pass --task to o2o pretrain)'}")
    for key in ("recipe", "quality", "seed", "code_version", "machine"):
        if ds.metadata.get(key) is not None:
            print(f"{key:>22}: {ds.metadata[key]}")
    print(f"{'sha256 (file)':>22}: {sha256_file(path)}")
    print(f"{'sha256 (transitions)':>22}: {sha256_data(ds)}")
    for warning in ds.metadata.get("warnings") or []:
        print(f"{'warning':>22}: {warning}")
    if args.plot:
        scatter_png(ds, Path(args.plot), Path(path).stem, limit)
        print(f"outputs: {args.plot}")
    else:
        print(f"outputs: none written; {path} is valid" + (f" for task {task.name}" if task else ""))
    return 0


def _seed_list(values: str | list[str]) -> tuple[int, ...]:
    """Seeds given as '0,1,2' or as '0 1 2' (or both) -> (0, 1, 2); a non-integer is a one-line error."""
    text = values if isinstance(values, str) else " ".join(values)
    parts = [x for x in text.replace(",", " ").split() if x]
    try:
        return tuple(int(x) for x in parts)
    except ValueError:
        raise O2OError(f"--seeds must be integers ('0,1,2' or '0 1 2'), got '{text}'") from None


def cmd_pretrain(args) -> int:
    from o2o.api import pretrain

    out, summary = pretrain(
        args.algo, args.dataset, task=args.task, steps=args.steps, seed=args.seed,
        seeds=_seed_list(args.seeds) if args.seeds else None, out=args.out, resume=args.resume, defer_eval=args.defer_eval,
        config=args.config, overrides=args.overrides, progress=not args.no_progress,
    )
    if "seed" not in summary:  # a seed group: {"seed<k>": summary}
        _print_seed_group(list(summary.values()), [out / name for name in summary])
        return 0
    for k, v in summary.items():
        print(f"{k:>32}: {v:.3f}" if isinstance(v, float) else f"{k:>32}: {v}")
    print(f"outputs: {out}/ (config.yaml, metrics.csv, tb/, checkpoints/, summary.json)")
    return 0


def _print_seed_group(summaries: list[dict], outs: list[Path]) -> None:
    keys = [k for k in summaries[0] if k not in ("seed", "seed_group")]
    print(f"{'seed':>32}: " + "  ".join(f"{s['seed']:>10}" for s in summaries))
    for k in keys:
        cells = [s.get(k) for s in summaries]
        print(f"{k:>32}: " + "  ".join(f"{v:>10.3f}" if isinstance(v, float) else f"{str(v):>10}" for v in cells))
    root = outs[0].parent
    print(f"outputs: {root}/ ({', '.join(o.name for o in outs)}: each config.yaml, metrics.csv, tb/, checkpoints/, summary.json)")


COMMANDS = {"finetune": cmd_finetune, "marvel": cmd_marvel, "ocr": cmd_ocr, "diagnose-critic": cmd_diagnose_critic, "pretrain": cmd_pretrain, "data": cmd_data, "tasks": cmd_tasks, "train": cmd_train, "eval": cmd_eval, "export": cmd_export, "config": cmd_config, "demo": cmd_demo}


def _all_commands() -> dict:
    from o2o.experiments.commands import COMMANDS as EXPERIMENT_COMMANDS

    return {**COMMANDS, **EXPERIMENT_COMMANDS}


# the commands that train (and so checkpoint: O2O_CHECKPOINT_EVERY_S, o2o.runs.clock)
TRAINING_COMMANDS = {"train", "pretrain", "finetune", "marvel", "ocr", "demo", "sweep"}


def _how_to_continue(args) -> str:
    """What to run after an interrupt that came before the loop could checkpoint (a second Ctrl-C)."""
    if args.command in ("train", "pretrain", "finetune"):
        run_dir = getattr(args, "resume", None) or getattr(args, "out", None) or "DIR"
        return f"continue from the run's last checkpoint with `o2o {args.command} --resume {run_dir}`"
    if args.command in TRAINING_COMMANDS or getattr(args, "data_command", None) == "generate":
        return "the same command continues from the last checkpoints"
    return "nothing to continue"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from o2o.stop import RunStopped, stop_on_signals

    training = args.command in TRAINING_COMMANDS or getattr(args, "data_command", None) == "generate"
    try:
        if args.wandb:  # in the environment: a sweep's workers log too
            from o2o.runs.wandb_log import WANDB_PROJECT_ENV

            os.environ[WANDB_PROJECT_ENV] = args.wandb
        if training:  # a malformed O2O_CHECKPOINT_EVERY_S, or W&B without wandb, is refused before anything runs
            from o2o.runs.clock import checkpoint_every_s
            from o2o.runs.wandb_log import check_wandb

            checkpoint_every_s()
            check_wandb()
        # SIGTERM / SIGUSR1 make a training run checkpoint and stop (o2o.stop); a sweep handles them itself
        with stop_on_signals() if training and args.command != "sweep" else contextlib.nullcontext():
            code = _all_commands()[args.command](args) or 0
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return code
    except O2OError as err:
        print(f"o2o: error: {err}", file=sys.stderr)
        return 2
    except RunFinished as err:
        print(f"o2o: {err}", file=sys.stderr)
        return 0
    except RunStopped as err:
        if not err.resumable:
            again = "start it again with the same command"
        elif args.command in ("train", "pretrain", "finetune"):
            again = f"continue with `o2o {args.command} --resume {err.run_dir}`"
        else:
            again = "continue with the same command"
        print(f"o2o: {err}; {again}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"o2o: interrupted; {_how_to_continue(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed by its reader (`o2o sweep DIR --status | head`): stop quietly like any Unix
        # tool; point stdout at /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
