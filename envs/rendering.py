"""GL-side texture settings shared by the driving scenes (the renderers' contexts, not the model)."""

from __future__ import annotations

import mujoco
from OpenGL import GL  # after mujoco, which points PyOpenGL at the MUJOCO_GL platform

#: Mipmap level-of-detail bias for ground textures. Isotropic mipmapping blurs a ground plane seen at a grazing
#: angle, so beyond ~15 m the road would fade into the grass; anisotropic filtering fixes that but costs ~30 ms
#: a frame on llvmpipe, whereas sampling two mip levels sharper costs nothing and keeps markings visible ahead.
TEXTURE_LOD_BIAS = -2.0


def upload_texture(renderer: mujoco.Renderer, model: mujoco.MjModel, texture: int) -> None:
    """Copy one texture's pixels from the model (changed since the renderer was made) into its GL context."""
    renderer._gl_context.make_current()  # GL calls act on the current context
    mujoco.mjr_uploadTexture(model, renderer._mjr_context, texture)


def sharpen_texture(renderer: mujoco.Renderer, model: mujoco.MjModel, texture: int, upload: bool = False) -> None:
    """Set ``TEXTURE_LOD_BIAS`` on one texture in ``renderer``'s GL context, re-uploading its pixels first if asked."""
    if upload:
        upload_texture(renderer, model, texture)
    renderer._gl_context.make_current()
    GL.glBindTexture(GL.GL_TEXTURE_2D, int(renderer._mjr_context.texture[texture]))
    GL.glTexParameterf(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_LOD_BIAS, TEXTURE_LOD_BIAS)
    GL.glBindTexture(GL.GL_TEXTURE_2D, 0)


def set_fog(renderer: mujoco.Renderer, start_m: float, end_m: float, rgb: tuple[float, float, float]) -> None:
    """Linear fog from ``start_m`` to ``end_m`` metres, in the colour the far scene fades to.

    The context copies the model's fog settings once, when it is made, so a per-episode weather writes them
    here; the renderer's scene must have ``mjRND_FOG`` enabled (only while there is fog: with the flag on,
    far fog distances still darken the scene on llvmpipe).
    """
    context = renderer._mjr_context
    context.fogStart, context.fogEnd = start_m, end_m
    context.fogRGBA[:] = (*rgb, 1.0)
