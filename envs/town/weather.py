"""Named weather presets for the town: sun, sky, fog, and wet-look colours (CARLA-style train / test split).

A preset is pure data; ``imitlab.envs.town.scene.Scene.apply_weather`` puts it into a compiled model. The
``train`` and ``test`` groups share no preset, so a benchmark can ask how a policy copes with weather it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Weather:
    """Lighting and colour of one weather; fog distances are in metres from the camera (None: clear air)."""

    name: str
    sun_dir: tuple[float, float, float]  # direction the sunlight travels
    sun: float  # directional light intensity
    ambient: float  # ambient light intensity
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    fog: tuple[float, float] | None = None
    ground_tint: float = 1.0  # multiplies the road texture: wet asphalt is darker
    ground_specular: float = 0.0  # wet asphalt shines
    facade_tint: float = 1.0  # multiplies buildings' colours


PRESETS: dict[str, Weather] = {
    w.name: w
    for w in (
        Weather("clear_noon", (-0.3, 0.2, -1.0), 0.55, 0.45, (0.45, 0.65, 0.92), (0.85, 0.9, 0.97)),
        Weather("overcast_noon", (-0.1, 0.1, -1.0), 0.25, 0.6, (0.62, 0.64, 0.68), (0.8, 0.8, 0.82),
                facade_tint=0.9),
        Weather("wet_noon", (-0.3, 0.2, -1.0), 0.5, 0.42, (0.5, 0.62, 0.8), (0.82, 0.86, 0.92),
                ground_tint=0.65, ground_specular=0.6, facade_tint=0.85),
        Weather("clear_sunset", (-1.0, 0.3, -0.35), 0.6, 0.35, (0.35, 0.45, 0.75), (0.98, 0.7, 0.45),
                facade_tint=0.95),
        Weather("foggy", (-0.2, 0.1, -1.0), 0.3, 0.55, (0.75, 0.76, 0.78), (0.82, 0.83, 0.84),
                fog=(8.0, 70.0), facade_tint=0.9),
        Weather("wet_cloudy_dusk", (0.8, -0.4, -0.3), 0.3, 0.36, (0.18, 0.2, 0.32), (0.55, 0.42, 0.4),
                fog=(25.0, 160.0), ground_tint=0.55, ground_specular=0.7, facade_tint=0.7),
    )
}
#: Weathers to train with, and weathers held out for testing (as CARLA's CoRL2017 benchmark splits them).
GROUPS: dict[str, tuple[str, ...]] = {
    "train": ("clear_noon", "overcast_noon", "wet_noon", "clear_sunset"),
    "test": ("foggy", "wet_cloudy_dusk"),
}


def resolve(spec: str | Sequence[str]) -> list[Weather]:
    """The presets a ``weather`` kwarg names: one preset, a group (``train``/``test``), or a list of presets."""
    names = list(GROUPS.get(spec, (spec,))) if isinstance(spec, str) else list(spec)
    unknown = [name for name in names if name not in PRESETS]
    if unknown or not names:
        known = ", ".join([*PRESETS, *GROUPS])
        raise ValueError(f"unknown weather {', '.join(map(repr, unknown)) or '(none given)'}; known: {known}")
    return [PRESETS[name] for name in names]
