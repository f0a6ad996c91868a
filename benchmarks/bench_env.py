"""Env throughput: control steps per second in one process, camera render included.

Actions come from the env's expert so episodes look like real data collection (the expert's own cost is
excluded from the step timing). Prints steps/s for env.step alone, including resets, and with the
``rgb_array`` video frame rendered every step. Each configuration runs ``--repeats`` times and the best run
is reported, as timeit does: on a shared machine the slower runs measure the neighbours.

    python benchmarks/bench_env.py --env imitlab/LaneFollow-v0 --sizes 84 96 --steps 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import time

from imitlab.envs import make_env, make_expert


def bench(env_id: str, image_size: int, steps: int, render_mode: str | None) -> tuple[float, float]:
    """(steps/s of env.step [+ render], steps/s including resets) over ``steps`` control steps."""
    env = make_env(env_id, image_size=image_size, render_mode=render_mode)
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    expert.reset()
    step_time, episode = 0.0, 0
    start = time.perf_counter()
    for _ in range(steps):
        action = expert.act(obs)
        t0 = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(action)
        if render_mode is not None:
            env.render()
        step_time += time.perf_counter() - t0
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=episode)
            expert.reset()
    total = time.perf_counter() - start
    env.close()
    return steps / step_time, steps / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="imitlab/LaneFollow-v0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[84, 96])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for size in args.sizes:
        for render_mode in (None, "rgb_array"):
            runs = [bench(args.env, size, args.steps, render_mode) for _ in range(args.repeats)]
            step_rate, overall = max(runs)
            label = "step + rgb_array frame" if render_mode else "step"
            print(
                f"{args.env} image {size}px, {label}: {step_rate:.0f} steps/s "
                f"({overall:.0f} steps/s including expert and resets)",
                flush=True,
            )


if __name__ == "__main__":
    main()
