"""A progress bar for closed-loop rollouts: episodes done and successes so far, redrawn while steps run.

Rollouts in lockstep finish their episodes at nearly the same time, so a bar that moved only per episode would
sit still for minutes; the step count shown beside it moves at least once a second.
"""

from __future__ import annotations

import time
from types import TracebackType

from tqdm import tqdm

#: Seconds between redraws caused by steps alone.
REDRAW_SECONDS = 1.0


class RolloutBar:
    """tqdm bar over episodes with ``success=<successes>/<episodes done>`` and the env steps taken."""

    def __init__(self, episodes: int, desc: str, disable: bool = False):
        self.bar = tqdm(total=episodes, desc=desc, unit="ep", leave=False, disable=disable)
        self.steps = self.done = self.successes = 0
        self._drawn = time.monotonic()

    def step(self, count: int = 1) -> None:
        """``count`` env steps were taken (one per running episode in a lockstep iteration)."""
        self.steps += count
        if time.monotonic() - self._drawn >= REDRAW_SECONDS:
            self._draw()

    def episode_done(self, success: bool) -> None:
        self.done += 1
        self.successes += int(success)
        self.bar.update(1)
        self._draw()

    def _draw(self) -> None:
        self.bar.set_postfix(success=f"{self.successes}/{self.done}", steps=self.steps)
        self._drawn = time.monotonic()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> RolloutBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
