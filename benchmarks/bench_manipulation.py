"""Manipulation env throughput: control steps per second in one process, per task, with one, two or three cameras.

Actions come from each task's expert so the arm moves, grasps and pushes as in real data collection (the
expert's own cost is excluded). Resets are excluded too; each line also shows where a step's time goes,
measured on the final state: physics (25 steps of 4 ms), IK, and rendering the observation cameras.
Besides wall-clock steps/s it prints steps per second of this process's CPU time (all its threads, the
renderer's included), which stays meaningful when other jobs share the cores.

    python benchmarks/bench_manipulation.py --steps 1000
"""

from __future__ import annotations

import argparse
import time

from imitlab.envs import make_env, make_expert  # first: picks the headless GL backend before mujoco loads

import mujoco  # noqa: E402  isort: skip

TASKS = ("imitlab/Reach-v0", "imitlab/Push-v0", "imitlab/PickPlace-v0")
CAMERAS = (("agentview",), ("agentview", "wrist"), ("agentview", "wrist", "wrist_rear"))


def bench(env_id: str, cameras: tuple[str, ...], image_size: int, steps: int) -> dict[str, float]:
    env = make_env(env_id, image_size=image_size, cameras=cameras)
    arm = env.unwrapped
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    expert.reset()
    step_time, cpu_time, episode = 0.0, 0.0, 0
    for _ in range(steps):
        action = expert.act(obs)
        start, cpu_start = time.perf_counter(), time.process_time()
        obs, _, terminated, truncated, _ = env.step(action)
        step_time += time.perf_counter() - start
        cpu_time += time.process_time() - cpu_start
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=episode)
            expert.reset()
    # Cost of the parts, each repeated on the final state.
    parts = {
        "physics": lambda: mujoco.mj_step(arm.model, arm.data, nstep=arm.substeps),
        "ik": lambda: arm.ik.solve(arm.data.ctrl[arm.arm_ctrl], arm.grip_pos + 0.01),
        "render": lambda: arm.rig.observe(arm.data),
    }
    ms = {}
    for name, part in parts.items():
        start = time.perf_counter()
        for _ in range(100):
            part()
        ms[name] = (time.perf_counter() - start) * 10.0
    env.close()
    return {"steps_per_s": steps / step_time, "steps_per_cpu_s": steps / cpu_time, "episodes": float(episode), **ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    for env_id in args.tasks:
        for cameras in CAMERAS:
            r = bench(env_id, cameras, args.image_size, args.steps)
            print(f"{env_id:22s} cameras={'+'.join(cameras):27s} {r['steps_per_s']:6.0f} steps/s "
                  f"({r['steps_per_cpu_s']:.0f} per CPU-s)  "
                  f"(physics {r['physics']:.2f} ms, IK {r['ik']:.2f} ms, render {r['render']:.2f} ms; "
                  f"{int(r['episodes'])} episodes)", flush=True)


if __name__ == "__main__":
    main()
