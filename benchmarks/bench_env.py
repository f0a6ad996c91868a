"""Env throughput against each env's own limit: physics plus one camera render per control step.

For every task, in one process: control steps/s of the expert loop with resets (what recording does), the bound
``1 / (physics + one observation render)`` measured on the same env in the same run, their ratio, and the cost
of one reset against one step. Times are CPU seconds of this process (all its threads, the GL renderer's too),
which stay meaningful when other jobs share the cores; each figure is the best of ``--repeats`` runs, as timeit
does. The ratios hold from machine to machine; the absolute rates do not.

    python benchmarks/bench_env.py --size 84 --steps 600 --repeats 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from imitlab.envs import TASKS, make_env, make_expert  # first: picks the headless GL backend before mujoco loads

import gymnasium as gym  # noqa: E402  isort: skip
import mujoco  # noqa: E402  isort: skip


def limit_parts(env: gym.Env) -> dict[str, Callable[[], object]]:
    """One control step's physics and one observation render, on the env's current state."""
    inner = env.unwrapped
    if hasattr(inner, "rig"):  # tabletop arm: cameras in a rig, IK excluded (it is part of the env's work)
        return {
            "physics": lambda: mujoco.mj_step(inner.model, inner.data, nstep=inner.substeps),
            "render": lambda: inner.rig.observe(inner.data),
        }
    return {  # the driving tasks: a Car and their own observation method
        "physics": lambda: mujoco.mj_step(inner.model, inner.data, nstep=inner.car.substeps),
        "render": inner._observation,
    }


def cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def bench(env_id: str, image_size: int, steps: int) -> dict[str, float]:
    env = make_env(env_id, image_size=image_size)
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    expert.reset()
    episode, reset_time, step_time = 0, 0.0, 0.0
    loop_start = time.process_time()
    for _ in range(steps):
        start = time.process_time()
        obs, _, terminated, truncated, _ = env.step(expert.act(obs))
        step_time += time.process_time() - start
        if terminated or truncated:
            episode += 1
            start = time.process_time()
            obs, _ = env.reset(seed=episode)
            reset_time += time.process_time() - start
            expert.reset()
    loop = time.process_time() - loop_start
    resets = [cpu_seconds(lambda seed=seed: env.reset(seed=seed), 1) for seed in range(1000, 1010)]
    limit = sum(cpu_seconds(part, 100) for part in limit_parts(env).values())
    env.close()
    return {
        "loop": steps / loop,
        "bound": 1.0 / limit,
        "reset_ms": 1e3 * min(resets),
        "step_ms": 1e3 * step_time / steps,
        "episodes": episode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(TASKS))
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'env':22s} {'expert+resets':>14s} {'bound':>8s} {'ratio':>6s} {'reset':>8s} {'step':>7s} reset/step")
    for env_id in args.envs:
        runs = [bench(env_id, args.size, args.steps) for _ in range(args.repeats)]
        best = {key: (min if key.endswith("_ms") else max)(run[key] for run in runs) for key in runs[0]}
        print(
            f"{env_id:22s} {best['loop']:8.0f} st/s {best['bound']:6.0f}/s {best['loop'] / best['bound']:6.2f} "
            f"{best['reset_ms']:6.1f}ms {best['step_ms']:5.2f}ms {best['reset_ms'] / best['step_ms']:6.1f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
