"""LeRobot's side of the interop checks, run in a virtualenv with LeRobot (which needs gymnasium >= 1.0 and its
own torch), not imitlab's:

    python -m venv /tmp/lerobot-venv && /tmp/lerobot-venv/bin/pip install lerobot h5py
    /tmp/lerobot-venv/bin/python docs/lerobot_interop.py EXPORT_DIR IMITLAB_DATASET
    /tmp/lerobot-venv/bin/python docs/lerobot_interop.py --write-toy OUT

The first form loads an ``imitlab demos export-lerobot`` folder with LeRobot's own ``LeRobotDataset`` from its
folder (``root``; nothing is fetched from the Hub), prints what LeRobot sees, then reads every frame through
LeRobot (video frames decoded by its default backend) and compares it with the imitlab dataset's episode files:
states and actions must be equal, camera frames within the codec's error. ``--write-toy`` writes the small
dataset LeRobot's own recorder makes that ``tests/data/lerobot_v30_toy`` holds (``tests/test_lerobot_format.py``
imports it): 2 episodes of 20 and 25 frames at 15 fps, a 64 px camera whose frame t has red level 4 t and a
bright block at column t, state ``t + 100 * episode`` and action ``(t, episode)``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local root must not need the Hub

import h5py  # noqa: E402
import lerobot  # noqa: E402
import numpy as np  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def main(export: Path, dataset: Path) -> None:
    ds = LeRobotDataset(repo_id="local/imitlab-export", root=export)
    print(f"lerobot {lerobot.__version__}, video backend {ds.video_backend}")
    print(f"len {len(ds)}, episodes {ds.num_episodes}, fps {ds.fps}")
    print("features", {k: (v["dtype"], tuple(v["shape"])) for k, v in ds.features.items()})
    item = ds[0]
    print("item 0", {k: (tuple(v.shape), str(v.dtype)) if hasattr(v, "shape") else v for k, v in item.items()})
    episode_files = sorted((dataset / "episodes").glob("demo_*.hdf5"))
    errors, index = [], 0
    for episode_index, path in enumerate(episode_files):
        with h5py.File(path, "r") as f:
            images, states, actions = f["obs/image"][()], f["obs/state"][()], f["actions"][()]
        for t in range(len(actions)):
            frame = ds[index]
            assert int(frame["episode_index"]) == episode_index and int(frame["frame_index"]) == t
            assert np.array_equal(frame["action"].numpy(), actions[t])
            assert np.array_equal(frame["observation.state"].numpy(), states[t])
            decoded = np.rint(frame["observation.images.image"].numpy().transpose(1, 2, 0) * 255)
            errors.append(np.abs(decoded - images[t]).ravel())
            index += 1
    errors = np.concatenate(errors)
    print(f"read all {index} frames of {len(episode_files)} episodes through LeRobot: states and actions equal, "
          f"video frames mean abs error {errors.mean():.2f}, 99th percentile {np.percentile(errors, 99):.0f}, "
          f"max {errors.max():.0f} (of 255)")


def write_toy(root: Path) -> None:
    features = {
        "observation.images.front": {"dtype": "video", "shape": (64, 64, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["a", "b", "c"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }
    ds = LeRobotDataset.create("local/toy", fps=15, root=root, features=features, robot_type="toy", use_videos=True)
    for episode in range(2):
        for t in range(20 + 5 * episode):
            image = np.zeros((64, 64, 3), np.uint8)
            image[..., 0] = 4 * t
            image[20:30, t:t + 10] = 200
            ds.add_frame({"observation.images.front": image,
                          "observation.state": np.full(3, t + 100 * episode, np.float32),
                          "action": np.array([t, episode], np.float32), "task": f"push {episode}"})
        ds.save_episode()
    ds.finalize()
    print(f"wrote {ds.meta.total_episodes} episodes, {ds.meta.total_frames} frames to {root}")


if __name__ == "__main__":
    if sys.argv[1] == "--write-toy":
        write_toy(Path(sys.argv[2]))
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
