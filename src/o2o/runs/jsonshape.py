"""JSON files o2o wrote (checkpoints, run summaries, archive indexes) read back with their structure
checked, so a file of the wrong structure (a list for an object, a missing key, a string for a number)
is refused with one line naming the file and the place, not a traceback later in the code that uses it.

A *shape* is one of:
    a type          ``dict``, ``list``, ``str``, ``bool``; ``int`` an integer; ``float`` any number
                    (booleans are neither)
    ``None``        anything
    ``{key: shape}`` an object holding at least these keys (more are allowed); a key ending in ``?``
                    may be absent, the key ``*`` is every value of the object
    ``[shape]``     an array whose every item has that shape
    a tuple         any one of its shapes (``type(None)`` for null)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from o2o.errors import O2OError, RunDirError

Shape = Any
_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "true or false", int: "an integer",
          float: "a number", type(None): "null"}


def _name(value: Any) -> str:
    for kind in (bool, dict, list, str, int, float, type(None)):
        if isinstance(value, kind):
            return _NAMES[kind]
    return type(value).__name__


def _describe(shape: Shape) -> str:
    if isinstance(shape, dict):
        return "an object"
    if isinstance(shape, list):
        return "an array"
    return _NAMES.get(shape, "anything")


def _has_type(value: Any, kind: type) -> bool:
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def mismatch(value: Any, shape: Shape, where: str = "") -> str | None:
    """Where ``value`` first departs from ``shape``, in words (``'counters/steps' is a string, expected
    an integer``); None when it has the shape."""
    at = f"'{where}'" if where else "the file"
    if shape is None:
        return None
    if isinstance(shape, tuple):
        if any(mismatch(value, option, where) is None for option in shape):
            return None
        wanted = " or ".join(_describe(option) for option in shape)
        return f"{at} is {_name(value)}, expected {wanted}"
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{at} is {_name(value)}, expected an object"
        for key, inner in shape.items():
            if key == "*":
                checks = list(value.items())
            elif key.endswith("?"):
                checks = [(key[:-1], value[key[:-1]])] if key[:-1] in value else []
            elif key not in value:
                return f"{at} has no '{key}'" if where else f"'{key}' is missing"
            else:
                checks = [(key, value[key])]
            for name, item in checks:
                found = mismatch(item, inner, f"{where}/{name}" if where else str(name))
                if found is not None:
                    return found
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{at} is {_name(value)}, expected an array"
        for i, item in enumerate(value):
            found = mismatch(item, shape[0], f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if not _has_type(value, shape):
        return f"{at} is {_name(value)}, expected {_NAMES[shape]}"
    return None


def shape_of(example: Any) -> Shape:
    """The shape of ``example``, a value as the code writes it now: every key of its objects present,
    numbers as numbers, strings as strings; arrays and nulls are not looked into (their items vary)."""
    if isinstance(example, dict):
        return {key: shape_of(value) for key, value in example.items()}
    if isinstance(example, bool):
        return bool
    if isinstance(example, (int, float)):
        return float
    if isinstance(example, str):
        return str
    if isinstance(example, (list, tuple)):
        return list
    return None


def check_json(value: Any, shape: Shape, source: str, fix: str, error: type[O2OError] = RunDirError) -> Any:
    """``value`` (parsed from ``source``) when it has ``shape``; else an ``error`` naming the place."""
    found = mismatch(value, shape)
    if found is not None:
        raise error(f"'{source}' does not have the structure o2o writes ({found}); {fix}")
    return value


def read_json(path: str | Path, shape: Shape, fix: str, error: type[O2OError] = RunDirError) -> Any:
    """The JSON file ``path`` parsed, checked to have ``shape``; an unreadable file, one that is not
    JSON (or not UTF-8) and one of another structure are each an ``error`` naming the file and ``fix``."""
    try:
        value = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as err:
        raise error(f"cannot read '{path}' ({err.strerror or err}); {fix}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: nesting too deep
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise error(f"'{path}' is not valid JSON ({reason}); {fix}") from None
    return check_json(value, shape, str(path), fix, error)
