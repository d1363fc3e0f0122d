"""Typed, frozen configs built from schema-filled parameters: the JSON Schema is the one home of defaults.

A stage kind declares its parameters as a frozen, keyword-only dataclass whose field names are the
schema's keys and which has no defaults of its own. :func:`from_params` builds it from the stage's
parameters after :func:`hpc_popgen.manifest.fill_defaults` (as zarr builds its metadata classes from
JSON): nested dataclasses are built recursively, lists become tuples (also as mapping values), and a key the schema leaves
optional without a default (``seed``, ``prior``) must be typed ``X | None`` and arrives as ``None``.
A ``ParamError`` raised while building a nested config gets its parent's key prepended.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from .errors import ParamError

T = TypeVar("T")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp) and typing.get_origin(tp) in (typing.Union, types.UnionType)


def _inner(tp: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if _optional(tp):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def _convert(tp: Any, value: Any, key: str) -> Any:
    tp = _inner(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        try:
            return from_params(tp, value)
        except ParamError as exc:
            raise exc.within(key) from None
    origin = typing.get_origin(tp)
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        args = typing.get_args(tp)
        return {k: _convert(args[1], v, key) for k, v in value.items()} if len(args) == 2 else dict(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, list | tuple):
        args = typing.get_args(tp)
        item = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        if item is not None:
            return tuple(_convert(item, v, key) for v in value)
        if args and len(args) == len(value):
            return tuple(_convert(a, v, key) for a, v in zip(args, value, strict=True))
        return tuple(value)
    return value


def from_params(cls: type[T], params: Mapping[str, Any]) -> T:
    """Build the frozen config ``cls`` from schema-filled ``params`` (every non-optional key present).

    A missing key or a key ``cls`` does not know is a programming error (schema and config disagree),
    raised as ``TypeError``; invalid values are the config's own ``__post_init__``'s to reject.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"{cls.__name__}: parameters must be a mapping, not {type(params).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(params) - names)
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown parameter(s) {', '.join(unknown)}: "
                        "the schema and the config class disagree")
    kwargs: dict[str, Any] = {}
    for name in names:
        tp = hints[name]
        if name in params:
            kwargs[name] = _convert(tp, params[name], name)
        elif _optional(tp):
            kwargs[name] = None
        else:
            raise TypeError(f"{cls.__name__}: parameter {name!r} missing: it needs a default in the schema "
                            "(or the type `X | None`)")
    return cls(**kwargs)


def to_params(config: Any) -> Any:
    """The JSON-ready form of a config (tuples as lists), e.g. to record it or ship it to a worker."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_params(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [to_params(v) for v in config]
    if isinstance(config, Mapping):
        return {k: to_params(v) for k, v in config.items()}
    return config


def config_with_defaults(cls: type[T], schema_name: str, params: Mapping[str, Any]) -> T:
    """``cls`` from ``params`` with the defaults of schema ``schema_name`` filled in (benchmarks, tools)."""
    from .manifest import fill_defaults, load_schema

    return from_params(cls, fill_defaults(dict(params), load_schema(schema_name)))
