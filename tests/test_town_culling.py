"""Town-v0's driver-camera culling leaves out only what the camera cannot see: frames stay pixel-identical."""

from __future__ import annotations

import numpy as np

from imitlab.envs.town.env import TownEnv


def full_scene_frame(env: TownEnv) -> np.ndarray:
    """The driver frame with every geom handed to the renderer (no culling)."""
    camera = env._renderers[0]
    camera.update_scene(env.data, camera="driver")
    env.perturber.decorate(camera.scene)
    return camera.render()


def test_culled_frames_equal_full_scene_frames_also_with_a_moved_camera() -> None:
    # camera_pose at severity 5 moves and turns the camera most: the car's own body must still be judged right.
    env = TownEnv(town=0, traffic=12, image_size=48, weather="train", perturb={"camera_pose": 5})
    expert = env.make_expert()
    culled_counts = []
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        for _ in range(30):
            obs, *_ = env.step(expert.act(obs))
            np.testing.assert_array_equal(obs["image"], full_scene_frame(env))
            culled_counts.append(int(env._driver_view.outside(env.data).sum()))
    env.close()
    candidates = len(env._driver_view.geoms)
    assert max(culled_counts) > 0, "nothing was ever culled: the test compares nothing"
    assert min(culled_counts) < candidates, "everything was culled, traffic included"
