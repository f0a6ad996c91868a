"""Check that LeRobot's own ``LeRobotDataset`` loads an ``imitlab demos export-lerobot`` folder, offline.

Run it in a virtualenv with LeRobot (which needs gymnasium >= 1.0 and its own torch), not imitlab's:

    python -m venv /tmp/lerobot-venv && /tmp/lerobot-venv/bin/pip install lerobot h5py
    /tmp/lerobot-venv/bin/python docs/lerobot_load_check.py EXPORT_DIR IMITLAB_DATASET

It loads the export from its folder (``root``; nothing is fetched from the Hub), prints what LeRobot sees, then
reads every frame through LeRobot (video frames decoded by its default backend) and compares it with the
imitlab dataset's episode files: states and actions must be equal, camera frames within the codec's error.
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


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
