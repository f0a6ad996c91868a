"""Parallel recording: frames/s of `imitlab record` with 1 and N local workers and on Ray, against the bare expert
loop (one process stepping the env with its expert, nothing encoded or written), all measured in one run.

    python benchmarks/bench_record.py [--env imitlab/LaneFollow-v0] [--episodes 24] [--short 4] [--workers 2]
                                      [--image-size 84] [--rounds 2] [--no-ray]

Issue 16 asks `record --workers 2` for >= 1.6x the bare loop's frames/s, issue 18 `--backend ray` for >= 1.8x the
single worker's (`record` in one process); the last lines print both ratios. Every configuration records
`--episodes` and `--short` episodes (the first seeds) each round, alternating (``speedup.py``): the wall-clock of
the long run includes starting the workers (a fork from the preloaded fork server, or a Ray actor's process start
and imports, plus building the env), as a user of a short recording sees it; the throughput after start, in which
that fixed cost cancels, is what a long recording gets. Ray's own start (`ray.init` with N CPUs, as
`--backend ray` starts it: ``connect_ray``) is done once before and not counted, as a cluster is started once for
many runs. Every recording is checked to hold the bare loop's episodes (same seeds, same frames and actions).
Ratios are what carries from machine to machine; on a shared machine even they move with the load, so say how
busy it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from speedup import Run, alternate, report, speedup

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
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--short", type=int, default=4, help="episodes of the short run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    env_kwargs = {"image_size": args.image_size}
    seeds = list(range(args.episodes))
    scratch = Path(tempfile.mkdtemp(prefix="bench_record_"))
    reference: dict[int, list[Episode]] = {}

    def bare(episodes: int) -> tuple[float, int]:
        seconds, reference[episodes] = bare_loop(args.env, env_kwargs, seeds[:episodes], args.noise)
        return seconds, sum(len(e) for e in reference[episodes])

    def config(name: str, **options) -> Run:
        def run(episodes: int) -> tuple[float, int]:
            out = scratch / "ds"
            start = time.perf_counter()
            summary = record(args.env, out, episodes, seed_start=0, noise_std=args.noise, env_kwargs=env_kwargs,
                             progress=False, **options)
            seconds = time.perf_counter() - start
            if not recorded(out, reference[episodes]):
                raise SystemExit(f"{name}: the episodes differ from the bare loop's")
            shutil.rmtree(out)
            return seconds, summary.steps
        return run

    single, parallel, on_ray = ("record, 1 process", f"record --workers {args.workers}",
                                f"record --backend ray --workers {args.workers}")
    configs = {"bare expert loop, no writing": bare, single: config(single, workers=1),
               parallel: config(parallel, workers=args.workers)}
    if not args.no_ray:
        from imitlab.evaluation.ray_workers import connect_ray

        connect_ray(None, args.workers)
        configs[on_ray] = config(on_ray, workers=args.workers, backend="ray")
    try:
        best = alternate(configs, args.short, args.episodes, args.rounds, "frames")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.env} at {args.image_size} px, {args.episodes} and {args.short} episodes, best of {args.rounds} "
          f"rounds; every recording identical per seed to the bare loop's")
    report(best, single, args.short, args.episodes, "frames", load_before)
    wall_x, after_x = speedup(best, parallel, "bare expert loop, no writing", args.short, args.episodes)
    print(f"issue 16: {parallel} over the bare loop: {after_x:.2f}x after start, {wall_x:.2f}x wall-clock "
          f"(target >= 1.6x)")
    if not args.no_ray:
        wall_x, after_x = speedup(best, on_ray, single, args.short, args.episodes)
        print(f"issue 18: {on_ray} over {single}: {after_x:.2f}x after start, {wall_x:.2f}x wall-clock of "
              f"{args.episodes} episodes (target >= 1.8x)")


if __name__ == "__main__":
    main()
