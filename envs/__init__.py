"""Gymnasium environments (MuJoCo physics) and their privileged experts.

Importing this package registers every task id with Gymnasium. The entry points are strings,
so a task's module (and MuJoCo's GL context) is only loaded when that task is made.
"""

from __future__ import annotations

import os

# Headless rendering on CPU: EGL (Mesa llvmpipe) unless the user chose a backend.
os.environ.setdefault("MUJOCO_GL", "egl")

import importlib  # noqa: E402
from typing import Any, Protocol  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from imitlab.core.errors import ImitlabError  # noqa: E402
from imitlab.core.observation_keys import category_keys  # noqa: E402
from imitlab.envs.kwargs import check_env_kwargs  # noqa: E402

#: Task id -> entry point; every id here is registered with Gymnasium on import.
TASKS: dict[str, str] = {
    "imitlab/LaneFollow-v0": "imitlab.envs.driving:LaneFollowEnv",
    "imitlab/Detour-v0": "imitlab.envs.detour:DetourEnv",
    "imitlab/Detour-v1": "imitlab.envs.detour:DetourV1Env",
    "imitlab/Detour-v2": "imitlab.envs.detour:DetourV2Env",
    "imitlab/Reach-v0": "imitlab.envs.manipulation:ReachEnv",
    "imitlab/Push-v0": "imitlab.envs.manipulation:PushEnv",
    "imitlab/PickPlace-v0": "imitlab.envs.manipulation:PickPlaceEnv",
    "imitlab/Town-v0": "imitlab.envs.town.env:TownEnv",
}

for _env_id, _entry_point in TASKS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point)


class Expert(Protocol):
    """A privileged controller bound to one env instance: it may read the true simulator state."""

    def reset(self) -> None:
        """Forget per-episode state; call after every ``env.reset``."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The expert's action for the env's current state, float32 in the action space."""


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` with a one-line error for an unknown id or bad constructor arguments instead of a traceback."""
    if env_id not in TASKS:
        known = ", ".join(sorted(TASKS))
        raise ImitlabError(f"unknown env id {env_id!r}; known ids: {known}")
    check_env_kwargs(env_id, env_class(env_id), kwargs)
    return gym.make(env_id, **kwargs)


def env_class(env_id: str) -> type | None:
    """The class registered for ``env_id``, imported but not instantiated; None if it cannot be found."""
    try:
        entry = gym.spec(env_id).entry_point
    except gym.error.Error:
        return None
    if not isinstance(entry, str):
        return entry if isinstance(entry, type) else None
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name, None)


def action_labels(env_id: str, action_dim: int) -> list[str]:
    """The task's ``ACTION_LABELS`` (read from its class, no env built) for plots and videos, else a0, a1, ..."""
    return _labels(env_id, "ACTION_LABELS", action_dim, "a{}")


def state_labels(env_id: str, state_dim: int) -> list[str]:
    """The task's ``STATE_LABELS`` (names of the ``state`` dimensions), else state[0], state[1], ..."""
    return _labels(env_id, "STATE_LABELS", state_dim, "state[{}]")


def category_labels(env_id: str, key: str, n: int) -> list[str]:
    """Names of the values of the category observation ``key`` (the task's ``<KEY>_NAMES``, e.g. Town-v0's
    ``COMMAND_NAMES``), else the numbers 0 .. n-1."""
    return _labels(env_id, f"{key.upper()}_NAMES", n, "{}")


class CategoryNames:
    """The category observations of an env's observation space by name (``category_labels``), for video overlays
    (``lines``) and reports (``visit``)."""

    def __init__(self, env_id: str, space: gym.Space):
        self.keys = category_keys(space) if isinstance(space, gym.spaces.Dict) else ()
        self.names = {k: category_labels(env_id, k, int(space[k].n)) for k in self.keys}
        self.starts = {k: int(space[k].start) for k in self.keys}

    def name(self, key: str, value: Any) -> str:
        index = int(value) - self.starts[key]
        names = self.names[key]
        return names[index] if 0 <= index < len(names) else str(int(value))

    def lines(self, obs: dict[str, Any]) -> list[str]:
        """``"<key> <name>"`` per category of one observation (a video overlay's lines)."""
        return [f"{key} {self.name(key, obs[key])}" for key in self.keys]

    def visit(self, seen: dict[str, list[str]], obs: dict[str, Any]) -> None:
        """Append each category's name to ``seen`` when it differs from the last one there."""
        for key in self.keys:
            name = self.name(key, obs[key])
            values = seen.setdefault(key, [])
            if not values or values[-1] != name:
                values.append(name)


def _labels(env_id: str, attribute: str, dim: int, fallback: str) -> list[str]:
    """The class attribute ``attribute`` when it names all ``dim`` dimensions, else ``fallback.format(i)``."""
    labels = getattr(env_class(env_id), attribute, None)
    if labels is not None and len(labels) == dim:
        return [str(label) for label in labels]
    return [fallback.format(i) for i in range(dim)]


def time_limit_s(env: gym.Env) -> float:
    """An episode's time limit in simulated seconds: every imitlab env takes at most ``max_steps`` control steps
    at ``metadata["render_fps"]`` (one video frame per control step)."""
    unwrapped = env.unwrapped
    return float(unwrapped.max_steps) / float(unwrapped.metadata["render_fps"])


def make_expert(env: gym.Env) -> Expert:
    """The privileged expert of ``env``'s task (every imitlab env defines ``make_expert``)."""
    return env.unwrapped.make_expert()


__all__ = ["TASKS", "CategoryNames", "Expert", "action_labels", "category_labels", "env_class", "make_env",
           "make_expert", "state_labels", "time_limit_s"]
