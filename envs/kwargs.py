"""Env constructor arguments checked before an env is built: an unknown name, a value of the wrong type or an
absurd camera size is one line naming the argument, not a TypeError (or a renderer of -5 pixels) deep inside.

Types come from the constructor's annotations; only plain ones (int, float, bool, str, optionally None) are
checked here, an env checks the rest itself (raising ``EnvArgumentError`` or another ``ImitlabError``).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from imitlab.core.errors import ImitlabError
from imitlab.core.limits import MAX_IMAGE_SIZE

#: Smallest camera image side: below this the scene is a few blurred pixels (the arm's cameras need 16 too).
MIN_IMAGE_SIZE = 16
_PLAIN = (int, float, bool, str)


class EnvArgumentError(ImitlabError, ValueError):
    """Env constructor arguments that do not fit the env: the message names the argument and what it takes."""


def check_env_kwargs(env_id: str, env_class: type | None, kwargs: Mapping[str, Any]) -> None:
    """Raise EnvArgumentError unless ``env_class(**kwargs)`` names only its parameters, with plain-typed values."""
    if env_class is None:
        return
    parameters, hints = _constructor_parameters(env_class)
    if parameters is not None:
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            raise EnvArgumentError(f"{env_id} has no argument {', '.join(map(repr, unknown))}; "
                                   f"it takes {', '.join(parameters) or 'none'}")
    for name, value in kwargs.items():
        allowed = _plain_types(hints.get(name))
        if allowed and not _is_instance(value, allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise EnvArgumentError(f"{env_id}: {name}={value!r} must be of type {names}")
        if isinstance(value, float) and not math.isfinite(value):
            raise EnvArgumentError(f"{env_id}: {name}={value!r} is not a finite number")
    modes = getattr(env_class, "metadata", {}).get("render_modes")
    if kwargs.get("render_mode") is not None and modes is not None and kwargs["render_mode"] not in modes:
        raise EnvArgumentError(f"{env_id}: render_mode={kwargs['render_mode']!r} is not one of {modes} (or null)")
    size = kwargs.get("image_size")
    if size is not None and not (isinstance(size, int) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE):
        raise EnvArgumentError(f"{env_id}: image_size={size!r} is not an integer from {MIN_IMAGE_SIZE} to "
                               f"{MAX_IMAGE_SIZE} pixels")
    own_check = getattr(env_class, "check_kwargs", None)
    if callable(own_check):  # an env's own cheap checks (Town-v0: weather, traffic, task), with nothing built
        own_check(kwargs)


def _constructor_parameters(env_class: type) -> tuple[list[str] | None, dict[str, Any]]:
    """The keyword parameters of ``env_class``'s constructor and their annotations, following ``**kwargs`` that
    subclasses pass up to their base; None for the names when the chain ends in an open ``**kwargs``."""
    names: list[str] = []
    hints: dict[str, Any] = {}
    for klass in env_class.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        init = vars(klass)["__init__"]
        parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        names += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        try:
            hints = {**typing.get_type_hints(init), **hints}
        except (NameError, TypeError):  # annotations that do not resolve: the env checks those itself
            pass
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names, hints
    return None, hints


def _plain_types(hint: Any) -> tuple[type, ...]:
    """The types a plain annotation allows (``float`` admits ``int``); empty for anything else."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if not options or not all(t in _PLAIN or t is type(None) for t in options):
        return ()
    return tuple(options) + ((int,) if float in options and int not in options else ())


def _is_instance(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # bool is an int subclass: 1 is not True, True is not an image size
        return bool in allowed
    return isinstance(value, allowed)
