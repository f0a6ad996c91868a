"""Parallel recording: frames/s of `imitlab record` with 1 and N local workers and on Ray, against the bare expert
loop (one process stepping the env with its expert, nothing encoded or written), all measured in one run.

    python benchmarks/bench_record.py [--env imitlab/LaneFollow-v0] [--episodes 12] [--workers 2] [--image-size 84]
                                      [--no-ray]

Issue 16 asks `record --workers 2` for >= 1.6x the bare loop's frames/s, issue 18 `--backend ray` for >= 1.8x the
single worker's. The wall-clock of a recording includes starting its workers (spawn, imports, building the env),
as a user sees it; Ray's own start (`ray.init`, tens of seconds on a busy machine) is done once before and not
counted, as a cluster is started once for many runs. Each configuration runs `--rounds` times, alternating, and
the best round counts, so a burst of load from other processes hits every configuration alike. Every recording is
checked to hold the bare loop's episodes (same seeds, same frames and actions). Ratios are what carries from
machine to machine; on a shared machine even they move with the load, so say how busy it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from imitlab.demos.dataset import DemoDataset, Episode
from imitlab.demos.recorder import collect_episode, record
from imitlab.envs import make_env, make_expert


def bare_loop(env_id: str, env_kwargs: dict, seeds: list[int], noise: float) -> tuple[float, list[Episode]]:
    """Seconds for the expert loop alone (env built and episodes collected in this process), and its episodes."""
    start = time.perf_counter()
    env = make_env(env_id, **env_kwargs)
    expert = make_expert(env)
    episodes = [collect_episode(env, expert.act, seed, noise, on_reset=expert.reset) for seed in seeds]
    env.close()
    return time.perf_counter() - start, episodes


def recorded(path: Path, reference: list[Episode]) -> bool:
    """Whether the dataset at ``path`` holds ``reference``'s episodes, frame for frame."""
    ours = list(DemoDataset(path).episodes())
    return len(ours) == len(reference) and all(
        a.attrs["seed"] == b.attrs["seed"] and all(np.array_equal(a.obs[k], b.obs[k]) for k in b.obs)
        and np.array_equal(a.actions, b.actions) for a, b in zip(ours, reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="imitlab/LaneFollow-v0")
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    args = parser.parse_args()
    env_kwargs = {"image_size": args.image_size}
    seeds = list(range(args.episodes))
    configs = {"record, 1 process": {"workers": 1},
               f"record --workers {args.workers}": {"workers": args.workers}}
    if not args.no_ray:
        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        configs[f"record --backend ray --workers {args.workers}"] = {"workers": args.workers, "backend": "ray"}
    best: dict[str, float] = {}
    reference: list[Episode] = []
    frames = 0
    scratch = Path(tempfile.mkdtemp(prefix="bench_record_"))
    try:
        for round_ in range(args.rounds):
            seconds, reference = bare_loop(args.env, env_kwargs, seeds, args.noise)
            frames = sum(len(e) for e in reference)
            best["bare expert loop, no writing"] = min(best.get("bare expert loop, no writing", seconds), seconds)
            for name, options in configs.items():
                out = scratch / f"{round_}_{len(best)}"
                start = time.perf_counter()
                record(args.env, out, args.episodes, seed_start=0, noise_std=args.noise, env_kwargs=env_kwargs,
                       progress=False, **options)
                seconds = time.perf_counter() - start
                best[name] = min(best.get(name, seconds), seconds)
                if not recorded(out, reference):
                    raise SystemExit(f"{name}: the episodes differ from the bare loop's")
                shutil.rmtree(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = os.getloadavg()
    print(f"{args.env} at {args.image_size} px, {args.episodes} episodes = {frames} frames, best of {args.rounds} "
          f"rounds; load average {load[0]:.1f} on {os.cpu_count()} cores; every recording identical per seed")
    bare = frames / best["bare expert loop, no writing"]
    single = frames / best["record, 1 process"]
    print(f"| configuration | frames/s | vs bare loop | vs record, 1 process |\n|---|---|---|---|")
    for name, seconds in best.items():
        rate = frames / seconds
        print(f"| {name} | {rate:.0f} | {rate / bare:.2f}x | {rate / single:.2f}x |")


if __name__ == "__main__":
    main()
