"""When a simulated episode can no longer be trusted: MuJoCo's divergence warnings, non-finite state or actions.

MuJoCo meets a NaN or a huge acceleration by printing a warning and silently resetting the whole state to the
model's initial pose (auto-reset), after which the episode would carry on from a teleported car or arm and be
scored as if nothing happened. Every env checks after each step and instead ends the episode (``terminated``)
with ``info["sim_unstable"] = True`` and a reason, so that evaluations can count it as an error, not a failure.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

#: ``info`` keys of an unstable step: the flag, and why.
UNSTABLE_KEY = "sim_unstable"
UNSTABLE_REASON_KEY = "sim_unstable_reason"

#: Warnings meaning the state diverged (MuJoCo auto-resets on bad qpos/qvel/qacc) or contacts/constraints were
#: dropped because the arena overflowed; either way the physics after it is not the model's.
UNSTABLE_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADQACC,
    mujoco.mjtWarning.mjWARN_BADCTRL,
    mujoco.mjtWarning.mjWARN_CONTACTFULL,
    mujoco.mjtWarning.mjWARN_CNSTRFULL,
)
_UNSTABLE_INDICES = np.array([int(warning) for warning in UNSTABLE_WARNINGS])


def sim_instability(data: mujoco.MjData, **arrays: np.ndarray) -> str | None:
    """Why the simulation is unstable, or None if it is sound.

    Reads MuJoCo's warning counters (``mj_resetData`` clears them, so they count since the env's reset) and
    checks ``qpos``, ``qvel`` and any named ``arrays`` (e.g. the observed state) for NaN or infinity.
    """
    if data.warning.number[_UNSTABLE_INDICES].any():  # one read for all counters: this runs every step
        for warning in UNSTABLE_WARNINGS:
            stat = data.warning[int(warning)]
            if stat.number:
                return f"MuJoCo {warning.name} (index {stat.lastinfo}) at t = {data.time:.3f} s"
    for name, values in {"qpos": data.qpos, "qvel": data.qvel, **arrays}.items():
        if not np.isfinite(values).all():
            return f"non-finite {name}"
    return None


def nonfinite_action(action: np.ndarray) -> str | None:
    """Why ``action`` must not reach the simulator (it would become NaN controls or damping), or None."""
    if np.all(np.isfinite(action)):
        return None
    return f"non-finite action {np.array2string(np.asarray(action), precision=3)}"


def mark_unstable(info: dict[str, Any], reason: str) -> dict[str, Any]:
    """``info`` of the step that ends an unstable episode: flagged, with the reason, and never a success."""
    return info | {"is_success": False, UNSTABLE_KEY: True, UNSTABLE_REASON_KEY: reason}
