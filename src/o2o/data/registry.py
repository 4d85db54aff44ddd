"""Where datasets live and how a name or path becomes a file: the data directory (``$O2O_DATA_DIR``,
else ``~/.o2o/datasets``), the embedded default, Minari dataset directories."""

from __future__ import annotations

import os
from pathlib import Path

from o2o.errors import DatasetError

def data_dir() -> Path:
    """Where named datasets live: ``$O2O_DATA_DIR``, else ``~/.o2o/datasets``."""
    return Path(os.environ.get("O2O_DATA_DIR") or Path.home() / ".o2o" / "datasets")


def named_dataset_path(name: str, option: str = "--name") -> Path:
    """``<data dir>/<name>.hdf5`` for a dataset name; a name that is empty, absolute, holds a path
    separator or is ``.`` / ``..`` would land outside the data directory and is refused."""
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if not name or name in (".", "..") or any(sep in name for sep in seps) or "\0" in name or Path(name).is_absolute():
        raise DatasetError(
            f"{option} '{name}' is not a dataset name (a name has no path separator and is not '.' or '..'); "
            f"give a plain name such as BallCircle-mine"
        )
    return data_dir() / f"{name}.hdf5"


EMBEDDED = {"BallCircle-dsrl-small": Path(__file__).resolve().parent.parent / "assets" / "BallCircle-dsrl-small.hdf5"}


def list_datasets() -> list[Path]:
    root = data_dir()
    found = sorted(root.glob("*.hdf5")) if root.exists() else []
    return found + [p for p in EMBEDDED.values() if p.exists()]


def resolve_dataset(name_or_path: str) -> Path:
    """A dataset given by path (a Minari dataset directory: its ``data/main_data.hdf5``), or by name in
    the data directory (or the embedded default)."""
    from o2o.data.hdf5 import minari_main_file

    path = Path(name_or_path)
    if path.suffix in (".hdf5", ".h5") or path.exists() or os.sep in name_or_path:
        return minari_main_file(path) or path
    candidate = data_dir() / f"{name_or_path}.hdf5"
    if candidate.exists():
        return candidate
    if name_or_path in EMBEDDED and EMBEDDED[name_or_path].exists():
        return EMBEDDED[name_or_path]
    known = ", ".join(p.stem for p in list_datasets()) or "none yet"
    raise DatasetError(
        f"no dataset named '{name_or_path}' in {data_dir()} (known: {known}); "
        "generate one with `o2o data generate`, import one with `o2o data import`, or pass a path"
    )
