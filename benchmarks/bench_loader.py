"""Demo loader throughput (samples/s) in memory and chunked mode, against what a training step consumes.

A BC step consumes about 100 samples/s fine-tuning Lite0 and 2000 samples/s training NatureCNN from
scratch on this CPU; the loader should deliver at least 5x that so it never starves the trainer. Uses a
synthetic 96 px dataset (its frames compress worse than rendered ones, so decoding is the pessimistic
case) unless ``--dataset`` names a real one.

    python benchmarks/bench_loader.py                       # synthetic, 40 episodes x 200 steps at 96 px
    python benchmarks/bench_loader.py --dataset runs/demos  # a recorded dataset
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from imitlab.demos.dataset import DemoDataset
from imitlab.demos.loader import DemoLoader
from imitlab.demos.synthetic import write_synthetic_dataset

#: Samples/s one training step consumes (batch 64, 96 px, this CPU), and the required loader headroom.
CONSUMERS = {"Lite0 fine-tuning": 100.0, "NatureCNN": 2000.0}
HEADROOM = 5.0


def epoch_rate(loader: DemoLoader) -> tuple[float, float, int]:
    """Samples per wall-clock second and per CPU second (all threads) over one epoch. On a shared machine the
    CPU rate is the robust one: it is what the loader costs, whatever else competes for the cores."""
    start, cpu = time.perf_counter(), time.process_time()
    samples = 0
    for batch in loader:
        samples += len(batch.actions)  # batches are materialised copies: nothing is left to do lazily
    return samples / (time.perf_counter() - start), samples / (time.process_time() - cpu), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="Existing dataset (default: a synthetic one in a temp dir).")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="Inflate threads (0: the loader's default).")
    parser.add_argument("--chunk-fraction", type=float, default=0.25,
                        help="Chunked mode's memory budget as a fraction of the decoded dataset size.")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.dataset
        if path is None:
            path = Path(tmp) / "synthetic"
            start = time.perf_counter()
            write_synthetic_dataset(path, args.episodes, args.length, args.image_size)
            print(f"wrote synthetic dataset: {args.episodes} x {args.length} steps at {args.image_size} px "
                  f"in {time.perf_counter() - start:.1f} s", flush=True)
        dataset = DemoDataset(path)
        disk = sum(p.stat().st_size for p in dataset.episode_paths())

        memory = DemoLoader(dataset, args.batch_size, successful_only=False, mode="memory", workers=args.workers)
        print(memory.plan, f"({disk / 2**20:.0f} MiB on disk)", flush=True)
        start = time.perf_counter()
        first = epoch_rate(memory)  # includes decoding everything into the cache
        fill = time.perf_counter() - start
        warm = epoch_rate(memory)
        budget_mb = args.chunk_fraction * memory.decoded_bytes / 2**20
        chunked = DemoLoader(dataset, args.batch_size, successful_only=False, mode="chunked",
                             memory_budget_mb=budget_mb, workers=args.workers)
        print(chunked.plan, flush=True)
        chunked_run = epoch_rate(chunked)

    rows = [("memory, first epoch (decode + cache)", first), ("memory, cached epochs", warm),
            ("chunked, every epoch", chunked_run)]
    print(f"\n{first[2]} samples, batch {args.batch_size}, {chunked.workers} inflate threads; "
          f"cache fill took {fill:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'mode':38s} {'samples/s':>10s} {'per CPU-s':>10s}  "
          + "  ".join(f"x {name} ({rate:.0f}/s)" for name, rate in CONSUMERS.items()))
    for name, (wall, cpu, _) in rows:
        ratios = "  ".join(f"{wall / need:>{len(f'x {c} ({need:.0f}/s)')}.1f}" for c, need in CONSUMERS.items())
        print(f"{name:38s} {wall:10.0f} {cpu:10.0f}  {ratios}")
    for consumer, need in CONSUMERS.items():
        ok = [name for name, (rate, _, _) in rows[1:] if rate >= HEADROOM * need]
        print(f"target >= {HEADROOM:g} x {consumer} = {HEADROOM * need:.0f} samples/s: "
              f"{'met by ' + ' and '.join(ok) if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
