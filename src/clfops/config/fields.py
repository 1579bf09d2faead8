"""A schema field's range, choices and types as field metadata, the one pass that checks them, and its words.

What OmegaConf's types cannot say (lr > 0, 0 <= val_fraction < 1, a set of strings, an int-or-float key) is
declared as metadata on the field (`spec(min=0, exclusive=True)`) and checked by `validate(cfg)`, one walk
over the composed config that reads the schema of each node (`OmegaConf.get_type`). A key added later only
needs its field in schema.py or groups.py; tests/test_config_schema.py derives its cases from the same metadata.
`describe`, `show` and `expected_type` put what is valid and what was given into the one-line refusal.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from clfops.errors import UserError


class SchemaError(UserError):
    """A value of the right type outside its declared range or choices (one line naming the key)."""


def spec(
    *,
    min: float | None = None,
    max: float | None = None,
    exclusive: bool = False,  # min and max themselves are invalid
    choices: tuple[Any, ...] | None = None,
    types: tuple[type, ...] | None = None,  # for `Any` fields: the Python types allowed (OmegaConf has no Union)
    length: int | None = None,  # lists: exact length
    nullable: bool = False,  # for `Any` fields: null allowed too (Optional[...] fields say so by their type)
    factory: Any = None,  # nested schema: its class
) -> Any:
    """A schema field: MISSING (the YAML holds the default) plus the range metadata `validate` reads."""
    meta = {"min": min, "max": max, "exclusive": exclusive, "choices": choices, "types": types, "length": length}
    meta["nullable"] = nullable
    meta = {k: v for k, v in meta.items() if v is not None and v is not False}  # min=0 is kept
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=MISSING, metadata=meta)


def validate(cfg: DictConfig, prefix: str = "") -> None:
    """Check every field's declared range/choices/types on the composed config; SchemaError on the first."""
    kind = OmegaConf.get_type(cfg)
    declared = {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
    for key in cfg:
        value = cfg[key] if not OmegaConf.is_missing(cfg, key) else None
        name = f"{prefix}{key}"
        if isinstance(value, DictConfig) and not (key in declared and "types" in declared[key].metadata):
            validate(value, f"{name}.")
        elif key in declared and declared[key].metadata:
            check_value(name, value, field_meta(kind, str(key)))


def field_meta(kind: Any, key: str) -> dict[str, Any]:
    """A schema field's metadata, plus `integer` when its annotation is int (for the message's wording)."""
    import typing

    meta = dict(next(f.metadata for f in dataclasses.fields(kind) if f.name == key))
    ref = typing.get_type_hints(kind).get(key)
    while typing.get_args(ref) and ref is not None:  # Optional[list[int]] -> list[int] -> int
        ref = next(a for a in typing.get_args(ref) if a is not type(None))
    if ref is int:
        meta["integer"] = True
    return meta


def check_value(name: str, value: Any, meta: dict[str, Any]) -> None:
    """One key against its metadata: raises SchemaError naming the key, the value and what is valid."""
    if value is None:
        if "types" in meta and not meta.get("nullable"):  # an `Any` field: OmegaConf let null through
            raise SchemaError(f"{name}: expected {describe(meta)}, got null")
        return  # typed fields: nullability is OmegaConf's check (Optional[...] in the schema)
    if isinstance(value, (ListConfig, DictConfig)) and "types" in meta:  # an `Any` field takes scalars only
        raise SchemaError(f"{name}: expected {describe(meta)}, got {show(value)}")
    if isinstance(value, ListConfig):
        items = list(value)
        if "length" in meta and len(items) != meta["length"]:
            raise SchemaError(f"{name}: expected {describe(meta)}, got {show(value)}")
        for item in items:
            _check_scalar(name, item, meta, whole=value)
        return
    _check_scalar(name, value, meta, whole=value)


def _check_scalar(name: str, value: Any, meta: dict[str, Any], whole: Any) -> None:
    types = meta.get("types")
    choices = meta.get("choices")
    if types is not None and not (isinstance(value, types) and not isinstance(value, bool)):
        raise SchemaError(f"{name}: expected {describe(meta)}, got {show(whole)}")
    if isinstance(value, str):
        if choices is not None and value not in choices:
            raise SchemaError(f"{name}: expected {describe(meta)}, got {show(whole)}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if choices is not None and types is None and value not in choices:
        raise SchemaError(f"{name}: expected {describe(meta)}, got {show(whole)}")
    low, high, open_ = meta.get("min"), meta.get("max"), meta.get("exclusive", False)
    below = low is not None and (value <= low if open_ else value < low)
    above = high is not None and (value >= high if open_ else value > high)
    if below or above:
        raise SchemaError(f"{name}: expected {describe(meta)}, got {show(whole)}")


def describe(meta: dict[str, Any]) -> str:
    """'a number in (0, 1)', 'one of: a, b', 'an integer >= 1 or auto': what is valid, in words."""
    types = meta.get("types", ())
    noun = "an integer" if meta.get("integer") or (types and float not in types) else "a number"
    parts = []
    low, high, open_ = meta.get("min"), meta.get("max"), meta.get("exclusive", False)
    if low is not None and high is not None:
        parts.append(f"{noun} in {'(' if open_ else '['}{low:g}, {high:g}{')' if open_ else ']'}")
    elif low is not None:
        parts.append(f"{noun} {'>' if open_ else '>='} {low:g}")
    elif high is not None:
        parts.append(f"{noun} {'<' if open_ else '<='} {high:g}")
    choices = meta.get("choices")
    if choices is not None:
        listed = ", ".join(str(c) for c in choices)
        parts.append(f"one of: {listed}" if not parts else listed)
    if meta.get("nullable"):
        parts.append("null")
    words = " or ".join(parts) if parts else "a valid value"
    return f"a list of {meta['length']} values, each {words}" if "length" in meta else words


def show(value: Any) -> str:
    """A value as the user typed it: null, 'text', [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, ListConfig):
        return str(OmegaConf.to_container(value))
    return repr(value) if isinstance(value, str) else str(value)


def expected_type(parent: Any, key: Any, ref: Any) -> str:
    """The declared type of `parent.key` in words: Optional[float] -> 'a number or null'."""
    import typing

    if dataclasses.is_dataclass(parent):
        hints = typing.get_type_hints(parent)
        ref = hints.get(str(key), ref)
        meta = next((dict(f.metadata) for f in dataclasses.fields(parent) if f.name == key), {})
        if "types" in meta:
            return describe(meta)
    elif typing.get_origin(typing.get_args(ref)[0] if typing.get_args(ref) else ref) in (list, tuple):
        ref = typing.get_args(typing.get_args(ref)[0])[0]  # an item of an Optional[list[X]]
    optional = False
    args = typing.get_args(ref)
    if typing.get_origin(ref) in (typing.Union, types.UnionType) and type(None) in args:
        optional, ref = True, next(a for a in args if a is not type(None))
    origin = typing.get_origin(ref)
    if origin in (list, tuple):
        inner = typing.get_args(ref)
        words = f"a list of {_PLURAL.get(inner[0], 'values')}" if inner else "a list"
    elif origin is dict or ref is dict:
        words = "a mapping"
    else:
        words = _TYPE_WORDS.get(ref, getattr(ref, "__name__", str(ref)))
    return f"{words} or null" if optional else words


_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
_TYPE_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
