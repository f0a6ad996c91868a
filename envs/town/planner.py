"""Routes through a town: A* over lanes, per-task route sampling, and the high-level commands along a route.

As in CARLA, a route's command is announced ``COMMAND_DISTANCE`` metres before each junction and held until
the car leaves the junction box; everywhere else (including bends at 2-street nodes, which offer no choice)
the command is "follow lane".
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from imitlab.envs.road import Road
from imitlab.envs.town.graph import JUNCTION_HALF, LEFT, RIGHT, STRAIGHT, JunctionPass, Town, turn_kind

#: The ``command`` observation, ``Discrete(4)``; the names are CARLA's road options.
FOLLOW_LANE, TURN_LEFT, TURN_RIGHT, GO_STRAIGHT = 0, 1, 2, 3
COMMAND_NAMES = ("follow", "left", "right", "straight")
_COMMAND_OF_TURN = {LEFT: TURN_LEFT, RIGHT: TURN_RIGHT, STRAIGHT: GO_STRAIGHT}
#: Distance before a junction's stop line at which its command is announced, m.
COMMAND_DISTANCE = 15.0
#: The tasks of the CoRL2017 benchmark (traffic is the env's separate ``traffic`` kwarg).
TASKS = ("straight", "one_turn", "navigation")
#: Navigation routes pass at least this many junctions.
_MIN_NAVIGATION_JUNCTIONS = 2

Lane = tuple[int, int]  # (node it leaves, direction)


@dataclass(frozen=True)
class Route:
    """The lanes a route follows, their centre-line, where the car starts and where the goal is (arc lengths)."""

    lanes: list[Lane]
    road: Road
    passes: list[JunctionPass]
    commands: list[int]  # one per pass
    s_start: float
    s_goal: float

    def command_at(self, s: float) -> int:
        """The command in force at arc length ``s`` (``FOLLOW_LANE`` away from junctions)."""
        for junction, command in zip(self.passes, self.commands):
            if junction.s_enter - COMMAND_DISTANCE <= s <= junction.s_exit:
                return command
        return FOLLOW_LANE


def route_through(town: Town, lanes: list[Lane], s_start: float, goal_fraction: float) -> Route:
    """The route along ``lanes`` from ``s_start`` to ``goal_fraction`` of the way along its last lane."""
    road, passes = town.path(lanes)
    last_start = passes[-1].s_exit if passes else 0.0
    s_goal = last_start + goal_fraction * town.lane_length(*lanes[-1])
    road.route_length = s_goal
    commands = [
        _COMMAND_OF_TURN[turn_kind(p.in_dir, p.out_dir)] if town.is_junction(p.node) else FOLLOW_LANE
        for p in passes
    ]
    return Route(lanes, road, passes, commands, s_start, s_goal)


def shortest_lanes(town: Town, start: Lane, goal: Lane) -> list[Lane] | None:
    """A* over lanes (no U-turns) from ``start`` to ``goal``; cost is driven distance; None if unreachable."""

    def heuristic(lane: Lane) -> float:
        end = town.nodes[town.neighbours[lane]]
        return max(0.0, float(np.linalg.norm(end - town.nodes[goal[0]])) - 2.0 * JUNCTION_HALF)

    frontier: list[tuple[float, float, Lane]] = [(heuristic(start), 0.0, start)]
    came_from: dict[Lane, Lane | None] = {start: None}
    best = {start: 0.0}
    while frontier:
        _, cost, lane = heapq.heappop(frontier)
        if lane == goal:
            path = [lane]
            while (previous := came_from[path[-1]]) is not None:
                path.append(previous)
            return path[::-1]
        if cost > best[lane]:
            continue
        node = int(town.neighbours[lane])
        for out_dir in town.exits(node, lane[1]):
            nxt = (node, out_dir)
            step = town.lane_length(*nxt) + 2.0 * JUNCTION_HALF  # connectors are at most the box width
            if cost + step < best.get(nxt, np.inf):
                best[nxt] = cost + step
                came_from[nxt] = lane
                heapq.heappush(frontier, (cost + step + heuristic(nxt), cost + step, nxt))
    return None


def longest_route(town: Town, task: str) -> float:
    """An upper bound on the length (m) of any route ``sample_route`` draws for ``task`` in ``town``, so the
    env can state its time limit before the first episode (evaluation sizes its hang timeout by it)."""
    box = 2.0 * JUNCTION_HALF  # no connector is longer than the box is wide
    if task in ("straight", "one_turn"):
        return max(town.lane_length(*a) + box + town.lane_length(*b) for a, b in candidate_starts(town, task))
    longest = 0.0
    for start in town.lanes():
        best = {start: 0.0}
        frontier: list[tuple[float, Lane]] = [(0.0, start)]
        while frontier:  # Dijkstra with shortest_lanes' costs: the farthest lane A* can route to from here
            cost, lane = heapq.heappop(frontier)
            if cost > best[lane]:
                continue
            node = int(town.neighbours[lane])
            for out_dir in town.exits(node, lane[1]):
                nxt = (node, out_dir)
                step = cost + town.lane_length(*nxt) + box
                if step < best.get(nxt, np.inf):
                    best[nxt] = step
                    heapq.heappush(frontier, (step, nxt))
        longest = max(longest, town.lane_length(*start) + max(best.values()))
    return longest


def candidate_starts(town: Town, task: str) -> list[list[Lane]]:
    """For ``straight`` and ``one_turn``: every lane pair the task can use (empty: impossible in this town)."""
    pairs = []
    for node, direction in town.lanes():
        nxt = int(town.neighbours[node, direction])
        for out_dir in town.exits(nxt, direction):
            kind = turn_kind(direction, out_dir)
            if (task == "straight") == (kind == STRAIGHT) and (task == "straight" or town.is_junction(nxt)):
                pairs.append([(node, direction), (nxt, out_dir)])
    return pairs


def impossible_reason(town: Town, task: str) -> str | None:
    """Why ``task`` cannot be posed in ``town`` (a one-line reason), or None if it can."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "straight" and not candidate_starts(town, task):
        return "no street continues straight through a node"
    if task != "straight" and not any(town.is_junction(v) for v in range(len(town.nodes))):
        return "it has no junction (a node with 3 or 4 streets)"
    return None


def sample_route(town: Town, task: str, rng: np.random.Generator) -> Route:
    """A random route for ``task``: the start is at least ``COMMAND_DISTANCE`` + 5 m before the first junction."""
    if task in ("straight", "one_turn"):
        options = candidate_starts(town, task)
        lanes = options[int(rng.integers(len(options)))]
    else:
        all_lanes = town.lanes()
        while True:
            start = all_lanes[int(rng.integers(len(all_lanes)))]
            goal = all_lanes[int(rng.integers(len(all_lanes)))]
            path = shortest_lanes(town, start, goal)
            if path is not None:
                junctions = sum(town.is_junction(node) for node, _ in path[1:])
                if junctions >= _MIN_NAVIGATION_JUNCTIONS:
                    lanes = path
                    break
    first = town.lane_length(*lanes[0])
    s_start = float(rng.uniform(2.0, max(2.5, first - COMMAND_DISTANCE - 5.0)))
    return route_through(town, lanes, s_start, float(rng.uniform(0.4, 0.7)))

