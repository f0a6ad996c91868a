"""Dataclass configs as the one source of every knob: fields, types, defaults and docstrings.

A config is a dataclass whose fields each carry a docstring (a string literal right below the field, as in
``TrainConfig``). :func:`config_fields` reads them, so the CLI, config files and docs derive from the class.
Supported field types: ``bool``, ``int``, ``float``, ``str``, ``X | None`` of those, ``tuple[T, ...]`` of
``int``/``float``/``str``, and ``dict[str, Any]``. Values come either as TOML/JSON values (:func:`check_value`)
or as command-line text (:func:`parse_value`); both raise one-line ImitlabErrors that name the key.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from imitlab.core.errors import ImitlabError

_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class ConfigField:
    """One knob: its name, type, default (``dataclasses.MISSING`` when required) and docstring."""

    name: str
    type: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def config_fields(cls: type, exclude: tuple[str, ...] = ()) -> list[ConfigField]:
    """The fields of dataclass ``cls`` in declaration order, with resolved types and docstrings.

    A field without a docstring is an error: every knob must say what it does.
    """
    hints = typing.get_type_hints(cls)
    docs = attribute_docstrings(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no docstring (add a string literal below the field)")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append(ConfigField(f.name, hints[f.name], default, docs[f.name]))
    return out


def attribute_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literals that follow annotated assignments in the class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return docs


def type_name(tp: Any) -> str:
    """How messages and ``--help`` name a field type: ``int``, ``str or none``, ``list of int``, ``table``."""
    inner, optional = unwrap_optional(tp)
    if typing.get_origin(inner) is tuple:
        name = f"list of {typing.get_args(inner)[0].__name__}"
    elif typing.get_origin(inner) is dict or inner is dict:
        name = "table"
    else:
        name = inner.__name__
    return f"{name} or none" if optional else name


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def check_value(key: str, value: Any, tp: Any) -> Any:
    """A TOML/JSON value for a field of type ``tp``, normalised (lists -> tuples, ints -> floats where a float is
    expected); a value of the wrong type raises ImitlabError naming ``key``."""
    inner, optional = unwrap_optional(tp)
    if value is None and optional:
        return None
    if typing.get_origin(inner) is tuple:
        if isinstance(value, (list, tuple)):
            element = typing.get_args(inner)[0]
            return tuple(check_value(f"{key}[{i}]", v, element) for i, v in enumerate(value))
    elif typing.get_origin(inner) is dict or inner is dict:
        if isinstance(value, dict):
            return dict(value)
    elif inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif inner in (bool, str):
        if isinstance(value, inner):
            return value
    else:
        raise TypeError(f"{key}: unsupported config field type {tp!r}")
    raise ImitlabError(f"{key}: expected {type_name(tp)}, got {value!r}")


def parse_value(key: str, text: str, tp: Any) -> Any:
    """A field value from command-line text: ``3``, ``true``, ``lite0``, ``256,256`` (a list), ``none``, or JSON
    (a table); then checked like :func:`check_value`."""
    inner, optional = unwrap_optional(tp)
    raw = text.strip()
    if optional and raw.lower() in ("none", "null", ""):
        return None
    try:
        if typing.get_origin(inner) is tuple:
            element = typing.get_args(inner)[0]
            items = [item for item in raw.strip("[]()").split(",") if item.strip()]
            return tuple(parse_value(f"{key}[{i}]", item, element) for i, item in enumerate(items))
        if typing.get_origin(inner) is dict or inner is dict:
            return check_value(key, json.loads(raw), tp)
        if inner is bool:
            words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
            if raw.lower() not in words:
                raise ValueError(raw)
            return words[raw.lower()]
        if inner in (int, float):
            return inner(raw)
        if inner is str:
            return text
    except (ValueError, json.JSONDecodeError):
        raise ImitlabError(f"{key}: expected {type_name(tp)}, got {text!r}") from None
    raise TypeError(f"{key}: unsupported config field type {tp!r}")


def build_config(cls: type, values: dict[str, Any], where: str, **fixed: Any) -> Any:
    """``cls(**fixed, **values)`` after checking every key and value; ``where`` names the source in errors."""
    fields = {f.name: f for f in config_fields(cls, exclude=tuple(fixed))}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ImitlabError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(fields)})")
    checked = {key: check_value(key, value, fields[key].type) for key, value in values.items()}
    missing = [name for name, f in fields.items() if f.required and name not in checked]
    if missing:
        raise ImitlabError(f"{where}: {missing[0]!r} is required")
    return cls(**fixed, **checked)


def config_values(config: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config's field values as plain data (tuples -> lists), e.g. to write it as TOML."""
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
            for f in dataclasses.fields(config) if f.name not in exclude}
