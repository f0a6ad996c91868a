"""The next minibatch, collated and augmented in a thread while the model trains on this one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")
_END = object()


def prepared_ahead(items: Iterable[T], prepare: Callable[[T], U]) -> Iterator[U]:
    """``prepare(item)`` of every item, in order, one item ahead of the consumer: drawing an item (the loader's
    collation) and preparing it (augmentation) run in one worker thread during the consumer's training step; numpy's
    copies and torch's kernels release the GIL. One thread, in order: the same items and random draws as inline."""
    source = iter(items)

    def next_prepared() -> object:
        item = next(source, _END)
        return item if item is _END else prepare(item)  # type: ignore[arg-type]

    with ThreadPoolExecutor(1, thread_name_prefix="minibatch") as pool:
        pending = pool.submit(next_prepared)
        while (ready := pending.result()) is not _END:
            pending = pool.submit(next_prepared)
            yield ready  # type: ignore[misc]
