"""Command-line options derived from config dataclass fields: one ``--flag`` per field, its help the field's
docstring, its default the field's default. Adding a documented field to a config adds the flag.

Options default to "not given" (None), so a flag overrides a config file only when it is on the command line;
``--help`` shows the field's real default.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Any, Callable, Optional

import typer

from imitlab.core.config_fields import ConfigField, parse_value, type_name, unwrap_optional


_SCALARS = (bool, int, float, str)


def flag_name(key: str) -> str:
    """``dagger.rounds`` -> ``--dagger-rounds``."""
    return "--" + key.replace(".", "-").replace("_", "-")


def _default_text(value: Any) -> str | bool:
    if value is dataclasses.MISSING:
        return False  # required: given here or in --config
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "empty"
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else str(value)


def _parameter(key: str, field: ConfigField) -> inspect.Parameter:
    inner, _ = unwrap_optional(field.type)
    flag = flag_name(key)
    show = _default_text(field.default)
    doc = field.doc + (" Required (here or in --config)." if field.required else "")
    if inner is bool:
        annotation: Any = Optional[bool]
        option = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=doc, show_default=show)
    elif inner in _SCALARS:
        annotation = Optional[inner]
        option = typer.Option(None, flag, help=doc, show_default=show)
    else:  # lists and tables arrive as text and are parsed like --set values
        annotation = Optional[str]
        option = typer.Option(None, flag, help=f"{doc} ({type_name(field.type)}: "
                              + ("a JSON object" if dict in (inner, typing.get_origin(inner)) else "comma-separated")
                              + ")",
                              show_default=show, metavar="TEXT")
    return inspect.Parameter(key.replace(".", "_"), inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=annotation)


def with_config_options(fields: dict[str, ConfigField], skip: tuple[str, ...] = ()) -> Callable:
    """Decorate ``command(settings, **other)`` into a typer command whose options are ``command``'s own
    parameters plus one per field in ``fields`` (keys as in ``training.run_config.knobs``); the command gets
    the fields given on the command line as ``settings`` ({key: typed value})."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"]
        keys = {key.replace(".", "_"): key for key in fields if key not in skip}
        params = own + [_parameter(key, fields[key]) for key in keys.values()]

        as_text = {key for key in keys.values() if unwrap_optional(fields[key].type)[0] not in _SCALARS}

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            given = {key: values.pop(name) for name, key in keys.items()}
            settings = {key: parse_value(key, value, fields[key].type) if key in as_text else value
                        for key, value in given.items() if value is not None}
            return command(settings=settings, **values)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must see the derived signature, not the original one
        return wrapper
    return decorate
