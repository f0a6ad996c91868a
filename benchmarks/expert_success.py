"""Success rate of an env's privileged expert over seeded episodes (a demo set is only as good as its expert).

    python benchmarks/expert_success.py --env imitlab/LaneFollow-v0 --episodes 100
    python benchmarks/expert_success.py --env imitlab/Town-v0 --episodes 200 --image-size 32 \
        --env-kwargs '{"town": 0, "traffic": 20, "task": "navigation"}'
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from imitlab.envs import make_env, make_expert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="imitlab/LaneFollow-v0")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="first seed; episode i uses seed + i")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="env constructor kwargs as a JSON object")
    parser.add_argument("--verbose", action="store_true", help="print one line per episode")
    args = parser.parse_args()

    env = make_env(args.env, image_size=args.image_size, **args.env_kwargs)
    expert = make_expert(env)
    metrics: dict[str, str] = dict(env.unwrapped.METRICS)
    successes, lengths, failed = 0, [], []
    totals: dict[str, list[float]] = {name: [] for name in metrics}
    start = time.perf_counter()
    for episode in range(args.episodes):
        seed = args.seed + episode
        obs, info = env.reset(seed=seed)
        expert.reset()
        values: dict[str, list[float]] = {name: [] for name in metrics}
        steps, done = 0, False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            steps += 1
            done = terminated or truncated
            for name in metrics:
                values[name].append(float(info[name]))
        for name, how in metrics.items():
            totals[name].append(values[name][-1] if how == "last" else float(np.mean(np.abs(values[name]))))
        successes += bool(info["is_success"])
        if not info["is_success"]:
            failed.append(seed)
        lengths.append(steps)
        if args.verbose:
            summary = " ".join(f"{name}={totals[name][-1]:.3f}" for name in metrics)
            print(f"seed {seed}: success={bool(info['is_success'])} steps={steps} {summary}", flush=True)
    elapsed = time.perf_counter() - start

    print(f"env {args.env} {json.dumps(args.env_kwargs)}, seeds {args.seed}..{args.seed + args.episodes - 1}: expert success {successes}/{args.episodes} = {successes / args.episodes:.1%}")
    print(f"episode length: mean {np.mean(lengths):.1f}, min {min(lengths)}, max {max(lengths)} steps")
    for name, how in metrics.items():
        print(f"{name} ({how}): mean {np.mean(totals[name]):.3f}")
    if failed:
        print(f"failed seeds: {failed}")
    print(f"throughput: {sum(lengths) / elapsed:.0f} steps/s (expert + env, including resets)")
    env.close()


if __name__ == "__main__":
    main()
