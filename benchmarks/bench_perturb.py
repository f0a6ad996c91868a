"""What a perturbation costs: env steps/s with each perturbation at one severity, as a ratio to the clean env.

The clean env and every perturbed one run the same expert-driven steps in one process, interleaved round by
round, so a busy machine slows them alike and the ratios stay meaningful; each configuration's best round is
kept (as timeit does). Resets are included: model-level perturbations act there.

    python benchmarks/bench_perturb.py --env imitlab/Push-v0 --image-size 84 --steps 300 --rounds 3
"""

from __future__ import annotations

import argparse
import time

from imitlab.envs import make_env, make_expert
from imitlab.envs.perturb import PERTURBATIONS


def steps_per_second(env_id: str, image_size: int, perturb: dict[str, int], steps: int) -> float:
    """Control steps per second (env.step and resets, not the expert) over ``steps`` steps from seed 0 on."""
    env = make_env(env_id, image_size=image_size, perturb=perturb)
    expert = make_expert(env)
    elapsed, episode = 0.0, 0
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=episode)
    elapsed += time.perf_counter() - t0
    expert.reset()
    for _ in range(steps):
        action = expert.act(obs)
        t0 = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=episode)
        elapsed += time.perf_counter() - t0
        if terminated or truncated:
            expert.reset()
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="imitlab/Push-v0")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configs = {"clean": {}} | {name: {name: args.severity} for name in PERTURBATIONS}
    best = {name: 0.0 for name in configs}
    for _ in range(args.rounds):
        for name, perturb in configs.items():
            best[name] = max(best[name], steps_per_second(args.env, args.image_size, perturb, args.steps))
    print(f"{args.env} at {args.image_size} px, severity {args.severity}, best of {args.rounds} x {args.steps} steps")
    for name, rate in best.items():
        print(f"{name:>14}: {rate:7.1f} steps/s ({rate / best['clean']:.2f} x clean)")


if __name__ == "__main__":
    main()
