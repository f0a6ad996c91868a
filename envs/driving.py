"""Lane following: drive a MuJoCo car along a procedurally generated road from an on-board camera.

The car is simulated, not teleported: position-actuated steering hinges on the front wheels, motor torque on
the rear wheels, tyre friction on the ground plane, and brakes that raise the wheel joints' damping (so braking
can stop the car but never reverse it). Physics runs at 200 Hz, control at 10 Hz.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from imitlab.core.scalars import clamp
from imitlab.envs.car import CONTROL_HZ, STATE_HIGH, STATE_LOW, Car, car_xml
from imitlab.envs.perturb import Perturber, SceneParts
from imitlab.envs.ground_texture import GroundTexture
from imitlab.envs.rendering import sharpen_texture
from imitlab.envs.road import GRASS_RGB, LANE_OFFSET, LEAD_IN, ROAD_WIDTH, TAIL, Road, RoadColours
from imitlab.envs.stability import mark_unstable, nonfinite_action

if TYPE_CHECKING:
    from imitlab.envs.driving_expert import LaneFollowExpert

#: Reward: per metre of route progress, and once when the car leaves the road.
PROGRESS_REWARD = 0.1
OFFROAD_PENALTY = 10.0

_CHASE_SIZE = (240, 320)  # (height, width) of the video view


class LaneFollowEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Keep the car in the right lane of a ~150 m road and reach its end.

    Observation ``{"image": uint8 (S, S, 3) driver camera, "state": float32 (4,)}`` where ``state`` is
    ``[forward speed (m/s), yaw rate (rad/s), front-wheel steering angle (rad), previous throttle/brake action]``
    -- what a real car's sensors report. Action ``[steering, throttle]`` in [-1, 1]: steering +1 is full left;
    throttle > 0 drives the rear wheels, < 0 brakes.

    Reward is ``PROGRESS_REWARD`` per metre of arc length gained along the route, minus ``OFFROAD_PENALTY`` on
    leaving the road (car centre beyond the road edge), which terminates the episode. Reaching the route end or
    ``time_limit_s`` truncates it. ``info``: ``is_success`` (route end reached on the road), ``route_completion``
    (0..1), ``lateral_offset`` (signed metres from the right lane's centre, left positive). A non-finite action
    or an unstable simulation ends the episode (terminated, reward 0) with ``sim_unstable`` (see ``stability.py``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    METRICS = {"route_completion": "last", "lateral_offset": "mean_abs"}
    ACTION_LABELS = ("steer", "throttle")
    #: Discrete decisions inside the continuous action, for offline accuracy/recall/F1: name -> (action index,
    #: thresholds, classes); class i holds values in (thresholds[i-1], thresholds[i]].
    DECISIONS = {"steer": (0, (-0.1, 0.1), ("right", "straight", "left")),
                 "brake": (1, (-0.05,), ("brake", "no brake"))}
    #: Names of the ``state`` dimensions (see STATE_LOW), for statistics and video overlays.
    STATE_LABELS = ("speed", "yaw_rate", "steer_angle", "prev_throttle")

    def __init__(
        self,
        image_size: int = 96,
        render_mode: str | None = None,
        time_limit_s: float = 40.0,
        route_length: float = 150.0,
        perturb: Mapping[str, int] | None = None,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}; use 'rgb_array' or None")
        self.render_mode = render_mode
        self.image_size = image_size
        self.route_length = route_length
        self.max_steps = int(round(time_limit_s * CONTROL_HZ))

        spec = mujoco.MjSpec.from_string(car_xml())
        road_texture = spec.texture("road")  # made RGBA here: XML builtins are RGB (see ground_texture)
        road_texture.builtin = mujoco.mjtBuiltin.mjBUILTIN_NONE
        road_texture.nchannel = 4
        road_texture.data = bytes(road_texture.width * road_texture.height * 4)
        self._add_to_scene(spec)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.car = Car(self.model, self.data)
        self._car_body = self.model.body("car").id
        self._road_geom = self.model.geom("road").id
        self._grass_material = self.model.material("grass").id
        # The road's bounding square (see Road.generate) plus a margin of grass: the painted ground plane.
        self._plane_extent = LEAD_IN + route_length + TAIL + 2.0 * ROAD_WIDTH
        self.model.geom_size[self._road_geom][:2] = self._plane_extent / 2
        self.perturber = Perturber(self.model, SceneParts(
            cameras=(self.model.camera("driver").id,), scale=6.0, bodies=(self._car_body,),
            place_distractors=self._distractor_sites, distractors_per_severity=4), perturb)

        self._ground = GroundTexture(self.model, self.model.texture("road").id, self._plane_extent)

        self._camera: mujoco.Renderer | None = mujoco.Renderer(self.model, image_size, image_size)
        self._chase: mujoco.Renderer | None = None
        if render_mode == "rgb_array":
            self._chase = mujoco.Renderer(self.model, *_CHASE_SIZE)
        for renderer in self._renderers():
            self._ground.upload(renderer)  # our mip levels replace the ones OpenGL generated
            sharpen_texture(renderer, self.model, self._ground.tex_id)

        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "state": spaces.Box(STATE_LOW, STATE_HIGH, dtype=np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

        self.road: Road | None = None
        #: Lateral offset (m, left positive) of the line the car starts near and ``lateral_offset`` is measured from.
        self.driving_offset = LANE_OFFSET
        self._s = 0.0
        self._d = 0.0
        self._steps = 0

    # -- privileged state (the expert reads these) ------------------------------------------------------------

    def make_expert(self) -> LaneFollowExpert:
        """The privileged pure-pursuit expert bound to this env (imported here: it imports this module)."""
        from imitlab.envs.driving_expert import LaneFollowExpert

        return LaneFollowExpert(self)

    # -- gym API ----------------------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        self.road = self._generate_road(rng)
        self.perturber.begin_episode(seed, options)
        self._paint_road(rng)

        offset = self.driving_offset + float(rng.uniform(-0.3, 0.3))
        xy, heading = self.road.pose(0.0, offset)
        self.car.reset(xy, heading + float(rng.uniform(-0.05, 0.05)))

        self._steps = 0
        proj = self.road.project(self.car.xy)
        self._s = proj.s
        self._d = proj.d
        return self._observation(), self._info(proj.d, success=False)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        assert self.road is not None, "call reset() before step()"
        action = np.asarray(action, dtype=np.float64).reshape(2)
        bad_action = nonfinite_action(action)
        if bad_action is not None:  # never written into ctrl or dof_damping
            return self._end_unstable(bad_action)
        unstable = self.car.step(self.perturber.act(np.minimum(np.maximum(action, -1.0), 1.0)))
        self._steps += 1
        if unstable is not None:
            return self._end_unstable(unstable)

        proj = self.road.project(self.car.xy)
        reward = PROGRESS_REWARD * (proj.s - self._s)
        self._s = proj.s
        self._d = proj.d
        terminated = abs(proj.d) > ROAD_WIDTH / 2
        if terminated:
            reward -= OFFROAD_PENALTY
        finished = proj.s >= self.route_length and not terminated
        truncated = finished or (self._steps >= self.max_steps and not terminated)
        return self._observation(), float(reward), bool(terminated), bool(truncated), self._info(proj.d, finished)

    def _end_unstable(self, reason: str) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """The step that ends an episode whose simulation cannot be trusted: no reward, the last sound offset."""
        return self._observation(), 0.0, True, False, mark_unstable(self._info(self._d, success=False), reason)

    def render(self) -> np.ndarray | None:
        if self._chase is None:
            return None
        self._chase.update_scene(self.data, camera="chase")
        self.perturber.decorate(self._chase.scene)
        return self._chase.render()

    def close(self) -> None:
        for renderer in (self._camera, self._chase):
            if renderer is not None:
                renderer.close()
        self._camera = self._chase = None

    # -- helpers ----------------------------------------------------------------------------------------------

    def _add_to_scene(self, spec: mujoco.MjSpec) -> None:
        """Add a variant's bodies or geoms to the scene before it is compiled (a plain road adds nothing)."""

    def _generate_road(self, rng: np.random.Generator) -> Road:
        """This episode's road (a variant may shape its start)."""
        return Road.generate(rng, self.route_length)

    def _paint_road(self, rng: np.random.Generator) -> None:
        """Paint this episode's road over the grass and upload what changed to every renderer's GL texture."""
        assert self.road is not None
        sampled = RoadColours.sample(rng)
        colours = RoadColours(*(self.perturber.recolour(c) for c in (sampled.asphalt, sampled.marking)))
        grass = self.perturber.recolour(np.array(GRASS_RGB, np.uint8))  # GRASS_RGB unless colours are perturbed
        self.model.mat_rgba[self._grass_material, :3] = grass / 255.0  # no seam at the plane's edge
        changed = self._ground.paint(self.road, colours, grass)
        for renderer in self._renderers():
            self._ground.upload(renderer, changed)

    def _renderers(self) -> list[mujoco.Renderer]:
        return [renderer for renderer in (self._camera, self._chase) if renderer is not None]

    def _observation(self) -> dict[str, np.ndarray]:
        assert self._camera is not None, "the env is closed"
        self._camera.update_scene(self.data, camera="driver")
        self.perturber.decorate(self._camera.scene)
        return self.perturber.observe({"image": self._camera.render(), "state": self.car.state()})

    def _distractor_sites(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Ground points beside the road, 0.5-3 m past either edge, anywhere along the route."""
        assert self.road is not None
        sites = []
        for _ in range(count):
            side = 1.0 if rng.random() < 0.5 else -1.0
            xy, _ = self.road.pose(float(rng.uniform(10.0, self.route_length)),
                                   side * (ROAD_WIDTH / 2 + float(rng.uniform(0.5, 3.0))))
            sites.append((xy[0], xy[1], 0.0))
        return np.array(sites).reshape(count, 3)

    def _info(self, d: float, success: bool) -> dict[str, Any]:
        assert self.road is not None
        return {
            "is_success": bool(success),
            "route_completion": clamp(self._s / self.route_length, 0.0, 1.0),
            "lateral_offset": float(d - self.driving_offset),
        }
