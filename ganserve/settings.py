"""Typed dataclass configuration ↔ command-line flags and environment variables.

Every field of a config dataclass becomes ``--field-name`` with its default shown in ``--help``,
and can also come from ``GANSERVE_FIELD_NAME``; a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")
ENV_PREFIX = "GANSERVE_"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _converter(tp: Any):
    tp, optional = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        (item_type, *_rest) = typing.get_args(tp) or (str,)

        def convert_sequence(text: str):
            items = [item_type(x) for x in str(text).replace(" ", "").split(",") if x]
            return tuple(items) if origin is tuple else items

        return convert_sequence
    if tp is bool:
        return _parse_bool
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp
    if tp in (int, float, str):
        if optional:
            return lambda text: None if str(text).lower() in {"", "none"} else tp(text)
        return tp
    raise TypeError(f"unsupported config field type {tp!r}")


def _help_default(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = ()
) -> None:
    """Add one flag per field of dataclass ``cls`` (help text from ``metadata['help']``)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        default = (
            field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        )
        tp, _ = _unwrap_optional(hints[field.name])
        help_text = field.metadata.get("help", "")
        full_help = f"{help_text} (default: {_help_default(default)}; env {_env_name(field.name)})"
        if isinstance(tp, type) and issubclass(tp, Enum):
            full_help = f"one of {', '.join(m.value for m in tp)}. " + full_help
        kwargs: dict[str, Any] = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": full_help.strip(),
            "type": _converter(hints[field.name]),
        }
        if tp is bool:
            kwargs["nargs"] = "?"
            kwargs["const"] = True
            kwargs["metavar"] = "BOOL"
        group.add_argument(_flag(field.name), **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from parsed flags, falling back to environment variables, then defaults."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
        elif _env_name(field.name) in os.environ:
            raw = os.environ[_env_name(field.name)]
            try:
                values[field.name] = _converter(hints[field.name])(raw)
            except (TypeError, ValueError) as exc:
                raise SystemExit(
                    f"environment variable {_env_name(field.name)}={raw!r}: {exc}"
                ) from exc
    return cls(**values)


def dataclass_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (possibly nested) config dataclass saved with ``dataclasses.asdict``."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in known:
            continue
        tp, _ = _unwrap_optional(hints[name])
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = dataclass_from_dict(tp, value)
        elif isinstance(tp, type) and issubclass(tp, Enum) and value is not None:
            value = tp(value)
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def to_plain(value: Any) -> Any:
    """``dataclasses.asdict`` with enums turned into their values (JSON- and pickle-friendly)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value
