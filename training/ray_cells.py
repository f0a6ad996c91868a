"""Training runs as Ray tasks: the data-efficiency study's cells spread over a Ray cluster (``--backend ray``).

Each run is one task holding ``cpus`` CPUs (its torch threads) or one GPU, so Ray packs as many runs on a node
as its resources allow and queues the rest. A run reads its dataset and writes its run folder itself (on a
multi-node cluster both must be on a path every node sees); only its outcome travels back. A task whose worker
process dies is retried by Ray (``TASK_RETRIES``); a run cut short resumes from its last epoch checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Sequence

from tqdm import tqdm

from imitlab.core.errors import ImitlabError
from imitlab.evaluation.ray_workers import connect_ray, disconnect_ray
from imitlab.training.config import TrainConfig

try:
    import ray
    from ray.exceptions import WorkerCrashedError
except ImportError:  # pragma: no cover - the optional extra is missing
    raise ImitlabError("--backend ray needs Ray: pip install 'imitlab[ray]'") from None

#: Times Ray runs a training task again after its worker process died.
TASK_RETRIES = 2


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to the cluster at ``address`` (None: start a local Ray instance with every core) unless Ray is
    already up; shut down only an instance started here."""
    started = connect_ray(address)
    try:
        yield
    finally:
        disconnect_ray(started)


def _train_task(config: TrainConfig) -> str | None:
    """One run in a Ray worker: None when it finished, else its one-line error."""
    from imitlab.training.bc import train

    try:
        train(config)
    except ImitlabError as exc:
        return str(exc)
    return None


def _submit(config: TrainConfig, cluster_gpus: float) -> ray.ObjectRef:
    """A task for one run: one GPU when it trains on cuda (``auto`` when the cluster has one), else ``threads``
    CPUs (at least one), its torch threads set to the CPUs it holds, so a local run with the same ``threads``
    gives the same weights."""
    if config.device == "cuda" and cluster_gpus < 1:
        raise ImitlabError("training on cuda, but the Ray cluster has no GPU")
    gpu = config.device == "cuda" or (config.device == "auto" and cluster_gpus >= 1)
    cpus = max(1, config.threads)
    task = ray.remote(num_cpus=cpus, num_gpus=1 if gpu else 0, max_retries=TASK_RETRIES)(_train_task)
    return task.remote(replace(config, threads=cpus, progress=False))


def train_on_ray(configs: Sequence[TrainConfig], progress: bool = True) -> None:
    """Run every config as a Ray task (resources: ``_submit``); returns when all finished, raises the first
    run's error."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    pending = {_submit(c, cluster_gpus): c for c in configs}
    with tqdm(total=len(pending), desc="study: train (ray)", unit="run", disable=not progress) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            config = pending.pop(done[0])
            try:
                error = ray.get(done[0])
            except WorkerCrashedError as exc:
                error = f"its Ray worker died {TASK_RETRIES + 1} times ({str(exc).strip().splitlines()[0]})"
            if error is not None:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise ImitlabError(f"training {config.out} failed: {error}")
            bar.update()
