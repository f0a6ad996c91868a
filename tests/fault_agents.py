"""Agents that inject faults into evaluation workers (their own module: a spawned worker imports it to unpickle
the factory, and it must not drag in the test modules' heavy imports)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from imitlab.evaluation.rollout import ExpertAgent


class FaultyExpert(ExpertAgent):
    """The task's expert, except on chosen seeds: it kills its own process, raises, hangs or stops the evaluating
    process (``evaluator_pid``: a worker's parent is the fork server, not the evaluation)."""

    def __init__(self, faults: dict[int, str], evaluator_pid: int):
        self.faults = faults
        self.evaluator_pid = evaluator_pid
        self.seed = -1

    def reset(self, slot: int, seed: int) -> None:
        super().reset(slot, seed)
        self.seed = seed

    def act(self, slots: list[int], obs: dict[str, np.ndarray]) -> np.ndarray:
        fault = self.faults.get(self.seed)
        if fault == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif fault == "raise":
            raise RuntimeError("injected fault")
        elif fault == "hang":
            time.sleep(3600)
        elif fault == "sigterm_parent":
            os.kill(self.evaluator_pid, signal.SIGTERM)
            time.sleep(3600)
        return super().act(slots, obs)


class FaultyExpertFactory:
    """Picklable: each worker process builds its own faulty expert; made in the evaluating process."""

    def __init__(self, faults: dict[int, str]):
        self.faults = faults
        self.evaluator_pid = os.getpid()

    def __call__(self) -> FaultyExpert:
        return FaultyExpert(self.faults, self.evaluator_pid)
