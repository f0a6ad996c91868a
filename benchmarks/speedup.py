"""Shared by bench_record.py and bench_eval.py: time configurations alternately, at two run lengths, and report
each one's speed-up over a baseline both as a user's wall-clock and as throughput once its workers run.

A parallel run pays a fixed cost (starting its worker processes or Ray actors: spawn or fork, imports, building the
env) and then a rate; a short run mostly measures the first, a long one the second. Timing every configuration on
a short and a long run of the same seeds separates them: the throughput after start is the extra work of the long
run over its extra seconds, ``(units_long - units_short) / (t_long - t_short)``, in which the fixed cost cancels,
and ``t_long - units_long / rate`` is that fixed cost. Every configuration runs once per round at each length,
alternating, and the best time counts, so a burst of load from other processes hits every configuration alike.
Each run also prints the CPU seconds that this process (the driver) and its long-lived helpers (Ray's raylet, GCS,
agents, log monitor; the local pool's fork server) used during it: what a parallel run costs besides its workers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

#: Seconds per clock tick of /proc's CPU times.
_TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def _helpers_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of this process and its descendants: pid -> (name, seconds)."""
    procs: dict[int, tuple[int, str, float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmd:
                fields, argv = stat.read().rsplit(")", 1)[1].split(), cmd.read().split(b"\0")
        except OSError:
            continue
        scripts = [os.path.basename(a.decode()) for a in argv if a.endswith(b".py")]
        name = "fork server" if b"forkserver" in b" ".join(argv) else scripts[0] if scripts else \
            os.path.basename(argv[0].decode()) or "?"
        procs[int(pid)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) * _TICK)
    ours, me = {}, os.getpid()
    for pid, (ppid, name, cpu) in procs.items():
        ancestor = pid
        while ancestor not in (me, 0, 1) and ancestor in procs:
            ancestor = procs[ancestor][0]
        if ancestor == me:
            ours[pid] = ("driver" if pid == me else name, cpu)
    return ours


def _helpers_line(before: dict[int, tuple[str, float]]) -> str:
    """CPU seconds since ``before`` of the processes alive then and now, by name; workers, actors (named
    ``ray::_<class>`` or ``ray::IDLE``, a prestarted one) and exited processes (no command line) left out."""
    used: dict[str, float] = {}
    for pid, (name, cpu) in _helpers_cpu().items():
        if pid in before and not any(n.startswith("ray::_") or n in ("ray::IDLE", "?") for n in (name, before[pid][0])):
            used[name] = used.get(name, 0.0) + cpu - before[pid][1]
    return ", ".join(f"{name} {cpu:.2f}" for name, cpu in sorted(used.items(), key=lambda x: -x[1]) if cpu >= 0.01)


#: A configuration's run: the number of episodes -> (seconds, units of work: steps or frames).
Run = Callable[[int], tuple[float, int]]


@dataclass
class Best:
    """The best seconds a configuration took at each run length, and the units of work of each length."""

    seconds: dict[int, float] = field(default_factory=dict)
    units: dict[int, int] = field(default_factory=dict)

    def add(self, episodes: int, seconds: float, units: int) -> None:
        self.seconds[episodes] = min(self.seconds.get(episodes, math.inf), seconds)
        self.units[episodes] = units

    def rates(self, short: int, long: int) -> tuple[float, float, float]:
        """Wall-clock rate of the long run, the rate after start, and the fixed cost in seconds."""
        t_long, t_short = self.seconds[long], self.seconds[short]
        wall = self.units[long] / t_long
        after_start = (self.units[long] - self.units[short]) / max(t_long - t_short, 1e-9)
        return wall, after_start, t_long - self.units[long] / after_start


def alternate(configs: dict[str, Run], short: int, long: int, rounds: int, unit: str) -> dict[str, Best]:
    """Run every configuration on ``long`` and ``short`` episodes once per round, alternating; keep the best."""
    best = {name: Best() for name in configs}
    for round_ in range(rounds):
        for name, run in configs.items():
            for episodes in (long, short):
                helpers = _helpers_cpu()
                seconds, units = run(episodes)
                best[name].add(episodes, seconds, units)
                print(f"round {round_ + 1}: {name}, {episodes} episodes: {seconds:.1f} s, {units / seconds:.0f} "
                      f"{unit}/s (load {os.getloadavg()[0]:.1f}); CPU-s of driver and helpers: "
                      f"{_helpers_line(helpers) or 'none'}", flush=True)
    return best


def speedup(best: dict[str, Best], name: str, baseline: str, short: int, long: int) -> tuple[float, float]:
    """``name``'s speed-up over ``baseline``: wall-clock of the long run, and throughput after start."""
    wall, after, _ = best[name].rates(short, long)
    base_wall, base_after, _ = best[baseline].rates(short, long)
    return wall / base_wall, after / base_after


def report(best: dict[str, Best], baseline: str, short: int, long: int, unit: str, load_before: float) -> None:
    """The table: each configuration's rates and its speed-ups over ``baseline``, wall-clock and after start.
    ``load_before``: the 1-minute load average before the benchmark started, i.e. what other processes ran."""
    print(f"| configuration | {unit}/s, {long} episodes | fixed cost (s) | {unit}/s after start | speed-up, wall-clock "
          f"| speed-up after start |\n|---|---|---|---|---|---|")
    for name, timing in best.items():
        wall, after, fixed = timing.rates(short, long)
        wall_x, after_x = speedup(best, name, baseline, short, long)
        print(f"| {name} | {wall:.0f} | {fixed:.1f} | {after:.0f} | {wall_x:.2f}x | {after_x:.2f}x |")
    busy = "busy" if load_before > 0.5 else "quiet"
    print(f"load average before the benchmark {load_before:.1f} on {os.cpu_count()} cores: a {busy} machine")
