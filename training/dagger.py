"""DAgger (Ross et al. 2011): let the policy drive, have the expert label what it should have done, retrain.

Behaviour cloning only sees states the expert visits; a cloned policy drifts into states it never saw.
Each DAgger round rolls out a mixture (the expert acts with probability ``beta``, the policy otherwise, per
step), records the expert's action as the label in every visited state, adds those episodes to the data and
fine-tunes from the previous round's weights. The input dataset is never modified: new episodes go to
``<out>/dagger_demos``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import claim_out_dir
from imitlab.core.seeds import DAGGER_SEED_START
from imitlab.demos.dataset import DemoDataset, DemoWriter
from imitlab.demos.recorder import collect_episode
from imitlab.envs import make_env, make_expert
from imitlab.policies import load_policy
from imitlab.training.bc import DAGGER_SOURCE, train
from imitlab.training.checkpoints import rollout_score
from imitlab.training.config import RUN_CONFIG, DaggerConfig, save_dagger_config


def run_dagger(config: DaggerConfig) -> dict[str, Any]:
    """Run DAgger; returns the per-round log.

    Every round keeps its own ``<out>/round_<i>/best``; the one with the best validation rollouts is copied to
    ``<out>/best`` (chosen like every checkpoint: by closed-loop success, then return).
    """
    out = Path(config.train.out)
    if config.train.resume:
        raise ImitlabError("--resume continues a behaviour-cloning run; a DAgger run cannot be resumed")
    if config.train.history > 1:
        raise ImitlabError("DAgger's rollouts act on one frame at a time; a policy with history > 1 cannot drive them")
    dataset = DemoDataset(config.train.dataset)
    # The folder is this run's alone: its DAgger episodes are never appended to an earlier run's.
    claim_out_dir(out, config.train.overwrite)
    save_dagger_config(out / RUN_CONFIG, config)
    rounds = replace(config.train, overwrite=False)
    first = replace(rounds, out=str(out / "round_0"))
    log: dict[str, Any] = {"rounds": [{"round": 0, "bc": train(first)["best"]}]}
    dagger_demos = out / "dagger_demos"
    env = make_env(dataset.env_id, **dataset.env_kwargs)
    try:
        writer = DemoWriter(dagger_demos, dataset.env_id, dataset.env_kwargs, env.observation_space, env.action_space)
        expert = make_expert(env)
        for round_index in range(1, config.rounds + 1):
            beta = config.beta * config.beta_decay ** (round_index - 1)
            policy, _ = load_policy(out / f"round_{round_index - 1}" / "best")
            seeds = range(DAGGER_SEED_START + (round_index - 1) * config.episodes,
                          DAGGER_SEED_START + round_index * config.episodes)
            successes = 0
            for seed in tqdm(seeds, desc=f"dagger round {round_index} (beta {beta:.2f})", unit="ep",
                             disable=not config.train.progress):
                episode = collect_episode(env, expert.act, seed, on_reset=expert.reset,
                                          executor=_mixture(policy.predict, beta, seed))
                episode.attrs.update(source=DAGGER_SOURCE, beta=beta, env_id=dataset.env_id,
                                     env_kwargs=dataset.env_kwargs)
                writer.append(episode)
                successes += int(episode.attrs["success"])
            run = replace(rounds, out=str(out / f"round_{round_index}"),
                          extra_datasets=(*config.train.extra_datasets, str(dagger_demos)),
                          init_policy=str(out / f"round_{round_index - 1}" / "best"),
                          epochs=config.epochs or config.train.epochs)
            best = train(run)["best"]
            log["rounds"].append({"round": round_index, "beta": beta, "collected": len(seeds),
                                  "mixture_success_rate": successes / len(seeds), "bc": best})
            (out / "dagger_log.json").write_text(json.dumps(log, indent=2, default=str))
    finally:
        env.close()
    chosen = max(log["rounds"], key=lambda r: rollout_score(r["bc"]["rollout"]))
    shutil.rmtree(out / "best", ignore_errors=True)
    shutil.copytree(out / f"round_{chosen['round']}" / "best", out / "best")
    log["chosen_round"] = chosen["round"]
    (out / "dagger_log.json").write_text(json.dumps(log, indent=2, default=str))
    return log


def _mixture(predict, beta: float, seed: int):
    """Per step: the expert's label with probability ``beta``, else the policy's action (seeded per episode)."""
    rng = np.random.default_rng([seed, 0xDA66E7])

    def execute(obs: dict[str, np.ndarray], label: np.ndarray) -> np.ndarray:
        return label if rng.random() < beta else np.asarray(predict(obs), dtype=np.float32)

    return execute
