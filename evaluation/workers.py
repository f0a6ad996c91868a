"""Supervised worker processes that run closed-loop episodes one at a time and survive their faults.

A ``ProcessPoolExecutor`` breaks for good when one worker dies (a segfault in a simulator or a native kernel)
and cannot stop a hung task, so one bad episode would cost the whole evaluation. Here every worker has its own
pipe and is given one episode at a time; the parent waits on the pipes and the process sentinels with the
nearest deadline as timeout. An exception becomes that episode's error inside the worker; a worker that dies
or runs past the episode timeout is killed, its episode recorded as an error with the reason, and a fresh
worker takes its place. A result depends only on its seed, so a replacement reproduces what the dead worker
would have done for every other episode.

``retries``: a task whose worker died or hung may be given to a fresh worker that many times before it becomes an
error (recording retries, evaluation does not: a crash is then part of the result). The results are generic
(``errored`` builds the error result), so recording reuses the pool. ``open_pool`` chooses this local pool or
its Ray counterpart (``ray_workers.py``), which keeps the same interface and semantics.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Generic, Iterable, Iterator, Protocol, TypeVar

from imitlab.core.errors import ImitlabError
from imitlab.evaluation.rollout import EpisodeResult

#: Seconds a worker may take to start (spawn, imports, loading the agent, building the env) before it is killed.
STARTUP_TIMEOUT_S = 300.0
#: Workers that may die or hang while starting, in a row, before the evaluation gives up (it cannot start).
MAX_STARTUP_FAILURES = 3
#: Seconds a worker gets to exit after it is told to stop, before it is killed.
SHUTDOWN_GRACE_S = 5.0
#: Imported once by the fork server that every local worker is forked from, so a worker starts in a fraction of a
#: second instead of importing torch, MuJoCo and onnxruntime anew (seconds each: most of a short evaluation's time).
WORKER_PRELOAD = ("imitlab.evaluation.evaluate", "imitlab.policies", "onnxruntime")


#: Where episodes run: worker processes on this machine, or Ray actors on a local or remote Ray cluster.
BACKENDS = ("local", "ray")
#: What one task gives: an ``EpisodeResult`` for evaluation, an encoded episode for recording.
R = TypeVar("R")
#: A task: the episode's key and whether to film it. The key is its seed, or any hashable, picklable key that the
#: runner understands (the robustness suite's (agent, cell, seed) jobs); ``errored`` gets it back.
Task = tuple[Any, bool]


class EpisodeRunner(Protocol[R]):
    """What a worker holds: one agent and one env, reused for every episode it is given."""

    time_limit_s: float
    """The env's episode time limit in simulated seconds (the default episode timeout is a multiple of it)."""

    def run(self, key: Any, with_video: bool) -> R: ...


#: Builds a worker's runner in the worker process; must be picklable (a module-level function or a partial).
RunnerFactory = Callable[[], EpisodeRunner[R]]
#: Builds a task's error result from its key, the error kind and the reason (``EpisodeResult.errored``).
ErrorResult = Callable[[Any, str, str], R]


def exception_reason(exc: BaseException) -> str:
    """One line naming the exception and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_task(runner: EpisodeRunner[R], task: Task, errored: ErrorResult[R]) -> R:
    """Run one task in a worker; an exception is that episode's error (shared by both backends)."""
    key, with_video = task
    try:
        return runner.run(key, with_video)
    except Exception as exc:  # noqa: BLE001 - one episode's fault, recorded as its error
        return errored(key, "exception", exception_reason(exc))


def worker_context() -> multiprocessing.context.BaseContext:
    """Where local worker processes come from: a fork server that has imported ``WORKER_PRELOAD``. Unlike a plain
    fork, the server holds none of the parent's threads, GL contexts or CUDA state; like spawn, each worker gets
    the parent's ``sys.path`` and working directory (but the server's environment variables)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_PRELOAD))
    return context


def _worker_main(conn: Connection, factory: RunnerFactory[Any], errored: ErrorResult[Any]) -> None:
    """Worker process: build the runner, then run the episodes the parent sends until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    try:
        runner = factory()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the evaluation with it
        conn.send(("setup_failed", exception_reason(exc)))
        return
    conn.send(("ready", float(runner.time_limit_s)))
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        if task is None:
            return
        conn.send(("result", run_task(runner, task, errored)))


@dataclass(kw_only=True)
class WorkerSlot:
    """One worker as a pool sees it: starting, idle, or running one task under a deadline."""

    started: float
    ready: bool = False
    task: Task | None = None
    deadline: float = 0.0

    def due(self) -> float | None:
        """When it must have started or finished its episode; None while it idles."""
        if not self.ready:
            return self.started + STARTUP_TIMEOUT_S
        return self.deadline if self.task is not None else None


@dataclass(kw_only=True)
class _Worker(WorkerSlot):
    process: multiprocessing.process.BaseProcess
    conn: Connection


def _death_reason(process: multiprocessing.process.BaseProcess) -> str:
    process.join(timeout=1.0)
    if process.is_alive():  # it closed its pipe but lingers: it is of no further use
        process.kill()
        process.join()
        return "worker process closed its pipe"
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code}"


class EpisodePool(Generic[R]):
    """``workers`` supervised processes; ``run`` yields one result per task, in completion order.

    ``episode_timeout_s``: wall-clock seconds one episode may take; None gives ``timeout_factor`` times the
    env's time limit (at least ``min_timeout_s``), generous because a slow machine must not turn into errors.
    ``retries``: how often a task lost with its worker (death, timeout) is run again before it is an error.
    """

    def __init__(self, factory: RunnerFactory[R], workers: int, episode_timeout_s: float | None = None,
                 timeout_factor: float = 10.0, min_timeout_s: float = 60.0,
                 errored: ErrorResult[R] = EpisodeResult.errored, retries: int = 0):  # type: ignore[assignment]
        self.factory = factory
        self.size = max(1, workers)
        self.episode_timeout_s = episode_timeout_s
        self.timeout_factor = timeout_factor
        self.min_timeout_s = min_timeout_s
        self.errored = errored
        self.retries = retries
        self.retried = 0
        """Tasks run again after their worker was lost (a test and the recorder's summary read it)."""
        self._context = worker_context()
        self._workers: list[_Worker] = []
        self._requeued: deque[Task] = deque()
        self._attempts: dict[Task, int] = {}
        self._startup_failures = 0
        self._timeout = 0.0  # set when the first worker reports the env's time limit

    def __enter__(self) -> EpisodePool[R]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(graceful=exc_info[0] is None)

    def timeout_for(self, time_limit_s: float) -> float:
        if self.episode_timeout_s is not None:
            return self.episode_timeout_s
        return max(self.min_timeout_s, self.timeout_factor * time_limit_s)

    def run(self, tasks: Iterable[Task]) -> Iterator[R]:
        """Run ``(seed, with_video)`` tasks; every task yields exactly one result, an error if it could not run."""
        pending = deque(tasks)
        while pending or self._requeued or any(w.task is not None for w in self._slots()):
            self._top_up(len(pending) + len(self._requeued) + sum(w.task is not None for w in self._slots()))
            for worker in self._slots():
                if worker.ready and worker.task is None and (self._requeued or pending):
                    worker.task = (self._requeued or pending).popleft()
                    worker.deadline = time.monotonic() + self._timeout
                    self._dispatch(worker)
            yield from self._wait()

    def _slots(self) -> list[WorkerSlot]:
        """The workers as the scheduling loop of ``run`` sees them (the Ray pool's are actors)."""
        return self._workers

    def _dispatch(self, worker: _Worker) -> None:
        """Hand a worker the task ``run`` just gave it."""
        try:
            worker.conn.send(worker.task)
        except OSError:  # it died since the last look: _wait finds it dead and handles its task
            pass

    def _top_up(self, needed: int) -> None:
        while len(self._workers) < min(self.size, needed):
            parent, child = self._context.Pipe()
            process = self._context.Process(target=_worker_main, args=(child, self.factory, self.errored),
                                            daemon=True)
            process.start()
            child.close()
            self._workers.append(_Worker(process=process, conn=parent, started=time.monotonic()))

    def _wait(self) -> Iterator[R]:
        """Block until a message, a death or the nearest deadline; yield the results that came of it."""
        deadlines = [due for w in self._workers if (due := w.due()) is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        wait([w.conn for w in self._workers] + [w.process.sentinel for w in self._workers], timeout)
        for worker in list(self._workers):
            result = self._service(worker)
            if result is not None:
                yield result

    def _service(self, worker: _Worker) -> R | None:
        """Read one message from ``worker`` or notice it died or hung; replace a lost worker."""
        try:
            if worker.conn.poll():
                kind, payload = worker.conn.recv()
                return self._handle(worker, kind, payload)
        except (EOFError, OSError):  # its end of the pipe closed: it is exiting or gone
            return self._lost(worker, "crash", _death_reason(worker.process))
        if not worker.process.is_alive():
            return self._lost(worker, "crash", _death_reason(worker.process))
        due = worker.due()
        if due is None or time.monotonic() < due:
            return None
        worker.process.kill()
        reason = (f"episode ran past its {self._timeout:.0f} s timeout" if worker.ready else
                  f"worker did not start within {STARTUP_TIMEOUT_S:.0f} s")
        return self._lost(worker, "timeout", reason)

    def _lost(self, worker: _Worker, kind: str, reason: str) -> R | None:
        """Forget a dead or killed worker (``_top_up`` replaces it); its episode, if it had one, is run again
        while retries are left, else it is an error."""
        worker.process.join(timeout=1.0)
        worker.conn.close()
        self._workers.remove(worker)
        if not worker.ready:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                raise ImitlabError(f"evaluation workers fail to start ({reason}, {self._startup_failures} times)")
            return None
        return self.lost_task(worker.task, kind, reason) if worker.task is not None else None

    def lost_task(self, task: Task, kind: str, reason: str) -> R | None:
        """A task whose worker died or hung: queued again while it has retries left (None), else its error."""
        self._attempts[task] = self._attempts.get(task, 0) + 1
        if self._attempts[task] <= self.retries:
            self._requeued.append(task)
            self.retried += 1
            return None
        return self.errored(task[0], kind, reason)

    def _handle(self, worker: _Worker, kind: str, payload: object) -> R | None:
        if kind == "setup_failed":
            raise ImitlabError(f"an evaluation worker could not load the agent or env: {payload}")
        if kind == "ready":
            worker.ready = True
            self._startup_failures = 0
            self._timeout = self.timeout_for(float(payload))  # type: ignore[arg-type]
            return None
        assert kind == "result"
        worker.task = None
        return payload  # type: ignore[return-value]

    def close(self, graceful: bool = True) -> None:
        """Stop every worker: asked politely after a clean run, killed at once after an error or interrupt."""
        for worker in self._workers:
            if graceful and worker.task is None and worker.ready:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            else:
                worker.process.kill()
        end = time.monotonic() + SHUTDOWN_GRACE_S
        for worker in self._workers:
            worker.process.join(timeout=max(0.0, end - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers.clear()


def open_pool(backend: str, factory: RunnerFactory[R], workers: int | None, address: str | None = None,
              **options: Any) -> EpisodePool[R]:
    """The episode pool of ``backend``: ``workers`` local processes (None: one per core) or Ray actors on the
    cluster at ``address`` (None: a local Ray instance with ``workers`` CPUs; ``auto``: the running cluster;
    ``workers`` None: one actor per CPU of the cluster). ``options`` are ``EpisodePool``'s."""
    check_backend(backend)
    if backend == "local":
        return EpisodePool(factory, workers or os.cpu_count() or 1, **options)
    from imitlab.evaluation.ray_workers import RayEpisodePool

    return RayEpisodePool(factory, workers, address=address, **options)


def check_backend(backend: str) -> None:
    """One line for an unknown backend, before anything is built or written."""
    if backend not in BACKENDS:
        raise ImitlabError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
