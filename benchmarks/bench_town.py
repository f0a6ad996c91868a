"""Town-v0 throughput in one process: env.step steps/s with N traffic cars, and where the time goes.

Beside the full step it times, on the same states, the two costs no town logic can avoid -- the car's physics
(one control period of ``mj_step``) and the driver-camera frame as the env draws it (without the geoms the camera
cannot see, ``imitlab.envs.town.culling``) -- whose sum bounds the step rate from above,
and LaneFollow-v0's step for reference. Times are CPU seconds of this process (the GL renderer's threads too),
as in bench_env.py: they stay meaningful when other jobs share the cores, wall-clock rates do not. Still, on a
busy machine compare the ratios, not the absolute numbers.

    python benchmarks/bench_town.py --size 96 --traffic 20 --steps 600
"""

from __future__ import annotations

import argparse
import time

import mujoco

from imitlab.envs import make_env, make_expert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--traffic", type=int, default=20)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--task", default="navigation")
    args = parser.parse_args()

    env = make_env("imitlab/Town-v0", image_size=args.size, traffic=args.traffic, task=args.task)
    town = env.unwrapped
    expert = make_expert(env)
    obs, _ = env.reset(seed=0)
    expert.reset()
    step_time = physics_time = render_time = 0.0
    episode = 0
    camera = town._renderers[0]
    start = time.process_time()
    for _ in range(args.steps):
        action = expert.act(obs)
        t0 = time.process_time()
        obs, _, terminated, truncated, _ = env.step(action)
        step_time += time.process_time() - t0
        # The unavoidable parts, on a copy of the same state: one control period of physics, one camera frame.
        scratch = mujoco.MjData(town.model)
        mujoco.mj_copyData(scratch, town.model, town.data)
        t0 = time.process_time()
        mujoco.mj_step(town.model, scratch, nstep=town.car.substeps)
        physics_time += time.process_time() - t0
        t0 = time.process_time()
        town._driver_view.update_scene(camera, town.data)
        camera.render()
        render_time += time.process_time() - t0
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=episode)
            expert.reset()
    total = time.process_time() - start
    env.close()

    lane = make_env("imitlab/LaneFollow-v0", image_size=args.size)
    lane_expert = make_expert(lane)
    obs, _ = lane.reset(seed=0)
    lane_expert.reset()
    lane_time = 0.0
    for step in range(args.steps):
        action = lane_expert.act(obs)
        t0 = time.process_time()
        obs, _, terminated, truncated, _ = lane.step(action)
        lane_time += time.process_time() - t0
        if terminated or truncated:
            obs, _ = lane.reset(seed=step)
            lane_expert.reset()
    lane.close()

    n = args.steps
    bound = n / (physics_time + render_time)
    print(f"Town-v0 {args.size}px, {args.traffic} cars, {n} steps ({episode} resets):")
    print(f"  env.step: {n / step_time:.0f} steps/s per CPU second ({n / total:.0f} including the expert, the bound's "
          "measurement and resets)")
    print(f"  physics + camera frame alone: {bound:.0f} steps/s (physics {1e3 * physics_time / n:.2f} ms, "
          f"frame {1e3 * render_time / n:.2f} ms); env.step reaches {bound and (n / step_time) / bound:.0%} of it")
    print(f"  LaneFollow-v0 env.step, same process: {n / lane_time:.0f} steps/s "
          f"(Town/LaneFollow = {lane_time / step_time:.2f})")


if __name__ == "__main__":
    main()
