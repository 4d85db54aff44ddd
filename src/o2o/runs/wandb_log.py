"""Optional Weights & Biases logging: every metrics row of a run also goes to a W&B run.

On when ``$O2O_WANDB_PROJECT`` names a W&B project (``o2o --wandb PROJECT ...`` sets it for a command
and the processes it starts, a sweep's workers included); the ``wandb`` package is then needed (``pip
install wandb``; ``WANDB_MODE=offline`` keeps the runs on disk). Like the checkpoint timer it is not
part of the config: it changes no run's numbers and no sweep's config hashes. metrics.csv and
TensorBoard stay the record.

One W&B run per run directory: its id is kept in ``RUN_DIR/wandb_id``, so a resumed run (and each
writer a run opens) continues the same W&B run. Its name is the directory's name, its group the parent
directory's (a sweep's or a pipeline stage's runs group together), its config the run's config.yaml.
Rows are logged against the x-axis TensorBoard has (``define_metric``): environment steps for an online
run, gradient steps for an offline one (``MetricsWriter``'s ``x``), so the rows a resumed run logs again
after its checkpoint land at their steps; W&B keeps the interrupted process's rows beside them. A
bridge's metrics (VPA, OCR-CFT's re-evaluation and alignment) go to ``bridge/tb`` only.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from o2o.errors import ConfigError

WANDB_PROJECT_ENV = "O2O_WANDB_PROJECT"
ID_FILE = "wandb_id"


def wandb_project() -> str | None:
    """The W&B project runs log to (``$O2O_WANDB_PROJECT``), None when logging is off."""
    return os.environ.get(WANDB_PROJECT_ENV, "").strip() or None


def check_wandb() -> None:
    """Refuse, in one line, W&B logging that was asked for without the wandb package."""
    project = wandb_project()
    if project is None:
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError(f"{WANDB_PROJECT_ENV}={project} asks for Weights & Biases logging but the wandb package is not "
                          f"installed: pip install wandb, or unset {WANDB_PROJECT_ENV}") from None


class WandbRun:
    """The W&B run of one run directory (``root``), created or continued."""

    def __init__(self, root: Path, project: str):
        check_wandb()
        import wandb
        import yaml

        from o2o.runs.checkpoint import write_text_atomic

        id_path = root / ID_FILE
        if id_path.is_file():
            run_id = id_path.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:12]
            write_text_atomic(id_path, run_id + "\n")
        config_path = root / "config.yaml"
        config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
        self.run = wandb.init(project=project, id=run_id, name=root.name, group=root.resolve().parent.name, dir=str(root),
                              config=config, resume="allow", reinit="create_new")
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "step": step})

    def finish(self) -> None:
        self.run.finish()
