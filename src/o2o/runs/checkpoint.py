"""Checkpoints: device state as msgpack, host state as JSON, written atomically, loaded without pickle.

A checkpoint is a directory ``ckpt_<step>/`` holding

    arrays.msgpack    the array pytree (networks, optimiser states, targets, replay buffer, RNG keys)
                      as a flax state dict of numpy arrays, via ``flax.serialization.msgpack_serialize``
    host_state.json   what the host owns (controller state, counters, schedules), human-readable
    meta.json         format version, step, size and CRC32 of ``arrays.msgpack``

next to a one-line text file ``latest`` naming the newest complete checkpoint. Neither format can run
code when loaded (the failure of ``torch.load`` / pickle checkpoints).

Why the save is crash-safe: everything is written and fsync'ed in a hidden temporary directory,
which is renamed to its final name only when complete; ``latest`` is then replaced with
``os.replace``; only after that are old checkpoints deleted. A crash at any point leaves ``latest``
naming a complete checkpoint (or no ``latest`` at all before the first save), and no partial
checkpoint under a ``ckpt_<step>`` name.

Why loads take a ``template``: restoring into the structure the code builds today (``init``'s
output) checks every leaf's path, shape and dtype, and refuses a checkpoint that does not match
instead of silently loading part of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
from flax import serialization

from o2o.errors import RunDirError
from o2o.runs.jsonshape import check_json, read_json, shape_of

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "checkpoint_step",
    "list_checkpoints",
    "CHECKPOINTS_DIRNAME",
]

FORMAT_VERSION = 1
CHECKPOINTS_DIRNAME = "checkpoints"
LATEST = "latest"
ARRAYS_FILE = "arrays.msgpack"
HOST_FILE = "host_state.json"
META_FILE = "meta.json"
META_SHAPE = {"format": int, "step": int, "arrays_bytes": int, "arrays_crc32": int}
_NAME = re.compile(r"^ckpt_(\d+)$")
# Where an existing ckpt_<step> waits while a new checkpoint of the same step takes its name.
_REPLACED_PREFIX = ".replaced_"
_TMP_PREFIX = ".tmp_"


# --------------------------------------------------------------------------------------------------
# Small filesystem helpers


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (a rename is durable only once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new content, never half."""
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    _write_file(tmp, text.encode())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def checkpoint_step(path: str | Path) -> int:
    """The step of a ``ckpt_<step>`` directory, from its name."""
    match = _NAME.match(Path(path).name.removeprefix(_REPLACED_PREFIX))
    if not match:
        raise RunDirError(f"'{path}' is not a checkpoint directory (expected a name like ckpt_1000)")
    return int(match.group(1))


def list_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """The ``ckpt_<step>`` directories under ``checkpoints_dir``, oldest step first."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, given a run dir or its ``checkpoints/``; None before any save.

    A crash in the microseconds while a checkpoint replaces one of the same step leaves the old one
    under a ``.replaced_`` name; it is complete, so it is used.
    """
    path = Path(path)
    checkpoints_dir = path / CHECKPOINTS_DIRNAME if (path / CHECKPOINTS_DIRNAME).is_dir() else path
    pointer = checkpoints_dir / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    if not _NAME.match(name):
        raise RunDirError(
            f"'{pointer}' is corrupt (it should name a ckpt_<step> directory, holds {name[:40]!r}); "
            f"write the name of an existing checkpoint into it"
        )
    target = checkpoints_dir / name
    replaced = checkpoints_dir / f"{_REPLACED_PREFIX}{name}"
    if not target.is_dir() and replaced.is_dir():
        return replaced
    return target


# --------------------------------------------------------------------------------------------------
# Pytree <-> numpy state dict


def _is_key_array(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def host_state_dict(tree: Any) -> Any:
    """What a checkpoint writes of ``tree``: its state dict as numpy arrays on the host; passing it
    back as ``arrays`` to ``save_checkpoint`` costs no second transfer."""
    return _numpy_state_dict(tree)


def _numpy_state_dict(tree: Any) -> Any:
    """The flax state dict of ``tree`` on the host (typed PRNG keys as their raw uint32 data).

    One ``device_get`` for the whole tree: transfers overlap instead of one blocking copy per leaf.
    """
    state = serialization.to_state_dict(tree)
    state = jax.tree_util.tree_map(
        lambda x: jax.random.key_data(x) if _is_key_array(x) else x, state, is_leaf=_is_key_array
    )
    return jax.device_get(state)


class Rows:
    """A template leaf for an array saved with a varying number of rows (a replay buffer's written rows):
    the saved array needs ``like``'s row shape and dtype and at most its rows, and loads as saved."""

    def __init__(self, like: Any):
        self.shape, self.dtype = tuple(np.shape(like)), np.dtype(like.dtype).name


def _flat_leaves(state: Any, prefix: str = "") -> dict[str, Any]:
    """``{'agent/critic/params/Dense_0/kernel': leaf}`` over a state dict (empty dicts omitted)."""
    if isinstance(state, dict):
        flat: dict[str, Any] = {}
        for k, v in state.items():
            flat.update(_flat_leaves(v, f"{prefix}/{k}" if prefix else str(k)))
        return flat
    return {prefix or "(root)": state}


def _shape_dtype(x: Any) -> tuple[tuple[int, ...], str | None]:
    if isinstance(x, Rows):
        return x.shape, x.dtype
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        return tuple(np.shape(x)), np.dtype(x.dtype).name
    return tuple(np.shape(x)), None  # python scalars / None: shape () or (), no array dtype


def _check_against_template(where: Path, template_state: Any, restored: Any) -> None:
    """Refuse, leaf by leaf, a checkpoint that does not fit the structure the code builds now."""
    want = _flat_leaves(template_state)
    have = _flat_leaves(restored)
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
        if extra:
            parts.append(f"has unexpected {', '.join(extra[:3])}" + (" ..." if len(extra) > 3 else ""))
        raise RunDirError(
            f"checkpoint '{where}' does not match this agent's state: {'; '.join(parts)}; "
            f"it was written by a different method or config"
        )
    for k, target in want.items():
        src = have[k]
        if target is None and src is None:
            continue
        if _is_key_array(target):
            target = jax.random.key_data(target)
        (tshape, tdtype), (sshape, sdtype) = _shape_dtype(target), _shape_dtype(src)
        if isinstance(target, Rows) and len(sshape) == len(tshape) and sshape[1:] == tshape[1:] and sshape[:1] <= tshape[:1]:
            tshape = sshape  # fewer rows than the template: as saved
        if tshape != sshape:
            raise RunDirError(
                f"checkpoint '{where}': leaf '{k}' has shape {sshape}, this config expects {tshape}; "
                f"it was written with a different network size or task"
            )
        if tdtype is not None and sdtype is not None and tdtype != sdtype:
            raise RunDirError(
                f"checkpoint '{where}': leaf '{k}' has dtype {sdtype}, this config expects {tdtype}"
            )


def _restore_leaf(target: Any, value: Any) -> Any:
    """``value`` (numpy from the file) in the kind of container the template leaf is."""
    if _is_key_array(target):
        return jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(target))
    if isinstance(target, jax.Array):
        return jnp.asarray(value)
    if isinstance(target, np.ndarray):
        return np.array(value)  # a writable copy: the decoded buffer is read-only
    if isinstance(target, np.generic):
        return np.asarray(value)[()]
    if isinstance(target, Rows):
        return np.array(value)
    if isinstance(value, np.ndarray):
        # A python-number template leaf (TrainState.create's step=0) whose saved value is an array
        # (the step after a jitted update): keep the saved array, as the trained state had it.
        return jnp.asarray(value)
    return value


def _writable(x: Any) -> Any:
    return np.array(x) if isinstance(x, np.ndarray) and not x.flags.writeable else x


# --------------------------------------------------------------------------------------------------
# Save and load


def save_checkpoint(
    checkpoints_dir: str | Path,
    step: int,
    *,
    arrays: Any,
    host_state: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``ckpt_<step>/`` under ``checkpoints_dir`` atomically, point ``latest`` at it, prune.

    ``arrays`` is any pytree of jax/numpy arrays and flax structs (``TrainState`` with its optax
    state included); ``host_state`` must be JSON-able (numpy scalars are converted). Keeps the
    ``keep`` most recent checkpoints. Returns the checkpoint's path.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    checkpoints_dir = Path(checkpoints_dir)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)

    # Serialise before touching the directory, so a bad host_state leaves nothing behind.
    host_bytes = json.dumps(dict(host_state), default=json_default, indent=1).encode()
    array_bytes = serialization.msgpack_serialize(_numpy_state_dict(arrays), in_place=True)
    meta = {
        "format": FORMAT_VERSION,
        "step": step,
        "arrays_bytes": len(array_bytes),
        "arrays_crc32": zlib.crc32(array_bytes),
    }

    _remove_stale_temporaries(checkpoints_dir)
    name = f"ckpt_{step}"
    try:
        final = _write_checkpoint(checkpoints_dir, name, array_bytes, host_bytes, meta)
        write_text_atomic(checkpoints_dir / LATEST, name + "\n")
    except OSError as err:  # a full disk, a quota, a read-only or vanished file system
        kept = latest_checkpoint(checkpoints_dir)
        kept = f"the latest checkpoint, {kept.name}, is kept" if kept is not None and kept.is_dir() else "there is no earlier checkpoint"
        raise RunDirError(
            f"cannot write checkpoint {name} in '{checkpoints_dir}' ({err.strerror or err}); {kept}; free space (or fix "
            f"the file system) and continue the run with --resume"
        ) from None
    _prune(checkpoints_dir, final, keep)
    return final


def _write_checkpoint(checkpoints_dir: Path, name: str, array_bytes: bytes, host_bytes: bytes, meta: dict) -> Path:
    """``save_checkpoint``'s files written and fsync'ed in a temporary directory, renamed to ``name``."""
    tmp = checkpoints_dir / f"{_TMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_file(tmp / ARRAYS_FILE, array_bytes)
        _write_file(tmp / HOST_FILE, host_bytes)
        _write_file(tmp / META_FILE, json.dumps(meta, indent=1).encode())
        _fsync_dir(tmp)
        final = checkpoints_dir / name
        if final.exists():
            # The same step saved again (e.g. a final save that coincides with a periodic one):
            # park the old one where latest_checkpoint() finds it should we die between renames.
            replaced = checkpoints_dir / f"{_REPLACED_PREFIX}{name}"
            shutil.rmtree(replaced, ignore_errors=True)
            os.rename(final, replaced)
            os.rename(tmp, final)
        else:
            os.rename(tmp, final)
        _fsync_dir(checkpoints_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


STRIPPED_KEY = "stripped"  # host_state key of a checkpoint reduced by strip_checkpoint (what it still holds)
OPTIMISER_STRIPPED_KEY = "optimiser_state_stripped"  # ... of one whose optimiser states only were zeroed
DROPPED_KEY = "dropped_arrays"  # paths of the arrays a stripped checkpoint no longer stores (read back as zeros)


_DROPPED = object()


def _put_zeros(restored: dict, template_state: Any, paths: list[str]) -> None:
    """Put zeros of the template's shape and dtype at each of ``paths`` (``/``-joined keys) of ``restored``."""
    for path in paths:
        keys, node, ref = path.split("/"), restored, template_state
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            ref = ref.get(k, {}) if isinstance(ref, dict) else {}
        leaf = ref.get(keys[-1]) if isinstance(ref, dict) else None
        if leaf is not None:
            node[keys[-1]] = np.zeros(np.shape(leaf), np.asarray(leaf).dtype)


def strip_checkpoint(
    ckpt: str | Path, keep: tuple[str, ...], note: str, *, optimiser_only: bool = False, also: tuple[str, ...] = (),
    drop: bool = False,
) -> tuple[int, int]:
    """Zero every array of checkpoint ``ckpt`` whose path (``/``-joined state-dict keys) does not start
    with one of ``keep``, in place: shapes and dtypes stay, so it still loads against its template, and
    the zeros compress to almost nothing (to carry evaluation-only checkpoints off a GPU machine).
    ``host_state.json`` records ``note`` under ``"stripped"``; loaders that need more than what was kept
    must refuse such a checkpoint (``o2o.bridge.pretrained.load_pretrained`` does). With
    ``optimiser_only`` ``keep`` is ignored and only optimiser states (paths with an ``opt_state``
    component) are zeroed, recorded under ``"optimiser_state_stripped"``: every network stays, enough to
    fine-tune from (fresh optimisers) but not to resume training; ``also`` names more paths to zero with
    them, parts that fine-tuning does not read (target networks, BEAR's VAE). With ``drop`` those arrays
    are not stored at all and their paths are listed under ``"dropped_arrays"``: ``load_checkpoint``
    with a template reads them back as zeros of the template's shapes (the file holds only what is
    kept). Returns the number of arrays kept and zeroed (or dropped)."""
    ckpt = _resolve(Path(ckpt))
    restored = serialization.msgpack_restore((ckpt / ARRAYS_FILE).read_bytes())
    counts = [0, 0]
    dropped_paths: list[str] = []

    def dropped(path: str) -> bool:
        def under(prefixes):
            return any(path == k or path.startswith(k + "/") for k in prefixes)

        if optimiser_only:
            return "opt_state" in path.split("/") or under(also)
        return not under(keep)

    def walk(tree: Any, path: str) -> Any:
        if isinstance(tree, dict):
            out = {k: walk(v, f"{path}/{k}" if path else str(k)) for k, v in tree.items()}
            return {k: v for k, v in out.items() if v is not _DROPPED}
        if isinstance(tree, np.ndarray) and dropped(path):
            counts[1] += 1
            if drop:
                dropped_paths.append(path)
                return _DROPPED
            return np.zeros_like(tree)
        counts[0] += isinstance(tree, np.ndarray)
        return tree

    array_bytes = serialization.msgpack_serialize(walk(restored, ""), in_place=True)
    host_state = json.loads((ckpt / HOST_FILE).read_text())
    host_state[OPTIMISER_STRIPPED_KEY if optimiser_only else STRIPPED_KEY] = note
    if dropped_paths:
        host_state[DROPPED_KEY] = sorted(set(host_state.get(DROPPED_KEY, [])) | set(dropped_paths))
    meta = json.loads((ckpt / META_FILE).read_text())
    meta.update(arrays_bytes=len(array_bytes), arrays_crc32=zlib.crc32(array_bytes))
    # arrays first, meta last: an interruption in between leaves a checkpoint that fails its CRC check
    _write_file(ckpt / ARRAYS_FILE, array_bytes)
    _write_file(ckpt / HOST_FILE, json.dumps(host_state, default=json_default, indent=1).encode())
    _write_file(ckpt / META_FILE, json.dumps(meta, indent=1).encode())
    return counts[0], counts[1]


def json_default(x: Any) -> Any:
    """``json.dumps`` hook: numpy scalars and arrays as numbers and lists; anything else refused."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (np.ndarray, jax.Array)):
        return np.asarray(x).tolist()
    raise TypeError(
        f"a {type(x).__name__} cannot be stored as JSON (host_state and summaries hold numbers, "
        f"strings, lists and dicts; device arrays belong in `arrays`)"
    )


def _remove_stale_temporaries(checkpoints_dir: Path) -> None:
    """Temporary directories left by a crashed save; and a parked same-step duplicate if obsolete."""
    for p in checkpoints_dir.iterdir():
        if p.name.startswith(_TMP_PREFIX):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        elif p.name.startswith(_REPLACED_PREFIX):
            original = checkpoints_dir / p.name[len(_REPLACED_PREFIX) :]
            if original.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def _prune(checkpoints_dir: Path, newest: Path, keep: int) -> None:
    """Delete all but ``newest`` and the ``keep - 1`` highest earlier steps.

    Checkpoints of a higher step than the one just written belong to a timeline that was abandoned
    (the run went back to an earlier step), so they go too.
    """
    newest_step = checkpoint_step(newest)
    earlier = [p for p in list_checkpoints(checkpoints_dir) if checkpoint_step(p) < newest_step]
    keep_set = {newest, *earlier[max(0, len(earlier) - (keep - 1)) :]} if keep > 1 else {newest}
    for p in list_checkpoints(checkpoints_dir):
        if p not in keep_set:
            shutil.rmtree(p)
    # `latest` names a complete checkpoint now, so parked same-step duplicates are obsolete.
    for p in checkpoints_dir.glob(f"{_REPLACED_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def _resolve(path: Path) -> Path:
    """A checkpoint directory from a checkpoint dir, a ``checkpoints/`` dir or a run dir."""
    if (path / META_FILE).is_file() or (path / ARRAYS_FILE).is_file():
        return path
    if not path.exists():
        raise RunDirError(f"checkpoint '{path}' does not exist; check the path")
    target = latest_checkpoint(path)
    if target is None:
        raise RunDirError(
            f"'{path}' holds no checkpoint (no checkpoints/latest); the run stopped before its "
            f"first save, so start it again"
        )
    if not target.is_dir():
        raise RunDirError(
            f"checkpoint '{target}' named by 'latest' is missing; write the name of an existing "
            f"ckpt_<step> directory into '{target.parent / LATEST}'"
        )
    return target


def load_checkpoint(path: str | Path, *, template: Any = None, host_template: Any = None) -> tuple[Any, dict]:
    """Read a checkpoint: returns ``(arrays, host_state)``.

    ``path`` is a ``ckpt_<step>`` directory, a ``checkpoints/`` directory or a run directory (both
    follow ``latest``). With ``template`` (a pytree of the same structure, e.g. a freshly
    initialised agent state) the arrays come back in its structure and containers (jax arrays,
    TrainStates, typed PRNG keys) after a check of every leaf's path, shape and dtype; without it,
    as the nested dict of numpy arrays that was stored. With ``host_template`` (a host state as the
    code writes it now) ``host_state.json`` must hold its every key with values of the same kinds
    (``o2o.runs.jsonshape.shape_of``). ``meta.json`` and ``host_state.json`` of another structure, and
    arrays holding NaN or inf, are refused with a ``RunDirError`` naming the file.
    """
    ckpt = _resolve(Path(path))
    fix = "resume from an earlier checkpoint (edit checkpoints/latest) or start the run again"
    for fname in (ARRAYS_FILE, HOST_FILE, META_FILE):
        if not (ckpt / fname).is_file():
            raise RunDirError(f"checkpoint '{ckpt}' is incomplete: {fname} is missing; {fix}")
    meta = read_json(ckpt / META_FILE, dict, fix)
    host_state = read_json(ckpt / HOST_FILE, dict, fix)
    if meta.get("format") != FORMAT_VERSION:
        raise RunDirError(
            f"checkpoint '{ckpt}' has format {meta.get('format')!r}, this o2o reads format "
            f"{FORMAT_VERSION}; load it with the o2o version that wrote it"
        )
    check_json(meta, META_SHAPE, str(ckpt / META_FILE), fix)
    data = (ckpt / ARRAYS_FILE).read_bytes()
    if len(data) != meta.get("arrays_bytes") or zlib.crc32(data) != meta.get("arrays_crc32"):
        raise RunDirError(
            f"checkpoint '{ckpt}' is corrupt ({ARRAYS_FILE} fails its size/CRC check); {fix}"
        )
    try:
        restored = serialization.msgpack_restore(data)
    except (msgpack.exceptions.UnpackException, ValueError, TypeError) as err:
        raise RunDirError(f"checkpoint '{ckpt}' is corrupt ({ARRAYS_FILE}: {err}); {fix}") from None
    del data
    for name, leaf in _flat_leaves(restored).items():
        if isinstance(leaf, np.ndarray) and np.issubdtype(leaf.dtype, np.inexact) and not np.isfinite(leaf).all():
            raise RunDirError(f"checkpoint '{ckpt}' holds NaN or inf in '{name}' (o2o never saves a diverged state, so "
                              f"the file was altered or damaged); {fix}")

    if template is not None:  # the arrays first: a mismatch there names the cause (another method or size)
        template_state = serialization.to_state_dict(template)
        dropped = host_state.get(DROPPED_KEY, [])
        if not isinstance(dropped, list) or not all(isinstance(p, str) for p in dropped):
            raise RunDirError(f"checkpoint '{ckpt}': {HOST_FILE}'s '{DROPPED_KEY}' is not a list of array paths; {fix}")
        _put_zeros(restored, template_state, dropped)
        _check_against_template(ckpt, template_state, restored)
    if host_template is not None:
        check_json(host_state, shape_of(host_template), str(ckpt / HOST_FILE), fix)
    if template is None:
        return jax.tree_util.tree_map(_writable, restored), host_state

    leaves = jax.tree_util.tree_map(
        _restore_leaf, template_state, restored, is_leaf=lambda x: x is None or _is_key_array(x) or isinstance(x, Rows)
    )
    return serialization.from_state_dict(template, leaves), host_state
