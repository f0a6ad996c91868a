"""The town's MuJoCo scene: the car MJCF plus a painted ground, kerbs, buildings, trees, traffic lights, parked
and moving cars -- and how a weather preset is put into the compiled model.

Rendering on llvmpipe pays per draw call, so static scenery is merged: every building of one colour is one mesh
geom, as are all kerbs, trunks, crowns, poles and parked cars; only lamps (their colour changes) and traffic
cars (they move) are geoms of their own. Streets, lane and edge markings, stop lines and pavements are painted
into one ground texture, once per town.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import cv2
import mujoco
import numpy as np

from imitlab.envs.car import HALF_LENGTH, HALF_WIDTH, car_xml
from imitlab.envs.road import PX_SHIFT, ROAD_WIDTH, texture_px
from imitlab.envs.town.graph import ASPHALT_HALF, DIRECTIONS, JUNCTION_HALF, PAVEMENT_HALF, Town
from imitlab.envs.town.traffic import GREEN, RED, YELLOW
from imitlab.envs.town.weather import Weather

TEXTURE_PX = 2048
LAMP_RGB = {GREEN: (0.1, 1.0, 0.35), YELLOW: (1.0, 0.8, 0.1), RED: (1.0, 0.08, 0.05)}
_LAMP_TEXELS = (np.array([LAMP_RGB[state] for state in (GREEN, YELLOW, RED)]) * 255).astype(np.uint8)
#: Car body boxes (centre offset from the axle-height origin, half sizes), as in car.xml: chassis and cabin.
CAR_BOXES = (((0.0, 0.0, 0.3), (HALF_LENGTH, HALF_WIDTH, 0.28)), ((-0.3, 0.0, 0.83), (1.1, 0.78, 0.25)))
_FACADE_COLOURS = ((0.72, 0.66, 0.58), (0.55, 0.5, 0.47), (0.78, 0.76, 0.72), (0.6, 0.36, 0.3),
                   (0.42, 0.46, 0.52), (0.85, 0.8, 0.66))
_PARKED_COLOURS = ((0.2, 0.25, 0.55), (0.75, 0.75, 0.78), (0.12, 0.12, 0.13))
_SKY_PX = 64

Box = tuple[tuple[float, float, float], tuple[float, float, float], float]  # centre, half sizes, yaw


@dataclass(frozen=True)
class Scene:
    """The compiled town model and the ids the env and weather need."""

    model: mujoco.MjModel
    lamps: list[tuple[int, int]]  # (node, approach direction) of lamp i, lit by texel i of ``lamp_texture``
    lamp_texture: int
    traffic_geoms: np.ndarray  # (count,) geom id of each traffic car
    traffic_mocap: np.ndarray  # (count,) mocap ids
    facades: list[int]  # material ids of the building meshes
    facade_rgba: np.ndarray
    ground_material: int
    sky_texture: int

    def paint_lamps(self, states: np.ndarray) -> None:
        """Colour lamp i by light state ``states[i]`` (the texture still needs an upload to each renderer)."""
        adr = self.model.tex_adr[self.lamp_texture]
        texels = np.zeros((int(self.model.tex_width[self.lamp_texture]), 3), np.uint8)
        texels[: len(states)] = _LAMP_TEXELS[states]
        self.model.tex_data[adr : adr + texels.size] = texels.ravel()

    def apply_weather(self, weather: Weather) -> None:
        """Write ``weather`` into the model (each renderer still needs the sky uploaded and its fog set)."""
        model = self.model
        sun_dir = np.array(weather.sun_dir) / np.linalg.norm(weather.sun_dir)
        model.light_dir[0] = sun_dir
        model.light_diffuse[0] = weather.sun
        model.vis.headlight.ambient[:] = weather.ambient
        model.vis.headlight.diffuse[:] = 0.6 * weather.ambient
        model.mat_rgba[self.ground_material, :3] = weather.ground_tint
        model.mat_specular[self.ground_material] = weather.ground_specular
        model.mat_shininess[self.ground_material] = 0.8 if weather.ground_specular else 0.0
        model.mat_rgba[self.facades, :3] = np.clip(self.facade_rgba[:, :3] * weather.facade_tint, 0.0, 1.0)
        adr = model.tex_adr[self.sky_texture]
        size = model.tex_width[self.sky_texture] * model.tex_height[self.sky_texture] * 3
        model.tex_data[adr : adr + size] = _sky_pixels(weather, _SKY_PX).ravel()


def build_scene(town: Town, traffic_count: int, rng: np.random.Generator) -> Scene:
    """Compile the town's model; ``rng`` (seeded by the town) places the scenery, so a town always looks alike."""
    root = ET.fromstring(car_xml())
    root.set("model", f"town_{town.seed}")
    asset, world = root.find("asset"), root.find("worldbody")
    assert asset is not None and world is not None
    extent = town.extent()
    for tex in asset.iter("texture"):
        if tex.get("name") == "road":
            tex.set("width", str(TEXTURE_PX))
            tex.set("height", str(TEXTURE_PX))
        if tex.get("name") == "sky":  # a flat skybox we repaint per weather (a 6-face cube, 64 px a face)
            tex.attrib = {"name": "sky", "type": "skybox", "builtin": "flat", "rgb1": "0.6 0.7 0.9",
                          "width": str(_SKY_PX), "height": str(_SKY_PX)}
    for geom in world.iter("geom"):
        if geom.get("name") == "road":
            geom.set("size", f"{extent / 2} {extent / 2} 25")
    world.find("light").set("name", "sun")  # type: ignore[union-attr]

    facades = _buildings(town, rng)
    meshes: list[tuple[str, list[Box], tuple[float, float, float, float]]] = []
    for index, boxes in enumerate(facades):
        meshes.append((f"facade{index}", boxes, (*_FACADE_COLOURS[index], 1.0)))
    meshes.append(("kerbs", _kerbs(town), (0.62, 0.62, 0.6, 1.0)))
    trunks, crowns = _trees(town, rng)
    meshes.append(("trunks", trunks, (0.35, 0.25, 0.17, 1.0)))
    meshes.append(("crowns", crowns, (0.22, 0.42, 0.18, 1.0)))
    poles, heads, lamps = _light_fixtures(town)
    meshes.append(("poles", poles, (0.25, 0.25, 0.27, 1.0)))
    meshes.append(("heads", heads, (0.08, 0.08, 0.08, 1.0)))
    parked = [[] for _ in _PARKED_COLOURS]
    for index, (x, y, yaw) in enumerate(town.parked):
        parked[index % len(parked)].extend(_car_boxes(x, y, yaw))
    for index, boxes in enumerate(parked):
        meshes.append((f"parked{index}", boxes, (*_PARKED_COLOURS[index], 1.0)))

    for name, boxes, rgba in meshes:
        if not boxes:
            continue
        _add_mesh(asset, name, boxes)
        ET.SubElement(asset, "material", name=name, rgba=" ".join(map(str, rgba)), specular="0.1")
        ET.SubElement(world, "geom", name=name, type="mesh", mesh=name, material=name)
    # Every lamp is one box of one mesh whose texture holds a texel per lamp: a light change repaints a texel.
    keys = list(lamps)
    if keys:
        _add_mesh(asset, "lamps", [(lamps[key][0], lamps[key][1], 0.0) for key in keys],
                  texels=np.arange(len(keys)))
        ET.SubElement(asset, "texture", name="lamps", type="2d", builtin="flat", rgb1="1 0 0",
                      width=str(len(keys)), height="1")
        ET.SubElement(asset, "material", name="lamps", texture="lamps", emission="0.9", specular="0")
        ET.SubElement(world, "geom", name="lamps", type="mesh", mesh="lamps", material="lamps")
    _add_mesh(asset, "car_shape", [(centre, half, 0.0) for centre, half in CAR_BOXES])
    for car in range(traffic_count):
        body = ET.SubElement(world, "body", name=f"traffic{car}", mocap="true", pos=f"{1000 + 10 * car} 1000 0.32")
        ET.SubElement(body, "geom", name=f"traffic{car}", type="mesh", mesh="car_shape", rgba="0.5 0.5 0.5 1")

    model = mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))
    _paint_ground(model, town, extent, rng)
    traffic_geoms = np.array([model.geom(f"traffic{car}").id for car in range(traffic_count)], dtype=np.int64)
    traffic_mocap = np.array([model.body_mocapid[model.body(f"traffic{car}").id] for car in range(traffic_count)],
                             dtype=np.int64)
    facade_ids = [model.material(f"facade{i}").id for i, boxes in enumerate(facades) if boxes]
    lamp_texture = model.texture("lamps").id if keys else -1
    return Scene(model, keys, lamp_texture, traffic_geoms, traffic_mocap, facade_ids,
                 model.mat_rgba[facade_ids].copy(), model.material("road").id, model.texture("sky").id)


def _add_mesh(asset: ET.Element, name: str, boxes: list[Box], texels: np.ndarray | None = None) -> None:
    """A mesh asset of ``boxes``; with ``texels``, box i samples the centre of texel ``texels[i]`` of a 1-row
    texture."""
    vertices, faces = _box_mesh(boxes)
    attrs = {"name": name, "vertex": " ".join(f"{v:.3f}" for v in vertices.ravel()),
             "face": " ".join(map(str, faces.ravel()))}
    if texels is not None:
        u = (np.repeat(texels, 8) + 0.5) / len(texels)
        attrs["texcoord"] = " ".join(f"{x:.5f} 0.5" for x in u)
    ET.SubElement(asset, "mesh", attrs)


# -- scenery ---------------------------------------------------------------------------------------------------


def _street_rects(town: Town, half: float) -> np.ndarray:
    """Streets widened to ``half`` each side, plus squares of that half-size (at least the box) at every node."""
    rects = town.street_rects
    n_streets = len(rects) - len(town.nodes)
    streets = rects[:n_streets].copy()
    horizontal = (streets[:, 3] - streets[:, 2]) < (streets[:, 1] - streets[:, 0])
    streets[horizontal, 2:] += [[-(half - ASPHALT_HALF), half - ASPHALT_HALF]]
    streets[~horizontal, :2] += [[-(half - ASPHALT_HALF), half - ASPHALT_HALF]]
    side = max(half, JUNCTION_HALF)
    squares = np.concatenate((town.nodes[:, :1] - side, town.nodes[:, :1] + side,
                              town.nodes[:, 1:] - side, town.nodes[:, 1:] + side), axis=1)
    return np.concatenate((streets, squares))


def _overlaps(rect: np.ndarray, rects: np.ndarray) -> bool:
    if len(rects) == 0:
        return False
    return bool(((rect[0] < rects[:, 1]) & (rect[1] > rects[:, 0]) & (rect[2] < rects[:, 3])
                 & (rect[3] > rects[:, 2])).any())


def _buildings(town: Town, rng: np.random.Generator) -> list[list[Box]]:
    """Buildings along every street side, set back behind the pavement, grouped by facade colour."""
    keep_out = _street_rects(town, PAVEMENT_HALF + 0.5)
    placed: list[np.ndarray] = []
    groups: list[list[Box]] = [[] for _ in _FACADE_COLOURS]
    for node, direction in town.lanes():  # each lane's right-hand side
        forward = DIRECTIONS[direction]
        right = np.array([forward[1], -forward[0]])
        start = town.nodes[node] + (JUNCTION_HALF - 4.0) * forward
        length = town.lane_length(node, direction) + 8.0
        along = 0.0
        while along < length:
            width, depth = rng.uniform(8.0, 16.0), rng.uniform(8.0, 14.0)
            height = rng.uniform(5.0, 18.0)
            set_back = PAVEMENT_HALF + 0.5 + rng.uniform(0.0, 2.0) + depth / 2
            centre = start + (along + width / 2) * forward + set_back * right
            half = np.abs(forward) * width / 2 + np.abs(right) * depth / 2
            rect = np.array([centre[0] - half[0], centre[0] + half[0], centre[1] - half[1], centre[1] + half[1]])
            along += width + rng.uniform(0.5, 4.0)
            stack = np.array(placed) if placed else np.zeros((0, 4))
            if rng.random() < 0.12 or _overlaps(rect, keep_out) or _overlaps(rect, stack):
                continue  # a gap in the row (or no room)
            placed.append(rect)
            groups[int(rng.integers(len(groups)))].append(
                ((centre[0], centre[1], height / 2), (half[0], half[1], height / 2), 0.0))
    return groups


def _kerbs(town: Town) -> list[Box]:
    """A raised kerb along both asphalt edges of every street, and across box sides without a street."""
    boxes: list[Box] = []
    for v in range(len(town.nodes)):
        for d in range(4):
            forward = DIRECTIONS[d]
            left = np.array([-forward[1], forward[0]])
            if town.neighbours[v, d] >= 0 and d in (0, 1):
                length = town.lane_length(v, d)
                middle = town.nodes[v] + (JUNCTION_HALF + length / 2) * forward
                for side in (-1.0, 1.0):
                    c = middle + side * (ASPHALT_HALF + 0.1) * left
                    half = np.abs(forward) * length / 2 + np.abs(left) * 0.1
                    boxes.append(((c[0], c[1], 0.06), (half[0], half[1], 0.06), 0.0))
            elif town.neighbours[v, d] < 0:
                c = town.nodes[v] + (JUNCTION_HALF + 0.1) * forward
                half = np.abs(forward) * 0.1 + np.abs(left) * JUNCTION_HALF
                boxes.append(((c[0], c[1], 0.06), (half[0], half[1], 0.06), 0.0))
    return boxes


def _trees(town: Town, rng: np.random.Generator) -> tuple[list[Box], list[Box]]:
    """Street trees on the pavements, ~every 25 m, never in front of a junction box."""
    trunks: list[Box] = []
    crowns: list[Box] = []
    for node, direction in town.lanes():
        forward = DIRECTIONS[direction]
        right = np.array([forward[1], -forward[0]])
        length = town.lane_length(node, direction)
        for along in np.arange(rng.uniform(3.0, 12.0), length - 3.0, rng.uniform(18.0, 30.0)):
            c = town.nodes[node] + (JUNCTION_HALF + along) * forward + (ASPHALT_HALF + 1.6) * right
            size = rng.uniform(1.1, 1.8)
            trunks.append(((c[0], c[1], 1.3), (0.12, 0.12, 1.3), 0.0))
            crowns.append(((c[0], c[1], 2.6 + size), (size, size, size * 0.9), float(rng.uniform(0, np.pi / 2))))
    return trunks, crowns


def _light_fixtures(town: Town) -> tuple[list[Box], list[Box], dict[tuple[int, int], tuple[tuple, tuple]]]:
    """Per junction approach: a pole on the far-right corner with a head facing the approaching car."""
    poles: list[Box] = []
    heads: list[Box] = []
    lamps: dict[tuple[int, int], tuple[tuple, tuple]] = {}  # (node, direction) -> lamp box centre, half sizes
    for node in range(len(town.nodes)):
        if not town.is_junction(node):
            continue
        for direction in range(4):
            if town.neighbours[node, (direction + 2) % 4] < 0:
                continue  # no street arrives heading this way
            forward = DIRECTIONS[direction]
            left = np.array([-forward[1], forward[0]])
            base = town.nodes[node] + (JUNCTION_HALF + 0.8) * forward - (ROAD_WIDTH / 2 + 3.0) * left
            yaw = np.pi / 2 * direction
            poles.append(((base[0], base[1], 2.0), (0.09, 0.09, 2.0), 0.0))
            head = base + 0.0 * forward
            heads.append(((head[0], head[1], 4.3), (0.2, 0.35, 0.7), yaw))
            lamp = head - 0.22 * forward
            half = np.abs(forward) * 0.03 + np.abs(left) * 0.3
            lamps[node, direction] = ((lamp[0], lamp[1], 4.3), (half[0], half[1], 0.6))
    return poles, heads, lamps


def _car_boxes(x: float, y: float, yaw: float) -> list[Box]:
    forward = np.array([np.cos(yaw), np.sin(yaw)])
    out: list[Box] = []
    for (cx, _, cz), half in CAR_BOXES:
        c = np.array([x, y]) + cx * forward
        out.append(((c[0], c[1], cz + 0.32), half, yaw))
    return out


def _box_mesh(boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """One triangle mesh of many boxes (8 vertices, 12 faces each; MuJoCo keeps their edges sharp)."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    quads = ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))
    tris = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    vertices, faces = [], []
    for index, (centre, half, yaw) in enumerate(boxes):
        local = corners * np.array(half)
        rot = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
        vertices.append(local @ rot.T + np.array(centre))
        faces.append(tris + 8 * index)
    return np.concatenate(vertices), np.concatenate(faces)


# -- textures --------------------------------------------------------------------------------------------------


def _paint_ground(model: mujoco.MjModel, town: Town, extent: float, rng: np.random.Generator) -> None:
    """Paint pavements, asphalt, lane and edge markings and stop lines into the ``road`` texture."""
    size = TEXTURE_PX
    scale = size / extent

    def rect_px(rect: np.ndarray) -> np.ndarray:
        corners = np.array([[rect[0], rect[2]], [rect[1], rect[2]], [rect[1], rect[3]], [rect[0], rect[3]]])
        return texture_px(corners, extent, size)

    base = np.array([0.36, 0.4, 0.3]) * 255 + rng.uniform(-6, 6, 3)
    noise = cv2.resize(rng.normal(0.0, 7.0, (96, 96)).astype(np.float32), (size, size))
    tex = cv2.convertScaleAbs(noise[..., None] + base.astype(np.float32))
    pavement = _street_rects(town, PAVEMENT_HALF)
    for rects, colour in ((pavement, (168, 166, 160)), (town.street_rects, (88, 88, 90))):
        for rect in rects:  # one at a time: fillPoly's even-odd rule would punch holes where rectangles overlap
            cv2.fillConvexPoly(tex, rect_px(rect), colour, cv2.LINE_AA, PX_SHIFT)

    white, yellow = (235, 235, 230), (230, 190, 40)
    line = max(1, int(round(0.15 * scale)))
    for v in range(len(town.nodes)):
        for d in (0, 1):
            if town.neighbours[v, d] < 0:
                continue
            forward = DIRECTIONS[d]
            left = np.array([-forward[1], forward[0]])
            a = town.nodes[v] + JUNCTION_HALF * forward
            length = town.lane_length(v, d)
            for along in np.arange(0.0, length, 6.0):  # dashed centre line, 3 m dashes
                p, q = a + along * forward, a + min(along + 3.0, length) * forward
                cv2.line(tex, *texture_px(np.stack([p, q]), extent, size), yellow, line, cv2.LINE_AA, PX_SHIFT)
            for side in (-1.0, 1.0):  # lane edge lines: the parking strips lie beyond them
                p, q = a + side * (ROAD_WIDTH / 2) * left, a + length * forward + side * (ROAD_WIDTH / 2) * left
                cv2.line(tex, *texture_px(np.stack([p, q]), extent, size), white, line, cv2.LINE_AA, PX_SHIFT)
        if town.is_junction(v):
            for d in range(4):  # stop lines across the arriving lane at the box edge
                if town.neighbours[v, (d + 2) % 4] < 0:
                    continue
                forward = DIRECTIONS[d]
                left = np.array([-forward[1], forward[0]])
                c = town.nodes[v] - (JUNCTION_HALF + 0.3) * forward
                p, q = c, c - (ROAD_WIDTH / 2) * left
                cv2.line(tex, *texture_px(np.stack([p, q]), extent, size), white, max(1, int(0.4 * scale)),
                         cv2.LINE_AA, PX_SHIFT)
    adr = model.tex_adr[model.texture("road").id]
    model.tex_data[adr : adr + tex.size] = tex.ravel()


def _sky_pixels(weather: Weather, face: int) -> np.ndarray:
    """A skybox cube (6 faces stacked vertically), one colour between the weather's horizon and top colours:
    the faces' orientations differ, so a gradient would show the sky upside down in some directions."""
    colour = 0.7 * np.array(weather.sky_horizon) + 0.3 * np.array(weather.sky_top)
    return (np.full((6 * face, face, 3), colour) * 255).astype(np.uint8)
