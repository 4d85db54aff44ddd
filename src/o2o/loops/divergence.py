"""Stopping a run whose training diverged (a loss, parameter or action NaN or inf).

A diverged state is never checkpointed, so a run's latest checkpoint is always its last finite state.
The checks cost no device transfer: the losses are the floats each jitted call already returns, and
the parameters are checked on the host copy a checkpoint makes anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from o2o.errors import DivergedError

__all__ = ["check_losses", "finite_checkpoint", "diverged"]


def check_losses(metrics: Mapping[str, Any], prefix: str = "") -> None:
    """``DivergedError`` naming the first of one call's metrics (host floats) that is NaN or inf."""
    for name, value in metrics.items():
        if np.ndim(value) == 0 and not math.isfinite(float(value)):
            raise DivergedError(f"{prefix}{name} is {float(value)}")


def _first_non_finite(tree: Any, path: str) -> str | None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            found = _first_non_finite(value, f"{path}/{key}")
            if found is not None:
                return found
        return None
    if isinstance(tree, (np.ndarray, np.generic)) and np.issubdtype(tree.dtype, np.inexact) and not np.isfinite(tree).all():
        return path
    return None


def finite_checkpoint(arrays: Mapping[str, Any], section: str = "agent") -> dict:
    """``arrays`` as the host state dict a checkpoint writes, after checking that every float leaf of
    ``section`` (the agent: networks, targets, optimiser states) is finite; ``DivergedError`` naming
    the first leaf that is not."""
    from o2o.runs.checkpoint import host_state_dict

    host = host_state_dict(arrays)
    leaf = _first_non_finite(host[section], section)
    if leaf is not None:
        raise DivergedError(f"{leaf} holds NaN or inf")
    return host


def diverged(err: DivergedError, where: str, run_path, latest) -> DivergedError:
    """The one line a diverged run ends with: where, what, and ``latest``, the checkpoint kept."""
    kept = (f"its latest checkpoint, {latest.name}, is the last finite state" if latest is not None
            else "it has no checkpoint yet")
    return DivergedError(
        f"training diverged at {where}: {err}; nothing of that state was saved in '{run_path}' ({kept}); "
        f"lower the learning rates (or loss weights) and start a new run"
    )
