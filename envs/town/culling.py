"""View-frustum culling for one camera: geoms wholly outside its view are left out of its scene before rendering.

llvmpipe pays for every geom it is given, visible or not (a draw call, and every vertex transformed), so
leaving out what the driver camera cannot see -- most traffic cars, and its own car's body below and behind it
-- makes the frame cheaper without changing a pixel. A geom is left out only if all eight corners of its
bounding box (``model.geom_aabb`` at its pose in ``data``, as ``mjv_updateScene`` draws it) lie beyond one of the
four side planes of the view pyramid. MuJoCo's ``mjv_updateScene`` skips geoms whose rgba alpha is 0, so the
culled geoms get alpha 0 for the one ``update_scene`` call and their rgba back right after. (Splitting the
merged static scenery into tiles to cull them too was measured: the extra draw calls cost what the skipped
vertices save.)
"""

from __future__ import annotations

import mujoco
import numpy as np

#: Slack (m) added around every bounding box against rounding.
MARGIN_M = 0.01
#: Box corners as -1/+1 signs per axis.
_SIGNS = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64)


class FrustumCuller:
    """Leaves the ``geoms`` that camera ``camera`` (rendered at ``width`` x ``height``) cannot see out of its
    scene."""

    def __init__(self, model: mujoco.MjModel, camera: int, width: int, height: int, geoms: np.ndarray):
        self.model = model
        self.camera = camera
        self.geoms = np.asarray(geoms, dtype=np.int64)
        tan_y = np.tan(np.deg2rad(model.cam_fovy[camera]) / 2.0)
        self._tan = np.array([tan_y * width / height, tan_y])
        aabb = model.geom_aabb[self.geoms]  # (G, 6): centre and half sizes in the geom's frame
        self._local_corners = aabb[:, None, :3] + _SIGNS[None] * (aabb[:, None, 3:] + MARGIN_M)  # (G, 8, 3)

    def update_scene(self, renderer: mujoco.Renderer, data: mujoco.MjData) -> None:
        """``renderer.update_scene`` from the camera, without the geoms it cannot see."""
        culled = self.geoms[self.outside(data)]
        rgba = self.model.geom_rgba[culled].copy()
        self.model.geom_rgba[culled, 3] = 0.0
        try:
            renderer.update_scene(data, camera=self.camera)
        finally:
            self.model.geom_rgba[culled] = rgba

    def outside(self, data: mujoco.MjData) -> np.ndarray:
        """Per geom: whether its bounding box lies wholly outside the camera's view pyramid."""
        rotation = data.geom_xmat[self.geoms].reshape(-1, 3, 3)
        corners = np.einsum("gij,gkj->gki", rotation, self._local_corners) + data.geom_xpos[self.geoms][:, None]
        # Camera frame: x right, y up, looking along -z (MuJoCo's convention).
        local = (corners - data.cam_xpos[self.camera]) @ data.cam_xmat[self.camera].reshape(3, 3)
        half = -local[..., 2:] * self._tan  # (G, 8, 2): the view's half-width and half-height at each depth
        xy = local[..., :2]
        beyond = np.concatenate((half + xy, half - xy), axis=-1) < 0.0  # left, bottom, right, top planes
        return beyond.all(axis=1).any(axis=1)
