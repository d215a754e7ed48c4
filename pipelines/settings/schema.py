"""How a section of params.yaml becomes a typed, frozen settings object, checked once.

A settings class is a frozen dataclass whose annotations are the schema: ``int``, ``float``, ``str``,
``bool``, ``None`` in a union for "may be null", ``tuple[X, ...]`` for a YAML list, ``Mapping[str, X]``
for a mapping with open keys (per style, per job), ``Literal[...]`` for a choice (the core's own
lists, e.g. ``Literal[ENGINES]``), another settings class for a nested section, ``Any`` for a value
passed through as is. A field with a default may be left out of the file.

Every problem is one line naming the setting as the user wrote it (``params.yaml: train.style.crop:
expected int, got 'big'``); an unknown key is an error too, so a typo is not silently ignored.
Values come back immutable (tuples, read-only mappings), so no caller can change what the next one
reads; ``plain`` turns an object back into the dicts and lists it came from (for hashing, for Ray).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class SettingsError(ValueError):
    """A params value that does not fit its setting; the message names the file and the key."""


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return _freeze(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise SettingsError(f"{where}: must be set (null is not allowed)")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except SettingsError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise SettingsError(f"{where}: expected {' or '.join(_name(a) for a in args if a is not type(None))}, "
                            f"got {value!r}")
    if value is None:
        raise SettingsError(f"{where}: must be set (null is not allowed)")
    if origin is Literal:
        if value not in args:
            raise SettingsError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a mapping, got {value!r}")
        key_t, val_t = args if args else (Any, Any)
        return types.MappingProxyType({_convert(key_t, k, where): _convert(val_t, v, f"{where}.{k}")
                                       for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise SettingsError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"settings schema: unsupported type {tp!r} at {where}")


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def build(cls: type[T], raw: Any, where: str) -> T:
    """``cls`` from the mapping ``raw`` (section ``where``, e.g. ``params.yaml: train``), every value
    checked against its annotation; SettingsError naming the key otherwise."""
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where}: expected a mapping, got {raw!r}")
    hints, fields = _hints(cls), {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SettingsError(f"{where}.{unknown[0]}: unknown setting (known: {', '.join(sorted(fields))})")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _convert(hints[name], raw[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SettingsError(f"{where}.{name}: missing")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def replace(obj: T, where: str, **changes: Any) -> T:
    """``obj`` with ``changes`` (e.g. CLI options; None means "not given"), checked like the file."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return obj
    return build(type(obj), {**{f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}, **changes},
                 where)


def plain(value: Any) -> Any:
    """Settings (or a part of them) as the plain dicts and lists of the YAML file."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
