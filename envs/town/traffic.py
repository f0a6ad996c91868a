"""Other road users: traffic lights, junction right of way, and kinematic cars that follow lanes with IDM.

Traffic cars are MuJoCo mocap bodies moved once per control step along their own random walk through the
street graph (a ``Road`` centre-line), so 20 of them cost a few vectorised numpy operations, not physics.
Every car -- and the privileged expert, through the same methods -- brakes for whatever is on its path ahead
(Intelligent Driver Model), stops at red lights, and yields inside junctions: to any car already in the box
on a crossing path, and, when turning left, to oncoming cars that are about to cross.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imitlab.envs.car import CONTROL_HZ, HALF_LENGTH
from imitlab.envs.road import LANE_OFFSET, Road
from imitlab.envs.town.graph import DIRECTIONS, JUNCTION_HALF, LEFT, JunctionPass, Town, connector_segments, turn_kind

#: Light phases (s): one axis (east-west, then north-south) is green, then yellow, then everything is red.
GREEN_S, YELLOW_S, ALL_RED_S = 10.0, 2.5, 2.0
CYCLE_S = 2.0 * (GREEN_S + YELLOW_S + ALL_RED_S)
GREEN, YELLOW, RED = 0, 1, 2
#: Intelligent Driver Model: max acceleration, comfortable braking (m/s^2), standstill gap (m), time headway (s).
IDM_ACCEL, IDM_BRAKE, IDM_GAP, IDM_HEADWAY = 2.0, 3.0, 2.5, 1.0
#: Hardest braking a traffic car may use (m/s^2) and the lateral acceleration it allows in turns.
MAX_BRAKE = 8.0
LATERAL_ACCEL = 2.5
#: A point within this distance of a path's centre-line blocks it (m): a car width plus a margin.
PATH_CATCH = 1.7
#: How far ahead paths are searched for obstacles (m), in steps of ``_AHEAD_STEP``.
LOOKAHEAD = 40.0
#: Cars closer than this to their stop line (m) check lights and right of way.
DECISION_DISTANCE = 30.0
#: A left-turner yields to oncoming cars that would reach the box within this time (s).
ONCOMING_WINDOW_S = 4.0
#: A left-turner waiting at the line may still start on yellow while this much of it is left (s).
CLEARING_S = 2.0

_AHEAD_STEP = 1.0
_AHEAD = np.arange(0.0, LOOKAHEAD, _AHEAD_STEP)
_BODY_POINTS = np.array([-1.6, 0.0, 1.6])  # samples along a car's axis that obstacle searches test
_SPAWN_SPACING = 12.0
_DT = 1.0 / CONTROL_HZ


def _connector_conflicts() -> dict[tuple[int, int, int, int], bool]:
    """Whether the connectors (in_a, out_a) and (in_b, out_b) of one box come within a car width of each other."""
    shapes = {}
    for in_dir in range(4):
        forward = DIRECTIONS[in_dir]
        start = -JUNCTION_HALF * forward + LANE_OFFSET * np.array([-forward[1], forward[0]])
        for out_dir in range(4):
            if out_dir != (in_dir + 2) % 4:
                road = Road.from_segments(start, np.pi / 2 * in_dir, connector_segments(in_dir, out_dir), 0.0)
                shapes[in_dir, out_dir] = road.points[::5]
    conflicts = {}
    for (a, b), pa in shapes.items():
        for (c, d), pc in shapes.items():
            near = np.min(np.linalg.norm(pa[:, None] - pc[None], axis=-1)) < 2.2
            conflicts[a, b, c, d] = bool(near and a != c)  # same approach: one queue, IDM keeps the order
    return conflicts


CONFLICTS = _connector_conflicts()


class TrafficLights:
    """A fixed-time controller per junction, each with its own phase offset (fixed per town)."""

    def __init__(self, town: Town):
        rng = np.random.default_rng([town.seed, 5923])
        self.offsets = rng.uniform(0.0, CYCLE_S, len(town.nodes))

    def state(self, node: int, in_dir: int, time_s: float) -> int:
        """GREEN, YELLOW or RED for cars arriving at ``node`` heading ``in_dir`` at ``time_s``."""
        phase = self._phase(node, in_dir, time_s)
        if phase < GREEN_S:
            return GREEN
        return YELLOW if phase < GREEN_S + YELLOW_S else RED

    def yellow_left(self, node: int, in_dir: int, time_s: float) -> float:
        """Seconds of yellow left at ``time_s`` (0 unless the light is yellow)."""
        return max(0.0, min(YELLOW_S, GREEN_S + YELLOW_S - self._phase(node, in_dir, time_s)))

    def _phase(self, node: int, in_dir: int, time_s: float) -> float:
        return (time_s + float(self.offsets[node]) + (in_dir % 2) * CYCLE_S / 2) % CYCLE_S

    def states(self, nodes: np.ndarray, in_dirs: np.ndarray, time_s: float) -> np.ndarray:
        """``state`` for many approaches at once."""
        phase = (time_s + self.offsets[nodes] + (in_dirs % 2) * CYCLE_S / 2) % CYCLE_S
        return np.where(phase < GREEN_S, GREEN, np.where(phase < GREEN_S + YELLOW_S, YELLOW, RED))


@dataclass
class Mover:
    """Where a car is about to cross a junction, for right-of-way decisions: its pass and its state."""

    junction: JunctionPass
    s: float  # arc length of the car's centre on its own path
    speed: float
    ego: bool = False  # the driven car: it follows its own yellow rule, not traffic's


def idm_accel(speed: float | np.ndarray, desired: float | np.ndarray, gap: float | np.ndarray,
              leader_speed: float | np.ndarray) -> np.ndarray:
    """IDM acceleration towards ``desired`` speed, behind a leader ``gap`` metres (bumper to bumper) ahead."""
    speed = np.asarray(speed, dtype=np.float64)
    closing = speed * (speed - leader_speed) / (2.0 * np.sqrt(IDM_ACCEL * IDM_BRAKE))
    wanted_gap = IDM_GAP + np.maximum(0.0, speed * IDM_HEADWAY + closing)
    free = 1.0 - (speed / np.maximum(desired, 0.1)) ** 4
    return IDM_ACCEL * (free - (wanted_gap / np.maximum(gap, 0.1)) ** 2)


class Traffic:
    """``count`` kinematic cars on random walks through the town; one reset per episode."""

    def __init__(self, town: Town, lights: TrafficLights, count: int):
        self.town = town
        self.lights = lights
        self.count = count
        self._lanes = town.lanes()
        self.path_length = 0.0
        self.points = np.zeros((count, 1, 2))
        self.heading = np.zeros((count, 1))
        self.curvature = np.zeros((count, 1))
        self.passes: list[list[JunctionPass]] = [[] for _ in range(count)]
        # Arc lengths where each car's passes begin and end (inf past its last), and the index of its next one.
        self._enters = np.zeros((count, 0))
        self._exits = np.zeros((count, 0))
        self._next = np.zeros(count, dtype=np.int64)
        self._pass_nodes = np.zeros((count, 0), dtype=np.int64)  # node of each pass, -1 past the last
        self.s = np.zeros(count)
        self.speed = np.zeros(count)
        self.desired = np.zeros(count)
        self.colours = np.zeros((count, 3))
        self.active = 0
        self.time_s = 0.0
        self._xy, self._yaw = np.zeros((0, 2)), np.zeros(0)
        self._obstacles = car_points(self._xy, self._yaw, np.zeros(0), np.zeros(0, np.int64))

    # -- episode ---------------------------------------------------------------------------------------------

    def reset(self, rng: np.random.Generator, keep_clear: np.ndarray, path_length: float) -> None:
        """Spawn every car at rest on a lane, ``_SPAWN_SPACING`` apart and 25 m or more from ``keep_clear``,
        each with a random walk ``path_length`` metres long (enough for the whole episode)."""
        self.path_length = path_length
        samples = int(round(path_length / 0.1)) + 1
        self.points = np.zeros((self.count, samples, 2))
        self.heading = np.zeros((self.count, samples))
        self.curvature = np.zeros((self.count, samples))
        spots = []
        for lane in self._lanes:
            length = self.town.lane_length(*lane)
            for along in np.arange(3.0, length - 3.0, _SPAWN_SPACING):
                xy = self.town.lane_start(*lane) + along * DIRECTIONS[lane[1]]
                if np.linalg.norm(xy - keep_clear) > 25.0:
                    spots.append((lane, along))
        chosen = rng.choice(len(spots), size=min(self.count, len(spots)), replace=False) if spots else []
        self.active = len(chosen)
        for i, index in enumerate(chosen):
            lane, along = spots[int(index)]
            lanes = [lane]
            length = self.town.lane_length(*lane)  # lanes only: the connectors make the path longer still
            while length < self.path_length:
                node = int(self.town.neighbours[lanes[-1]])
                options = self.town.exits(node, lanes[-1][1])
                lanes.append((node, options[int(rng.integers(len(options)))]))
                length += self.town.lane_length(*lanes[-1])
            road, passes = self.town.path(lanes)
            take = self.points.shape[1]
            self.points[i] = road.points[:take]
            self.heading[i] = road.heading[:take]
            self.curvature[i] = road.curvature[:take]
            self.passes[i] = passes
            self.s[i] = along
        width = max((len(p) for p in self.passes[: self.active]), default=0)
        self._enters, self._exits = np.full((self.count, width + 1), np.inf), np.full((self.count, width + 1), np.inf)
        self._pass_nodes = np.full((self.count, width + 1), -1, dtype=np.int64)
        for i, passes in enumerate(self.passes[: self.active]):
            self._enters[i, : len(passes)] = [p.s_enter for p in passes]
            self._exits[i, : len(passes)] = [p.s_exit for p in passes]
            self._pass_nodes[i, : len(passes)] = [p.node for p in passes]
        self.speed[:] = 0.0
        self.time_s = 0.0
        self._update_poses()
        self.desired[:] = rng.uniform(6.0, 8.5, self.count)
        self.colours[:] = rng.uniform(0.1, 0.9, (self.count, 3))

    # -- state -----------------------------------------------------------------------------------------------

    def poses(self) -> tuple[np.ndarray, np.ndarray]:
        """Centre x, y (n, 2) and yaw (n,) of the active cars (computed once per step)."""
        return self._xy, self._yaw

    def _update_poses(self) -> None:
        n = self.active
        pos = np.clip(self.s[:n] / 0.1, 0, self.points.shape[1] - 1.001)
        samples = self.points.shape[1]
        i = pos.astype(np.int64)
        t = (pos - i)[:, None]
        flat = i + np.arange(n) * samples  # flat gathers: cheaper than 2-D fancy indexing
        points = self.points.reshape(-1, 2)
        self._xy = (1 - t) * points[flat] + t * points[flat + 1]
        self._yaw = self.heading.reshape(-1)[flat]
        self._obstacles = car_points(self._xy, self._yaw, self.speed[:n], np.arange(n))
        # Passes are ordered along the path and a car never backs up: the next is the first it has not left.
        self._next = (self._exits[:n] <= (self.s[:n] - HALF_LENGTH)[:, None]).sum(axis=1)

    def next_pass(self, car: int) -> JunctionPass | None:
        """The junction the car is in or comes to next (None past its path's last one)."""
        index = int(self._next[car])
        return self.passes[car][index] if index < len(self.passes[car]) else None

    def movers(self) -> list[Mover]:
        """Every active car's next junction pass."""
        out = []
        for car in range(self.active):
            junction = self.next_pass(car)
            if junction is not None:
                out.append(Mover(junction, float(self.s[car]), float(self.speed[car])))
        return out

    # -- decisions shared with the expert --------------------------------------------------------------------

    def must_yield(self, me: Mover, others: list[Mover]) -> bool:
        """Whether ``me`` (not yet in its box) must wait: a crossing car is inside, or I turn left across traffic.
        ``others`` may include ``me``'s own pass (it is skipped)."""
        mine = me.junction
        turning_left = turn_kind(mine.in_dir, mine.out_dir) == LEFT
        for other in others:
            theirs = other.junction
            if theirs is mine or theirs.node != mine.node:
                continue
            if not CONFLICTS[mine.in_dir, mine.out_dir, theirs.in_dir, theirs.out_dir]:
                continue
            to_line = theirs.s_enter - (other.s + HALF_LENGTH)
            if to_line <= 0.0:  # inside the box (it leaves the pass list once its rear is out)
                return True
            oncoming = theirs.in_dir == (mine.in_dir + 2) % 4
            light = self.lights.state(theirs.node, theirs.in_dir, self.time_s)
            # An oncoming traffic car that can still stop for its yellow will (``must_stop``): no need to wait for
            # it. The driven car may have decided otherwise (its brakes fade), so it is always waited for.
            stops_for_yellow = not other.ego and light == YELLOW and to_line > other.speed**2 / (2.0 * IDM_BRAKE)
            if turning_left and oncoming and other.speed > 1.0 and light != RED and not stops_for_yellow:
                if to_line < other.speed * ONCOMING_WINDOW_S + 3.0:
                    return True
        return False

    def must_stop(self, me: Mover, others: list[Mover], stop_distance: float) -> bool:
        """Whether a car approaching its stop line must stop there: red, a yellow it can stop for (it needs
        ``stop_distance`` metres to stop), or yielding."""
        junction = me.junction
        to_line = junction.s_enter - (me.s + HALF_LENGTH)
        if to_line < 0.0 or not self.town.is_junction(junction.node):
            return False
        light = self.lights.state(junction.node, junction.in_dir, self.time_s)
        if light == RED:
            return True
        if light == YELLOW:
            # A left-turner waiting at the line clears the junction at the start of the yellow, as drivers do
            # when oncoming traffic stops; everyone else stops for a yellow if they still can.
            clearing = (to_line < 2.0 and me.speed < 1.0 and turn_kind(junction.in_dir, junction.out_dir) == LEFT
                        and self.lights.yellow_left(junction.node, junction.in_dir, self.time_s) >= CLEARING_S)
            if not clearing and to_line > stop_distance:
                return True
        return self.must_yield(me, others)

    def obstacles(self) -> Obstacles:
        """Sample points along every active car's axis, for path searches."""
        return self._obstacles

    def path_ahead(self, points: np.ndarray, heading: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, ...]:
        """Points (n, K, 2) and headings (n, K) of paths sampled every ``_AHEAD_STEP`` from ``s`` on, and
        the arc lengths ``ahead`` (K,) they are at (relative to ``s``)."""
        samples = points.shape[1]
        idx = np.clip(((s[:, None] + _AHEAD[None]) / 0.1).astype(np.int64), 0, samples - 1)
        flat = idx + (np.arange(len(s)) * samples)[:, None]  # one flat gather instead of a 2-D fancy index
        return points.reshape(-1, 2)[flat], heading.reshape(-1)[flat], _AHEAD, idx

    # -- simulation ------------------------------------------------------------------------------------------

    def step(self, time_s: float, ego: Obstacles, ego_mover: Mover | None) -> None:
        """Advance every car one control step: IDM behind obstacles and stop lines, then move along its path."""
        self.time_s = time_s
        n = self.active
        if n == 0:
            return
        path, path_yaw, ahead, idx = self.path_ahead(self.points[:n], self.heading[:n], self.s[:n])
        gap, leader_speed = first_obstacle(path, path_yaw, ahead, merge(self.obstacles(), ego))
        gap -= HALF_LENGTH

        rows = np.arange(n)[:, None]
        kappa = np.abs(self.curvature[rows, idx[:, :25]]).max(axis=1)
        desired = np.minimum(self.desired[:n], np.sqrt(LATERAL_ACCEL / np.maximum(kappa, 1e-6)))

        next_enter = self._enters[np.arange(n), self._next]  # inf past a car's last pass
        deciding = np.nonzero(next_enter - self.s[:n] <= DECISION_DISTANCE)[0]
        if len(deciding):
            # Right of way needs the movers at the deciding cars' junctions only (in car order, then the ego).
            next_node = self._pass_nodes[np.arange(n), self._next]
            wanted = set(next_node[deciding].tolist())
            mover_of: dict[int, Mover] = {}
            at_node: dict[int, list[Mover]] = {}
            for car, node in enumerate(next_node.tolist()):
                if node in wanted:
                    mover_of[car] = Mover(self.passes[car][self._next[car]], float(self.s[car]),
                                          float(self.speed[car]))
                    at_node.setdefault(node, []).append(mover_of[car])
            if ego_mover is not None and ego_mover.junction.node in wanted:
                at_node[ego_mover.junction.node].append(ego_mover)
            for car in deciding.tolist():
                me = mover_of[car]
                junction = me.junction
                if self.must_stop(me, at_node[junction.node], stop_distance=me.speed**2 / (2.0 * IDM_BRAKE)):
                    line_gap = junction.s_enter - (self.s[car] + HALF_LENGTH) - 0.5
                    if line_gap < gap[car]:
                        gap[car], leader_speed[car] = line_gap, 0.0

        accel = np.clip(idm_accel(self.speed[:n], desired, gap, leader_speed), -MAX_BRAKE, IDM_ACCEL)
        self.speed[:n] = np.maximum(0.0, self.speed[:n] + accel * _DT)
        self.speed[:n][gap <= 0.0] = 0.0
        self.s[:n] = np.minimum(self.s[:n] + self.speed[:n] * _DT, self.path_length - 1.0)
        self._update_poses()


def first_obstacle(path: np.ndarray, path_yaw: np.ndarray, ahead: np.ndarray, obstacles: Obstacles,
                   me: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per path (n, K, 2) sampled at arc lengths ``ahead`` from its car: distance to the first obstacle point
    within ``PATH_CATCH`` of it (inf if none) and that obstacle's speed along the path there (a crossing car
    moves at 0 along it). A car's own points (``owner == row``, or ``me``'s row when given) are ignored."""
    n = len(path)
    rows = np.arange(n) if me is None else me
    gap, speed = np.full(n, np.inf), np.zeros(n)
    # Only points within reach of a path's start can be on it: test those pairs alone. (Squared distances are
    # summed per coordinate: numpy is slow to reduce an axis of two.)
    px, py = obstacles.points[:, 0], obstacles.points[:, 1]
    dx, dy = path[:, 0, None, 0] - px[None], path[:, 0, None, 1] - py[None]
    reach = dx * dx + dy * dy < (ahead[-1] + PATH_CATCH) ** 2
    reach &= obstacles.owner[None, :] != rows[:, None]
    pair_row, pair_point = np.nonzero(reach)
    if len(pair_row) == 0:
        return gap, speed
    dx = path[pair_row, :, 0] - px[pair_point][:, None]
    dy = path[pair_row, :, 1] - py[pair_point][:, None]
    hit = dx * dx + dy * dy < PATH_CATCH**2  # (P, K)
    first_k = hit.argmax(axis=1)
    # Per row, the nearest hit; among equally near ones the lowest point index (argmin keeps the first).
    distance = np.full((n, len(px)), np.inf)
    distance[pair_row, pair_point] = np.where(hit.any(axis=1), ahead[first_k], np.inf)
    hit_k = np.zeros((n, len(px)), dtype=np.int64)
    hit_k[pair_row, pair_point] = first_k
    best = distance.argmin(axis=1)
    all_rows = np.arange(n)
    gap = distance[all_rows, best]
    along = np.cos(obstacles.yaw[best] - path_yaw[all_rows, hit_k[all_rows, best]])
    moving = obstacles.speed[best] * np.maximum(along, 0.0)
    speed = np.where(np.isfinite(gap), moving, 0.0)
    return gap, speed


@dataclass(frozen=True)
class Obstacles:
    """Sample points along cars' axes, with each point's car speed, yaw and owner (-1: the ego car)."""

    points: np.ndarray  # (M, 2)
    speed: np.ndarray  # (M,)
    yaw: np.ndarray  # (M,)
    owner: np.ndarray  # (M,) int


def car_points(xy: np.ndarray, yaw: np.ndarray, speed: np.ndarray, owner: np.ndarray) -> Obstacles:
    """``Obstacles`` for cars at ``xy`` (n, 2) facing ``yaw`` (n,): three points along each axis."""
    forward = np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
    points = (xy[:, None, :] + _BODY_POINTS[None, :, None] * forward[:, None, :]).reshape(-1, 2)
    k = len(_BODY_POINTS)
    return Obstacles(points, np.repeat(speed, k), np.repeat(yaw, k), np.repeat(owner, k))


def merge(a: Obstacles, b: Obstacles) -> Obstacles:
    return Obstacles(*(np.concatenate((x, y)) for x, y in zip(
        (a.points, a.speed, a.yaw, a.owner), (b.points, b.speed, b.yaw, b.owner))))
