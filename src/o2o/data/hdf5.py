"""Reading and writing offline datasets as HDF5 files (D4RL / DSRL flat layout; Minari episodes on read).

The file layout is the one D4RL and DSRL publish, so their files load as they are and ours open in
their tools: seven flat arrays at the file root (``observations, next_observations, actions, rewards,
costs, terminals, timeouts``), one row per step; ``costs`` is absent for unconstrained data. Metadata
lives in attributes of the root group: each top-level scalar or string as its own attribute (visible in
``h5ls``/``h5dump``), and the whole dict as a JSON string in ``o2o_metadata`` (lossless, nested values).

Reading goes through h5py only, never pickle, and refuses non-numeric columns, so a file cannot run
code or smuggle objects. Writing is atomic (temporary file, fsync, rename) and byte-reproducible (no
HDF5 timestamps, fixed chunking and compression), so a dataset's sha256 identifies its contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from o2o.data.dataset import COLUMNS, DTYPES, SCALAR_COLUMNS, Dataset, check_columns, check_shapes
from o2o.errors import DatasetError

# Without these a file cannot be read as transitions. next_observations can be rebuilt and costs are
# optional (D4RL has none), see _read_flat.
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
METADATA_ATTR = "o2o_metadata"
# gzip level 4 with byte shuffle: roughly half the size of raw float32 observations, zlib output is
# deterministic for fixed input and settings, and level 4 is several times faster to write than 9.
GZIP_LEVEL = 4
CHUNK_BYTES = 1 << 20


class TaskLike(Protocol):
    """What the loader needs to know about a task (``o2o.envs.get_task`` returns such an object)."""

    name: str
    obs_dim: int
    act_dim: int
    safe: bool


# ----- checksums ----------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks so large datasets do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_data(dataset: Dataset) -> str:
    """Hex sha256 of a dataset's transitions alone: for each column present (in ``COLUMNS`` order) its
    name, dtype, shape and little-endian C-order bytes, in the dtypes o2o stores (float32, bool).

    The file's sha256 (``sha256_file``) also covers the metadata, whose ``code_version`` changes with
    every commit, and the HDF5 container. This one does not: two files hold the same transitions
    exactly when it agrees, whatever wrote them (o2o of another version, D4RL, Minari)."""
    digest = hashlib.sha256()
    for key in COLUMNS:
        if key == "costs" and not dataset.has_costs:
            continue
        values = np.ascontiguousarray(getattr(dataset, key), dtype=np.dtype(DTYPES[key]).newbyteorder("<"))
        digest.update(f"{key}|{values.dtype.str}|{values.shape}|".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


# ----- loading ------------------------------------------------------------------------------------------


def load_hdf5(
    path: str | os.PathLike,
    *,
    task: TaskLike | None = None,
    require_costs: bool = False,
    expected_sha256: str | None = None,
    allow_other_task: bool = False,
    override: str | None = None,
) -> Dataset:
    """Load a D4RL, DSRL, Minari or o2o HDF5 file (or a Minari dataset directory) into a validated ``Dataset``.

    ``task`` (anything with ``name, obs_dim, act_dim, safe``) makes the loader check that the file
    belongs to that task (``check_task``) and, for a safe task, that it has costs; ``require_costs``
    asks for costs regardless. ``expected_sha256`` is checked before the file is parsed. Every problem
    is raised as a one-line ``DatasetError`` naming the file.
    """
    path = minari_main_file(path) or Path(path)
    source = str(path)
    if not path.exists():
        raise DatasetError(f"{source}: no such dataset file; run `o2o data list` to see the datasets and where they live")
    if not path.is_file():
        raise DatasetError(f"{source}: is not a file; pass the path of an .hdf5 dataset file (or of a Minari dataset directory)")
    if path.stat().st_size == 0:
        raise DatasetError(f"{source}: is empty (0 bytes), probably an interrupted download or write; delete it and fetch it again")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256.lower():
            raise DatasetError(
                f"{source}: checksum mismatch (expected sha256 {expected_sha256}, found {actual}); "
                "the file is corrupt or a different version, delete it and fetch it again"
            )
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{source}: is not an HDF5 file; expected a D4RL/DSRL/Minari-style .hdf5 dataset")

    try:
        with h5py.File(path, "r") as f:
            metadata = _read_metadata(f.attrs, source)
            if _is_minari(f):
                columns, has_costs, notes = _read_minari(f, source)
                layout = "minari"
            else:
                columns, has_costs, notes = _read_flat(f, source)
                layout = "flat"
    except OSError as error:
        # h5py reports truncation as "truncated file: eof = ..., stored_eof = ..." when opening, or an
        # I/O error while reading a chunk past the end.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(
            f"{source}: is truncated or corrupt and cannot be read ({reason}); delete it and fetch it again"
        ) from None

    if columns["rewards"].shape[0] == 0:
        raise DatasetError(f"{source}: contains no steps; regenerate or re-download the dataset")
    for key, value in sidecar_metadata(path).items():
        metadata.setdefault(key, value)
    metadata.update(notes)
    metadata["source_layout"] = layout
    metadata["loaded_from"] = source
    dataset = Dataset(**columns, has_costs=has_costs, metadata=metadata, source=source)
    check_task(dataset, task, require_costs=require_costs, allow_other_task=allow_other_task, override=override, source=source)
    return dataset


# ----- which task a dataset is for ----------------------------------------------------------------------

# the keys a metadata file beside the dataset may add to what the file itself records
SIDECAR_KEYS = ("task", "env_id", "env_spec")


def minari_main_file(path: str | os.PathLike) -> Path | None:
    """``DIR/data/main_data.hdf5`` when ``path`` is a Minari dataset directory (``DIR`` or ``DIR/data``)."""
    path = Path(path)
    for candidate in (path / "data" / "main_data.hdf5", path / "main_data.hdf5"):
        if path.is_dir() and candidate.is_file():
            return candidate
    return None


def sidecar_path(path: str | os.PathLike) -> Path:
    """The metadata file beside a dataset: Minari's ``metadata.json`` beside ``main_data.hdf5``, else
    ``NAME.json`` beside ``NAME.hdf5`` (what ``o2o data generate`` and ``o2o data import`` write)."""
    path = Path(path)
    return path.with_name("metadata.json") if path.name == "main_data.hdf5" else path.with_suffix(".json")


def sidecar_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``SIDECAR_KEYS`` from the metadata file beside ``path`` ({} when there is none)."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        stored = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DatasetError(f"{side}: the dataset's metadata file cannot be read ({error}); fix it or delete it") from None
    return {k: stored[k] for k in SIDECAR_KEYS if isinstance(stored, dict) and stored.get(k) is not None}


def _env_spec_id(env_spec: Any) -> str | None:
    """The ``id`` of a Gymnasium ``EnvSpec`` stored as JSON (Minari's ``env_spec``)."""
    if isinstance(env_spec, str):
        try:
            env_spec = json.loads(env_spec)
        except ValueError:
            return None
    return env_spec.get("id") if isinstance(env_spec, dict) and isinstance(env_spec.get("id"), str) else None


def recorded_task(metadata: dict[str, Any]) -> str | None:
    """The task a dataset's metadata says it is for: o2o's ``task``, else the environment id the file
    records (``env_id``, Minari's ``env_spec``) when it is a task o2o knows; None when it says nothing."""
    from o2o.envs.registry import get_task
    from o2o.errors import UnknownTaskError

    if metadata.get("task"):
        return str(metadata["task"])
    for env_id in (metadata.get("env_id"), _env_spec_id(metadata.get("env_spec"))):
        if isinstance(env_id, str) and env_id:
            try:
                return get_task(env_id).name
            except UnknownTaskError:
                continue
    return None


def peek_metadata(path: str | os.PathLike) -> tuple[int, dict[str, Any]]:
    """(number of steps, metadata) of a dataset file without reading its columns (``o2o data list``).
    Raises ``OSError`` / ``KeyError`` / ``DatasetError`` when the file cannot be read that way."""
    path = minari_main_file(path) or Path(path)
    with h5py.File(path, "r") as f:
        metadata = _read_metadata(f.attrs, str(path))
        if _is_minari(f):
            steps = sum(int(f[k]["actions"].shape[0]) for k in f.keys() if k.startswith("episode_"))
        else:
            steps = int(f["rewards"].shape[0])
    for key, value in sidecar_metadata(path).items():
        metadata.setdefault(key, value)
    return steps, metadata


def check_task(
    dataset: Dataset,
    task: TaskLike | None,
    *,
    require_costs: bool = False,
    allow_other_task: bool = False,
    override: str | None = None,
    source: str | None = None,
) -> None:
    """Refuse a dataset that is not ``task``'s: its metadata names another task (unless
    ``allow_other_task``; ``override`` is how the user says so, named in the refusal), its widths are
    not the task's, or it lacks the costs a safe task (or ``require_costs``) needs."""
    source = source or dataset.metadata.get("loaded_from") or "the dataset"
    recorded = recorded_task(dataset.metadata)
    if task is not None and recorded and not allow_other_task and _task_key(recorded) != _task_key(task.name):
        allow = f", or {override} to use it anyway" if override else ""
        raise DatasetError(
            f"{source}: is a dataset for task {recorded} (its metadata says so), not {task.name}; "
            f"pass the dataset made for {task.name}{allow}"
        )
    if task is not None and (dataset.obs_dim, dataset.act_dim) != (task.obs_dim, task.act_dim):
        raise DatasetError(
            f"{source}: has obs/act widths {dataset.obs_dim}/{dataset.act_dim} but task {task.name} expects "
            f"{task.obs_dim}/{task.act_dim}; this dataset is for another task, pass the dataset made for {task.name}"
        )
    needs_costs = require_costs or (task is not None and bool(task.safe))
    if needs_costs and not dataset.has_costs:
        who = f"safe task {task.name}" if task is not None and task.safe else "this run"
        raise DatasetError(
            f"{source}: has no 'costs' column but {who} needs costs; use a DSRL-layout dataset that records costs"
        )


def _task_key(name: str) -> str:
    """A task name or env id as the registry's task name (ids and case do not make another task)."""
    from o2o.envs.registry import get_task
    from o2o.errors import UnknownTaskError

    try:
        return get_task(name).name
    except UnknownTaskError:
        return name.strip().lower()


def _is_minari(f: h5py.File) -> bool:
    return "observations" not in f and any(key.startswith("episode_") for key in f.keys())


def _member(group: h5py.Group, key: str, source: str, where: str = "") -> h5py.Group | h5py.Dataset:
    """``group[key]``, refusing what leads out of the file: an external link, a virtual dataset or one
    with external storage would bring in bytes the file's checksum does not cover (or a file that is
    not HDF5 at all)."""
    label = f"{where}{key}"
    link = group.get(key, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise DatasetError(
            f"{source}: '{label}' is an external link to '{link.filename}' ({link.path}); o2o reads only "
            "self-contained files, copy the linked data into the file"
        )
    try:
        item = group[key]
    except KeyError as error:  # a soft link to nothing, or an object HDF5 cannot open
        reason = str(error).strip("'\"") or "no such object"
        raise DatasetError(f"{source}: '{label}' cannot be opened ({reason}); the file is corrupt, fetch or write it again") from None
    if isinstance(item, h5py.Dataset) and (item.is_virtual or item.external):
        raise DatasetError(
            f"{source}: '{label}' keeps its data in other files (a virtual or external dataset); o2o reads only "
            "self-contained files, copy the data into the file"
        )
    return item


def _column(group: h5py.Group, key: str, source: str, where: str = "") -> h5py.Dataset:
    """One numeric array, not yet read; its dtype is checked so strings/objects are never materialised."""
    item = _member(group, key, source, where)
    label = f"{where}{key}"
    if not isinstance(item, h5py.Dataset):
        raise DatasetError(
            f"{source}: '{label}' is a group, not an array; nested (dict) observations or actions are not supported, flatten them"
        )
    if item.dtype.kind not in "biuf":
        raise DatasetError(
            f"{source}: column '{label}' holds non-numeric data (dtype {item.dtype}); every column must be numbers"
        )
    return item


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(N, 1) -> (N,): some writers store per-step scalars as column vectors."""
    return shape[:1] if len(shape) == 2 and shape[1] == 1 else shape


def _check_declared(items: dict[str, h5py.Dataset], source: str) -> None:
    """Refuse arrays, before any is read, whose declared shapes (already checked for consistency) the
    file does not back: rows declared but never written (read as fill values), or more bytes than
    there is memory for. A small file can declare a shape of terabytes."""
    for label, item in items.items():
        layout = item.id.get_create_plist().get_layout()
        if item.size == 0 or layout == h5py.h5d.COMPACT:
            continue
        if layout == h5py.h5d.CHUNKED:
            needed = int(np.prod([-(-n // c) for n, c in zip(item.shape, item.chunks)], dtype=np.float64))
            stored = item.id.get_num_chunks()
        else:
            needed, stored = item.nbytes, item.id.get_storage_size()
        if stored < needed:
            raise DatasetError(
                f"{source}: column '{label}' declares shape {item.shape} but the file stores only part of it "
                "(rows never written); the file is truncated or was written wrongly, fetch or write it again"
            )
    declared = sum(item.nbytes for item in items.values())
    available = _available_memory()
    if available is not None and declared > available:
        raise DatasetError(
            f"{source}: declares {declared / 1e9:.1f} GB of columns, more than the {available / 1e9:.1f} GB of memory "
            "available; the file is corrupt, or too large for this machine"
        )


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable, else physical memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _squeeze_scalar_column(array: np.ndarray) -> np.ndarray:
    """(N, 1) -> (N,): some writers store per-step scalars as column vectors."""
    return array[:, 0] if array.ndim == 2 and array.shape[1] == 1 else array


def _read_flat(f: h5py.File, source: str) -> tuple[dict[str, np.ndarray], bool, dict[str, Any]]:
    """The D4RL/DSRL layout. Unknown keys (D4RL's ``infos/*``, ``metadata/*``) are ignored."""
    missing = [key for key in REQUIRED_KEYS if f.get(key, getlink=True) is None]
    if missing:
        present = ", ".join(sorted(f.keys())) or "none"
        raise DatasetError(
            f"{source}: missing required key '{missing[0]}' (keys present: {present}); "
            "expected the D4RL/DSRL layout with observations, actions, rewards, terminals, timeouts"
        )
    items = {key: _column(f, key, source) for key in COLUMNS if f.get(key, getlink=True) is not None}
    # lengths and shapes must be right before rows are paired up, and before anything is read
    check_shapes({key: _squeezed(item.shape) if key in SCALAR_COLUMNS else item.shape for key, item in items.items()}, source)
    _check_declared(items, source)
    columns = {key: np.asarray(item[()]) for key, item in items.items()}
    for key in SCALAR_COLUMNS:
        if key in columns:
            columns[key] = _squeeze_scalar_column(columns[key])
    check_columns(columns, source)

    has_costs = "costs" in columns
    if not has_costs:
        columns["costs"] = np.zeros(columns["rewards"].shape[0], np.float32)
    notes: dict[str, Any] = {}
    if "next_observations" not in columns:
        columns, dropped = derive_next_observations(columns)
        notes["derived_next_observations"] = True
        notes["dropped_steps"] = dropped
    return columns, has_costs, notes


def derive_next_observations(columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Rebuild ``next_observations`` from the following row, as D4RL's ``qlearning_dataset`` does.

    ``s'_i = s_{i+1}``, which is wrong where an episode ends, so like ``qlearning_dataset`` we drop
    every timeout step (the next state was never recorded) and the file's last row, and keep terminal
    steps (their next state is never bootstrapped from). A step that is both terminal and timeout is
    dropped too, exactly as D4RL does. Unlike ``qlearning_dataset``, which returns no timeouts, the
    step before each dropped one is marked as a timeout so episodes stay separate.
    Returns the new columns and the number of dropped steps.
    """
    observations = columns["observations"]
    terminals = columns["terminals"].astype(bool)
    n = observations.shape[0]
    dropped = columns["timeouts"].astype(bool).copy()
    if n:
        dropped[-1] = True
    keep = ~dropped
    next_observations = np.empty_like(observations)
    next_observations[:-1] = observations[1:]
    # The kept step right before a dropped one ends its episode; without a terminal it was truncated.
    successor_dropped = np.append(dropped[1:], True)
    new_timeouts = successor_dropped & ~terminals
    out = {key: value[keep] for key, value in columns.items() if key != "timeouts"}
    out["next_observations"] = next_observations[keep]
    out["timeouts"] = new_timeouts[keep]
    return out, int(dropped.sum())


def _episode_number(key: str) -> tuple[int, str]:
    match = re.fullmatch(r"episode_(\d+)", key)
    return (int(match.group(1)) if match else -1, key)


def _read_minari(f: h5py.File, source: str) -> tuple[dict[str, np.ndarray], bool, dict[str, Any]]:
    """Minari's per-episode groups -> flat columns.

    Each ``episode_k`` holds ``observations`` [T+1, obs] (the final state included), ``actions`` [T, act],
    ``rewards``, ``terminations``, ``truncations`` [T], and optionally ``infos/cost`` [T]. An episode
    whose last step carries neither flag (recording stopped) gets a timeout so it stays its own episode.
    """
    names = sorted((key for key in f.keys() if key.startswith("episode_")), key=_episode_number)
    episodes: list[tuple[str, dict[str, h5py.Dataset]]] = []
    for name in names:  # every declared shape is checked before anything is read
        episode = _member(f, name, source)
        if not isinstance(episode, h5py.Group):
            raise DatasetError(f"{source}: '{name}' is not a group; expected Minari episode groups")
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            if episode.get(key, getlink=True) is None:
                present = ", ".join(sorted(episode.keys())) or "none"
                raise DatasetError(f"{source}: episode '{name}' is missing required key '{key}' (keys present: {present})")
        where = f"{name}/"
        items = {key: _column(episode, key, source, where) for key in ("observations", "actions", "rewards", "terminations", "truncations")}
        infos = _member(episode, "infos", source, where) if episode.get("infos", getlink=True) is not None else None
        if isinstance(infos, h5py.Group) and infos.get("cost", getlink=True) is not None:
            items["cost"] = _column(infos, "cost", source, f"{name}/infos/")
        shapes = {key: item.shape if key in ("observations", "actions") else _squeezed(item.shape) for key, item in items.items()}
        if len(shapes["actions"]) != 2:
            raise DatasetError(f"{source}: episode '{name}' has actions of shape {shapes['actions']}, expected [T, width]")
        steps = shapes["actions"][0]
        if len(shapes["observations"]) != 2 or shapes["observations"][0] != steps + 1:
            raise DatasetError(
                f"{source}: episode '{name}' has observations of shape {shapes['observations']} for {steps} actions; "
                "Minari stores T+1 observations for T steps"
            )
        lengths = {key: shapes[key][0] if shapes[key] else -1 for key in ("actions", "rewards", "terminations", "truncations")}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{key}={value}" for key, value in lengths.items())
            raise DatasetError(f"{source}: episode '{name}' has columns of different lengths ({listed})")
        episodes.append((name, items))
    _check_declared({f"{name}/{'infos/' if key == 'cost' else ''}{key}": item for name, items in episodes for key, item in items.items()}, source)

    parts: dict[str, list[np.ndarray]] = {key: [] for key in COLUMNS}
    with_costs = 0
    closed = 0
    for name, items in episodes:
        observations = np.asarray(items["observations"][()])
        actions = np.asarray(items["actions"][()])
        rewards = _squeeze_scalar_column(np.asarray(items["rewards"][()]))
        terminals = _squeeze_scalar_column(np.asarray(items["terminations"][()])).astype(bool)
        timeouts = _squeeze_scalar_column(np.asarray(items["truncations"][()])).astype(bool)
        steps = actions.shape[0]
        if "cost" in items:
            costs = _squeeze_scalar_column(np.asarray(items["cost"][()]))
            with_costs += 1
        else:
            costs = np.zeros(steps, np.float32)
        if steps and not (terminals[-1] or timeouts[-1]):
            timeouts = timeouts.copy()
            timeouts[-1] = True
            closed += 1
        parts["observations"].append(observations[:-1])
        parts["next_observations"].append(observations[1:])
        parts["actions"].append(actions)
        parts["rewards"].append(rewards)
        parts["costs"].append(costs)
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
    if 0 < with_costs < len(names):
        raise DatasetError(
            f"{source}: only {with_costs} of {len(names)} episodes have 'infos/cost'; costs must be recorded for every episode or none"
        )
    columns = {key: np.concatenate(values) for key, values in parts.items()}
    check_columns(columns, source)
    notes: dict[str, Any] = {}
    if closed:
        notes["episodes_closed_with_timeout"] = closed
    return columns, with_costs > 0, notes


def _to_json_value(value: Any) -> Any:
    """An HDF5 attribute value as plain JSON (numpy scalars/arrays, bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_to_json_value(item) for item in value.tolist()] if value.dtype.kind == "O" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_metadata(attrs: h5py.AttributeManager, source: str) -> dict[str, Any]:
    """Root attributes as a dict; ``o2o_metadata`` (our lossless JSON copy) wins over the flat ones."""
    metadata: dict[str, Any] = {}
    for key in sorted(attrs.keys()):
        if key == METADATA_ATTR:
            continue
        try:
            metadata[key] = _to_json_value(attrs[key])
        except (OSError, TypeError, ValueError):
            continue  # an attribute type h5py cannot decode (references, opaque): not needed to train
    metadata.update(stored_metadata(attrs, source))
    return metadata


def stored_metadata(attrs: h5py.AttributeManager, source: str) -> dict[str, Any]:
    """The ``o2o_metadata`` attribute (a JSON object) as a dict, ``{}`` when the file has none; a
    value that is not a JSON object is refused with a ``DatasetError`` naming the file."""
    if METADATA_ATTR not in attrs:
        return {}
    problem = None
    try:
        text = _to_json_value(attrs[METADATA_ATTR])
        stored = json.loads(text) if isinstance(text, str) else text
    except (OSError, TypeError, ValueError, RecursionError) as error:  # RecursionError: nesting too deep
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
    else:
        if not isinstance(stored, dict):
            problem = f"a JSON {type(stored).__name__}, not an object"
    if problem is not None:
        raise DatasetError(
            f"{source}: attribute '{METADATA_ATTR}' is not a JSON object ({problem}); the file's metadata is corrupt, "
            f"write the file again or delete the attribute"
        )
    return stored


# ----- saving -------------------------------------------------------------------------------------------


def save_hdf5(dataset: Dataset, path: str | os.PathLike, *, metadata: dict | None = None) -> str:
    """Write ``dataset`` to ``path`` (D4RL/DSRL layout) atomically and return the file's sha256.

    ``metadata`` is merged over ``dataset.metadata``; it must be JSON-able. The same dataset and
    metadata always give the same bytes, so the returned checksum can be pinned in a registry.
    No costs column is written when ``dataset.has_costs`` is False, which is how D4RL marks it.
    """
    path = Path(path)
    merged = {**dataset.metadata, **(metadata or {})}
    try:
        metadata_json = json.dumps(merged, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise DatasetError(
            f"{path}: metadata cannot be stored ({error}); use only strings, numbers, bools, lists and dicts"
        ) from None

    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(dataset, temporary, merged, metadata_json)
        # Data must be on disk before the rename makes it visible under the final name.
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        checksum = sha256_file(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise DatasetError(
                f"{path}: cannot write the dataset ({error.strerror or error}); check the directory exists and is writable"
            ) from None
        raise
    _fsync_directory(path.parent)
    return checksum


def _write_file(dataset: Dataset, path: Path, metadata: dict[str, Any], metadata_json: str) -> None:
    # track_order=False and sorted attribute names: the byte layout depends only on the contents.
    with h5py.File(path, "w", track_order=False) as f:
        for key in sorted(metadata):
            value = metadata[key]
            fits = isinstance(value, (str, bool, float)) or (isinstance(value, int) and abs(value) < 2**63)
            if fits and key != METADATA_ATTR:
                f.attrs[key] = value
        f.attrs[METADATA_ATTR] = metadata_json
        for key in COLUMNS:
            if key == "costs" and not dataset.has_costs:
                continue
            _write_column(f, key, getattr(dataset, key))


def _write_column(f: h5py.File, key: str, values: np.ndarray) -> None:
    values = np.ascontiguousarray(values, dtype=DTYPES[key])
    options: dict[str, Any] = {}
    if values.shape[0] > 0 and values.size > 0:
        row_bytes = max(1, values[0].nbytes)
        rows = int(min(values.shape[0], max(1, CHUNK_BYTES // row_bytes)))
        options = dict(chunks=(rows, *values.shape[1:]), compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
    # track_times=False: HDF5 otherwise stamps each array with its write time, changing the checksum.
    f.create_dataset(key, data=values, track_times=False, **options)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; best effort, as some platforms cannot open a directory."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)

