"""Find suspicious demonstrations before they are trained on: every flag names the episode and says why.

Every array of every episode is read, images included, so a damaged file is found (and reported as a
``corrupt`` flag) by the audit rather than halfway through training. Thresholds are relative where possible
(episode length vs. the dataset median) because "too short" means different things on different tasks.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imitlab.core.errors import ImitlabError
from imitlab.core.observation_keys import is_image_sequence
from imitlab.demos.dataset import DemoDataset, file_attrs, open_episode_file

#: Every check's code, in the order reports list them.
CHECKS = ("corrupt", "failed", "too_short", "too_long", "non_finite", "saturated", "jerky", "idle", "duplicate")


@dataclass
class AuditConfig:
    """Thresholds of the checks."""

    short_ratio: float = 0.5
    """Flag episodes shorter than this times the median length."""
    long_ratio: float = 2.0
    """Flag episodes longer than this times the median length."""
    saturation_fraction: float = 0.5
    """Flag when more than this fraction of the action values sit at the +-1 limits."""
    saturation_level: float = 0.999
    """|action| at or above this counts as saturated."""
    jerk_step: float = 1.0
    """A step-to-step change of any action dimension above this (half the [-1, 1] range) is a jump ..."""
    jerk_fraction: float = 0.05
    """... and more than this fraction of steps with a jump flags the episode as jerky."""
    idle_tolerance: float = 1e-4
    """A step is idle when its state changes by at most this (max over dimensions) ..."""
    idle_image_tolerance: float = 0.5
    """... and every camera image by at most this (mean absolute change, in 0-255 levels): a car cruising
    at constant speed has a constant state, but its camera view moves ..."""
    idle_steps: int = 20
    """... and this many consecutive idle steps flag the episode."""


@dataclass
class Flag:
    """One finding: which episode, which check, and a sentence explaining it."""

    episode: str
    check: str
    reason: str


@dataclass
class AuditReport:
    """All findings of one audit."""

    dataset: str
    episodes: int
    flags: list[Flag] = field(default_factory=list)
    config: AuditConfig = field(default_factory=AuditConfig)

    def flagged(self, checks: set[str] | None = None) -> set[str]:
        """Names of episodes with at least one flag (of the given checks, or any)."""
        return {f.episode for f in self.flags if checks is None or f.check in checks}

    def counts(self) -> dict[str, int]:
        """Number of flags per check, for the checks that fired."""
        return {c: n for c in CHECKS if (n := sum(f.check == c for f in self.flags))}

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "episodes": self.episodes,
            "flagged_episodes": len(self.flagged()),
            "counts": self.counts(),
            "flags": [asdict(f) for f in self.flags],
            "config": asdict(self.config),
        }


@dataclass
class _EpisodeDigest:
    """What the checks need from one episode file."""

    name: str
    attrs: dict[str, Any]
    actions: np.ndarray
    float_arrays: dict[str, np.ndarray]
    state: np.ndarray | None
    first_frames: bytes
    image_change: np.ndarray | None
    """Per step, the largest mean absolute pixel change (0-255) over the cameras; None without cameras."""


def _digest(path: Path) -> _EpisodeDigest:
    """Read the whole episode (decoding every frame validates the compressed data) and keep what the checks need."""
    with open_episode_file(path) as f:
        obs = f["obs"]
        floats = {"actions": f["actions"][()], "rewards": f["rewards"][()]}
        first = hashlib.sha1()
        change = None
        for key in sorted(obs):
            ds = obs[key]
            if is_image_sequence(ds):
                frames = ds[()]
                first.update(key.encode() + frames[:1].tobytes())
                step = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
                change = step if change is None else np.maximum(change, step)
            else:
                floats[f"obs/{key}"] = ds[()]
        attrs = file_attrs(f)
    return _EpisodeDigest(
        name=path.stem,
        attrs=attrs,
        actions=floats["actions"],
        float_arrays=floats,
        state=floats.get("obs/state"),
        first_frames=first.digest(),
        image_change=change,
    )


def _longest_run(still: np.ndarray) -> tuple[int, int]:
    """Length and start of the longest run of True steps."""
    longest = start = run = 0
    for i, value in enumerate(still):
        run = run + 1 if value else 0
        if run > longest:
            longest, start = run, i - run + 1
    return longest, start


def _idle_run(ep: _EpisodeDigest, cfg: AuditConfig) -> tuple[int, int]:
    """Longest stretch (length, first step) with neither the state nor any camera changing."""
    if ep.state is None or len(ep.state) < 2:
        return 0, 0
    still = np.max(np.abs(np.diff(ep.state.astype(np.float64), axis=0)), axis=1) <= cfg.idle_tolerance
    if ep.image_change is not None:
        still &= ep.image_change <= cfg.idle_image_tolerance
    return _longest_run(still)


def _episode_flags(ep: _EpisodeDigest, median_length: float, cfg: AuditConfig) -> list[Flag]:
    flags = []
    n = len(ep.actions)
    if ep.attrs.get("success") is False:
        how = "ended early (terminated)" if ep.attrs.get("terminated") else "did not reach the goal"
        episode_return = float(ep.attrs.get("return", float("nan")))
        flags.append(Flag(ep.name, "failed", f"demonstrator failed: {how}, return {episode_return:.2f}"))
    if n < cfg.short_ratio * median_length:
        flags.append(Flag(ep.name, "too_short", f"{n} steps, under {cfg.short_ratio:g} x the median {median_length:g}"))
    if n > cfg.long_ratio * median_length:
        flags.append(Flag(ep.name, "too_long", f"{n} steps, over {cfg.long_ratio:g} x the median {median_length:g}"))
    bad = [f"{key} ({int(np.size(v) - np.isfinite(v).sum())} values)" for key, v in ep.float_arrays.items()
           if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
    if bad:
        flags.append(Flag(ep.name, "non_finite", "NaN/inf in " + ", ".join(bad)))
    finite_actions = np.nan_to_num(ep.actions.astype(np.float64), nan=0.0)
    if finite_actions.size:
        saturated = float(np.mean(np.abs(finite_actions) >= cfg.saturation_level))
        if saturated > cfg.saturation_fraction:
            flags.append(Flag(ep.name, "saturated", f"{100 * saturated:.0f} % of action values at the +-1 limits"))
    if n > 1:
        jumps = np.max(np.abs(np.diff(finite_actions, axis=0)), axis=1) > cfg.jerk_step
        if jumps.mean() > cfg.jerk_fraction:
            flags.append(Flag(ep.name, "jerky", f"{int(jumps.sum())} of {n - 1} steps change an action by more "
                                                f"than {cfg.jerk_step:g}"))
    idle, start = _idle_run(ep, cfg)
    if idle >= cfg.idle_steps:
        flags.append(Flag(ep.name, "idle", f"state and cameras unchanged for {idle} consecutive steps "
                                           f"(from step {start})"))
    return flags


def _duplicate_flags(digests: list[_EpisodeDigest]) -> list[Flag]:
    """Flag each episode that repeats an earlier one (the first occurrence stays clean, so filtering keeps it)."""
    flags = []
    by_seed: dict[tuple, str] = {}
    by_actions: dict[bytes, str] = {}
    by_frame: dict[bytes, tuple[str, Any]] = {}
    for ep in digests:
        reasons: dict[str, list[str]] = {}
        seed_key = (ep.attrs.get("seed"), ep.attrs.get("source"), ep.attrs.get("noise_std"))
        if ep.attrs.get("seed") is not None:
            if seed_key in by_seed:
                reasons.setdefault(by_seed[seed_key], []).append(f"same seed {seed_key[0]}, source and noise")
            by_seed.setdefault(seed_key, ep.name)
        action_hash = hashlib.sha1(ep.actions.tobytes()).digest()
        if action_hash in by_actions:
            reasons.setdefault(by_actions[action_hash], []).append("identical action sequence")
        by_actions.setdefault(action_hash, ep.name)
        if ep.first_frames in by_frame and by_frame[ep.first_frames][1] != ep.attrs.get("seed"):
            # Same seed -> same first frame by design; only a match across different seeds is suspicious.
            reasons.setdefault(by_frame[ep.first_frames][0], []).append("identical first frame under a different seed")
        by_frame.setdefault(ep.first_frames, (ep.name, ep.attrs.get("seed")))
        for other, why in reasons.items():
            flags.append(Flag(ep.name, "duplicate", f"near-duplicate of {other}: {', '.join(why)}"))
    return flags


def audit(dataset: DemoDataset, config: AuditConfig | None = None) -> AuditReport:
    """Run every check on every episode; an unreadable file is reported as a ``corrupt`` flag, not raised."""
    config = config or AuditConfig()
    paths = dataset.episode_paths()
    report = AuditReport(dataset=str(dataset.path), episodes=len(paths), config=config)
    digests = []
    for path in paths:
        try:
            digests.append(_digest(path))
        except ImitlabError as exc:
            report.flags.append(Flag(path.stem, "corrupt", str(exc)))
    if digests:
        median_length = float(np.median([len(d.actions) for d in digests]))
        for ep in digests:
            report.flags.extend(_episode_flags(ep, median_length, config))
        report.flags.extend(_duplicate_flags(digests))
    order = {p.stem: i for i, p in enumerate(paths)}
    report.flags.sort(key=lambda f: (order[f.episode], CHECKS.index(f.check)))
    return report
