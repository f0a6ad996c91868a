"""A procedural town: a street grid with some streets removed (3- and 4-way junctions), and its lane geometry.

Streets are axis-aligned and two-way with one lane each way (right-hand traffic) and a parking strip on each
side. Every node has a square junction box; lanes run between boxes and connectors (a straight, or a quarter
circle left or right) cross them, so any path through the grid is an exact chain of straights and arcs
(``imitlab.envs.road.Road.from_segments``). The same town seed always gives the same streets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from imitlab.envs.road import LANE_OFFSET, ROAD_WIDTH, Road

#: Half-width of the asphalt (two lanes plus a parking strip each side) and of the pavement's outer edge, m.
ASPHALT_HALF = ROAD_WIDTH / 2 + 2.0
PAVEMENT_HALF = ASPHALT_HALF + 3.0
#: Half-size of the square junction box around every node: right turns have radius ``JUNCTION_HALF - 1.75``.
JUNCTION_HALF = 8.0
#: Where parked cars stand, left of the travel direction (negative: right of it), m.
PARKING_OFFSET = -(ROAD_WIDTH / 2 + 1.0)
#: Unit vectors of the four street directions: 0 east (+x), 1 north (+y), 2 west, 3 south.
DIRECTIONS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
#: Turn kinds, named as the route commands that announce them.
STRAIGHT, LEFT, RIGHT = "straight", "left", "right"

#: Nodes per side of a town's street grid, unless the ``grid`` kwarg says otherwise.
DEFAULT_GRID = 4
_BLOCK_RANGE = (44.0, 66.0)  # distance between neighbouring nodes, m
_REMOVE_PROBABILITY = 0.3  # chance to drop a street, if the town stays connected without dead ends
_PARKED_PER_LANE = 0.5  # mean parked cars per lane


def turn_kind(in_dir: int, out_dir: int) -> str:
    """Whether leaving a node in ``out_dir`` after arriving in ``in_dir`` is a left, right or straight turn."""
    delta = (out_dir - in_dir) % 4
    if delta == 0:
        return STRAIGHT
    if delta == 1:
        return LEFT
    if delta == 3:
        return RIGHT
    raise ValueError("a U-turn has no connector")


def connector_segments(in_dir: int, out_dir: int) -> list[tuple[float, float]]:
    """The ``(length, curvature)`` segments that cross a junction box from ``in_dir`` to ``out_dir``."""
    kind = turn_kind(in_dir, out_dir)
    if kind == STRAIGHT:
        return [(2.0 * JUNCTION_HALF, 0.0)]
    radius = JUNCTION_HALF - LANE_OFFSET if kind == LEFT else JUNCTION_HALF + LANE_OFFSET
    sign = 1.0 if kind == LEFT else -1.0
    return [(0.5 * np.pi * radius, sign / radius)]


@dataclass(frozen=True)
class Town:
    """Node positions on a jittered grid, the streets between them, and the parked cars along them.

    ``neighbours[v][d]`` is the node reached from ``v`` in direction ``d`` (or -1 without a street).
    """

    seed: int
    grid: int
    nodes: np.ndarray  # (N, 2) node centres
    neighbours: np.ndarray  # (N, 4) int
    parked: np.ndarray  # (K, 3): x, y, yaw of parked cars

    @classmethod
    def generate(cls, seed: int, grid: int = DEFAULT_GRID) -> Town:
        """The town of ``seed``: a ``grid`` x ``grid`` street grid with random block sizes and some streets removed."""
        rng = np.random.default_rng([seed, 7061])  # a stream of its own: town seeds never collide with episodes
        xs = np.concatenate(([0.0], np.cumsum(rng.uniform(*_BLOCK_RANGE, grid - 1))))
        ys = np.concatenate(([0.0], np.cumsum(rng.uniform(*_BLOCK_RANGE, grid - 1))))
        nodes = np.array([[x, y] for x in xs for y in ys]) - [xs[-1] / 2, ys[-1] / 2]
        neighbours = np.full((grid * grid, 4), -1, dtype=np.int64)
        for i in range(grid):
            for j in range(grid):
                v = i * grid + j
                for d, (di, dj) in enumerate(((1, 0), (0, 1), (-1, 0), (0, -1))):
                    if 0 <= i + di < grid and 0 <= j + dj < grid:
                        neighbours[v, d] = (i + di) * grid + (j + dj)
        streets = [(v, d) for v in range(grid * grid) for d in (0, 1) if neighbours[v, d] >= 0]
        for index in rng.permutation(len(streets)):
            if rng.random() >= _REMOVE_PROBABILITY:
                continue
            v, d = streets[index]
            w = neighbours[v, d]
            if (neighbours[v] >= 0).sum() <= 2 or (neighbours[w] >= 0).sum() <= 2:
                continue  # a dead end would need a U-turn
            neighbours[v, d] = neighbours[w, (d + 2) % 4] = -1
            if not _connected(neighbours):
                neighbours[v, d], neighbours[w, (d + 2) % 4] = w, v
        town = cls(seed, grid, nodes, neighbours, np.zeros((0, 3)))
        return cls(seed, grid, nodes, neighbours, town._park_cars(rng))

    # -- topology -------------------------------------------------------------------------------------------

    @cached_property
    def junctions(self) -> np.ndarray:
        """Per node: whether a route has a choice there (3 or 4 streets); junctions get lights and commands."""
        return (self.neighbours >= 0).sum(axis=1) >= 3

    def is_junction(self, node: int) -> bool:
        return bool(self.junctions[node])

    def lanes(self) -> list[tuple[int, int]]:
        """Every directed lane as ``(node, direction)``: it leaves ``node`` heading ``direction``."""
        return [(v, d) for v in range(len(self.nodes)) for d in range(4) if self.neighbours[v, d] >= 0]

    def exits(self, node: int, in_dir: int) -> list[int]:
        """Directions a vehicle arriving at ``node`` heading ``in_dir`` may leave in (no U-turns)."""
        return [d for d in range(4) if self.neighbours[node, d] >= 0 and d != (in_dir + 2) % 4]

    # -- geometry -------------------------------------------------------------------------------------------

    def lane_length(self, node: int, direction: int) -> float:
        """Length of the lane from ``node``'s junction box to the next node's box, m."""
        other = self.neighbours[node, direction]
        return float(np.abs(self.nodes[other] - self.nodes[node]).sum()) - 2.0 * JUNCTION_HALF

    def lane_start(self, node: int, direction: int) -> np.ndarray:
        """Where the lane leaving ``node`` in ``direction`` starts: the box edge, in the right-hand lane."""
        forward = DIRECTIONS[direction]
        left = np.array([-forward[1], forward[0]])
        return self.nodes[node] + JUNCTION_HALF * forward + LANE_OFFSET * left

    def path(self, lanes: list[tuple[int, int]], route_length: float = 0.0) -> tuple[Road, list[JunctionPass]]:
        """The centre-line through consecutive lanes (``s = 0`` at the first lane's start) and its node passes."""
        segments: list[tuple[float, float]] = []
        passes: list[JunctionPass] = []
        s = 0.0
        for index, (node, direction) in enumerate(lanes):
            length = self.lane_length(node, direction)
            segments.append((length, 0.0))
            s += length
            if index + 1 < len(lanes):
                next_node, next_dir = lanes[index + 1]
                assert next_node == self.neighbours[node, direction], "lanes must be consecutive"
                connector = connector_segments(direction, next_dir)
                segments.extend(connector)
                span = sum(seg_len for seg_len, _ in connector)
                passes.append(JunctionPass(next_node, direction, next_dir, s, s + span))
                s += span
        first_node, first_dir = lanes[0]
        road = Road.from_segments(
            self.lane_start(first_node, first_dir), np.pi / 2 * first_dir, segments, route_length, s_start=0.0
        )
        return road, passes

    @cached_property
    def street_rects(self) -> np.ndarray:
        """Asphalt as axis-aligned rectangles ``[xmin, xmax, ymin, ymax]``: streets, then junction boxes."""
        rects = []
        for v in range(len(self.nodes)):
            for d in (0, 1):
                w = self.neighbours[v, d]
                if w >= 0:
                    lo, hi = np.minimum(self.nodes[v], self.nodes[w]), np.maximum(self.nodes[v], self.nodes[w])
                    pad = np.array([0.0, ASPHALT_HALF]) if d == 0 else np.array([ASPHALT_HALF, 0.0])
                    rects.append([lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1]])
        for node in self.nodes:
            rects.append([node[0] - JUNCTION_HALF, node[0] + JUNCTION_HALF, node[1] - JUNCTION_HALF,
                          node[1] + JUNCTION_HALF])
        return np.array(rects)

    def on_asphalt(self, points: np.ndarray) -> np.ndarray:
        """Per point (P, 2): whether it lies on the asphalt (a street or a junction box)."""
        rects = self.street_rects
        x, y = points[:, :1], points[:, 1:]
        inside = (x >= rects[:, 0]) & (x <= rects[:, 1]) & (y >= rects[:, 2]) & (y <= rects[:, 3])
        return inside.any(axis=1)

    def extent(self) -> float:
        """Side of the square around the origin that holds every street and its pavement, m."""
        return float(2.0 * (np.abs(self.nodes).max() + PAVEMENT_HALF + 20.0))

    def _park_cars(self, rng: np.random.Generator) -> np.ndarray:
        parked = []
        for node, direction in self.lanes():
            length = self.lane_length(node, direction)
            count = rng.poisson(_PARKED_PER_LANE * length / 50.0)
            forward = DIRECTIONS[direction]
            left = np.array([-forward[1], forward[0]])
            start = self.nodes[node] + JUNCTION_HALF * forward + PARKING_OFFSET * left
            spots = np.arange(4.0, length - 4.0, 6.0)
            for along in rng.choice(spots, size=min(count, len(spots)), replace=False):
                xy = start + along * forward
                parked.append([xy[0], xy[1], np.pi / 2 * direction])
        return np.array(parked).reshape(-1, 3)


@dataclass(frozen=True)
class JunctionPass:
    """A path's crossing of one node's box: arriving heading ``in_dir``, leaving heading ``out_dir``."""

    node: int
    in_dir: int
    out_dir: int
    s_enter: float  # arc length at the stop line (box entry)
    s_exit: float


def _connected(neighbours: np.ndarray) -> bool:
    seen, stack = {0}, [0]
    while stack:
        for w in neighbours[stack.pop()]:
            if w >= 0 and w not in seen:
                seen.add(int(w))
                stack.append(int(w))
    return len(seen) == len(neighbours)
