"""Run an expert (optionally with DART noise) for N seeded episodes and append them to a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import DEMO_SEED_START
from imitlab.demos.dataset import HEADER, DemoDataset, DemoWriter, Episode
from imitlab.envs import make_env, make_expert
from imitlab.envs.perturb import check_perturbable, parse_names, random_severities

#: Maps an observation to an action (an expert's ``act``, a policy's ``predict``, a human's keys).
ActionSource = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class RecordSummary:
    """What a recording run wrote."""

    path: Path
    episodes: int
    steps: int
    successes: int


def collect_episode(env: gym.Env, act: ActionSource, seed: int, noise_std: float = 0.0,
                    on_reset: Callable[[], None] | None = None,
                    executor: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray] | None = None,
                    options: dict[str, Any] | None = None) -> Episode:
    """Roll out one episode from ``seed``; ``act`` gives the label recorded at every step.

    DART (Laskey et al. 2017): the executed action is the label plus Gaussian noise, so the demos visit the
    states a slightly wrong policy would reach; the recorded label stays the clean action, which teaches the
    policy how to recover. ``executor(obs, label)``, when given, chooses the executed action instead of the
    label (DAgger: the policy drives, the expert labels). ``options`` go to ``env.reset`` (e.g. a perturbation).
    """
    obs, _ = env.reset(seed=seed, options=options)
    if on_reset is not None:
        on_reset()
    noise_rng = np.random.default_rng([seed, 0xDA27])
    low, high = env.action_space.low, env.action_space.high
    frames: dict[str, list[np.ndarray]] = {k: [] for k in obs}
    labels, executed, rewards = [], [], []
    terminated = truncated = False
    info: dict[str, Any] = {}
    while not (terminated or truncated):
        label = np.asarray(act(obs), dtype=np.float32)
        action = label if executor is None else np.asarray(executor(obs, label), dtype=np.float32)
        if noise_std > 0:
            action = np.clip(action + noise_rng.normal(0.0, noise_std, label.shape), low, high).astype(np.float32)
        for key, value in obs.items():
            frames[key].append(value)
        labels.append(label)
        executed.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
    dones = np.zeros(len(labels), dtype=np.uint8)
    dones[-1] = 1
    metrics = {k: float(v) for k, v in info.items() if isinstance(v, (float, np.floating)) and k != "is_success"}
    return Episode(
        obs={k: np.stack(v) for k, v in frames.items()},
        actions=np.stack(labels),
        executed_actions=np.stack(executed),
        rewards=np.asarray(rewards, dtype=np.float32),
        dones=dones,
        final_obs=dict(obs),
        attrs={
            "seed": int(seed),
            "success": bool(info.get("is_success", False)),
            "return": float(np.sum(rewards)),
            "length": len(labels),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "noise_std": float(noise_std),
            "final_metrics": metrics,
        },
    )


def first_seed(out: str | Path, episodes: int, seed_start: int | None) -> int:
    """The first seed of a recording into ``out``: ``seed_start`` if given (refused when the dataset already holds
    one of the seeds it would record), else 0 for a new dataset and the seed after its last one for an existing
    one, so recording twice into one folder never duplicates a seed."""
    held = ({int(a["seed"]) for a in DemoDataset(out).episode_attrs() if "seed" in a}
            if (Path(out) / HEADER).is_file() else set())
    if seed_start is None:
        if held:
            tqdm.write(f"{out} holds seeds up to {max(held)}: recording continues at seed {max(held) + 1}")
        return max(held) + 1 if held else DEMO_SEED_START
    taken = sorted(held & set(range(seed_start, seed_start + episodes)))
    if taken:
        raise ImitlabError(f"{out} already holds {len(taken)} of seeds {seed_start}..{seed_start + episodes - 1} "
                           f"(first: {taken[0]}): pass --seed-start {max(held) + 1}, or omit it to continue after "
                           "the last seed")
    return seed_start


def record(env_id: str, out: str | Path, episodes: int, seed_start: int | None = None, noise_std: float = 0.0,
           env_kwargs: dict[str, Any] | None = None, progress: bool = True,
           randomize: Sequence[str] = ()) -> RecordSummary:
    """Record ``episodes`` expert episodes on seeds ``seed_start, seed_start+1, ...`` into ``out``
    (``seed_start`` as :func:`first_seed` chooses it).

    Each episode is on disk (atomically) before the next starts, so an interrupted run keeps what it finished.
    ``randomize`` (perturbation names, see ``imitlab.envs.perturb``): domain randomisation, a severity 0-5 of each
    drawn per episode from its seed and stored in the episode's ``perturb`` attribute, so it re-simulates.
    """
    env_kwargs = dict(env_kwargs or {})
    randomize = parse_names(list(randomize)) if randomize else []
    check_perturbable(env_id, {name: 1 for name in randomize})
    seed_start = first_seed(out, episodes, seed_start)
    env = make_env(env_id, **env_kwargs)
    try:
        writer = DemoWriter(out, env_id, env_kwargs, env.observation_space, env.action_space)
        expert = make_expert(env)
        source = "noisy_expert" if noise_std > 0 else "expert"
        steps = successes = 0
        bar = tqdm(range(seed_start, seed_start + episodes), desc=f"record {env_id}", unit="ep", disable=not progress)
        for done, seed in enumerate(bar, start=1):
            perturb = random_severities(randomize, seed) if randomize else None
            episode = collect_episode(env, expert.act, seed, noise_std, on_reset=expert.reset,
                                      options={"perturb": perturb} if randomize else None)
            episode.attrs.update(source=source, env_id=env_id, env_kwargs=env_kwargs)
            if randomize:
                episode.attrs["perturb"] = perturb
            writer.append(episode)
            steps += len(episode)
            successes += int(episode.attrs["success"])
            bar.set_postfix(success=f"{successes}/{done}", steps=steps)
    finally:
        env.close()
    return RecordSummary(path=Path(out), episodes=episodes, steps=steps, successes=successes)
