"""Parallel evaluation: wall-clock of the same episodes with 1 worker and with N, and the per-seed check.

Each worker process runs whole episodes with one torch thread, so N workers should approach an N-fold speed-up
once the pool has started, and every episode's outcome (success, return, length, metrics, every action) must
be identical whatever N is.

    python benchmarks/bench_eval.py [--agent expert|RUN|BUNDLE] [--env imitlab/LaneFollow-v0] [--episodes 20] [--workers 2]

The wall-clock includes starting the worker pool (spawn + imports + building the env, ~1.5 s here), as a user
of `imitlab eval` sees it; that fixed part limits the speed-up on short runs. Also printed: CPU seconds the
workers used and the cores they kept busy on average (CPU / wall), which shows on a shared machine whether a
low speed-up came from the evaluator or from other processes taking the cores.
Numbers depend on what else runs on the machine; compare them on an idle one.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    seeds = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + args.episodes))
    env = args.env if args.agent == "expert" else None
    timings, outcomes = {}, {}
    for workers in (1, args.workers):
        cpu_before = _children_cpu()
        start = time.perf_counter()
        summary = evaluate(resolve_agent(args.agent, env), seeds, workers=workers, progress=False)
        timings[workers] = time.perf_counter() - start
        cpu = _children_cpu() - cpu_before  # the pool's workers have exited, so their CPU time is counted
        outcomes[workers] = _outcomes(summary)
        steps = sum(e.length for e in summary.episodes)
        print(f"{workers} worker(s): {timings[workers]:6.1f} s for {args.episodes} episodes ({steps} steps, "
              f"{steps / timings[workers]:.0f} steps/s), workers used {cpu:.1f} CPU-s = "
              f"{cpu / timings[workers]:.2f} cores busy, success {summary.successes}/{args.episodes}")
    same = outcomes[1] == outcomes[args.workers]
    print(f"speed-up {args.workers} vs 1 worker: {timings[1] / timings[args.workers]:.2f}x; "
          f"per-seed results identical: {same}")
    if not same:
        raise SystemExit("per-seed results differ between worker counts")


if __name__ == "__main__":
    main()
