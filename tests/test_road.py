"""Road geometry: generation invariants, Frenet projection round trips, and the painted texture's layout."""

from __future__ import annotations

import numpy as np
import pytest

from imitlab.envs.road import (
    GRASS_RGB,
    LANE_OFFSET,
    LEAD_IN,
    MAX_HEADING,
    PX_SHIFT,
    ROAD_WIDTH,
    TAIL,
    Road,
    RoadColours,
    TextureFrame,
    grass_texture,
    paint_road,
    road_cover,
)


def make_road(seed: int, route_length: float = 150.0) -> Road:
    return Road.generate(np.random.default_rng(seed), route_length)


@pytest.mark.parametrize("seed", range(20))
def test_generated_road_invariants(seed: int) -> None:
    road = make_road(seed)
    steps = np.linalg.norm(np.diff(road.points, axis=0), axis=1)
    np.testing.assert_allclose(steps, 0.1, atol=1e-9)
    assert road.s[0] == pytest.approx(-LEAD_IN)
    assert road.s[-1] >= road.route_length + TAIL - 0.1
    assert np.abs(road.heading).max() <= MAX_HEADING + 1e-9
    assert np.all(np.diff(road.points[:, 0]) > 0)  # x grows along the road: it cannot cross itself
    kappa = np.abs(road.curvature[road.curvature != 0])
    assert kappa.size > 0 and kappa.max() <= 1 / 15 + 1e-12 and kappa.min() >= 1 / 60 - 1e-12
    assert np.all(road.curvature[road.s < 8.0] == 0.0)  # the route starts on a straight
    # Centred on the origin within half its drawn length: the textured plane is sized from that bound.
    assert np.abs(road.points).max() <= (LEAD_IN + road.route_length + TAIL) / 2 + 1e-9
    np.testing.assert_allclose(road.points.min(axis=0), -road.points.max(axis=0), atol=1e-9)


def test_heading_matches_point_direction() -> None:
    road = make_road(3)
    direction = np.diff(road.points, axis=0)
    chord_heading = np.arctan2(direction[:, 1], direction[:, 0])
    np.testing.assert_allclose(chord_heading, road.heading[:-1] + 0.05 * road.curvature[:-1], atol=1e-3)


def test_same_seed_same_road_and_different_seeds_differ() -> None:
    np.testing.assert_array_equal(make_road(7).points, make_road(7).points)
    a, b = make_road(7), make_road(8)
    n = min(len(a.points), len(b.points))
    assert np.abs(a.points[:n] - b.points[:n]).max() > 5.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_round_trip(seed: int) -> None:
    road = make_road(seed)
    rng = np.random.default_rng(100 + seed)
    for s, d in zip(rng.uniform(-5.0, road.route_length + 20.0, 200), rng.uniform(-3.4, 3.4, 200)):
        xy, _ = road.pose(s, d)
        proj = road.project(xy)
        assert proj.s == pytest.approx(s, abs=1e-2)  # polyline vs. interpolated normals at 3 m offset
        assert proj.d == pytest.approx(d, abs=1e-4)


def test_projection_on_known_straight() -> None:
    road = make_road(0)
    # The first 20 m are straight along the start heading (+x after centring): offsets are exact there.
    start = road.points[0]
    proj = road.project(start + np.array([7.25, -1.75]))
    assert proj.s == pytest.approx(-LEAD_IN + 7.25, abs=1e-9)
    assert proj.d == pytest.approx(LANE_OFFSET, abs=1e-9)


def test_pose_heading_and_lane_side() -> None:
    road = make_road(4)
    centre, heading = road.pose(50.0)
    lane, _ = road.pose(50.0, LANE_OFFSET)
    right = np.array([np.sin(heading), -np.cos(heading)])
    np.testing.assert_allclose(lane - centre, right * abs(LANE_OFFSET), atol=1e-9)


def test_texture_layout_matches_world_coordinates() -> None:
    rng = np.random.default_rng(0)
    road = make_road(5)
    colours = RoadColours.sample(rng)
    frame = TextureFrame(2048, 220.0)
    tex = grass_texture(frame.size_px).copy()
    paint_road(tex, road, colours, frame)
    assert tex.shape == (2048, 2048, 4) and tex.dtype == np.uint8
    assert np.all(tex[..., 3] == 255)  # opaque

    def pixel(xy: np.ndarray) -> np.ndarray:  # row 0 is the +y edge, column 0 the -x edge
        col, row = frame.to_fixed(xy) >> PX_SHIFT
        return tex[row, col, :3].astype(int)

    lane, _ = road.pose(60.0, LANE_OFFSET)
    np.testing.assert_array_equal(pixel(lane), colours.asphalt)
    edge, _ = road.pose(60.0, -(ROAD_WIDTH / 2 - 0.3))
    np.testing.assert_array_equal(pixel(edge), colours.marking)
    centre, _ = road.pose(0.5, 0.0)  # dashes start at s = 0, 7.5, ...; gaps between
    gap, _ = road.pose(5.0, 0.0)
    np.testing.assert_array_equal(pixel(centre), colours.marking)
    np.testing.assert_array_equal(pixel(gap), colours.asphalt)
    grass, _ = road.pose(60.0, -ROAD_WIDTH)
    assert np.abs(pixel(grass) - np.array(GRASS_RGB)).max() < 40  # grass with its grain, not asphalt grey


@pytest.mark.parametrize("seed", range(6))
def test_cover_contains_every_painted_texel(seed: int) -> None:
    road = make_road(seed)
    frame = TextureFrame(2048, 216.0)
    canvas = np.zeros((2048, 2048, 4), np.uint8)
    paint_road(canvas, road, RoadColours.sample(np.random.default_rng(seed)), frame)
    inside = np.zeros((2048, 2048), bool)
    rects = road_cover(road, frame, 128, 16)
    for x0, y0, x1, y1 in rects:
        assert x0 % 16 == y0 % 16 == x1 % 16 == y1 % 16 == 0
        inside[y0:y1, x0:x1] = True
    painted = canvas.any(axis=2)
    assert painted.sum() > 100_000
    assert not (painted & ~inside).any()
    assert inside.mean() < 0.35  # a cover, not the whole texture
