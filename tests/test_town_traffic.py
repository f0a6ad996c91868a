"""Town traffic's obstacle search: the vectorised ``first_obstacle`` against a plain per-path loop."""

from __future__ import annotations

import numpy as np

from imitlab.envs.town.traffic import PATH_CATCH, Obstacles, first_obstacle


def first_obstacle_by_loop(path: np.ndarray, path_yaw: np.ndarray, ahead: np.ndarray, obstacles: Obstacles,
                           me: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one path and one point at a time: the nearest sample within ``PATH_CATCH`` of a point not
    the path's own; among equally near points the first; that point's speed along the path there."""
    rows = np.arange(len(path)) if me is None else me
    gap, speed = np.full(len(path), np.inf), np.zeros(len(path))
    for r in range(len(path)):
        for p in range(len(obstacles.points)):
            if obstacles.owner[p] == rows[r]:
                continue
            close = np.linalg.norm(path[r] - obstacles.points[p], axis=1) < PATH_CATCH
            if close.any() and ahead[close.argmax()] < gap[r]:
                k = close.argmax()
                gap[r] = ahead[k]
                speed[r] = obstacles.speed[p] * max(np.cos(obstacles.yaw[p] - path_yaw[r, k]), 0.0)
    return gap, speed


def test_first_obstacle_matches_the_loop_including_ties_and_own_points() -> None:
    rng = np.random.default_rng(0)
    ahead = np.arange(0.0, 40.0, 1.0)
    hits = 0
    for trial in range(30):
        n, m = int(rng.integers(1, 8)), int(rng.integers(0, 25))
        start = rng.uniform(-30, 30, (n, 1, 2))
        heading = rng.uniform(-np.pi, np.pi, (n, 1))
        path = start + ahead[None, :, None] * np.stack([np.cos(heading), np.sin(heading)], axis=-1)
        points = rng.uniform(-40, 40, (m, 2))
        if m >= 2 and n:  # two points at the same spot on path 0: equally near, the first must win
            points[0] = points[1] = path[0, 5] + 0.3
        obstacles = Obstacles(points, rng.uniform(0, 8, m), rng.uniform(-np.pi, np.pi, m),
                              rng.integers(-1, n, m))
        path_yaw = np.repeat(heading, len(ahead), axis=1)
        me = None if trial % 2 else np.full(n, -1)
        got = first_obstacle(path, path_yaw, ahead, obstacles, me=me)
        want = first_obstacle_by_loop(path, path_yaw, ahead, obstacles, me=me)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-12)
        hits += int(np.isfinite(want[0]).sum())
    assert hits > 10, "too few paths met an obstacle for the comparison to mean much"
