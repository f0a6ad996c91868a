"""The Ray backend of ``EpisodePool``: the same tasks, results and fault semantics, run by Ray actors on a local
Ray instance or a cluster (``pip install 'imitlab[ray]'``).

Each actor holds one runner (agent and env, built once, one CPU) and runs one episode at a time, like a local
worker. The driver waits on the actors' result references with the nearest deadline as timeout. An actor whose
process dies (killed, out of memory, its node lost) fails its reference with ``RayActorError``; an episode past
its timeout has its actor killed. Either way a fresh actor takes its place and the task is run again or becomes
an error, as the pool's ``retries`` say. Results travel back through Ray's object store to the driver, which
alone writes files (a video, when asked for, is written by the runner: on a multi-node cluster that path must be
shared).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

from imitlab.core.errors import ImitlabError
from imitlab.evaluation.workers import (MAX_STARTUP_FAILURES, STARTUP_TIMEOUT_S, EpisodePool, ErrorResult, R,
                                        RunnerFactory, Task, WorkerSlot, exception_reason, run_task)

try:
    import ray
    from ray.exceptions import RayError
except ImportError:  # pragma: no cover - the optional extra is missing
    raise ImitlabError("--backend ray needs Ray: pip install 'imitlab[ray]'") from None


#: Ray's settings for a local instance started here: its worker processes run at the local workers' priority (with
#: Ray's default niceness 15 the actors yield the cores to every normal-priority process in their scheduling group,
#: which is every other process where the kernel does not group by session), and Ray's metrics, which nothing here
#: reads, are not collected.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0, "enable_metrics_collection": False}


class _RunnerActor:
    """A Ray actor holding one runner; ``ready`` reports the env's time limit or why the runner did not build."""

    def __init__(self, factory: RunnerFactory[Any], errored: ErrorResult[Any]):
        self.errored = errored
        self.runner = None
        self.setup_error = ""
        try:
            self.runner = factory()
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops with it
            self.setup_error = exception_reason(exc)

    def ready(self) -> tuple[str, Any]:
        if self.runner is None:
            return "setup_failed", self.setup_error
        return "ready", float(self.runner.time_limit_s)

    def run(self, task: Task) -> Any:
        return run_task(self.runner, task, self.errored)


@dataclass(kw_only=True)
class _Actor(WorkerSlot):
    handle: Any
    ref: Any
    """The reference awaited: ``ready`` while starting, then the running task's result (None while idle)."""


def connect_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address``, or (None) start a local Ray instance with ``num_cpus`` CPUs (None:
    every core), unless Ray is already up in this process; True when an instance was started here, which the
    caller then shuts down (``disconnect_ray``) and nobody else does."""
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _system_config=LOCAL_SYSTEM_CONFIG)
    else:
        ray.init(address=address, include_dashboard=False)
    return True


def disconnect_ray(started: bool) -> None:
    """Shut down the Ray instance ``connect_ray`` started (``started``); leave one found running alone."""
    if started and ray.is_initialized():
        ray.shutdown()


class RayEpisodePool(EpisodePool[R]):
    """``EpisodePool`` on Ray actors (one CPU each); connects to ``address`` or starts a local Ray instance,
    and shuts down only an instance it started."""

    def __init__(self, factory: RunnerFactory[R], workers: int | None, address: str | None = None,
                 **options: Any):
        self._started_ray = connect_ray(address, workers)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        super().__init__(factory, workers or cpus, **options)
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(_RunnerActor)
        self._actors: list[_Actor] = []

    def _slots(self) -> list[WorkerSlot]:
        return self._actors

    def _dispatch(self, actor: _Actor) -> None:  # type: ignore[override]
        actor.ref = actor.handle.run.remote(actor.task)

    def _top_up(self, needed: int) -> None:
        while len(self._actors) < min(self.size, needed):
            handle = self._actor_class.remote(self.factory, self.errored)
            self._actors.append(_Actor(handle=handle, ref=handle.ready.remote(), started=time.monotonic()))

    def _wait(self) -> Iterator[R]:
        """Block until a result, a death or the nearest deadline; yield the results that came of it."""
        refs = [a.ref for a in self._actors if a.ref is not None]
        if not refs:
            return
        deadlines = [due for a in self._actors if (due := a.due()) is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        ray.wait(refs, num_returns=1, timeout=timeout)
        done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        for actor in list(self._actors):
            result = self._service(actor, actor.ref is not None and actor.ref in done)
            if result is not None:
                yield result

    def _service(self, actor: _Actor, done: bool) -> R | None:  # type: ignore[override]
        if done:
            try:
                value = ray.get(actor.ref)
            except RayError as exc:  # the actor's process died, or the result was lost with its node
                return self._lost(actor, "crash", f"ray actor lost: {str(exc).strip().splitlines()[0]}")
            actor.ref = None
            if not actor.ready:
                kind, payload = value
                if kind == "setup_failed":
                    raise ImitlabError(f"a Ray worker could not load the agent or env: {payload}")
                actor.ready = True
                self._startup_failures = 0
                self._timeout = self.timeout_for(payload)
                return None
            actor.task = None
            return value
        due = actor.due()
        if due is None or time.monotonic() < due:
            return None
        ray.kill(actor.handle)
        reason = (f"episode ran past its {self._timeout:.0f} s timeout" if actor.ready else
                  f"worker did not start within {STARTUP_TIMEOUT_S:.0f} s")
        return self._lost(actor, "timeout", reason)

    def _lost(self, actor: _Actor, kind: str, reason: str) -> R | None:  # type: ignore[override]
        self._actors.remove(actor)
        if not actor.ready:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                raise ImitlabError(f"Ray workers fail to start ({reason}, {self._startup_failures} times)")
            return None
        return self.lost_task(actor.task, kind, reason) if actor.task is not None else None

    def close(self, graceful: bool = True) -> None:
        """Kill the actors (a Ray actor holds its CPU until then) and stop a Ray instance this pool started."""
        for actor in self._actors:
            ray.kill(actor.handle)
        self._actors.clear()
        disconnect_ray(self._started_ray)
