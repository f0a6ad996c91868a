"""Procedural two-lane road: a centre-line of straights and arcs, its Frenet projection, and its texture.

Geometry and appearance live together because the texture is painted from the same centre-line the env
measures progress and lane offset against, so what the camera sees and what the reward uses cannot drift.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from imitlab.core.scalars import clamp

#: Road width (two lanes) and the offset of the right lane's centre from the road's centre-line, metres.
ROAD_WIDTH = 7.0
LANE_OFFSET = -ROAD_WIDTH / 4  # right lane: d < 0 (d is positive to the left of the direction of travel)
#: Road drawn before the start and after the route end, so the cameras see road there too, metres.
LEAD_IN = 12.0
TAIL = 40.0
#: Heading stays within this of the start heading: x then grows along the road, which cannot self-intersect.
MAX_HEADING = np.deg2rad(80.0)

#: OpenCV sub-pixel precision of painted coordinates: fixed-point with 4 fractional bits.
PX_SHIFT = 4
_SAMPLE_SPACING = 0.1  # metres between centre-line samples
_LINE_WIDTH = 0.2  # painted marking width, metres
_DASH, _GAP = 3.0, 4.5  # centre-line dash pattern, metres
_OUTLINE_STRIDE = 5  # painted outlines keep every 5th centre-line sample (0.5 m)
_MERGE_SLACK = 1.3  # road_cover merges two rectangles when their union is at most this much larger


@dataclass(frozen=True)
class Projection:
    """A point in road (Frenet) coordinates: arc length ``s`` along the centre-line, signed offset ``d``."""

    s: float
    d: float


class Road:
    """A centre-line sampled every 10 cm from ``s = -LEAD_IN`` to ``route_length + TAIL``.

    The route the car must drive runs from ``s = 0`` to ``s = route_length``; ``curvature`` is signed
    (positive turns left) and exact per sample because the road is made of straights and circular arcs.
    """

    def __init__(
        self,
        points: np.ndarray,
        heading: np.ndarray,
        curvature: np.ndarray,
        route_length: float,
        s_start: float = -LEAD_IN,
    ):
        self.points = points
        self.heading = heading
        self.curvature = curvature
        self.route_length = route_length
        self.s = np.arange(len(points)) * _SAMPLE_SPACING + s_start
        self.normal = np.stack([-np.sin(heading), np.cos(heading)], axis=1)  # unit vector to the left

    @classmethod
    def generate(
        cls,
        rng: np.random.Generator,
        route_length: float = 150.0,
        radius_range: tuple[float, float] = (15.0, 60.0),
        first_straight: tuple[float, float] = (8.0, 20.0),
    ) -> Road:
        """A random road: a straight start (``first_straight`` metres of route), then alternating arcs (random
        radius, angle, side) and straights.

        The centre-line is centred on the origin, so it lies within ``(LEAD_IN + route_length + TAIL) / 2``
        of it along both axes (the textured ground plane is sized from that).
        """
        total = LEAD_IN + route_length + TAIL
        segments: list[tuple[float, float]] = [(LEAD_IN + rng.uniform(*first_straight), 0.0)]  # (length, curvature)
        length, heading = segments[0][0], 0.0
        while length < total:
            radius = rng.uniform(*radius_range)
            turn = rng.uniform(np.deg2rad(25.0), np.deg2rad(100.0))
            side = rng.choice((-1.0, 1.0))
            if abs(heading + side * turn) > MAX_HEADING:
                side = -side
            turn = min(turn, MAX_HEADING - side * heading)  # stay inside the heading band on this side
            segments.append((radius * turn, side / radius))
            heading += side * turn
            straight = rng.uniform(4.0, 30.0)
            segments.append((straight, 0.0))
            length += radius * turn + straight
        road = cls.from_segments(np.zeros(2), 0.0, segments, route_length, total)
        road.points -= 0.5 * (road.points.min(axis=0) + road.points.max(axis=0))  # centred on the ground plane
        return road

    @classmethod
    def from_segments(
        cls,
        start: np.ndarray,
        heading: float,
        segments: list[tuple[float, float]],
        route_length: float,
        total: float | None = None,
        s_start: float = -LEAD_IN,
    ) -> Road:
        """The centre-line of straights and arcs ``(length, signed curvature)`` from ``start`` facing ``heading``.

        ``total`` (default: the segments' summed length) is how much of it to sample; arc length ``s`` starts at
        ``s_start``. The heading is integrated exactly per segment, so a chain of quarter circles and straights
        (a route through a street grid) ends where its geometry says.
        """
        lengths = np.array([seg_len for seg_len, _ in segments])
        kappas = np.array([k for _, k in segments])
        bounds = np.concatenate(([0.0], np.cumsum(lengths)))
        total = float(bounds[-1]) if total is None else total
        turns = heading + np.concatenate(([0.0], np.cumsum(lengths * kappas)))  # heading at segment boundaries
        arc = np.arange(int(round(total / _SAMPLE_SPACING)) + 1) * _SAMPLE_SPACING
        curvature = kappas[np.minimum(np.searchsorted(bounds, arc, side="right") - 1, len(segments) - 1)]
        heading_arr = np.interp(arc, bounds, turns)  # exact: heading is piecewise linear in arc length
        mid = np.interp(arc[:-1] + _SAMPLE_SPACING / 2, bounds, turns)  # midpoint rule, exact on arcs to O(ds^3)
        steps = _SAMPLE_SPACING * np.stack([np.cos(mid), np.sin(mid)], axis=1)
        points = np.concatenate((np.zeros((1, 2)), np.cumsum(steps, axis=0))) + start
        return cls(points, heading_arr, curvature, route_length, s_start)

    def project(self, xy: np.ndarray, near: tuple[float, float] | None = None) -> Projection:
        """The nearest centre-line point's arc length and the signed lateral offset (left positive).

        ``near = (s_lo, s_hi)`` searches only that stretch: a route through a street grid can pass the same
        place twice, and the car is where it was a moment ago, not on the other pass.
        """
        lo, hi = 0, len(self.points)
        if near is not None:
            lo = min(max(0, int((near[0] - self.s[0]) / _SAMPLE_SPACING)), len(self.points) - 2)
            hi = min(len(self.points), max(lo + 2, int((near[1] - self.s[0]) / _SAMPLE_SPACING) + 1))
        # Per coordinate: numpy loops slowly over rows of two, and these are the same squared distances.
        dx = self.points[lo:hi, 0] - xy[0]
        dy = self.points[lo:hi, 1] - xy[1]
        i = lo + int(np.argmin(dx * dx + dy * dy))
        # The nearest point lies on one of the two segments touching sample i: project onto both, keep the closer.
        best: tuple[float, float, float] | None = None
        for j in (i - 1, i):
            if j < 0 or j + 1 >= len(self.points):
                continue
            a, b = self.points[j], self.points[j + 1]
            seg = b - a
            t = min(max(float(np.dot(xy - a, seg) / np.dot(seg, seg)), 0.0), 1.0)
            rel = xy - (a + t * seg)
            dist2 = float(np.dot(rel, rel))
            if best is None or dist2 < best[0]:
                d = float(seg[0] * rel[1] - seg[1] * rel[0]) / _SAMPLE_SPACING
                best = (dist2, self.s[j] + t * _SAMPLE_SPACING, d)
        assert best is not None
        return Projection(s=float(best[1]), d=best[2])

    def pose(self, s: float, offset: float = 0.0) -> tuple[np.ndarray, float]:
        """The point ``offset`` metres left of the centre-line at arc length ``s``, and the road heading there."""
        s = clamp(s, self.s[0], self.s[-1])
        heading = float(np.interp(s, self.s, self.heading))
        xy = np.array([np.interp(s, self.s, self.points[:, 0]), np.interp(s, self.s, self.points[:, 1])])
        return xy + offset * np.array([-np.sin(heading), np.cos(heading)]), heading

    def offset_line(self, offset: float) -> np.ndarray:
        """The centre-line shifted ``offset`` metres to the left (radii >= 15 m keep it free of loops)."""
        return self.points + offset * self.normal


def texture_px(xy: np.ndarray, extent_m: float, size_px: int) -> np.ndarray:
    """World x, y -> OpenCV fixed-point pixel coordinates (``PX_SHIFT`` fractional bits) of a ground texture
    covering the square ``extent_m`` wide around the origin (row 0 is +y, column 0 is -x, as MuJoCo maps it)."""
    px = (np.array([1.0, -1.0]) * xy + extent_m / 2) * (size_px / extent_m)
    return np.round(px * (1 << PX_SHIFT)).astype(np.int32)


#: Grass colour (RGB, 0..255). The grass is the same for every seed: the road is repainted over it in place, so a
#: reset rewrites and uploads only the texels that the old and the new road cover (see imitlab.envs.ground_texture).
GRASS_RGB = (71, 122, 51)
_GRASS_SEED = 20240601  # the grass grain is one fixed pattern, so a texture is a function of the road seed alone


@dataclass(frozen=True)
class RoadColours:
    """Per-seed colour jitter of asphalt and markings so a policy cannot key on exact pixel values."""

    asphalt: np.ndarray
    marking: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator) -> RoadColours:
        asphalt = np.full(3, rng.uniform(0.30, 0.42)) + rng.uniform(-0.02, 0.02, 3)
        marking = np.full(3, rng.uniform(0.88, 0.98))
        return cls(*(np.clip(c * 255.0, 0, 255).astype(np.uint8) for c in (asphalt, marking)))


@functools.lru_cache(maxsize=2)
def grass_texture(size_px: int, rgb: tuple[int, int, int] = GRASS_RGB) -> np.ndarray:
    """The grass (RGBA, opaque) under every road: coarse patches and ~20 cm grain, so the ground gives motion cues.

    Made at half resolution and upscaled; cached per size and colour (read-only: callers copy from it). Only a
    colour perturbation (``imitlab.envs.perturb``) asks for another colour than ``GRASS_RGB``.
    """
    rng = np.random.default_rng(_GRASS_SEED)
    half = size_px // 2
    patches = cv2.resize(rng.normal(0.0, 9.0, (64, 64)).astype(np.float32), (half, half))
    grain = patches[..., None] + rng.uniform(-8.0, 8.0, (half, half, 1)).astype(np.float32)
    grass = cv2.convertScaleAbs(grain + np.array(rgb, np.float32))
    rgba = np.concatenate((grass, np.full((half, half, 1), 255, np.uint8)), axis=2)
    tex = cv2.resize(rgba, (size_px, size_px), interpolation=cv2.INTER_NEAREST)
    tex.flags.writeable = False
    return tex


@dataclass(frozen=True)
class TextureFrame:
    """How world metres map to texels of a square texture ``size_px`` wide covering ``extent_m`` around the origin.

    Row 0 is the plane's +y edge and column 0 its -x edge, as MuJoCo maps a 2D texture onto a plane.
    """

    size_px: int
    extent_m: float

    def to_fixed(self, xy: np.ndarray) -> np.ndarray:
        """Texel coordinates in OpenCV's fixed point (``PX_SHIFT`` fractional bits), for sub-pixel drawing."""
        return texture_px(xy, self.extent_m, self.size_px)


def _strips(road: Road, lo: float, hi: float, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Closed outlines (n, 2k, 2) of the strips between lateral offsets ``lo`` and ``hi`` over samples
    ``first[i]..last[i]`` (inclusive), all with the same vertex count.

    Every ``_OUTLINE_STRIDE``-th sample (and the last) is enough: a 0.5 m chord of a 15 m radius is 2 mm off the
    arc, and OpenCV's anti-aliased fill costs in proportion to the outline's vertices.
    """
    steps = np.arange(0, int((last - first).max()) + _OUTLINE_STRIDE, _OUTLINE_STRIDE)
    keep = np.minimum(first[:, None] + steps, last[:, None])  # repeats the last sample where a strip is shorter
    points, normal = road.points[keep], road.normal[keep]
    return np.concatenate((points + hi * normal, (points + lo * normal)[:, ::-1]), axis=1)


def paint_road(tex: np.ndarray, road: Road, colours: RoadColours, frame: TextureFrame) -> None:
    """Paint asphalt, edge lines and the dashed centre-line into ``tex`` (RGBA) in place, anti-aliased.

    Markings are filled strips ``_LINE_WIDTH`` wide rather than thick polylines: OpenCV fills a polygon with
    anti-aliased edges in a fraction of the time it draws a thick anti-aliased line.
    """
    whole = (np.array([0]), np.array([len(road.points) - 1]))
    half, w, edge = ROAD_WIDTH / 2, _LINE_WIDTH / 2, ROAD_WIDTH / 2 - 0.3
    asphalt = frame.to_fixed(_strips(road, -half, half, *whole))
    cv2.fillPoly(tex, list(asphalt), (*colours.asphalt.tolist(), 255), cv2.LINE_AA, PX_SHIFT)
    change = np.diff(((road.s % (_DASH + _GAP)) < _DASH).astype(np.int8), prepend=0, append=0)
    starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1) - 1  # first and last sample of a dash
    markings = [_strips(road, -edge - w, -edge + w, *whole), _strips(road, edge - w, edge + w, *whole)]
    markings = [frame.to_fixed(strip) for strip in markings] + [frame.to_fixed(_strips(road, -w, w, starts, ends))]
    outlines = [outline for group in markings for outline in group]
    cv2.fillPoly(tex, outlines, (*colours.marking.tolist(), 255), cv2.LINE_AA, PX_SHIFT)


def road_cover(road: Road, frame: TextureFrame, strip_px: int, align: int) -> list[tuple[int, int, int, int]]:
    """Rectangles ``(x0, y0, x1, y1)`` (texels, half-open) that together contain every texel ``paint_road`` touches.

    The road is cut into vertical strips ``strip_px`` wide, each spanning the rows of the road's samples in and near
    it; neighbouring strips are merged while that adds little area (every rectangle costs an upload call). Corners
    are multiples of ``align`` so coarser mip levels stay aligned.
    """
    # Sample the road every 0.5 m along lines 1.75 m apart across its width; every painted texel then lies within
    # `reach` texels of a sample (half the spacings plus the anti-aliasing fringe), so padding by `reach` covers it.
    scale = frame.size_px / frame.extent_m
    lines = [road.offset_line(d)[::_OUTLINE_STRIDE] for d in np.linspace(-ROAD_WIDTH / 2, ROAD_WIDTH / 2, 5)]
    pts = frame.to_fixed(np.concatenate(lines)) / (1 << PX_SHIFT)
    reach = int(np.ceil(1.2 * scale)) + 3
    n_strips = -(-frame.size_px // strip_px)
    # reach < strip_px: a sample is near at most the strips of its two padded ends
    strip = np.clip((np.concatenate((pts[:, 0] - reach, pts[:, 0] + reach))) // strip_px, 0, n_strips - 1)
    rows = np.concatenate((pts[:, 1], pts[:, 1]))
    order = np.argsort(strip, kind="stable")
    strip, rows = strip[order].astype(np.intp), rows[order]
    first = np.flatnonzero(np.diff(strip, prepend=-1))
    tops, bottoms = np.minimum.reduceat(rows, first), np.maximum.reduceat(rows, first)
    rects: list[tuple[int, int, int, int]] = []
    for i, top, bottom in zip(strip[first].tolist(), tops.tolist(), bottoms.tolist()):
        y0 = max(0, int(np.floor(top)) - reach) // align * align
        y1 = min(frame.size_px, -(-(int(np.ceil(bottom)) + reach + 1) // align) * align)
        rect = (i * strip_px, y0, min((i + 1) * strip_px, frame.size_px), y1)
        if rects and rects[-1][2] == rect[0]:
            last = rects[-1]
            merged = (last[0], min(last[1], rect[1]), rect[2], max(last[3], rect[3]))
            if _area(merged) <= _MERGE_SLACK * (_area(last) + _area(rect)):
                rects[-1] = merged
                continue
        rects.append(rect)
    return rects


def _area(rect: tuple[int, int, int, int]) -> int:
    return (rect[2] - rect[0]) * (rect[3] - rect[1])
