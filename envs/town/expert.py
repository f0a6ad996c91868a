"""Privileged town expert: pure pursuit along the route's lane centre-line (through the junctions), a speed plan
for curves, car following, red lights and right of way.

It reads what a learned policy never sees -- the route geometry, every car's position, the lights' phases --
and takes its right-of-way decisions with the same rules traffic uses (``Traffic.must_stop``), so the town's
drivers agree on who goes first.
"""

from __future__ import annotations

import numpy as np

from imitlab.core.scalars import clamp
from imitlab.envs.car import HALF_LENGTH, SpeedController, pure_pursuit_steer, rear_axle
from imitlab.envs.driving_expert import curve_speed
from imitlab.envs.town.env import TownEnv
from imitlab.envs.town.graph import LEFT, JunctionPass, turn_kind
from imitlab.envs.town.traffic import DECISION_DISTANCE, GREEN, YELLOW, Mover, first_obstacle

#: Speed plan: cruise speed (m/s), lateral acceleration in turns, and braking used to plan stops (m/s^2).
CRUISE_SPEED = 8.0
LATERAL_ACCEL = 2.5
STOP_DECEL = 2.0
#: Distance kept to a stopped car ahead and to a stop line (m), and time headway to a moving one (s).
STANDSTILL_GAP = 3.0
LINE_GAP = 1.5
HEADWAY_S = 0.8
#: The speed controller lags its target by about this long (s): stops are planned that much earlier.
CONTROL_LAG_S = 0.6
#: Full brake slows the car at about this rate per second of its speed (the brake is wheel damping, so it
#: fades as the car slows): from speed v it needs about ``v / BRAKE_RATE`` metres to stop. Decides yellows.
BRAKE_RATE = 0.8
#: Pulling away, the car gains speed at about this rate (m/s^2) after the throttle ramp's delay (s): used to
#: check that a car going on yellow reaches the stop line before the red.
PULL_AWAY_ACCEL = 1.4
PULL_AWAY_DELAY_S = 0.4
#: A go on yellow must bring the front over the stop line this long (s) before the red.
RED_MARGIN_S = 0.2
#: Pure-pursuit look-ahead: ``LOOKAHEAD_BASE + LOOKAHEAD_GAIN * v``, clipped to the range (m).
LOOKAHEAD_BASE = 2.0
LOOKAHEAD_GAIN = 0.4
LOOKAHEAD_RANGE = (3.5, 8.0)


class TownExpert:
    """Steers by pure pursuit on the route; its target speed is the lowest of cruise, curve and stopping limits."""

    def __init__(self, env: TownEnv):
        self.env = env
        self._speed = SpeedController(brake_slew=0.5)
        self._go_on_yellow: tuple[JunctionPass, bool] | None = None  # the yellow decided on, and whether to go

    def reset(self) -> None:
        self._speed.reset()
        self._go_on_yellow = None

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        env = self.env
        route = env.route
        assert route is not None, "reset the env before asking the expert"
        car, road = env.car, route.road
        speed = car.forward_speed
        s_rear = road.project(rear_axle(car), near=(env.route_s - 4.0, env.route_s + 1.0)).s
        lookahead = clamp(LOOKAHEAD_BASE + LOOKAHEAD_GAIN * speed, *LOOKAHEAD_RANGE)
        target, _ = road.pose(s_rear + lookahead)
        steer = pure_pursuit_steer(car, target)

        target_speed = curve_speed(road, s_rear, speed, CRUISE_SPEED, LATERAL_ACCEL, STOP_DECEL)
        target_speed = min(target_speed, self._follow_speed(speed), self._stop_line_speed(speed))
        if target_speed < 0.3:
            target_speed = 0.0
        return np.array([steer, self._speed(target_speed, speed)], dtype=np.float32)

    def _follow_speed(self, speed: float) -> float:
        """Speed that can still stop ``STANDSTILL_GAP`` behind the first car on the route ahead."""
        env = self.env
        assert env.route is not None
        road = env.route.road
        s = np.array([env.route_s])
        path, path_yaw, ahead, _ = env.traffic.path_ahead(road.points[None], road.heading[None], s - road.s[0])
        if env.traffic.active == 0:
            return np.inf
        gap, leader_speed = first_obstacle(path, path_yaw, ahead, env.traffic.obstacles(), me=np.array([-1]))
        room = float(gap[0]) - HALF_LENGTH - STANDSTILL_GAP - (HEADWAY_S + CONTROL_LAG_S) * speed
        return float(np.sqrt(max(0.0, float(leader_speed[0]) ** 2 + 2.0 * STOP_DECEL * room)))

    def _stop_line_speed(self, speed: float) -> float:
        """Speed that stops ``LINE_GAP`` before the next stop line, if the light or right of way says stop."""
        env = self.env
        me = env.ego_mover()
        if me is None or me.junction.s_enter - env.route_s > DECISION_DISTANCE:
            return np.inf
        to_line = me.junction.s_enter - (env.route_s + HALF_LENGTH)
        if to_line < 0.0 or not env.town.is_junction(me.junction.node):
            return np.inf
        if not self._light_says_stop(me, to_line, speed) and not env.traffic.must_yield(me, env.traffic.movers()):
            return np.inf
        room = to_line - LINE_GAP - CONTROL_LAG_S * speed
        return float(np.sqrt(max(0.0, 2.0 * STOP_DECEL * room)))

    def _light_says_stop(self, me: Mover, to_line: float, speed: float) -> bool:
        """Red, or a yellow the car can still stop for. A yellow is decided once (go if the car can no longer
        stop) and the decision kept, so braking never starts after a decision to go -- unless the car, slowed
        since (it yielded, or queued behind a car), can stop now but would no longer reach the line before the
        red: then it stops after all. A left-turner waiting at the line goes early in the yellow once nothing
        crosses its path, if it reaches the line in time. (Traffic's rule re-decides each step; its brakes are
        ideal.)"""
        env = self.env
        junction = me.junction
        light = env.lights.state(junction.node, junction.in_dir, env.time_s)
        can_stop = to_line > speed / BRAKE_RATE + CONTROL_LAG_S * speed
        if light == GREEN:
            self._go_on_yellow = None
            return False
        committed = self._go_on_yellow is not None and self._go_on_yellow[0] is junction and self._go_on_yellow[1]
        if light == YELLOW:
            first = self._go_on_yellow is None or self._go_on_yellow[0] is not junction
            in_time = time_to_line(to_line, speed) + RED_MARGIN_S < env.lights.yellow_left(
                junction.node, junction.in_dir, env.time_s)
            clearing = (to_line < 2.0 and speed < 1.0 and turn_kind(junction.in_dir, junction.out_dir) == LEFT
                        and in_time and not env.traffic.must_yield(me, env.traffic.movers()))
            if first:
                committed = not can_stop
            committed = (committed or clearing) and (in_time or not can_stop)
            self._go_on_yellow = (junction, committed)
            return not committed
        return can_stop or not committed  # red: only a car already committed and too close to stop goes on


def time_to_line(to_line: float, speed: float) -> float:
    """Seconds until the front reaches a stop line ``to_line`` metres ahead, pulling away from ``speed``."""
    cruise = speed * PULL_AWAY_DELAY_S
    if to_line <= cruise:
        return to_line / max(speed, 1e-6)
    rest = to_line - cruise
    return PULL_AWAY_DELAY_S + (np.sqrt(speed**2 + 2.0 * PULL_AWAY_ACCEL * rest) - speed) / PULL_AWAY_ACCEL
