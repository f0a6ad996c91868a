"""The driving env's ground texture, repainted per road in place and uploaded to OpenGL by changed rectangles.

A full repaint and upload of the 2048 px texture (``mjr_uploadTexture``, which also has OpenGL rebuild every mip
level) cost ~75 ms per reset on llvmpipe. Here the grass is fixed, so a new road only changes the texels the old
and the new road cover: those are restored/painted on the CPU, their mip texels recomputed there (2x2 box filter),
and only those rectangles are sent to each renderer's texture. The texture is RGBA because llvmpipe copies RGBA
rows as they are, whereas RGB needs a conversion per texel. Every texel -- mip levels included -- is a function of
the current road alone, never of the roads painted before it (tests/test_ground_texture.py checks that).
"""

from __future__ import annotations

import ctypes

import cv2
import mujoco
import numpy as np
from OpenGL import GL  # after mujoco, which points PyOpenGL at the MUJOCO_GL platform
from OpenGL.raw.GL.VERSION.GL_1_1 import glTexSubImage2D  # unwrapped: PyOpenGL's image wrapper costs ~80 us a call

from imitlab.envs.road import GRASS_RGB, Road, RoadColours, TextureFrame, grass_texture, paint_road, road_cover

Rect = tuple[int, int, int, int]  # (x0, y0, x1, y1) texels of level 0, half-open

#: Levels whose changed texels are recomputed by rectangles; coarser levels (<= 128 px) are recomputed whole.
_RECT_LEVELS = 4
#: Levels uploaded by rectangles; coarser ones (<= 512 px, 1 MiB) go up whole: on llvmpipe each upload call
#: costs ~0.1 ms whatever its size, so a few whole small levels beat dozens of tiny rectangles.
_UPLOAD_RECT_LEVELS = 2
_STRIP_PX = 128  # width of the vertical strips a road's cover is cut into


def _halve(src: np.ndarray) -> np.ndarray:
    """The next mip level: each texel the rounded mean of a 2x2 block (OpenCV's exact-halving area filter)."""
    return cv2.resize(src, (src.shape[1] // 2, src.shape[0] // 2), interpolation=cv2.INTER_AREA)


class GroundTexture:
    """The road texture's mip chain on the CPU; level 0 is the model's own ``tex_data``, kept in sync."""

    def __init__(self, model: mujoco.MjModel, tex_id: int, extent_m: float):
        size = int(model.tex_width[tex_id])
        if model.tex_height[tex_id] != size or model.tex_nchannel[tex_id] != 4 or size & (size - 1):
            raise ValueError("the ground texture must be square RGBA with a power-of-two size")
        self.tex_id = tex_id
        self.frame = TextureFrame(size, extent_m)
        adr = int(model.tex_adr[tex_id])
        self.levels = [model.tex_data[adr : adr + size * size * 4].reshape(size, size, 4)]
        self.levels[0][:] = grass_texture(size, GRASS_RGB)
        while self.levels[-1].shape[0] > 1:
            self.levels.append(_halve(self.levels[-1]))
        self._grass = GRASS_RGB  # colour of the grass under the road
        self._cover: list[Rect] = []  # where the current road is painted

    def paint(self, road: Road, colours: RoadColours, grass_rgb: np.ndarray) -> list[Rect] | None:
        """Replace the painted road with ``road``; returns the level-0 rectangles whose texels may have changed, or
        None when every texel did (whenever the grass colour changes: only under a colour perturbation)."""
        size = self.frame.size_px
        grass_key = (int(grass_rgb[0]), int(grass_rgb[1]), int(grass_rgb[2]))
        grass, base = grass_texture(size, grass_key), self.levels[0]
        repaint_all = grass_key != self._grass
        if repaint_all:
            base[:] = grass
            self._grass, self._cover = grass_key, []
        for x0, y0, x1, y1 in self._cover:
            base[y0:y1, x0:x1] = grass[y0:y1, x0:x1]
        new_cover = road_cover(road, self.frame, _STRIP_PX, 1 << _RECT_LEVELS)
        paint_road(base, road, colours, self.frame)
        changed = self._cover + new_cover
        self._cover = new_cover
        for level in range(1, len(self.levels)):
            src, dst = self.levels[level - 1], self.levels[level]
            if repaint_all or level > _RECT_LEVELS:
                dst[:] = _halve(src)
                continue
            for x0, y0, x1, y1 in changed:
                s = level - 1
                dst[y0 >> level : y1 >> level, x0 >> level : x1 >> level] = _halve(
                    src[y0 >> s : y1 >> s, x0 >> s : x1 >> s]
                )
        return None if repaint_all else changed

    def upload(self, renderer: mujoco.Renderer, changed: list[Rect] | None = None) -> None:
        """Send ``changed`` rectangles (every texel when None) of every level to ``renderer``'s GL texture; the first
        upload after the renderer is made must send every texel.

        MuJoCo's Renderer does not expose its GL context, so this uses its private ``_gl_context`` and
        ``_mjr_context`` (as the env did for ``mjr_uploadTexture`` before).
        """
        renderer._gl_context.make_current()
        GL.glBindTexture(GL.GL_TEXTURE_2D, int(renderer._mjr_context.texture[self.tex_id]))
        for level, texels in enumerate(self.levels):
            GL.glPixelStorei(GL.GL_UNPACK_ROW_LENGTH, texels.shape[1])
            rects = [(0, 0, texels.shape[1], texels.shape[0])]
            if changed is not None and level < _UPLOAD_RECT_LEVELS:
                rects = [(x0 >> level, y0 >> level, x1 >> level, y1 >> level) for x0, y0, x1, y1 in changed]
            for x0, y0, x1, y1 in rects:
                pointer = ctypes.c_void_p(texels.ctypes.data + (y0 * texels.shape[1] + x0) * 4)
                glTexSubImage2D(GL.GL_TEXTURE_2D, level, x0, y0, x1 - x0, y1 - y0, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, pointer)
        GL.glPixelStorei(GL.GL_UNPACK_ROW_LENGTH, 0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
