"""Detour: LaneFollow's car and road with a barrier across the middle of the road, to be passed on either side.

The task is built to be multimodal. The privileged expert passes the barrier on the left or on the right, as the
episode's seed says (its parity); both sides are free road, and nothing the car observes tells which side the seed
chose. Demonstrations therefore hold two equally likely actions for one observation, and their average
(what a policy trained with MSE learns) drives straight into the barrier.

Detour-v1 (``DetourV1Env``) differs in ``LAYOUT`` only: on v0 a policy that commits 0.5 s after the expert still
has room to pass; on v1, whose expert swerves later and tighter, it hits the barrier (an MSE policy mostly commits
sooner than that: README).

Detour-v2 (``DetourV2Env``) is v1 with an actuator latency (``ACTION_DELAY``): an averaging policy commits only once it
sees its own lean, which it now sees 0.2 s after steering, too late to pass (README: MSE 22 %, gmm 92 %, chunk 100 %).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np

from imitlab.envs.car import box_corners
from imitlab.envs.driving import OFFROAD_PENALTY, LaneFollowEnv
from imitlab.envs.kwargs import EnvArgumentError
from imitlab.envs.road import Road
from imitlab.envs.stability import nonfinite_action

if TYPE_CHECKING:
    from imitlab.envs.detour_expert import DetourExpert

#: Barrier half length along the road and half height (m); its width across the road is the ``barrier_width``
#: argument (at most ``MAX_BARRIER_WIDTH``: the expert's passing line leaves 0.2 m beside that), its centre on the
#: road's centre-line.
OBSTACLE_HALF_LENGTH, OBSTACLE_HALF_HEIGHT = 0.5, 0.8
BARRIER_WIDTHS = (0.5, 2.9)
OBSTACLE_RGBA = (0.95, 0.55, 0.05, 1.0)
#: Route arc length (m) of the barrier's centre, drawn per episode; the road is straight from the start to
#: ``STRAIGHT_PAST`` metres beyond it, so the barrier is seen head-on and passed on a straight.
OBSTACLE_S = (30.0, 38.0)
STRAIGHT_PAST = 20.0
#: Shortest route: the car must have room to come back to the centre after the barrier.
MIN_ROUTE_LENGTH = OBSTACLE_S[1] + STRAIGHT_PAST
#: Penalty on hitting the barrier, which ends the episode (as leaving the road does).
COLLISION_PENALTY = OFFROAD_PENALTY


@dataclass(frozen=True)
class DetourLayout:
    """Where the car drives and how the expert passes the barrier: what separates Detour-v0 from Detour-v1."""

    approach_spread: float
    """The car keeps a line up to this far (m) either side of the centre-line, drawn per episode apart from the coin:
    demonstrations of both sides start from the same spread of places, so where the car is says nothing of the side."""
    pass_offset: float
    """The expert's passing line (m) from the centre-line, to ``pass_side``."""
    swerve_start: float
    """The expert's path leaves its line this far (m) before the barrier, reaches the passing line ``swerve_length``
    later, holds it to ``return_start`` past the barrier and is back ``swerve_length`` after that."""
    swerve_length: float
    return_start: float
    lookahead: tuple[float, float]
    """The expert's pure-pursuit look-ahead range (m): the shorter, the tighter it follows its swerve."""


#: v0: a swerve over 8 m from 10 m before the barrier. A policy that averages the sides (MSE) waits a few metres,
#: then commits to the side it leans to and still clears the barrier (README).
LAYOUT_V0 = DetourLayout(approach_spread=0.9, pass_offset=2.5, swerve_start=10.0, swerve_length=8.0,
                         return_start=5.0, lookahead=(4.0, 10.0))
#: v1: the car keeps the centre-line, so its place never hints at a side (and a policy has a line it can see), and
#: the expert swerves late and tightly: over 4.5 m from 7 m before the barrier, looking 4.5 m ahead instead of 6.
#: Following the expert 0.2 s late still passes; an averaging policy that commits 0.5 s late hits the barrier.
LAYOUT_V1 = DetourLayout(approach_spread=0.0, pass_offset=2.5, swerve_start=7.0, swerve_length=4.5,
                         return_start=5.0, lookahead=(3.0, 4.5))


class DetourEnv(LaneFollowEnv):
    """Keep a line near the road's centre-line, pass a barrier that blocks it, and reach the route end.

    Observation, action and reward as LaneFollow-v0, minus ``COLLISION_PENALTY`` when the chassis touches the
    barrier, which terminates the episode; ``info`` adds ``collision``. Per episode the seed draws where the barrier
    stands (``OBSTACLE_S`` metres along a straight route start), the line the car keeps before and after it
    (``driving_offset``, within ``LAYOUT.approach_spread`` of the centre-line; ``lateral_offset`` is measured from it) and
    ``pass_side`` (+1 left, -1 right), which only the privileged expert reads: left for an even seed, right for an
    odd one (a coin when unseeded), so the demos of any run of consecutive seeds, as ``imitlab record`` draws them,
    pass on each side equally often; a global majority would teach an averaging policy to lean to its side.
    """

    METRICS = {**LaneFollowEnv.METRICS, "collision": "last"}
    ENV_ID = "imitlab/Detour-v0"
    LAYOUT = LAYOUT_V0
    #: Control steps between an action and the step that applies it (an actuator latency; the first ones are 0).
    ACTION_DELAY = 0

    def __init__(
        self,
        image_size: int = 72,
        render_mode: str | None = None,
        time_limit_s: float = 20.0,
        route_length: float = 70.0,
        barrier_width: float = 2.0,
        perturb: Mapping[str, int] | None = None,
    ):
        self.check_kwargs({"route_length": route_length, "barrier_width": barrier_width})
        self.barrier_width = float(barrier_width)  # before the scene is built: _add_to_scene sizes the barrier
        super().__init__(image_size, render_mode, time_limit_s, route_length, perturb)
        self._obstacle_body = self.model.body("obstacle").id
        self.obstacle_s = 0.0
        self.pass_side = 1.0
        self._episode_seed: int | None = None
        self._obstacle_corners = np.zeros((4, 2))
        self._pending: deque[np.ndarray] = deque()  # actions given, not yet applied (ACTION_DELAY of them)

    @classmethod
    def check_kwargs(cls, kwargs: Mapping[str, Any]) -> None:
        """A route too short to pass the barrier and return is one line (``check_env_kwargs`` calls this)."""
        defaults = inspect.signature(cls.__init__).parameters
        route_length = kwargs.get("route_length", defaults["route_length"].default)
        if isinstance(route_length, (int, float)) and not route_length >= MIN_ROUTE_LENGTH:
            raise EnvArgumentError(f"{cls.ENV_ID}: route_length={route_length!r} must be at least "
                                   f"{MIN_ROUTE_LENGTH:g} m (the barrier stands up to {OBSTACLE_S[1]:g} m along it)")
        width = kwargs.get("barrier_width", defaults["barrier_width"].default)
        if isinstance(width, (int, float)) and not BARRIER_WIDTHS[0] <= width <= BARRIER_WIDTHS[1]:
            raise EnvArgumentError(f"{cls.ENV_ID}: barrier_width={width!r} must be from {BARRIER_WIDTHS[0]:g} "
                                   f"to {BARRIER_WIDTHS[1]:g} m (the expert passes 2.5 m from the centre-line)")

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._episode_seed = seed
        self._pending = deque(np.zeros((self.ACTION_DELAY, 2)))
        return super().reset(seed=seed, options=options)

    def make_expert(self) -> DetourExpert:
        """The privileged expert that passes on ``pass_side`` (imported here: it imports this module)."""
        from imitlab.envs.detour_expert import DetourExpert

        return DetourExpert(self)

    def pending_actions(self) -> list[np.ndarray]:
        """The actions given but not yet applied, oldest first (privileged: the expert plans through them)."""
        return list(self._pending)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        # A non-finite action is not queued: it ends the episode now, as on the other versions.
        if self.ACTION_DELAY:
            given = np.asarray(action, np.float64).reshape(2)
            if nonfinite_action(given) is None:
                self._pending.append(given)
                action = self._pending.popleft()
        obs, reward, terminated, truncated, info = super().step(action)
        if info["collision"] and not terminated:
            reward -= COLLISION_PENALTY
            terminated, truncated = True, False
        return obs, reward, terminated, truncated, info

    def _add_to_scene(self, spec: mujoco.MjSpec) -> None:
        # A mocap body: the car's reset (mj_resetData) puts it where body_pos says, and kinematics moves its geom.
        body = spec.worldbody.add_body(name="obstacle", mocap=True)
        body.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[OBSTACLE_HALF_LENGTH, self.barrier_width / 2, OBSTACLE_HALF_HEIGHT], rgba=list(OBSTACLE_RGBA),
                      contype=0, conaffinity=0)

    def _generate_road(self, rng: np.random.Generator) -> Road:
        """Draw the barrier's place, the expert's side and the approach line, then a road that is straight well past the barrier,
        and stand the barrier on it."""
        self.obstacle_s = float(rng.uniform(*OBSTACLE_S))
        coin = rng.random() < 0.5  # drawn either way, so the layout is the same whichever rule decides the side
        seed = self._episode_seed
        self.pass_side = (1.0 if coin else -1.0) if seed is None else (1.0 if seed % 2 == 0 else -1.0)
        spread = self.LAYOUT.approach_spread
        self.driving_offset = float(rng.uniform(-spread, spread))
        straight = self.obstacle_s + STRAIGHT_PAST
        road = Road.generate(rng, self.route_length, first_straight=(straight, straight + 10.0))
        xy, heading = road.pose(self.obstacle_s)
        self.model.body_pos[self._obstacle_body] = (xy[0], xy[1], OBSTACLE_HALF_HEIGHT)
        self.model.body_quat[self._obstacle_body] = (np.cos(heading / 2), 0.0, 0.0, np.sin(heading / 2))
        self._obstacle_corners = box_corners(xy, heading, OBSTACLE_HALF_LENGTH, self.barrier_width / 2)
        return road

    def _info(self, d: float, success: bool) -> dict[str, Any]:
        collision = rectangles_overlap(self.car.footprint(), self._obstacle_corners)
        return {**super()._info(d, success and not collision), "collision": collision}


class DetourV1Env(DetourEnv):
    """Detour-v1: ``LAYOUT_V1``, the barrier across the car's own line and a late, tight swerve."""

    ENV_ID = "imitlab/Detour-v1"
    LAYOUT = LAYOUT_V1


class DetourV2Env(DetourV1Env):
    """Detour-v2: v1 with a 0.2 s actuator latency (``ACTION_DELAY`` steps, zero actions until the first applies)."""

    ENV_ID = "imitlab/Detour-v2"
    ACTION_DELAY = 2


def rectangles_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two rectangles (corners (4, 2) in order around each) overlap: no edge normal separates them."""
    for corners in (a, b):
        for edge in (corners[1] - corners[0], corners[2] - corners[1]):
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True
