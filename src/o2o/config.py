"""Typed, strict configs: frozen dataclasses filled from YAML presets and ``key=value`` overrides.

Every hyper-parameter lives in a frozen dataclass whose fields carry a type annotation and a one-line
help text (``field(default=..., metadata={"help": "..."})``). This module turns plain mappings (a
YAML preset, a run's saved ``config.yaml``) and command-line overrides into those dataclasses, and
refuses anything it cannot place: a misspelt key or a value of the wrong type is a one-line
``ConfigError``, never a silently ignored setting (the failure mode of ``argparse`` + ``**kwargs``
research code, where ``--actr_lr`` runs the default).

Supported annotations: ``int``, ``float``, ``bool``, ``str``, ``X | None`` (and other unions, tried
in order), ``Literal[...]``, ``tuple[T, ...]``, ``tuple[A, B]``, ``dict[str, T]`` and nested config
dataclasses. A config's ``__post_init__`` may raise ``ConfigError`` for checks across fields.

    @dataclass(frozen=True)
    class AgentConfig:
        actor_lr: float = field(default=3e-4, metadata={"help": "actor Adam learning rate"})

    cfg = load_config(TrainConfig, "configs/sac.yaml", overrides=["agent.actor_lr=1e-4"])
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from o2o.errors import ConfigError

C = TypeVar("C")

__all__ = [
    "from_dict",
    "update_from_dict",
    "to_dict",
    "replace_path",
    "apply_overrides",
    "load_yaml",
    "load_config",
    "config_help",
    "diff_configs",
    "format_value",
]


# --------------------------------------------------------------------------------------------------
# Introspection


@functools.cache
def _config_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """The settable fields of a config dataclass, name -> (Field, resolved type annotation).

    ``typing.get_type_hints`` resolves string annotations (``from __future__ import annotations``)
    against the defining module, so configs may use either style.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _union_args(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _type_name(tp: Any) -> str:
    """How a type reads in an error message or a ``--help`` listing."""
    if tp is type(None):
        return "None"
    if _is_config_class(tp):
        return f"a mapping (section {tp.__name__})"
    args = _union_args(tp)
    if args is not None:
        return " | ".join(_type_name(a) for a in args)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            return f"tuple[{_type_name(targs[0])}, ...]"
        return "tuple[" + ", ".join(_type_name(a) for a in targs) + "]"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"dict[{_type_name(k)}, {_type_name(v)}]"
    return getattr(tp, "__name__", str(tp))


def format_value(value: Any) -> str:
    """A value as one would type it in YAML or on the command line (``0.0003``, ``[256, 256]``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = to_dict(value)
    if isinstance(value, tuple):
        value = _plain(value)
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)


def _describe(value: Any) -> str:
    """``str 'abc'`` - the type and the value, for 'expects X, got Y' messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _unknown_key(key: str, where: str, valid: Iterable[str]) -> ConfigError:
    valid = list(valid)
    dotted = _join(where, key)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean '{_join(where, close[0])}'?)" if close else ""
    level = f" under '{where}'" if where else ""
    return ConfigError(
        f"unknown config key '{dotted}'{hint}; valid keys{level}: {', '.join(valid) or '(none)'}"
    )


# --------------------------------------------------------------------------------------------------
# Type checking and conversion of one value


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _coerce(tp: Any, value: Any, key: str, current: Any = None) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it where the conversion is lossless.

    The conversions exist because of how values arrive, not to be lenient: PyYAML (YAML 1.1) reads
    ``1e-4`` as a string, a command line gives ``true`` as text, YAML has lists but no tuples.
    ``current`` is the value being replaced; a mapping given for a section merges into it.
    """
    if tp is Any:
        return value

    def wrong() -> ConfigError:
        return ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {_describe(value)}")

    if _is_config_class(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise wrong()
        return _build(tp, value, key, base=current if isinstance(current, tp) else None)

    args = _union_args(tp)
    if args is not None:
        if value is None:
            if type(None) in args:
                return None
            raise wrong()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, current)
            except ConfigError as err:
                # A single non-None alternative (the usual ``X | None``) gives its own, precise error.
                if len([a for a in args if a is not type(None)]) == 1:
                    raise err from None
        raise wrong()

    origin = typing.get_origin(tp)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if type(choice) is type(value) and choice == value:
                return value
        raise wrong()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong()
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            return tuple(_coerce(targs[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(targs):
            raise ConfigError(
                f"config key '{key}' expects {_type_name(tp)} ({len(targs)} items), "
                f"got {len(value)} items {format_value(list(value))}"
            )
        return tuple(_coerce(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(targs, value)))
    if origin is dict:
        ktype, vtype = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise wrong()
        return {
            _coerce(ktype, k, f"{key}.{k}"): _coerce(vtype, v, f"{key}.{k}") for k, v in value.items()
        }

    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise wrong()
    if tp is int:
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, int):
            return _check_range(key, value)
        # ``1e6`` steps: YAML gives a float or (PyYAML) a string; accept it when it is a whole number.
        number = _parse_float(value) if isinstance(value, str) else value
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            return _check_range(key, int(number))
        raise wrong()
    if tp is float:
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str) and (number := _parse_float(value)) is not None:
            pass
        else:
            raise wrong()
        return _check_float(key, number)
    if tp is str:
        if isinstance(value, str):
            return value
        raise wrong()
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise wrong()
    raise TypeError(f"config key '{key}': unsupported annotation {tp!r}")


def _check_float(key: str, number: float) -> float:
    """Every float setting is finite (a NaN or inf learning rate, weight or limit can only poison a
    run) and within its kind's range (``RANGES``)."""
    if not math.isfinite(number):
        raise ConfigError(f"config key '{key}' must be a finite number, got {number}; give a finite value")
    return _check_range(key, number)


def _is_lr(name: str) -> bool:
    return name == "lr" or name.endswith("_lr")


# The values a kind of setting can take, by the key's last name (whatever section it is in):
# (which names, the test, what it is, the range as the error message says it).
RANGES: tuple[tuple[Any, Any, str, str], ...] = (
    (_is_lr, lambda v: v > 0, "a learning rate", "> 0"),
    (lambda n: n in ("gamma", "cost_gamma"), lambda v: 0 < v <= 1, "a discount factor", "in (0, 1]"),
    (lambda n: n == "tau", lambda v: 0 < v <= 1, "a Polyak (target network) rate", "in (0, 1]"),
    (lambda n: n == "expectile", lambda v: 0 < v < 1, "an expectile", "in (0, 1)"),
    (lambda n: n == "gae_lambda", lambda v: 0 <= v <= 1, "GAE's lambda", "in [0, 1]"),
    (lambda n: n.endswith("batch_size"), lambda v: v > 0, "a batch size", "> 0"),
    (lambda n: n.endswith("hidden_dims"), lambda v: v > 0, "a layer width", "> 0"),
)


def _check_range(key: str, value: Any) -> Any:
    """``value`` unless ``RANGES`` says a setting of that name cannot take it (a one-line ``ConfigError``).
    An item of a tuple (``agent.hidden_dims[0]``) is checked by the tuple's name."""
    name = key.rsplit(".", 1)[-1].split("[", 1)[0]
    for applies, ok, what, allowed in RANGES:
        if applies(name) and not ok(value):
            raise ConfigError(f"config key '{key}' is {what} and must be {allowed}, got {value:g}; give a value {allowed}")
    return value


# --------------------------------------------------------------------------------------------------
# Building, reading and changing configs


def _build(cls: type[C], d: Mapping, where: str, base: C | None) -> C:
    """``cls`` from mapping ``d``; fields ``d`` leaves out come from ``base``, else the defaults."""
    if not isinstance(d, Mapping):
        what = f"config section '{where}'" if where else "a config"
        raise ConfigError(f"{what} must be a mapping of keys to values, got {_describe(d)}")
    fields = _config_fields(cls)
    for key in d:
        if key not in fields:
            raise _unknown_key(str(key), where, fields)
    kwargs = {}
    for name, (f, tp) in fields.items():
        key = _join(where, name)
        current = getattr(base, name) if base is not None else None
        if name in d:
            if current is None and _is_config_class(tp) and isinstance(d[name], Mapping):
                current = _default(f)  # a partial section fills in from the section's defaults
            kwargs[name] = _coerce(tp, d[name], key, current)
        elif base is not None:
            kwargs[name] = current
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                f"config key '{key}' is required (it has no default); set it in the YAML or "
                f"with {key}=..."
            )
    return cls(**kwargs)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def from_dict(cls: type[C], d: Mapping, *, where: str = "") -> C:
    """Build config ``cls`` from a (partial) mapping; keys it omits keep their defaults.

    ``where`` is the dotted path of ``d`` inside a larger config, used only in error messages
    (``from_dict(AgentConfig, d, where="agent")`` reports ``agent.actor_lr``).
    """
    return _build(cls, d, where, base=None)


def update_from_dict(cfg: C, d: Mapping, *, where: str = "") -> C:
    """``cfg`` with the values of a (partial) mapping laid over it, checked like ``from_dict``.

    Lets presets stack (method defaults, then a task preset, then the command line).
    """
    return _build(type(cfg), d, where, base=cfg)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(cfg: Any) -> dict:
    """A config as nested plain dicts, lists and scalars (YAML- and JSON-safe; tuples -> lists)."""
    return {name: _plain(getattr(cfg, name)) for name in _config_fields(type(cfg))}


def replace_path(cfg: C, path: str, value: Any) -> C:
    """A copy of ``cfg`` with the field at dotted ``path`` set to ``value`` (type-checked)."""
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ConfigError(f"config key '{path}' is malformed; write dotted names like agent.actor_lr")

    def go(node: Any, i: int) -> Any:
        where = ".".join(parts[:i])
        fields = _config_fields(type(node))
        name = parts[i]
        if name not in fields:
            raise _unknown_key(name, where, fields)
        _, tp = fields[name]
        current = getattr(node, name)
        if i == len(parts) - 1:
            new = _coerce(tp, value, _join(where, name), current)
        elif dataclasses.is_dataclass(current):
            new = go(current, i + 1)
        else:
            raise ConfigError(
                f"config key '{path}' does not exist: '{_join(where, name)}' is a value "
                f"({_type_name(tp)}), not a section"
            )
        return dataclasses.replace(node, **{name: new})

    return go(cfg, 0)


def _parse_override_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # e.g. an unquoted 'a: b' for a str field; type checking decides


def apply_overrides(cfg: C, overrides: Sequence[str]) -> C:
    """Apply command-line ``key=value`` overrides in order; values are read as YAML, then checked.

    ``agent.actor_lr=1e-4``, ``agent.hidden_dims=[256,256]``, ``agent.cost_limit=null``,
    ``agent=\"{actor_lr: 1e-4}\"`` (merges into the section). A str field also takes the raw text,
    so ``run.name=2024`` is the string ``'2024'`` rather than a type error.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"override '{item}' is malformed; write key=value, e.g. agent.actor_lr=1e-4"
            )
        parsed = _parse_override_value(raw)
        try:
            cfg = replace_path(cfg, key, parsed)
        except ConfigError as err:
            if parsed == raw or not isinstance(parsed, (int, float, bool, type(None))):
                raise
            try:
                cfg = replace_path(cfg, key, raw)
            except ConfigError:
                raise err from None
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    PyYAML keeps the last of two equal keys; in a preset that silently drops a setting.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{path}' is a directory; give the path of a .yaml file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{path}' is not text (byte {err.start} is not UTF-8); give a YAML text file") from None
    except OSError as err:
        raise ConfigError(f"config file '{path}' cannot be read: {err}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config file '{path}' is not valid YAML: {problem}{where}; fix the syntax there"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{path}' must hold a mapping of keys to values at top level, "
            f"got {type(data).__name__}"
        )
    return data


def load_config(
    cls: type[C], *paths: str | Path, overrides: Sequence[str] = (), base: C | None = None
) -> C:
    """``cls`` from its defaults (or ``base``), then each YAML file in order, then the overrides.

    Errors from a file name the file: ``configs/sac.yaml: unknown config key ...``.
    """
    cfg = base
    for path in paths:
        data = load_yaml(path)
        try:
            cfg = from_dict(cls, data) if cfg is None else update_from_dict(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    if cfg is None:
        cfg = from_dict(cls, {})
    return apply_overrides(cfg, overrides)


def config_help(cls: type) -> list[tuple[str, str, str, str]]:
    """Rows ``(dotted key, type, default, help)`` for every leaf setting, sections flattened."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(c: type, where: str) -> None:
        for name, (f, tp) in _config_fields(c).items():
            key = _join(where, name)
            if _is_config_class(tp):
                walk(tp, key)
                continue
            has_default = not (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            value = _default(f)
            if not has_default:
                default = "(required)"
            elif isinstance(value, str):
                default = value  # as typed on the command line, without quotes
            else:
                default = format_value(value)
            rows.append((key, _type_name(tp), default, f.metadata.get("help", "")))

    walk(cls, "")
    return rows


# --------------------------------------------------------------------------------------------------
# Comparing saved configs


def _flatten(d: Mapping, where: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = _join(where, str(k))
        if isinstance(v, Mapping) and v:
            flat.update(_flatten(v, key))
        else:
            flat[key] = v
    return flat


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    # bool is an int in Python; True must not equal 1 here.
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


_ABSENT = object()


def diff_configs(a: Mapping, b: Mapping) -> list[str]:
    """``"key: old -> new"`` for each dotted key whose value differs between two config dicts."""
    fa, fb = _flatten(a), _flatten(b)
    lines = []
    for key in list(fa) + [k for k in fb if k not in fa]:
        old, new = fa.get(key, _ABSENT), fb.get(key, _ABSENT)
        if old is _ABSENT or new is _ABSENT or not _same(old, new):
            show = lambda v: "(absent)" if v is _ABSENT else format_value(v)  # noqa: E731
            lines.append(f"{key}: {show(old)} -> {show(new)}")
    return lines
