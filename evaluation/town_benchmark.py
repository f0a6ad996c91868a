"""The town benchmark: CARLA's CoRL2017 / NoCrash matrix on Town-v0, for one agent and any it is compared with.

Tasks (rows) -- straight, one turn, navigation, navigation with dense traffic -- are driven under four conditions
(columns): the training town in the training weathers, a new town, new weathers, and a new town in new weathers
(``TRAINING_TOWN`` / ``HELD_OUT_TOWN`` from ``imitlab.core.seeds``, the ``train`` / ``test`` weather groups of
``imitlab.envs.town.weather``). Every cell drives held-out routes: cell ``i`` (its index in the full matrix, task-
major) uses seeds ``seed_start + i * SEED_STRIDE + k``, so a cell's routes are the same whichever cells run, and a
seed names its cell. Every agent drives the same seeds, so agents are compared seed by seed (McNemar).

Each agent gets one ``EpisodePool``; a worker keeps one agent and rebuilds its env when the cell changes (the
cells are handed out in order, so that is once per cell and worker).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START, HELD_OUT_TOWN, TRAINING_TOWN
from imitlab.envs import env_class, make_env
from imitlab.envs.kwargs import check_env_kwargs
from imitlab.envs.town.env import check_town_kwargs, time_limit_bound_s
from imitlab.envs.town.graph import DEFAULT_GRID, Town
from imitlab.envs.town.weather import GROUPS
from imitlab.envs.town.weather import resolve as resolve_weather
from imitlab.evaluation.agent_spec import EXPERT, AgentSpec
from imitlab.evaluation.compare import paired_mean_diff, paired_success
from imitlab.evaluation.driving_score import PENALTIES, cell_summary, episode_row
from imitlab.evaluation.evaluate import worker_agent
from imitlab.evaluation.provenance import policy_provenance
from imitlab.evaluation.rollout import EpisodeResult, run_lockstep
from imitlab.evaluation.workers import check_backend, open_pool

ENV_ID = "imitlab/Town-v0"
FORMAT = "imitlab-town-benchmark"
FORMAT_VERSION = 1
#: Cars in the dense-traffic navigation task (the expert's success target is measured with as many).
DENSE_TRAFFIC = 20
#: Seeds between the first seeds of consecutive cells: at most this many episodes per cell.
SEED_STRIDE = 10_000
#: Env kwargs the matrix sets per cell (an agent's own values for them are replaced).
MATRIX_KWARGS = ("town", "weather", "task", "traffic")


@dataclass(frozen=True)
class BenchTask:
    """A row of the matrix: Town-v0's ``task`` with ``traffic`` cars."""

    name: str
    task: str
    traffic: int


@dataclass(frozen=True)
class Condition:
    """A column of the matrix: a town layout and a weather group."""

    name: str
    town: int
    weather: str


TASKS = (BenchTask("straight", "straight", 0), BenchTask("one_turn", "one_turn", 0),
         BenchTask("navigation", "navigation", 0), BenchTask("navigation_dense", "navigation", DENSE_TRAFFIC))
CONDITIONS = (Condition("training", TRAINING_TOWN, "train"), Condition("new_town", HELD_OUT_TOWN, "train"),
              Condition("new_weather", TRAINING_TOWN, "test"), Condition("new_town_weather", HELD_OUT_TOWN, "test"))


@dataclass(frozen=True)
class Cell:
    """One (task, condition) of the matrix; ``index`` is its place in the full matrix and fixes its seeds."""

    task: BenchTask
    condition: Condition
    index: int

    @property
    def label(self) -> str:
        return f"{self.task.name}/{self.condition.name}"

    def env_kwargs(self) -> dict[str, Any]:
        return {"town": self.condition.town, "weather": self.condition.weather, "task": self.task.task,
                "traffic": self.task.traffic}

    def seeds(self, seed_start: int, episodes: int) -> list[int]:
        first = seed_start + self.index * SEED_STRIDE
        return list(range(first, first + episodes))


def select_cells(tasks: Sequence[str] = (), conditions: Sequence[str] = (),
                 dense_traffic: int = DENSE_TRAFFIC) -> list[Cell]:
    """The cells of the named tasks and conditions (all when empty), in matrix order."""
    known_tasks = {t.name: t for t in TASKS}
    known_conditions = {c.name: c for c in CONDITIONS}
    for names, known, what in ((tasks, known_tasks, "task"), (conditions, known_conditions, "condition")):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ImitlabError(f"unknown benchmark {what} {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    cells = []
    for t, task in enumerate(TASKS):
        for c, condition in enumerate(CONDITIONS):
            if (not tasks or task.name in tasks) and (not conditions or condition.name in conditions):
                traffic = dense_traffic if task.traffic else 0
                cells.append(Cell(BenchTask(task.name, task.task, traffic), condition, t * len(CONDITIONS) + c))
    return cells


def cell_env_kwargs(spec: AgentSpec, cell: Cell) -> dict[str, Any]:
    """The agent's env kwargs (camera size, ...) with the cell's town, weather, task and traffic."""
    return {**{k: v for k, v in spec.env_kwargs.items() if k not in MATRIX_KWARGS}, **cell.env_kwargs()}


def check_agents(specs: dict[str, AgentSpec], cells: Sequence[Cell], seeds: Sequence[int]) -> None:
    """One clear error before anything runs: a wrong env, an impossible cell, seeds or conditions that are not
    held out from what a policy was trained on."""
    if not specs or not cells:
        raise ImitlabError("the town benchmark needs at least one agent and one cell")
    for label, spec in specs.items():
        if spec.env_id != ENV_ID:
            raise ImitlabError(f"{label} acts in {spec.env_id}; the town benchmark drives {ENV_ID}")
        overlap = sorted(set(seeds) & set(spec.train_seeds))
        if overlap:
            raise ImitlabError(f"benchmark seeds overlap the demonstration seeds of {label} (e.g. {overlap[:5]}); "
                               f"use held-out seeds (from {HELD_OUT_SEED_START})")
        if spec.kind != EXPERT:
            town = spec.env_kwargs.get("town", TRAINING_TOWN)
            try:
                weathers = {w.name for w in resolve_weather(spec.env_kwargs.get("weather", "train"))}
            except ValueError as error:
                raise ImitlabError(f"{label}: {error}") from None
            if town != TRAINING_TOWN or not weathers <= set(GROUPS["train"]):
                raise ImitlabError(f"{label} was trained in town {town} with weathers {sorted(weathers)}; the "
                                   f"benchmark's held-out conditions assume town {TRAINING_TOWN} and weathers from "
                                   f"the train group ({', '.join(GROUPS['train'])})")
        for cell in cells:
            check_env_kwargs(ENV_ID, env_class(ENV_ID), cell_env_kwargs(spec, cell))  # and Town-v0's own checks


def _town_of(kwargs: dict[str, Any]) -> Town:
    """The layout a cell's env kwargs name, after the env's own checks (one-line errors, no scene built)."""
    return check_town_kwargs(kwargs["town"], kwargs["weather"], kwargs["traffic"], kwargs["task"],
                             kwargs.get("grid", DEFAULT_GRID))[1]


class _MatrixRunner:
    """A worker's agent, and the env of the cell it drives now (a seed names its cell's env kwargs)."""

    def __init__(self, spec: AgentSpec, kwargs_of_seed: dict[int, dict[str, Any]]):
        self.agent = worker_agent(spec)
        self.kwargs_of_seed = kwargs_of_seed
        configs = {(kw["town"], kw.get("grid"), kw["task"]): kw for kw in kwargs_of_seed.values()}.values()
        self.time_limit_s = max(time_limit_bound_s(_town_of(kw), kw["task"]) for kw in configs)
        self._env: Any = None
        self._kwargs: dict[str, Any] | None = None

    def run(self, seed: int, with_video: bool) -> EpisodeResult:
        kwargs = self.kwargs_of_seed[seed]
        if kwargs != self._kwargs:
            if self._env is not None:
                self._env.close()
            self._env, self._kwargs = make_env(ENV_ID, **kwargs), kwargs
        return run_lockstep([self._env], self.agent, [seed])[0]


class BenchmarkInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the benchmark; ``report`` holds the episodes that finished."""

    def __init__(self, report: dict[str, Any]):
        super().__init__("town benchmark interrupted")
        self.report = report


def run_benchmark(specs: dict[str, AgentSpec], cells: Sequence[Cell], episodes: int,
                  seed_start: int = HELD_OUT_SEED_START, workers: int | None = None,
                  episode_timeout: float | None = None, progress: bool = True, backend: str = "local",
                  address: str | None = None) -> dict[str, Any]:
    """Drive every agent (label -> spec; the first is the subject, the others are paired against it) through
    ``episodes`` held-out routes of every cell, on ``backend``'s workers (``open_pool``; results are the same).
    Raises ``BenchmarkInterrupted`` with the finished part on Ctrl-C."""
    if not 1 <= episodes <= SEED_STRIDE:
        raise ImitlabError(f"episodes per cell must be from 1 to {SEED_STRIDE}, got {episodes}")
    seeds_of = {cell.index: cell.seeds(seed_start, episodes) for cell in cells}
    check_backend(backend)
    check_agents(specs, cells, [s for seeds in seeds_of.values() for s in seeds])
    results: dict[tuple[str, int, int], EpisodeResult] = {}
    total = len(specs) * len(cells) * episodes
    bar = tqdm(total=total, desc="benchmark town", unit="ep", disable=not progress)
    try:
        for label, spec in specs.items():
            kwargs_of_seed = {seed: cell_env_kwargs(spec, cell) for cell in cells for seed in seeds_of[cell.index]}
            cell_of_seed = {seed: cell for cell in cells for seed in seeds_of[cell.index]}
            outcomes: Counter[str] = Counter()
            factory = functools.partial(_MatrixRunner, spec, kwargs_of_seed)
            size = min(workers, len(kwargs_of_seed)) if workers else None
            with open_pool(backend, factory, size, address, episode_timeout_s=episode_timeout) as pool:
                for result in pool.run((seed, False) for seed in kwargs_of_seed):
                    results[(label, cell_of_seed[result.seed].index, result.seed)] = result
                    outcomes[result.outcome] += 1
                    bar.update()
                    bar.set_postfix(agent=label, cell=cell_of_seed[result.seed].label,
                                    success=f"{outcomes['success']}/{sum(outcomes.values())}")
    except KeyboardInterrupt as interrupt:
        raise BenchmarkInterrupted(build_report(specs, cells, seeds_of, results, seed_start, episodes,
                                                interrupted=True)) from interrupt
    finally:
        bar.close()
    return build_report(specs, cells, seeds_of, results, seed_start, episodes)


def build_report(specs: dict[str, AgentSpec], cells: Sequence[Cell], seeds_of: dict[int, list[int]],
                 results: dict[tuple[str, int, int], EpisodeResult], seed_start: int, episodes: int,
                 interrupted: bool = False) -> dict[str, Any]:
    """The benchmark's JSON document: definitions, seeds, per-cell summaries and episodes, paired comparisons."""
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {
        (label, cell.index): [episode_row(results[(label, cell.index, s)]) for s in seeds_of[cell.index]
                              if (label, cell.index, s) in results]
        for label in specs for cell in cells}
    labels = list(specs)
    traffic = {c.task.name: c.task.traffic for c in cells}
    report: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "env_id": ENV_ID,
        "definitions": {
            "tasks": [{**vars(t), "traffic": traffic.get(t.name, t.traffic)} for t in TASKS],
            "conditions": [{**vars(c), "weathers": list(GROUPS[c.weather])} for c in CONDITIONS],
            "penalties": PENALTIES,
            "seeds": f"cell i of the full matrix (task-major, {len(TASKS)} x {len(CONDITIONS)}) drives seeds "
                     f"seed_start + i * {SEED_STRIDE} + k, k < episodes",
        },
        "seed_start": seed_start, "episodes_per_cell": episodes, "subject": labels[0],
        "agents": {label: {"kind": spec.kind, "env_kwargs": spec.env_kwargs,
                           "policy": policy_provenance(spec.kind, spec.path, spec.metadata)}
                   for label, spec in specs.items()},
        "cells": [{"task": c.task.name, "condition": c.condition.name, "index": c.index,
                   "env_kwargs": c.env_kwargs(), "seeds": seeds_of[c.index]} for c in cells],
        "results": [{"agent": label, "task": c.task.name, "condition": c.condition.name,
                     **cell_summary(rows[(label, c.index)]), "per_episode": rows[(label, c.index)]}
                    for label in labels for c in cells],
        "overall": [{"agent": label, **cell_summary([r for c in cells for r in rows[(label, c.index)]])}
                    for label in labels],
        "paired": [_paired(labels[0], other, cells, rows) for other in labels[1:]],
        "interrupted": interrupted,
    }
    return report


def _paired(a: str, b: str, cells: Sequence[Cell], rows: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[str, Any]:
    """``a`` against ``b`` seed by seed in every cell and over all cells; a seed with an error on either side
    (or not run) has no pair."""

    def pairs(cell_list: Sequence[Cell]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        out = []
        for cell in cell_list:
            theirs = {r["seed"]: r for r in rows[(b, cell.index)] if r["outcome"] != "error"}
            out += [(r, theirs[r["seed"]]) for r in rows[(a, cell.index)]
                    if r["outcome"] != "error" and r["seed"] in theirs]
        return out

    def stats(matched: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
        if not matched:
            return {"seeds": 0}
        return {**paired_success([x["success"] for x, _ in matched], [y["success"] for _, y in matched]),
                "driving_score": paired_mean_diff([x["driving_score"] for x, _ in matched],
                                                  [y["driving_score"] for _, y in matched])}

    return {"a": a, "b": b,
            "cells": [{"task": c.task.name, "condition": c.condition.name, **stats(pairs([c]))} for c in cells],
            "overall": stats(pairs(cells))}
