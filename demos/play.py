"""Watch demonstrations: each episode becomes an annotated mp4 (``imitlab demos play``).

Episodes store only the policy's camera images, so by default the video is that camera upscaled with the
recorded action drawn beside it. ``resimulate=True`` instead replays the executed actions from the
episode's seed in a fresh env and films the env's third-person ``rgb_array`` view; it also checks that the
replayed observations match the recorded ones (they must: same seed, same actions, deterministic env).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from imitlab.core.errors import ImitlabError
from imitlab.core.observation_keys import is_image_sequence
from imitlab.demos.dataset import DemoDataset, Episode, read_episode_file
from imitlab.envs import CategoryNames, action_labels, env_class, state_labels
from imitlab.evaluation.video import annotate_frame, outcome_card, write_mp4

#: Height in pixels of the upscaled camera view in a stored-frames video.
PLAY_HEIGHT = 240


@dataclass
class PlayResult:
    """One written video."""

    episode: str
    video: Path
    frames: int
    diverged_at: int | None = None
    """Re-simulation only: first step whose observation differs from the recording (None: identical)."""


def resolve_episodes(dataset: DemoDataset, selectors: Sequence[str]) -> list[Path]:
    """Episode files named by stem (``demo_000003``) or by number (``3``); all of them if none given."""
    paths = dataset.episode_paths()
    if not selectors:
        return paths
    by_name = {p.stem: p for p in paths}
    chosen = []
    for sel in selectors:
        name = f"demo_{int(sel):06d}" if re.fullmatch(r"\d+", sel) else sel
        if name not in by_name:
            raise ImitlabError(f"no episode {sel!r} in {dataset.path} (episodes: {len(paths)}, "
                               f"{paths[0].stem if paths else '-'} .. {paths[-1].stem if paths else '-'})")
        chosen.append(by_name[name])
    return chosen


def _image_keys(episode: Episode) -> list[str]:
    return sorted(k for k, v in episode.obs.items() if is_image_sequence(v))


def _caption(name: str, episode: Episode, step: int) -> str:
    attrs = episode.attrs
    return f"{name}  seed {attrs.get('seed', '?')}  {attrs.get('source', '')}  step {step}/{len(episode)}"


def _state(episode: Episode, t: int) -> np.ndarray | None:
    return episode.obs["state"][t] if "state" in episode.obs else None


def _with_outcome_card(frames: list[np.ndarray], episode: Episode, fps: float) -> list[np.ndarray]:
    """The frames plus one second of the outcome card (the outcome is known only at the end of a clip)."""
    card = outcome_card(frames[-1], bool(episode.attrs.get("success")),
                        float(episode.attrs.get("return", float(np.sum(episode.rewards)))), len(episode))
    return frames + [card] * max(1, int(fps))


def _stored_frames(name: str, episode: Episode, labels: list[str], names: list[str],
                   categories: CategoryNames) -> list[np.ndarray]:
    keys = _image_keys(episode)
    if not keys:
        raise ImitlabError(f"episode {name} has no camera images to play; use --resimulate")
    main = "image" if "image" in keys else keys[0]
    others = [k for k in keys if k != main]
    frames = []
    for t in range(len(episode)):
        big = cv2.resize(episode.obs[main][t], (PLAY_HEIGHT, PLAY_HEIGHT), interpolation=cv2.INTER_NEAREST)
        step = {k: episode.obs[k][t] for k in categories.keys}
        frames.append(annotate_frame(big, [episode.obs[k][t] for k in others], episode.actions[t], labels,
                                     _caption(name, episode, t), state=_state(episode, t), state_labels=names,
                                     categories=categories.lines(step)))
    return frames


def _resimulated_frames(dataset: DemoDataset, name: str, episode: Episode, labels: list[str], names: list[str],
                        categories: CategoryNames) -> tuple[list[np.ndarray], int | None]:
    from imitlab.envs import make_env

    env = make_env(dataset.env_id, render_mode="rgb_array", **dataset.env_kwargs)
    try:
        perturb = episode.attrs.get("perturb")  # domain randomisation at record time
        obs, _ = env.reset(seed=int(episode.attrs["seed"]), options=None if perturb is None else {"perturb": perturb})
        keys = _image_keys(episode)
        frames, diverged = [], None
        for t in range(len(episode)):
            if diverged is None and any(not np.array_equal(obs[k], episode.obs[k][t]) for k in episode.obs):
                diverged = t
            frames.append(annotate_frame(env.render(), [obs[k] for k in keys], episode.actions[t], labels,
                                         _caption(name, episode, t), state=obs.get("state"), state_labels=names,
                                         categories=categories.lines(obs)))
            obs, _, terminated, truncated, _ = env.step(episode.executed_actions[t])
            if (terminated or truncated) and t < len(episode) - 1 and diverged is None:
                diverged = t + 1
                break
        return frames, diverged
    finally:
        env.close()


def play(dataset: DemoDataset, selectors: Sequence[str], out_dir: Path, resimulate: bool = False) -> list[PlayResult]:
    """Write ``<out_dir>/<episode>.mp4`` for each selected episode."""
    labels = action_labels(dataset.env_id, int(dataset.action_space.shape[0]))
    state_space = dataset.observation_space.spaces.get("state")
    names = state_labels(dataset.env_id, int(state_space.shape[0])) if state_space is not None else []
    cls = env_class(dataset.env_id)
    fps = float(getattr(cls, "metadata", {}).get("render_fps", 10)) if cls is not None else 10.0
    categories = CategoryNames(dataset.env_id, dataset.observation_space)
    results = []
    for path in resolve_episodes(dataset, selectors):
        episode = read_episode_file(path)
        diverged = None
        if resimulate:
            if "seed" not in episode.attrs:
                raise ImitlabError(f"episode {path.stem} ({path}) has no seed to re-simulate")
            frames, diverged = _resimulated_frames(dataset, path.stem, episode, labels, names, categories)
        else:
            frames = _stored_frames(path.stem, episode, labels, names, categories)
        video = write_mp4(out_dir / f"{path.stem}.mp4", _with_outcome_card(frames, episode, fps), fps)
        results.append(PlayResult(episode=path.stem, video=video, frames=len(frames), diverged_at=diverged))
    return results
