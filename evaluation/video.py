"""Evaluation videos: the env's third-person frame, the policy's camera view, the commanded action, the category
inputs (e.g. the route command), and a closing outcome card."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import imageio_ffmpeg
import numpy as np

#: H.264 (yuv420p) plays in every browser; OpenCV's PyPI wheels lack an H.264 encoder and their VP9 encoder
#: took seconds per frame here, so frames go to the ffmpeg binary that imageio-ffmpeg ships.
CODEC_ARGS = ["-preset", "veryfast", "-crf", "23"]


FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Font scale of labels and captions, and the height of one text line at that scale (pixels).
TEXT_SCALE, LINE_H = 0.4, 14
#: Most lines a caption wraps onto.
CAPTION_LINES = 2
#: Height of an action bar; its label sits on its own line above it, so the bar never covers the text.
BAR_H = 8
#: Narrowest side panel that holds a label such as "gripper +1.00" and its value.
MIN_PANEL_W = 120
WHITE, GREY, DARK = (255, 255, 255), (170, 170, 170), (30, 30, 30)
SUCCESS_RGB, FAILURE_RGB = (80, 200, 80), (220, 90, 60)


def annotate_frame(frame: np.ndarray, camera_views: Sequence[np.ndarray], action: np.ndarray,
                   action_labels: Sequence[str], caption: str, state: np.ndarray | None = None,
                   state_labels: Sequence[str] = (), categories: Sequence[str] = ()) -> np.ndarray:
    """Compose one RGB video frame: ``frame`` on the left with the caption across its top (wrapped to its width),
    and a panel on the right with the camera views, the action as signed bars (right of centre is a positive
    command), each under its own label line, the ``categories`` lines (the category inputs by name, such as
    "command left"), and as many ``state`` values, by name, as fit below them."""
    height = frame.shape[0]
    panel_w = max(height // 2, MIN_PANEL_W)
    panel = np.full((height, panel_w, 3), DARK[0], dtype=np.uint8)
    row_h = LINE_H + BAR_H + 4
    y = _place_views(panel, camera_views, height - len(action) * row_h - len(categories) * LINE_H - 4) + 4
    centre = panel_w // 2
    for label, value in zip(action_labels, action):
        if y + row_h > height:
            break
        _text(panel, f"{label} {value:+.2f}", (4, y + LINE_H - 4), WHITE)
        top = y + LINE_H
        end = int(centre + float(np.clip(value, -1, 1)) * (panel_w // 2 - 5))
        cv2.rectangle(panel, (4, top), (panel_w - 5, top + BAR_H), (70, 70, 70), 1)
        cv2.rectangle(panel, (min(centre, end), top + 1), (max(centre, end), top + BAR_H - 1),
                      SUCCESS_RGB if value >= 0 else FAILURE_RGB, -1)
        cv2.line(panel, (centre, top - 1), (centre, top + BAR_H + 1), GREY, 1)
        y += row_h
    for line in categories:
        if y + LINE_H > height:
            break
        _text(panel, line, (4, y + LINE_H - 4), WHITE)
        y += LINE_H
    if state is not None:
        for label, value in zip(state_labels, state):
            if y + LINE_H > height:
                break
            _text(panel, f"{label} {value:+.3f}", (4, y + LINE_H - 4), GREY)
            y += LINE_H
    frame = frame.copy()
    _caption(frame, caption)
    return np.concatenate([frame, panel], axis=1)


def _place_views(panel: np.ndarray, views: Sequence[np.ndarray], room: int) -> int:
    """Draw the camera views as large as they fit in the panel's top ``room`` pixels, in as many columns as
    makes them largest; returns the height used."""
    if not views or room <= 0:
        return 0
    width = panel.shape[1]
    size, cols = max((min(width // c, room // -(-len(views) // c)), c) for c in range(1, len(views) + 1))
    if size <= 0:
        return 0
    for i, view in enumerate(views):
        row, col = divmod(i, cols)
        panel[row * size:(row + 1) * size, col * size:(col + 1) * size] = cv2.resize(
            view, (size, size), interpolation=cv2.INTER_NEAREST)
    return size * -(-len(views) // cols)


def outcome_card(frame: np.ndarray, success: bool, episode_return: float, steps: int) -> np.ndarray:
    """The episode's last composed frame, dimmed, under a card with its outcome, return and length (the closing
    frames of a video, so a clip says how it ended)."""
    card = (frame.astype(np.float32) * 0.3).astype(np.uint8)
    h, w = card.shape[:2]
    colour = SUCCESS_RGB if success else FAILURE_RGB
    headline, detail = ("SUCCESS" if success else "FAILURE"), f"return {episode_return:.2f}   {steps} steps"
    scale = min(1.4, 0.6 * w / cv2.getTextSize(headline, FONT, 1.0, 2)[0][0])
    (hw, hh), _ = cv2.getTextSize(headline, FONT, scale, 2)
    (dw, dh), _ = cv2.getTextSize(detail, FONT, 0.5, 1)
    box_w, box_h = max(hw, dw) + 32, hh + dh + 36
    left, top = (w - box_w) // 2, (h - box_h) // 2
    cv2.rectangle(card, (left, top), (left + box_w, top + box_h), DARK, -1)
    cv2.rectangle(card, (left, top), (left + box_w, top + box_h), colour, 2)
    cv2.putText(card, headline, ((w - hw) // 2, top + 12 + hh), FONT, scale, colour, 2, cv2.LINE_AA)
    cv2.putText(card, detail, ((w - dw) // 2, top + 24 + hh + dh), FONT, 0.5, WHITE, 1, cv2.LINE_AA)
    return card


def _text(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int]) -> None:
    cv2.putText(image, text, origin, FONT, TEXT_SCALE, colour, 1, cv2.LINE_AA)


def _caption(frame: np.ndarray, caption: str) -> None:
    """Write the caption across the top of ``frame`` on a dark band, wrapped at spaces to the frame's width (at
    most ``CAPTION_LINES`` lines, the rest cut with "..."), so it never runs into the panel beside it."""
    width = frame.shape[1]
    lines = [""]
    for word in caption.split():
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and cv2.getTextSize(candidate, FONT, TEXT_SCALE, 1)[0][0] > width - 8:
            lines.append(word)
        else:
            lines[-1] = candidate
    if len(lines) > CAPTION_LINES:
        lines = lines[:CAPTION_LINES - 1] + [lines[CAPTION_LINES - 1] + " ..."]
    band = frame[:LINE_H * len(lines) + 4]
    band[...] = (band * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        _text(frame, line, (4, LINE_H * (i + 1) - 2), WHITE)


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
