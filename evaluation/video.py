"""Evaluation videos: the env's third-person frame, the policy's camera view, and the commanded action."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import imageio_ffmpeg
import numpy as np

#: H.264 (yuv420p) plays in every browser; OpenCV's PyPI wheels lack an H.264 encoder and their VP9 encoder
#: took seconds per frame here, so frames go to the ffmpeg binary that imageio-ffmpeg ships.
CODEC_ARGS = ["-preset", "veryfast", "-crf", "23"]


def annotate_frame(frame: np.ndarray, camera_views: Sequence[np.ndarray], action: np.ndarray,
                   action_labels: Sequence[str], caption: str) -> np.ndarray:
    """Compose one RGB video frame: ``frame`` on the left, the camera views stacked on the right with the
    action as signed bars beneath them (a bar right of centre is a positive command)."""
    height = frame.shape[0]
    panel_w = height // 2
    panel = np.full((height, panel_w, 3), 30, dtype=np.uint8)
    y = 0
    view_h = min(panel_w, height // (len(camera_views) + 1)) if camera_views else 0
    for view in camera_views:
        panel[y:y + view_h, :view_h] = cv2.resize(view, (view_h, view_h), interpolation=cv2.INTER_NEAREST)
        y += view_h
    bar_h = max(10, (height - y) // max(1, len(action)) - 6)
    for label, value in zip(action_labels, action):
        y += 4
        if y + bar_h > height:
            break
        centre = panel_w // 2
        end = int(centre + float(np.clip(value, -1, 1)) * (panel_w // 2 - 4))
        cv2.rectangle(panel, (4, y), (panel_w - 4, y + bar_h), (70, 70, 70), 1)
        colour = (80, 200, 80) if value >= 0 else (220, 90, 60)
        cv2.rectangle(panel, (min(centre, end), y + 1), (max(centre, end), y + bar_h - 1), colour, -1)
        cv2.putText(panel, f"{label} {value:+.2f}", (6, y + bar_h - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    (255, 255, 255), 1, cv2.LINE_AA)
        y += bar_h
    out = np.concatenate([frame, panel], axis=1)
    cv2.putText(out, caption, (6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write RGB frames to an mp4 file."""
    if not frames:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         output_params=CODEC_ARGS, macro_block_size=2, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path
