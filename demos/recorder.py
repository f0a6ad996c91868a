"""Run an expert (optionally with DART noise) for N seeded episodes and append them to a dataset."""

from __future__ import annotations

import functools
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import DEMO_SEED_START
from imitlab.demos.dataset import HEADER, DemoDataset, DemoWriter, Episode, encode_episode
from imitlab.envs import make_env, make_expert, time_limit_s
from imitlab.envs.perturb import check_perturbable, parse_names, random_severities
from imitlab.evaluation.workers import EpisodePool, check_backend, open_pool

#: Maps an observation to an action (an expert's ``act``, a policy's ``predict``, a human's keys).
ActionSource = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class RecordSummary:
    """What a recording run wrote."""

    path: Path
    episodes: int
    steps: int
    successes: int
    retried: int = 0
    """Episodes run again because their worker died or hung."""


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


@dataclass
class EncodedEpisode:
    """One recorded episode as its HDF5 file's bytes (what a worker hands the writer), or why it failed."""

    seed: int
    data: bytes = b""
    steps: int = 0
    success: bool = False
    error_kind: str | None = None
    error: str | None = None

    @classmethod
    def errored(cls, seed: int, kind: str, reason: str) -> EncodedEpisode:
        return cls(seed=int(seed), error_kind=kind, error=reason)


class RecordRunner:
    """An env and its expert, reused for every episode; ``run`` records one seed and encodes it.

    ``one_thread``: a worker process keeps Mesa's rasteriser to one thread, so N workers do not fight over the
    cores (pixels do not depend on it).
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], noise_std: float, randomize: Sequence[str],
                 one_thread: bool = False):
        if one_thread:
            os.environ.setdefault("LP_NUM_THREADS", "1")
        self.env_id, self.env_kwargs, self.noise_std, self.randomize = env_id, env_kwargs, noise_std, list(randomize)
        self.env = make_env(env_id, **env_kwargs)
        self.expert = make_expert(self.env)
        self.time_limit_s = time_limit_s(self.env)

    def run(self, seed: int, with_video: bool = False) -> EncodedEpisode:
        perturb = random_severities(self.randomize, seed) if self.randomize else None
        episode = collect_episode(self.env, self.expert.act, seed, self.noise_std, on_reset=self.expert.reset,
                                  options={"perturb": perturb} if perturb is not None else None)
        episode.attrs.update(source="noisy_expert" if self.noise_std > 0 else "expert", env_id=self.env_id,
                             env_kwargs=self.env_kwargs)
        if perturb is not None:
            episode.attrs["perturb"] = perturb
        return EncodedEpisode(int(seed), encode_episode(episode), len(episode), bool(episode.attrs["success"]))

    def close(self) -> None:
        self.env.close()


def record(env_id: str, out: str | Path, episodes: int, seed_start: int | None = None, noise_std: float = 0.0,
           env_kwargs: dict[str, Any] | None = None, progress: bool = True, randomize: Sequence[str] = (),
           workers: int | None = 1, backend: str = "local", address: str | None = None,
           retries: int = 2) -> RecordSummary:
    """Record ``episodes`` expert episodes on seeds ``seed_start, seed_start+1, ...`` into ``out``
    (``seed_start`` as :func:`first_seed` chooses it).

    ``workers`` > 1 (None: one per core or Ray CPU) or ``backend="ray"`` runs the episodes in worker processes
    or Ray actors (``evaluation.workers.open_pool``); each worker compresses its episode's file in memory and
    this process alone writes the files, in seed order, each atomically. An episode is the same whichever
    worker ran it, since it depends only on its seed. A worker that dies or hangs is replaced and its episode
    run again (``retries`` times); an episode that still fails is one error line after every other episode is
    written. Each episode is on disk before an interrupted run stops, so it keeps what it finished.
    ``randomize`` (perturbation names, see ``imitlab.envs.perturb``): domain randomisation, a severity 0-5 of each
    drawn per episode from its seed and stored in the episode's ``perturb`` attribute, so it re-simulates.
    """
    env_kwargs = dict(env_kwargs or {})
    check_backend(backend)
    randomize = parse_names(list(randomize)) if randomize else []
    check_perturbable(env_id, {name: 1 for name in randomize})
    start = first_seed(out, episodes, seed_start)
    seeds = list(range(start, start + episodes))
    summary = RecordSummary(path=Path(out), episodes=0, steps=0, successes=0)
    runner = RecordRunner(env_id, env_kwargs, noise_std, randomize) if workers == 1 and backend == "local" else None
    try:
        if runner is not None:
            writer = _open_writer(out, env_id, env_kwargs, runner.env)
        else:
            probe = make_env(env_id, **env_kwargs)  # the spaces for the header; the workers build their own
            try:
                writer = _open_writer(out, env_id, env_kwargs, probe)
            finally:
                probe.close()
        bar = tqdm(total=episodes, desc=f"record {env_id}", unit="ep", disable=not progress)

        def write(episode: EncodedEpisode) -> None:
            writer.append_encoded(episode.data)
            summary.episodes += 1
            summary.steps += episode.steps
            summary.successes += int(episode.success)
            bar.set_postfix(success=f"{summary.successes}/{summary.episodes}", steps=summary.steps)

        try:
            if runner is not None:
                for seed in seeds:
                    write(runner.run(seed))
                    bar.update()
            else:
                factory = functools.partial(RecordRunner, env_id, env_kwargs, noise_std, randomize, one_thread=True)
                _record_in_pool(open_pool(backend, factory, workers, address, errored=EncodedEpisode.errored,
                                          retries=retries), seeds, write, bar, summary)
        finally:
            bar.close()
    finally:
        if runner is not None:
            runner.close()
    return summary


def _open_writer(out: str | Path, env_id: str, env_kwargs: dict[str, Any], env: gym.Env) -> DemoWriter:
    return DemoWriter(out, env_id, env_kwargs, env.observation_space, env.action_space)


def _record_in_pool(pool: EpisodePool[EncodedEpisode], seeds: list[int], write: Callable[[EncodedEpisode], None],
                    bar: tqdm, summary: RecordSummary) -> None:
    """Run ``seeds`` in ``pool`` and write each episode once every earlier seed is written (episode files stay in
    seed order); on an error or interrupt the episodes already back are written before it propagates."""
    order = deque(seeds)
    back: dict[int, EncodedEpisode] = {}
    failed: list[EncodedEpisode] = []

    def drain(everything: bool) -> None:
        while order and (everything or order[0] in back):
            episode = back.pop(order.popleft(), None)
            if episode is None:
                continue
            if episode.error_kind:
                failed.append(episode)
            else:
                write(episode)

    try:
        with pool:
            for episode in pool.run((seed, False) for seed in seeds):
                back[episode.seed] = episode
                bar.update()
                drain(everything=False)
            summary.retried = pool.retried
    finally:
        drain(everything=True)
    if failed:
        lines = "; ".join(f"seed {e.seed}: {e.error_kind}: {e.error}" for e in failed[:3])
        raise ImitlabError(f"{len(failed)} of {len(seeds)} episodes failed ({lines}); the other "
                           f"{summary.episodes} are in {summary.path}")
