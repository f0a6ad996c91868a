"""Town-v0: drive a route through a procedural town with junctions, traffic lights and traffic, by command.

The car is LaneFollow-v0's simulated car (``imitlab.envs.car``). Each episode draws a route for the task, a
weather from the ``weather`` kwarg and spawns ``traffic`` cars; a planner's command (follow lane / left /
right / straight) is announced before every junction, as in CARLA's conditional imitation learning setting.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from imitlab.core.scalars import clamp
from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import TRAINING_TOWN
from imitlab.envs.car import CONTROL_HZ, HALF_LENGTH, STATE_HIGH, STATE_LOW, Car
from imitlab.envs.perturb import Perturber, SceneParts
from imitlab.envs.rendering import set_fog, sharpen_texture, upload_texture
from imitlab.envs.road import LANE_OFFSET, ROAD_WIDTH
from imitlab.envs.stability import mark_unstable
from imitlab.envs.town.graph import ASPHALT_HALF, DEFAULT_GRID, JUNCTION_HALF, Town
from imitlab.envs.town.planner import (COMMAND_NAMES, Route, impossible_reason, longest_route, route_through,
                                       sample_route)
from imitlab.envs.town.culling import FrustumCuller
from imitlab.envs.town.scene import build_scene
from imitlab.envs.town.traffic import RED, Mover, Traffic, TrafficLights, car_points
from imitlab.envs.town.weather import Weather, resolve

if TYPE_CHECKING:
    from imitlab.envs.town.expert import TownExpert

#: Reward per metre of route progress, and the penalty for an episode-ending failure.
PROGRESS_REWARD = 0.1
FAILURE_PENALTY = 10.0
#: Time allowed: a fixed margin plus the route length at this average speed (m/s), as CARLA sizes timeouts.
TIME_MARGIN_S = 60.0
TIME_SPEED = 2.5
#: The episode ends as blocked after this long (s) without moving 1 m: three light cycles.
BLOCKED_S = 90.0
#: Leaving the route: the car centre this far (m) from the route's lane centre -- beyond the asphalt of the
#: route's street (a kerb ends the episode first there), so only a wrong turn counts.
OFF_ROUTE = 8.0
#: Car-to-car contact: three circles of this radius along each car's axis (m).
_CIRCLE_R = 0.95
_CIRCLE_X = np.array([-1.3, 0.0, 1.3])
#: Centre distance beyond which two cars cannot touch: both end circles' reach plus a margin (m).
_CONTACT_RANGE = 2.0 * (_CIRCLE_X.max() + _CIRCLE_R) + 0.5
_CHASE_SIZE = (240, 320)
#: Infraction counters reported in ``info`` (each also a per-episode metric).
INFRACTIONS = ("collision_vehicle", "collision_static", "collision_kerb", "red_light", "opposite_lane", "blocked",
               "off_route")


class TownConfigError(ImitlabError, ValueError):
    """Bad Town-v0 kwargs: one line that says which and why (the CLI prints it and exits 1)."""


class TownEnv(gym.Env[dict[str, Any], np.ndarray]):
    """Follow a planned route through town ``town`` from the driver camera and the route command.

    Observation ``{"image": uint8 (S, S, 3), "state": float32 [speed, yaw rate, steering, previous throttle],
    "command": int in Discrete(4) (0 follow lane, 1 left, 2 right, 3 straight)}``; action ``[steering,
    throttle]`` as in LaneFollow-v0. The episode terminates at the goal (success) or on a collision (vehicle,
    parked car, kerb), leaving the route (``off_route``: a wrong turn), or being blocked; it is truncated at
    the route's time limit. Red lights and entering the opposite lane are counted, not fatal.
    ``info``: ``is_success``, ``route_completion`` (0..1), ``command``, ``distance`` (m driven along the
    route) and the infraction counters in ``INFRACTIONS``. ``reset(options={"lanes": [[node, direction],
    ...]})`` drives a given route instead of a sampled one (benchmarks and tests pin routes that way).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    METRICS = {"route_completion": "last", "distance": "last", **{name: "last" for name in INFRACTIONS}}
    ACTION_LABELS = ("steer", "throttle")
    STATE_LABELS = ("speed", "yaw_rate", "steer_angle", "prev_throttle")
    COMMAND_NAMES = COMMAND_NAMES

    def __init__(
        self,
        town: int = TRAINING_TOWN,
        weather: str | Sequence[str] = "train",
        traffic: int = 0,
        task: str = "navigation",
        image_size: int = 96,
        render_mode: str | None = None,
        grid: int = DEFAULT_GRID,
        perturb: Mapping[str, int] | None = None,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise TownConfigError(f"unsupported render_mode {render_mode!r}; use 'rgb_array' or None")
        self.weathers, self.town = check_town_kwargs(town, weather, traffic, task, grid)
        self.task = task
        self.traffic_count = traffic
        self.image_size = image_size
        self.render_mode = render_mode

        self.scene = build_scene(self.town, traffic, np.random.default_rng([town, 3301]))
        self.model = self.scene.model
        self.data = mujoco.MjData(self.model)
        self.car = Car(self.model, self.data)
        self.lights = TrafficLights(self.town)
        self.traffic = Traffic(self.town, self.lights, traffic)
        approaches = np.array(self.scene.lamps, dtype=np.int64).reshape(-1, 2)
        self._lamp_nodes, self._lamp_dirs = approaches[:, 0], approaches[:, 1]
        self._lamp_states: np.ndarray | None = None
        self._parked_circles = _circles(self.town.parked[:, :2], self.town.parked[:, 2])
        self.perturber = Perturber(self.model, SceneParts(
            cameras=(self.model.camera("driver").id,), scale=6.0,
            surfaces=(self.scene.ground_material, *self.scene.facades), bodies=(self.model.body("car").id,),
            place_distractors=self._distractor_sites, distractors_per_severity=4), perturb)

        self._renderers: list[mujoco.Renderer] = [mujoco.Renderer(self.model, image_size, image_size)]
        if render_mode == "rgb_array":
            self._renderers.append(mujoco.Renderer(self.model, *_CHASE_SIZE))
        for renderer in self._renderers:
            sharpen_texture(renderer, self.model, self.model.texture("road").id)
        # What the driver camera may not see: the traffic cars and its own car's body (below and behind it).
        own_car = np.nonzero(self.model.body_rootid[self.model.geom_bodyid] == self.model.body("car").id)[0]
        self._driver_view = FrustumCuller(self.model, self.model.camera("driver").id, image_size, image_size,
                                          np.concatenate((own_car, self.scene.traffic_geoms)))
        self._weather: Weather | None = None

        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "state": spaces.Box(STATE_LOW, STATE_HIGH, dtype=np.float32),
                "command": spaces.Discrete(len(COMMAND_NAMES)),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.route: Route | None = None
        self.time_s = 0.0
        #: Control steps the episode may take: set per route by ``reset``; before it, the longest route's.
        self.max_steps = _time_limit_steps(longest_route(self.town, task))

    @classmethod
    def check_kwargs(cls, kwargs: Mapping[str, Any]) -> None:
        """Constructor kwargs -> a one-line ``TownConfigError`` if they are bad, without building the town's scene
        (``imitlab.envs.kwargs.check_env_kwargs`` calls it, so evaluation fails before starting its workers)."""
        given = {**{name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}, **kwargs}
        check_town_kwargs(given["town"], given["weather"], given["traffic"], given["task"], given["grid"])

    def make_expert(self) -> TownExpert:
        """The privileged expert bound to this env (imported here: it imports this module)."""
        from imitlab.envs.town.expert import TownExpert

        return TownExpert(self)

    # -- privileged state (the expert reads these) ------------------------------------------------------------

    @property
    def route_s(self) -> float:
        """Arc length of the car's centre along the route's centre-line."""
        return self._s

    def ego_mover(self) -> Mover | None:
        """The car's next junction pass on its route, in the form traffic uses for right of way."""
        assert self.route is not None
        for junction in self.route.passes:
            if junction.s_exit > self._s - HALF_LENGTH:
                return Mover(junction, self._s, self.car.forward_speed, ego=True)
        return None

    # -- gym API ----------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        if options and "lanes" in options:
            self.route = route = self._given_route(options["lanes"], float(options.get("s_start", 2.0)))
        else:
            self.route = route = sample_route(self.town, self.task, rng)
        weather = self.weathers[int(rng.integers(len(self.weathers)))]
        if weather != self._weather:  # the weather is the unperturbed scene; perturbations act on top of it
            self.perturber.restore()
            self.scene.apply_weather(weather)
            self.perturber.rebase()
            for renderer in self._renderers:
                upload_texture(renderer, self.model, self.scene.sky_texture)
                renderer.scene.flags[mujoco.mjtRndFlag.mjRND_FOG] = weather.fog is not None
                if weather.fog is not None:
                    set_fog(renderer, *weather.fog, weather.sky_horizon)
            self._weather = weather
        self.perturber.begin_episode(seed, options)
        xy, heading = route.road.pose(route.s_start)
        self.car.reset(xy, heading)
        self.time_s = 0.0
        self._steps = 0
        self._s = self._s_max = route.s_start
        self.max_steps = _time_limit_steps(route.s_goal - route.s_start)
        self.traffic.reset(rng, keep_clear=xy, path_length=self.max_steps / CONTROL_HZ * 9.0 + 80.0)
        self._place_traffic(new_episode=True)
        self._update_lamps()
        self.infractions = {name: 0 for name in INFRACTIONS}
        self._in_opposite = False
        self._anchor, self._anchor_time = xy, 0.0
        return self._observation(), self._info(success=False)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        assert self.route is not None, "call reset() before step()"
        route = self.route
        front_before = self._s + HALF_LENGTH
        unstable = self.car.step(self.perturber.act(np.asarray(action, dtype=np.float64).reshape(2)))
        self._steps += 1
        if unstable is not None:  # no reward, never a success: see envs/stability.py
            return self._observation(), 0.0, True, False, mark_unstable(self._info(success=False), unstable)
        self.time_s = self._steps / CONTROL_HZ
        xy = self.car.xy
        proj = route.road.project(xy, near=(self._s - 3.0, self._s + 6.0))
        self._s = proj.s
        progress = max(0.0, proj.s - self._s_max)
        self._s_max = max(self._s_max, proj.s)

        yaw, speed = self.car.yaw, self.car.forward_speed
        ego = car_points(xy[None], np.array([yaw]), np.array([speed]), np.array([-1]))
        self.traffic.step(self.time_s, ego, self.ego_mover())
        self._place_traffic()
        self._update_lamps()

        failed = self._check_infractions(front_before, proj.d, xy, yaw)
        success = not failed and self._s >= route.s_goal
        reward = PROGRESS_REWARD * progress - (FAILURE_PENALTY if failed else 0.0)
        terminated = failed or success
        truncated = not terminated and self._steps >= self.max_steps
        return self._observation(), float(reward), bool(terminated), bool(truncated), self._info(success)

    def render(self) -> np.ndarray | None:
        """The chase-camera video frame, captioned with the command in force and the infractions so far."""
        if self.render_mode != "rgb_array" or len(self._renderers) < 2:
            return None
        chase = self._renderers[1]
        chase.update_scene(self.data, camera="chase")
        self.perturber.decorate(chase.scene)
        frame = chase.render()
        assert self.route is not None
        infractions = sum(self.infractions.values())
        caption = f"{COMMAND_NAMES[self.route.command_at(self._s)]}  infractions {infractions}"
        # At the bottom: evaluation videos caption the top of the frame with the seed and step.
        cv2.putText(frame, caption, (6, frame.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
        return frame

    def close(self) -> None:
        for renderer in self._renderers:
            renderer.close()
        self._renderers = []

    # -- helpers ----------------------------------------------------------------------------------------------

    def _given_route(self, lanes: Sequence[Sequence[int]], s_start: float) -> Route:
        """The route along ``lanes`` (``[[node, direction], ...]``, consecutive, no U-turns) from ``s_start``."""
        pairs = [(int(node), int(direction)) for node, direction in lanes]
        drivable = bool(pairs) and all(
            0 <= node < len(self.town.nodes) and 0 <= direction < 4 and self.town.neighbours[node, direction] >= 0
            for node, direction in pairs)
        for (node, direction), (nxt, out_dir) in zip(pairs, pairs[1:]):
            if drivable and (nxt != self.town.neighbours[node, direction]
                             or out_dir not in self.town.exits(nxt, direction)):
                drivable = False
        if not drivable:
            raise TownConfigError(f"lanes {pairs} are not a drivable sequence of streets in town {self.town.seed}")
        return route_through(self.town, pairs, s_start, goal_fraction=0.6)

    def _check_infractions(self, front_before: float, d: float, xy: np.ndarray, yaw: float) -> bool:
        """Count this step's infractions; True if one of them ends the episode."""
        route = self.route
        assert route is not None
        failed = False
        if not self.town.on_asphalt(self.car.footprint()).all():
            self.infractions["collision_kerb"] += 1
            failed = True
        ego = _circles(xy[None], np.array([yaw]))
        traffic_xy, traffic_yaw = self.traffic.poses()
        near = ((traffic_xy - xy) ** 2).sum(axis=1) < _CONTACT_RANGE**2  # only those can touch
        if near.any() and _touching(ego, _circles(traffic_xy[near], traffic_yaw[near])):
            self.infractions["collision_vehicle"] += 1
            failed = True
        if len(self._parked_circles) and _touching(ego, self._parked_circles):
            self.infractions["collision_static"] += 1
            failed = True
        front = self._s + HALF_LENGTH
        for junction in route.passes:
            if front_before < junction.s_enter <= front and self.town.is_junction(junction.node):
                if self.lights.state(junction.node, junction.in_dir, self.time_s) == RED:
                    self.infractions["red_light"] += 1
        in_box = bool(np.any(np.abs(self.town.nodes - xy).max(axis=1) < JUNCTION_HALF))
        opposite = d > ROAD_WIDTH / 4 and not in_box
        if opposite and not self._in_opposite:
            self.infractions["opposite_lane"] += 1
        self._in_opposite = opposite
        if np.linalg.norm(xy - self._anchor) > 1.0:
            self._anchor, self._anchor_time = xy, self.time_s
        elif self.time_s - self._anchor_time > BLOCKED_S:
            self.infractions["blocked"] += 1
            failed = True
        if abs(d) > OFF_ROUTE:
            self.infractions["off_route"] += 1
            failed = True
        return failed

    def _place_traffic(self, new_episode: bool = False) -> None:
        """Move the traffic cars' bodies to their poses; at a new episode also paint them and park the unused."""
        n = self.traffic.active
        if n == 0:
            return
        xy, yaw = self.traffic.poses()
        mocap = self.scene.traffic_mocap[:n]
        self.data.mocap_pos[mocap, :2] = xy
        half = yaw / 2
        self.data.mocap_quat[mocap, 0] = np.cos(half)
        self.data.mocap_quat[mocap, 3] = np.sin(half)
        if new_episode:
            self.data.mocap_quat[mocap, 1:3] = 0.0
            self.model.geom_rgba[self.scene.traffic_geoms[:n], :3] = self.traffic.colours[:n]
            self.data.mocap_pos[self.scene.traffic_mocap[n:]] = [0.0, 0.0, -50.0]  # out of sight, under the ground

    def _update_lamps(self) -> None:
        """Repaint the lamps whose light changed (a texture upload per renderer, only on a change)."""
        if not len(self._lamp_nodes):
            return
        states = self.lights.states(self._lamp_nodes, self._lamp_dirs, self.time_s)
        if self._lamp_states is not None and np.array_equal(states, self._lamp_states):
            return
        self._lamp_states = states
        self.scene.paint_lamps(states)
        for renderer in self._renderers:
            upload_texture(renderer, self.model, self.scene.lamp_texture)

    def _observation(self) -> dict[str, Any]:
        camera = self._renderers[0] if self._renderers else None
        assert camera is not None, "the env is closed"
        self._driver_view.update_scene(camera, self.data)
        self.perturber.decorate(camera.scene)
        assert self.route is not None
        image = self.perturber.observe({"image": camera.render()})["image"]
        return {"image": image, "state": self.car.state(), "command": self.route.command_at(self._s)}

    def _distractor_sites(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Pavement points beside the route, 0.5-2.5 m past the asphalt on either side, ahead of the start."""
        assert self.route is not None
        route = self.route
        sites = []
        for _ in range(count):
            side = 1.0 if rng.random() < 0.5 else -1.0
            xy, _ = route.road.pose(float(rng.uniform(route.s_start + 8.0, max(route.s_goal, route.s_start + 9.0))),
                                    side * (ASPHALT_HALF + float(rng.uniform(0.5, 2.5))) - LANE_OFFSET)
            sites.append((xy[0], xy[1], 0.0))
        return np.array(sites).reshape(count, 3)

    def _info(self, success: bool) -> dict[str, Any]:
        assert self.route is not None
        route = self.route
        length = route.s_goal - route.s_start
        return {
            "is_success": bool(success),
            "route_completion": clamp((self._s_max - route.s_start) / length, 0.0, 1.0),
            "distance": float(self._s_max - route.s_start),
            "command": int(route.command_at(self._s)),
            **self.infractions,
        }


def check_town_kwargs(town: int, weather: str | Sequence[str], traffic: int, task: str,
                      grid: int = DEFAULT_GRID) -> tuple[list[Weather], Town]:
    """The weathers and the town these kwargs name, or a one-line ``TownConfigError`` (cheap: no scene is built,
    so a benchmark checks every configuration before it starts)."""
    if not isinstance(town, int) or isinstance(town, bool) or town < 0:
        raise TownConfigError(f"town must be a non-negative integer (a layout seed), got {town!r}")
    if not isinstance(traffic, int) or isinstance(traffic, bool) or traffic < 0:
        raise TownConfigError(f"traffic must be a non-negative number of cars, got {traffic!r}")
    if not isinstance(grid, int) or grid < 2:
        raise TownConfigError(f"grid must be an integer >= 2 (nodes per side), got {grid!r}")
    try:
        weathers = resolve(weather)
        layout = Town.generate(town, grid)
        reason = impossible_reason(layout, task)
    except ValueError as exc:
        raise TownConfigError(str(exc)) from None
    if reason is not None:
        raise TownConfigError(f"task {task!r} is impossible in town {town} (grid {grid}): {reason}")
    return weathers, layout


def time_limit_bound_s(town: Town, task: str) -> float:
    """The longest time limit (s) an episode of ``task`` in ``town`` can get, known before any episode."""
    return _time_limit_steps(longest_route(town, task)) / CONTROL_HZ


def _time_limit_steps(route_length: float) -> int:
    """Control steps allowed for a route ``route_length`` metres long."""
    return int(math.ceil((TIME_MARGIN_S + route_length / TIME_SPEED) * CONTROL_HZ))


def _circles(xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Three circle centres along each car's axis, (3 * n, 2)."""
    forward = np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
    return (xy[:, None, :] + _CIRCLE_X[None, :, None] * forward[:, None, :]).reshape(-1, 2)


def _touching(a: np.ndarray, b: np.ndarray) -> bool:
    dx, dy = a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1]  # numpy reduces an axis of 2 slowly
    return bool((dx * dx + dy * dy < (2.0 * _CIRCLE_R) ** 2).any())

