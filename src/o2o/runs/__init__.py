"""Run directories: resolved config, metrics (CSV + TensorBoard), atomic checkpoints, resume.

    run = RunDir.create(out, to_dict(cfg), kind="train", resume=resume)
    metrics = MetricsWriter(run)                       # on resume: drops rows after the checkpoint
    if run.resume_step is not None:
        state, host = run.load_checkpoint(template=init_state)
    ...
    metrics.write(step, {"eval/return": ret}); metrics.flush()
    run.save_checkpoint(step, arrays=state, host_state=host)
"""

from o2o.runs.checkpoint import (
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from o2o.runs.clock import CheckpointTimer, RunClock
from o2o.runs.metrics import MetricsWriter, merge_metrics, read_metrics_csv
from o2o.runs.rundir import RunDir

__all__ = [
    "RunDir",
    "RunClock",
    "CheckpointTimer",
    "MetricsWriter",
    "read_metrics_csv",
    "merge_metrics",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "checkpoint_step",
]
