"""Parallel evaluation: wall-clock of the same episodes with 1 local worker, N local workers and N Ray actors,
and the per-seed check.

Each worker (process or Ray actor) runs whole episodes with one torch thread, so N workers should approach an
N-fold speed-up once the pool has started, and every episode's outcome (success, return, length, metrics, every
action) must be identical whatever N and backend.

    python benchmarks/bench_eval.py [--agent expert|RUN|BUNDLE] [--env imitlab/LaneFollow-v0] [--episodes 20]
                                    [--workers 2] [--rounds 1] [--no-ray]

The wall-clock includes starting the worker pool (spawn or actor start + imports + building the env, ~1.5 s here
for a local process), as a user of `imitlab eval` sees it; that fixed part limits the speed-up on short runs.
Ray's own start (`ray.init` with N CPUs) is done once before and not counted, as a cluster is started once for
many runs (issue 18 asks `--backend ray` for >= 1.8x the single worker's throughput). Each configuration runs
`--rounds` times, alternating, and the best round counts. Also printed for the local pools: CPU seconds the
workers used and the cores they kept busy on average (CPU / wall), which shows on a shared machine whether a low
speed-up came from the evaluator or from other processes taking the cores. Numbers depend on what else runs on
the machine; compare them on an idle one.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from imitlab.agents import resolve_agent
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.evaluation.evaluate import evaluate


def _outcomes(summary) -> list[dict]:
    return [{k: v for k, v in e.to_json().items() if k not in ("inference_ms", "video")} for e in summary.episodes]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="expert")
    parser.add_argument("--env", default="imitlab/LaneFollow-v0", help="task of the expert (ignored for policies)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    args = parser.parse_args()
    seeds = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + args.episodes))
    spec = resolve_agent(args.agent, args.env if args.agent == "expert" else None)
    configs = {"1 local worker": {"workers": 1}, f"{args.workers} local workers": {"workers": args.workers}}
    if not args.no_ray:
        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        configs[f"Ray, {args.workers} actors"] = {"workers": args.workers, "backend": "ray"}
    best: dict[str, float] = {}
    outcomes: dict[str, list[dict]] = {}
    steps = 0
    for _ in range(args.rounds):
        for name, options in configs.items():
            cpu_before = _children_cpu()
            start = time.perf_counter()
            summary = evaluate(spec, seeds, progress=False, **options)
            seconds = time.perf_counter() - start
            cpu = _children_cpu() - cpu_before  # a local pool's workers have exited, so their CPU time is counted
            outcomes[name] = _outcomes(summary)
            steps = sum(e.length for e in summary.episodes)
            busy = "" if options.get("backend") == "ray" else \
                f", workers used {cpu:.1f} CPU-s = {cpu / seconds:.2f} cores busy"
            print(f"{name}: {seconds:6.1f} s for {args.episodes} episodes ({steps} steps, {steps / seconds:.0f} "
                  f"steps/s){busy}, success {summary.successes}/{args.episodes}")
            best[name] = min(best.get(name, seconds), seconds)
    reference = outcomes["1 local worker"]
    same = all(o == reference for o in outcomes.values())
    load = os.getloadavg()
    print(f"best of {args.rounds} round(s); load average {load[0]:.1f} on {os.cpu_count()} cores; per-seed results "
          f"identical in every configuration: {same}")
    print("| configuration | steps/s | vs 1 local worker |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {steps / seconds:.0f} | {best['1 local worker'] / seconds:.2f}x |")
    if not same:
        raise SystemExit("per-seed results differ between configurations")


if __name__ == "__main__":
    main()
