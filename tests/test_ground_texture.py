"""The ground texture repainted in place: every texel (mip levels too) depends on the current road alone, and what
OpenGL holds after the rectangle uploads equals the CPU copy."""

from __future__ import annotations

import mujoco
import numpy as np
from OpenGL import GL

from imitlab.envs.driving import LaneFollowEnv
from imitlab.envs.ground_texture import GroundTexture, _halve
from imitlab.envs.road import GRASS_RGB, Road, RoadColours, grass_texture, paint_road

EXTENT = 216.0


def ground() -> GroundTexture:
    spec = mujoco.MjSpec()
    texture = spec.add_texture(name="road", type=mujoco.mjtTexture.mjTEXTURE_2D, width=2048, height=2048, nchannel=4)
    texture.data = bytes(2048 * 2048 * 4)
    model = spec.compile()
    return GroundTexture(model, 0, EXTENT)


def road_and_colours(seed: int) -> tuple[Road, RoadColours]:
    rng = np.random.default_rng(seed)
    return Road.generate(rng), RoadColours.sample(rng)


GRASS = np.array(GRASS_RGB, np.uint8)


def test_repainted_texture_depends_on_the_current_road_only() -> None:
    history, fresh = ground(), ground()
    for seed in (3, 4, 5):
        history.paint(*road_and_colours(seed), GRASS)
    fresh.paint(*road_and_colours(5), GRASS)
    reference = grass_texture(2048).copy()
    paint_road(reference, *road_and_colours(5), fresh.frame)
    np.testing.assert_array_equal(history.levels[0], reference)
    assert len(history.levels) == 12
    for level, (a, b) in enumerate(zip(history.levels, fresh.levels)):
        np.testing.assert_array_equal(a, b, err_msg=f"mip level {level}")
        if level:  # each level is the 2x2 box filter of the one above, as if rebuilt whole
            np.testing.assert_array_equal(a, _halve(history.levels[level - 1]), err_msg=f"mip level {level}")


def test_paint_reports_the_old_and_the_new_road_as_changed() -> None:
    texture = ground()
    first = texture.paint(*road_and_colours(1), GRASS)
    before = [level.copy() for level in texture.levels]
    changed = texture.paint(*road_and_colours(2), GRASS)
    assert first is not None and changed is not None
    assert set(first) <= set(changed)  # the old road's texels are restored to grass
    inside = np.zeros((2048, 2048), bool)
    for x0, y0, x1, y1 in changed:
        inside[y0:y1, x0:x1] = True
    differs = (texture.levels[0] != before[0]).any(axis=2)
    assert differs.any() and not (differs & ~inside).any()


def test_other_grass_repaints_every_texel_and_back() -> None:
    texture, fresh = ground(), ground()
    texture.paint(*road_and_colours(1), GRASS)
    assert texture.paint(*road_and_colours(2), np.array([120, 60, 40], np.uint8)) is None  # everything changed
    assert abs(int(texture.levels[0][5, 5, 0]) - 120) < 40 and texture.levels[-1][0, 0, 0] > GRASS[0]
    assert texture.paint(*road_and_colours(3), GRASS) is None  # and back
    fresh.paint(*road_and_colours(3), GRASS)
    for a, b in zip(texture.levels, fresh.levels):
        np.testing.assert_array_equal(a, b)


def test_renderers_hold_the_cpu_texture_after_resets() -> None:
    env = LaneFollowEnv(image_size=48, render_mode="rgb_array")
    try:
        for seed in (7, 8):
            env.reset(seed=seed)
        for renderer in (env._camera, env._chase):
            renderer._gl_context.make_current()
            GL.glBindTexture(GL.GL_TEXTURE_2D, int(renderer._mjr_context.texture[env._ground.tex_id]))
            for level in (0, 1, 2, 5):
                held = GL.glGetTexImage(GL.GL_TEXTURE_2D, level, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
                expected = env._ground.levels[level]
                np.testing.assert_array_equal(np.frombuffer(held, np.uint8).reshape(expected.shape), expected)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
    finally:
        env.close()
