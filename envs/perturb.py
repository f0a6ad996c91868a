"""Distribution shifts shared by every env, each with severities 1-5 (ImageNet-C style), drawn from the episode seed.

An env takes ``perturb={"lighting": 3, "camera_pose": 2}`` (constructor kwarg, every episode) or
``reset(options={"perturb": {...}})`` (one episode: domain randomisation, re-simulation of a recorded
episode). The scene itself (road, object placement) still comes from the env's own random stream, so seed
``s`` with and without a perturbation is the same episode under a different shift: two evaluations on the same
seeds are paired. Each perturbation draws its random parts (a direction, a sign, distractor poses, per-frame
noise) from its own generator seeded with ``(episode seed, episode index since that seed, perturbation name)``.

Three places act:

- model-level ones change the ``MjModel`` when an episode begins (lights, colours, camera poses, friction,
  masses, actuator gains, distractors) after restoring a pristine copy, so nothing carries over;
- image-level ones (``noise``, ``motion_blur``, ``defocus``, ``jpeg``) act on each observed camera image;
- ``delay`` holds the commanded actions back by 0.4 x severity control steps on average.

Image-level severities follow ImageNet-C (Hendrycks & Dietterich 2019); blur radii there are for 224 px
images and are scaled to the env's image size here.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import mujoco
import numpy as np

from imitlab.core.errors import ImitlabError

SEVERITIES = (1, 2, 3, 4, 5)
#: What each perturbation does; severity s scales it (see the module docstring for where each acts).
VISUAL: dict[str, str] = {
    "lighting": "light intensity x(1 +- 0.14 s), light direction turned by 9 s degrees",
    "colours": "ground, table and object colours hue-rotated by +-25 s degrees, brightness +-8 s %; "
               "from s=3 the table/ground wears another texture",
    "camera_pose": "observation cameras moved by 2 s % of the scene size and turned by 1.5 s degrees",
    "noise": "Gaussian pixel noise, std 0.08/0.12/0.18/0.26/0.38 (ImageNet-C)",
    "motion_blur": "linear motion blur in a per-episode direction, ImageNet-C radii scaled to the image",
    "defocus": "disc (defocus) blur, ImageNet-C radii scaled to the image",
    "jpeg": "JPEG compression at quality 25/18/15/10/7 (ImageNet-C)",
    "distractors": "extra objects of random shape and colour in view (visual only, no collisions)",
}
DYNAMICS: dict[str, str] = {
    "friction": "sliding friction of every surface x exp(+-0.2 s)",
    "mass": "mass and inertia of the task's objects (block, car) x exp(+-0.25 s)",
    "actuator_gain": "every actuator's gain (motor torque, servo stiffness and damping) x exp(+-0.12 s)",
    "delay": "actions applied 0.4 s control steps late on average (1 or 2 steps at s=5: 2)",
}
PERTURBATIONS: dict[str, str] = VISUAL | DYNAMICS

_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
_JPEG_QUALITY = (25, 18, 15, 10, 7)
_DEFOCUS_RADIUS_224 = (3, 4, 6, 8, 10)
_MOTION_RADIUS_224 = (10, 15, 15, 15, 20)
#: Model arrays a perturbation may change; restored from a pristine copy before every episode.
_MODEL_FIELDS = ("light_diffuse", "light_specular", "light_ambient", "light_dir", "mat_rgba", "mat_texid",
                 "geom_rgba", "cam_pos", "cam_quat", "geom_friction", "body_mass", "body_inertia",
                 "actuator_gainprm", "actuator_biasprm")


def parse_perturb(spec: Any) -> dict[str, int]:
    """Validate ``{name: severity}``: known names, integer severities 1-5. None or {} means no perturbation."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ImitlabError(f"perturb must map perturbation names to severities 1-5, e.g. "
                           f"{{\"lighting\": 3}}; got {spec!r}")
    parsed = {}
    for name, severity in spec.items():
        if name not in PERTURBATIONS:
            raise ImitlabError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
        if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
            raise ImitlabError(f"perturbation {name!r}: severity must be an integer from 1 to 5, got {severity!r}")
        parsed[str(name)] = int(severity)
    return parsed


def check_perturbable(env_id: str, spec: Any = None) -> dict[str, int]:
    """``parse_perturb(spec)``, and when it names any perturbation, a clear error if ``env_id``'s env takes none."""
    import inspect

    from imitlab.envs import env_class

    parsed = parse_perturb(spec)
    cls = env_class(env_id)
    takes = cls is not None and any("perturb" in inspect.signature(k.__init__).parameters
                                    for k in cls.__mro__ if "__init__" in vars(k))  # subclasses pass **kwargs on
    if parsed and not takes:
        raise ImitlabError(f"{env_id} does not take perturbations (its env has no `perturb` argument)")
    return parsed


def parse_names(names: str | list[str]) -> list[str]:
    """``"lighting,colours"`` (or a list) -> validated perturbation names; ``all``, ``visual``, ``dynamics`` expand."""
    items = names.split(",") if isinstance(names, str) else list(names)
    groups = {"all": list(PERTURBATIONS), "visual": list(VISUAL), "dynamics": list(DYNAMICS)}
    out: list[str] = []
    for item in (i.strip() for i in items):
        for name in groups.get(item, [item]):
            parse_perturb({name: 1})
            if name not in out:
                out.append(name)
    if not out:
        raise ImitlabError("no perturbation named")
    return out


def random_severities(names: list[str], seed: int) -> dict[str, int]:
    """Domain randomisation: a severity 0-5 per name drawn from the episode seed (0: that shift is off)."""
    rng = np.random.default_rng([int(seed), 0xD0A1])
    drawn = {name: int(rng.integers(0, 6)) for name in names}
    return {name: severity for name, severity in drawn.items() if severity}


@dataclass
class SceneParts:
    """What each perturbation acts on in one env's model; the env describes its own scene."""

    cameras: tuple[int, ...]
    """Observation cameras (pose jitter)."""
    scale: float
    """Size of the scene in metres (camera shifts and distractor sizes are fractions of it)."""
    surfaces: tuple[int, ...] = ()
    """Materials of the ground and table (held-out palettes)."""
    objects: tuple[int, ...] = ()
    """Geoms of the task's objects (held-out palettes)."""
    bodies: tuple[int, ...] = ()
    """Bodies whose mass changes (the objects, the car)."""
    texture: int = -1
    """A texture the surfaces wear from colours severity 3 (-1: none)."""
    place_distractors: Callable[[np.random.Generator, int], np.ndarray] | None = None
    """``(rng, count) -> (count, 3)`` positions of distractor objects for the episode that begins."""
    distractors_per_severity: int = 1


@dataclass
class _Distractor:
    kind: int
    size: np.ndarray
    pos: np.ndarray
    mat: np.ndarray
    rgba: np.ndarray


@dataclass(eq=False)
class Perturber:
    """Applies one env's perturbations; the env calls ``begin_episode`` in ``reset`` (before ``mj_forward``),
    ``recolour`` on textures it paints, ``decorate`` between ``update_scene`` and ``render``, ``observe`` on its
    observation and ``act`` on each action."""

    model: mujoco.MjModel
    parts: SceneParts
    default: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    """This episode's perturbations (name -> severity)."""

    def __post_init__(self) -> None:
        self.default = parse_perturb(self.default)
        self.rebase()
        self._rngs: dict[str, np.random.Generator] = {}
        self._distractors: list[_Distractor] = []
        self._hue = 0.0
        self._value = 1.0
        self._pending: list[np.ndarray] = []
        self._seed: int | None = None
        self._episode = 0
        self._applied_step = -1
        self._kernels: dict[int, np.ndarray] = {}
        self._motion_angle = 0.0

    def rebase(self) -> None:
        """Take the model as it is now as the unperturbed one. An env that changes its own scene between episodes
        (Town-v0's weather) calls ``restore``, makes its change, then this."""
        self._pristine = {name: getattr(self.model, name).copy() for name in _MODEL_FIELDS}
        self._headlight = (self.model.vis.headlight.ambient.copy(), self.model.vis.headlight.diffuse.copy())

    def restore(self) -> None:
        """Put the unperturbed model back."""
        for name, value in self._pristine.items():
            getattr(self.model, name)[:] = value
        self.model.vis.headlight.ambient[:], self.model.vis.headlight.diffuse[:] = self._headlight

    def begin_episode(self, seed: int | None, options: Mapping[str, Any] | None = None) -> None:
        """Restore the pristine model, then apply this episode's model-level perturbations."""
        self.restore()
        override = (options or {}).get("perturb")
        self.active = parse_perturb(override) if override is not None else dict(self.default)
        if seed is not None:
            self._seed, self._episode = int(seed), 0
        else:
            if self._seed is None:
                self._seed = int(np.random.SeedSequence().entropy % 2**63)
            self._episode += 1
        self._rngs = {name: np.random.default_rng([self._seed, self._episode, zlib.crc32(name.encode())])
                      for name in self.active}
        self._distractors, self._pending, self._applied_step = [], [], -1
        self._hue, self._value = 0.0, 1.0
        self._kernels = {}
        if "motion_blur" in self._rngs:
            self._motion_angle = float(self._rngs["motion_blur"].uniform(0.0, 180.0))
        for name, severity in self.active.items():
            apply = getattr(self, f"_model_{name}", None)
            if apply is not None:
                apply(severity, self._rngs[name])

    # Model-level ----------------------------------------------------------------------------------------------

    def _model_lighting(self, s: int, rng: np.random.Generator) -> None:
        factor = 1.0 + _sign(rng) * 0.14 * s
        self.model.light_diffuse[:] *= factor
        self.model.light_specular[:] *= factor
        self.model.light_ambient[:] *= factor
        self.model.vis.headlight.ambient[:] *= factor
        self.model.vis.headlight.diffuse[:] *= factor
        for i in range(self.model.nlight):
            self.model.light_dir[i] = _rotate(self.model.light_dir[i], _unit(rng), np.radians(9.0 * s))

    def _model_colours(self, s: int, rng: np.random.Generator) -> None:
        self._hue = _sign(rng) * 25.0 * s
        self._value = 1.0 + _sign(rng) * 0.08 * s
        for mat in self.parts.surfaces:
            self.model.mat_rgba[mat, :3] = self.recolour(self.model.mat_rgba[mat, :3])
            if s >= 3 and self.parts.texture >= 0:
                self.model.mat_texid[mat, mujoco.mjtTextureRole.mjTEXROLE_RGB] = self.parts.texture
        for geom in self.parts.objects:
            self.model.geom_rgba[geom, :3] = self.recolour(self.model.geom_rgba[geom, :3])

    def _model_camera_pose(self, s: int, rng: np.random.Generator) -> None:
        for cam in self.parts.cameras:
            self.model.cam_pos[cam] += _unit(rng) * 0.02 * s * self.parts.scale
            turn = np.empty(4)
            mujoco.mju_axisAngle2Quat(turn, _unit(rng), np.radians(1.5 * s))
            quat = np.empty(4)
            mujoco.mju_mulQuat(quat, self.model.cam_quat[cam], turn)  # turn about the camera's own axes
            self.model.cam_quat[cam] = quat

    def _model_friction(self, s: int, rng: np.random.Generator) -> None:
        self.model.geom_friction[:, 0] *= np.exp(_sign(rng) * 0.2 * s)

    def _model_mass(self, s: int, rng: np.random.Generator) -> None:
        factor = np.exp(_sign(rng) * 0.25 * s)
        for body in self.parts.bodies:
            self.model.body_mass[body] *= factor
            self.model.body_inertia[body] *= factor

    def _model_actuator_gain(self, s: int, rng: np.random.Generator) -> None:
        factor = np.exp(_sign(rng) * 0.12 * s)
        self.model.actuator_gainprm[:, 0] *= factor
        self.model.actuator_biasprm[:, 1:3] *= factor

    def _model_distractors(self, s: int, rng: np.random.Generator) -> None:
        if self.parts.place_distractors is None:
            return
        count = s * self.parts.distractors_per_severity
        kinds = (mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_SPHERE, mujoco.mjtGeom.mjGEOM_CYLINDER)
        for pos in self.parts.place_distractors(rng, count):
            size = rng.uniform(0.03, 0.08, 3) * self.parts.scale
            rgba = np.append(rng.uniform(0.0, 1.0, 3), 1.0).astype(np.float32)
            kind = int(kinds[rng.integers(len(kinds))])
            mat = _rotation_z(rng.uniform(0, 2 * np.pi)).ravel()
            self._distractors.append(_Distractor(kind, size, np.array([pos[0], pos[1], pos[2] + size[2]]), mat, rgba))

    # Hooks the env calls --------------------------------------------------------------------------------------

    def recolour(self, rgb: np.ndarray) -> np.ndarray:
        """Colours (..., 3), floats in 0..1 or uint8, in this episode's held-out palette (unchanged without one)."""
        if "colours" not in self.active:
            return rgb
        is_uint8 = rgb.dtype == np.uint8
        image = np.asarray(rgb, np.float32).reshape(-1, 1, 3) / (255.0 if is_uint8 else 1.0)
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + self._hue) % 360.0
        hsv[..., 2] = np.clip(hsv[..., 2] * self._value, 0.0, 1.0)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(np.shape(rgb))
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8) if is_uint8 else out.astype(np.asarray(rgb).dtype)

    def decorate(self, scene: mujoco.MjvScene) -> None:
        """Add this episode's distractor objects to a scene built by ``update_scene``."""
        for d in self._distractors:
            if scene.ngeom >= scene.maxgeom:
                return
            mujoco.mjv_initGeom(scene.geoms[scene.ngeom], d.kind, d.size, d.pos, d.mat, d.rgba)
            scene.ngeom += 1

    def observe(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Image-level perturbations on every camera image of an observation."""
        names = [n for n in ("motion_blur", "defocus", "noise", "jpeg") if n in self.active]
        if not names:
            return obs
        out = dict(obs)
        for key, image in obs.items():
            if image.dtype != np.uint8 or image.ndim != 3:
                continue
            for name in names:
                image = getattr(self, f"_image_{name}")(image, self.active[name], self._rngs[name])
            out[key] = image
        return out

    def act(self, action: np.ndarray) -> np.ndarray:
        """The action the actuators receive this step: the commanded one, or an earlier one under ``delay``."""
        if "delay" not in self.active:
            return action
        self._pending.append(np.array(action, copy=True))
        step = len(self._pending) - 1
        mean = 0.4 * self.active["delay"]
        lag = int(np.floor(mean)) + int(self._rngs["delay"].random() < mean - np.floor(mean))
        # Never older than what was already applied: a late command is late, it does not travel back in time.
        self._applied_step = max(self._applied_step, step - lag)
        if self._applied_step < 0:
            return np.zeros_like(action)
        return self._pending[self._applied_step]

    # Image-level ----------------------------------------------------------------------------------------------

    @staticmethod
    def _image_noise(image: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
        std = np.float32(_NOISE_STD[s - 1])
        noisy = image * np.float32(1 / 255) + rng.standard_normal(image.shape, np.float32) * std
        return np.clip(noisy * 255.0 + 0.5, 0, 255).astype(np.uint8)

    @staticmethod
    def _image_jpeg(image: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
        ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY[s - 1]])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode an observation")
        return np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1])

    def _image_defocus(self, image: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
        radius = max(1, round(_DEFOCUS_RADIUS_224[s - 1] * image.shape[0] / 224))
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)).astype(np.float32)
        return cv2.filter2D(image, -1, disc / disc.sum(), borderType=cv2.BORDER_REFLECT)

    def _image_motion_blur(self, image: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
        side = image.shape[0]
        if side not in self._kernels:  # one blur direction per episode, drawn at its first frame
            radius = max(1, round(_MOTION_RADIUS_224[s - 1] * side / 224))
            line = np.zeros((2 * radius + 1, 2 * radius + 1), np.float32)
            line[radius, :] = 1.0
            turn = cv2.getRotationMatrix2D((radius, radius), self._motion_angle, 1.0)
            kernel = cv2.warpAffine(line, turn, line.shape[::-1])
            self._kernels[side] = kernel / kernel.sum()
        return cv2.filter2D(image, -1, self._kernels[side], borderType=cv2.BORDER_REFLECT)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _rotate(vector: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation of ``vector`` about the unit ``axis``."""
    return (vector * np.cos(angle) + np.cross(axis, vector) * np.sin(angle)
            + axis * (axis @ vector) * (1 - np.cos(angle)))


def _rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
