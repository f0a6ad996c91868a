"""Offscreen rendering of the observation cameras and of the larger video view.

One ``mujoco.Renderer`` serves every observation camera (they share a resolution); the video view has its
own, created on first use, so envs that never record video never pay for it.
"""

from __future__ import annotations

from collections.abc import Callable

import mujoco
import numpy as np

from imitlab.core.errors import ImitlabError

VIDEO_CAMERA = "agentview"
VIDEO_SIZE = (240, 320)  # height, width


class CameraRig:
    """Renders ``cameras`` at ``image_size`` x ``image_size`` pixels (uint8 RGB) and a 320x240 video frame.

    Observation keys: the first camera is the main ``"image"``, the others ``"<name>_image"``.
    """

    def __init__(self, model: mujoco.MjModel, cameras: tuple[str, ...], image_size: int,
                 decorate: Callable[[mujoco.MjvScene], None] | None = None):
        if not cameras:
            raise ImitlabError("cameras must name at least one camera")
        known = [model.camera(i).name for i in range(model.ncam)]
        unknown = [c for c in cameras if c not in known]
        if unknown:
            raise ImitlabError(f"unknown camera(s) {unknown}; this scene has {known}")
        if not 16 <= image_size <= min(model.vis.global_.offheight, model.vis.global_.offwidth):
            raise ImitlabError(f"image_size must be between 16 and {model.vis.global_.offheight}, got {image_size}")
        self.model = model
        self.keys = ["image"] + [f"{name}_image" for name in cameras[1:]]
        self.camera_ids = [model.camera(c).id for c in cameras]
        self.renderer = mujoco.Renderer(model, image_size, image_size)
        self._video: mujoco.Renderer | None = None
        #: Adds extra visual geoms (perturbation distractors) to each scene before it is drawn.
        self.decorate = decorate or (lambda scene: None)

    def observe(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        images = {}
        for key, cam in zip(self.keys, self.camera_ids):
            self.renderer.update_scene(data, camera=cam)
            self.decorate(self.renderer.scene)
            images[key] = self.renderer.render()
        return images

    def video_frame(self, data: mujoco.MjData) -> np.ndarray:
        if self._video is None:
            self._video = mujoco.Renderer(self.model, *VIDEO_SIZE)
        self._video.update_scene(data, camera=VIDEO_CAMERA)
        self.decorate(self._video.scene)
        return self._video.render()

    def close(self) -> None:
        self.renderer.close()
        if self._video is not None:
            self._video.close()
            self._video = None
