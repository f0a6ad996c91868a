"""Bounded, timed inference for the server: at most N requests at work at once, each with a deadline.

A request takes a slot before reading its body and is refused at once when none is free (no queue grows
behind a slow model). Parsing, validation and the model run on the slots' own threads, never on the event loop.
A timed-out request is answered at its deadline, but its thread cannot be interrupted: the slot is freed only
when that thread finishes, so the number of busy threads never exceeds N.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class InferenceSlots:
    """``size`` worker threads and as many slots; use from the event loop thread only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.executor = ThreadPoolExecutor(size, thread_name_prefix="imitlab-infer")

    def try_acquire(self) -> bool:
        """Take a slot if one is free; the caller must ``release`` it or hand it to ``submit``."""
        if self.free == 0:
            return False
        self.free -= 1
        return True

    def release(self) -> None:
        self.free += 1

    def submit(self, work: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """Run ``work(*args)`` on a slot thread; the slot (already acquired) is released when it finishes."""
        future = asyncio.get_running_loop().run_in_executor(self.executor, work, *args)
        future.add_done_callback(lambda _: self.release())
        return future

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
