"""Render the overlay figures in docs/ from real runs: an evaluation video frame and its closing outcome card,
a ``demos play`` frame, and a screenshot of an HTML report in which every episode fails.

    MUJOCO_GL=egl python docs/render_figures.py          # needs chromium for the screenshot
    MUJOCO_GL=egl python docs/render_figures.py detour runs/DetourV1/mlp=1000000@0.5 ...  # docs/detour-mlp.png

The second form films each run on one held-out seed and keeps the frame that far through the video
(``RUN=SEED@FRACTION``; the file is named after the run's folder): the Detour figures in the README.

The evaluation films the driving expert with a 4 s time limit, too short to finish a road, so every episode
fails (the report's "best" episode is then a failure). The play frame is a Reach demo seen by three cameras.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from imitlab.agents import resolve_agent
from imitlab.demos.dataset import DemoDataset
from imitlab.demos.play import play
from imitlab.demos.recorder import record
from imitlab.evaluation.evaluate import HELD_OUT_SEED_START, evaluate, write_report

DOCS = Path(__file__).resolve().parent


def video_frames(path: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]


def save_png(frame: np.ndarray, name: str) -> None:
    cv2.imwrite(str(DOCS / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote docs/{name} ({frame.shape[1]}x{frame.shape[0]})")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="imitlab-figures-"))
    try:
        seeds = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + 4))
        summary = evaluate("expert", seeds, env_id="imitlab/LaneFollow-v0", env_kwargs={"time_limit_s": 4.0},
                           workers=2, video_dir=work / "eval" / "videos", videos=1)
        report = write_report(summary, work / "eval")["html"]
        frames = video_frames(Path(summary.episodes[[e.video is not None for e in summary.episodes].index(True)].video))
        save_png(frames[len(frames) // 3], "overlay-rollout.png")
        save_png(frames[-1], "overlay-outcome.png")

        record("imitlab/Reach-v0", work / "reach", episodes=1, env_kwargs={
            "cameras": ["agentview", "wrist", "wrist_rear"]}, progress=False)
        (played,) = play(DemoDataset(work / "reach"), ["0"], work / "play")
        save_png(video_frames(played.video)[played.frames // 2], "overlay-play.png")

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            sys.exit("chromium not found (apt-get install -y chromium): no report screenshot")
        shot = work / "report.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-background-networking", "--disable-component-update", "--no-first-run",
                        f"--user-data-dir={work / 'chromium'}", "--window-size=1150,2100",
                        f"--screenshot={shot}", Path(report).resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        image = cv2.imread(str(shot))
        small = cv2.resize(image, (image.shape[1] * 2 // 3, image.shape[0] * 2 // 3), interpolation=cv2.INTER_AREA)
        save_png(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), "report-all-failed.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def detour_frames(shots: list[str]) -> None:
    """``RUN=SEED@FRACTION`` each: the run's episode on SEED, filmed, its frame at FRACTION of the video."""
    work = Path(tempfile.mkdtemp(prefix="imitlab-figures-"))
    try:
        for shot in shots:
            run, _, rest = shot.partition("=")
            seed, _, fraction = rest.partition("@")
            summary = evaluate(resolve_agent(run), [int(seed)], workers=1, video_dir=work / Path(run).name,
                               videos=1, progress=False)
            frames = video_frames(Path(summary.episodes[0].video))
            save_png(frames[min(int(float(fraction) * len(frames)), len(frames) - 1)], f"detour-{Path(run).name}.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["detour"]:
        detour_frames(sys.argv[2:])
    else:
        main()
