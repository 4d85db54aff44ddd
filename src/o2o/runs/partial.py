"""Partial checkpoints of a fine-tuning bridge (OCR-CFT's re-evaluation and alignment, Marvel's VPA).

A bridge is a sequence of jitted calls on the offline data before the online stage; its result goes to
``RUN_DIR/bridge/checkpoints/`` when it finishes. While it runs, the driver (``o2o.loops.driver``,
``BridgeCheckpoints``) saves its place in ``RUN_DIR/bridge/partial/``: the agent state and RNG key after
a call, the step and what the bridge adds (its stage, the last metrics), every
``O2O_CHECKPOINT_EVERY_S`` seconds (``o2o.runs.clock``) and when a stop signal arrived (``o2o.stop``,
then ``RunStopped``); a resumed bridge restores it and continues with the numbers an uninterrupted one
has. A bridge that diverges stops as every stage does: a call's loss that is NaN or inf, checked before
it is logged, or an agent state that is not finite when it is saved or at a stage's last call, ends the
run with one line naming the step and the quantity; nothing of that state is saved (the latest partial
checkpoint is the last finite one).
"""

from __future__ import annotations

import shutil
from pathlib import Path

PARTIAL_DIRNAME = "partial"


def discard_partial(bridge_dir: Path) -> None:
    """Remove the partial checkpoints once the finished bridge is saved (it supersedes them)."""
    shutil.rmtree(Path(bridge_dir) / PARTIAL_DIRNAME, ignore_errors=True)
