"""Training you can kill: the full state of a run, written after every epoch, from which ``--resume`` continues
exactly as if the run had never stopped (bit for bit on CPU with the same thread count).

The state is everything the next step depends on: the weights, the optimiser's moments, the learning-rate
schedule's position, the weight average, every random stream (torch's global one, the augmentation generator,
the loader's shuffling generator, numpy's and Python's global ones) and the run's progress (epoch, step, best
score, log). Tensors go to ``state.safetensors`` and everything else to ``state.json``, so loading a
checkpoint never unpickles anything. The two files form one folder, ``<run>/checkpoint``, staged beside it and
renamed into place, so a kill at any moment leaves the previous epoch's complete checkpoint.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel

from imitlab.core.documents import read_format_document
from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import claim_out_dir, publish_dir, recover_dir, staging_dir, write_json_atomic

CHECKPOINT_DIR = "checkpoint"
TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"
FORMAT = "imitlab-train-state"
FORMAT_VERSION = 1
#: Settings a resumed run may change: they say how it runs, not what it computes.
FREE_ON_RESUME = ("resume", "overwrite", "progress")


@dataclass
class TrainingState:
    """The live objects of a run that a checkpoint captures and restores in place."""

    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    averaged: AveragedModel | None
    loader_rng: np.random.Generator
    """The numpy generator the split and the minibatch shuffling draw from."""
    augment: torch.Generator
    """The torch generator of the random-shift augmentation."""


def save_checkpoint(run: Path, state: TrainingState, progress: dict[str, Any]) -> Path:
    """Write ``<run>/checkpoint`` (replacing the previous one as a whole); ``progress`` must be JSON."""
    tensors: dict[str, torch.Tensor] = {f"policy/{k}": v for k, v in state.policy.state_dict().items()}
    if state.averaged is not None:
        tensors |= {f"ema/{k}": v for k, v in state.averaged.state_dict().items()}
    optimizer = state.optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in optimizer["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["rng/augment"] = state.augment.get_state()
    numpy_global = np.random.get_state()
    document = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
        "scheduler": state.scheduler.state_dict(),
        "rng": {"loader": state.loader_rng.bit_generator.state,
                "numpy": [numpy_global[0], numpy_global[1].tolist(), *numpy_global[2:]],
                "python": random.getstate()},
        "progress": progress,
    }
    target = Path(run) / CHECKPOINT_DIR
    staging = staging_dir(target)
    try:
        # channels_last weights are not contiguous; safetensors stores plain row-major tensors.
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / TENSORS_FILE))
        write_json_atomic(staging / STATE_FILE, document)
        publish_dir(staging, target)
    except OSError as error:
        raise ImitlabError(f"{target}: cannot write the training checkpoint ({error.strerror or error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_progress(run: Path) -> dict[str, Any]:
    """The progress record of ``<run>/checkpoint`` (epoch, step, config...), without touching any tensor."""
    path = Path(run) / CHECKPOINT_DIR / STATE_FILE
    recover_dir(path.parent)
    if not path.is_file():
        raise ImitlabError(f"nothing to resume: {path.parent} does not exist (a run writes it after its first epoch)")
    return read_format_document(path, FORMAT, FORMAT_VERSION)["progress"]


def load_checkpoint(run: Path, state: TrainingState) -> dict[str, Any]:
    """Restore ``state`` in place from ``<run>/checkpoint``; returns its progress record."""
    folder = Path(run) / CHECKPOINT_DIR
    progress = read_progress(run)
    document = read_format_document(folder / STATE_FILE, FORMAT, FORMAT_VERSION)
    try:
        tensors = load_file(str(folder / TENSORS_FILE))
    except (OSError, SafetensorError) as error:
        raise ImitlabError(f"{folder / TENSORS_FILE}: unreadable checkpoint ({error})") from None
    try:
        state.policy.load_state_dict(_prefixed(tensors, "policy/"), strict=True)
        if state.averaged is not None:
            state.averaged.load_state_dict(_prefixed(tensors, "ema/"), strict=True)
        state.optimizer.load_state_dict(_optimizer_state(document["optimizer"], _prefixed(tensors, "optimizer/")))
        _match_layouts(state.optimizer)
        state.scheduler.load_state_dict(document["scheduler"])
        torch.set_rng_state(tensors["rng/torch"])
        state.augment.set_state(tensors["rng/augment"])
        state.loader_rng.bit_generator.state = document["rng"]["loader"]
        kind, keys, *rest = document["rng"]["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
        version, internal, gauss = document["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImitlabError(f"{folder}: the checkpoint does not fit this run ({first_line})") from None
    return progress


def claim_run_dir(out: Path, settings: dict[str, Any]) -> None:
    """Make ``out`` this run's before anything is written to it.

    A new run refuses a non-empty ``out`` unless ``settings["overwrite"]``, which empties it. A resumed run needs
    an unfinished checkpoint there, made with the same ``settings`` (a training config as JSON) but for
    :data:`FREE_ON_RESUME`, because a different config would not continue the same computation.
    """
    out = Path(out)
    if settings["resume"] and settings["overwrite"]:
        raise ImitlabError("--resume continues the run in --out and --overwrite replaces it: choose one")
    if not settings["resume"]:
        claim_out_dir(out, settings["overwrite"])
        return
    progress = read_progress(out)
    if progress["finished"]:
        raise ImitlabError(f"nothing to resume: {out} finished after epoch {progress['epoch']}")
    saved = progress["config"]
    differ = [key for key in settings if key not in FREE_ON_RESUME and saved.get(key) != settings[key]]
    if differ:
        shown = ", ".join(f"{key} ({saved.get(key)!r} there, {settings[key]!r} now)" for key in differ[:3])
        raise ImitlabError(f"--resume continues {out} with the settings it was started with; these differ: {shown}")


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each moment its parameter's memory layout (channels_last weights): safetensors stores them
    row-major, and fused AdamW walks parameter and moments as flat memory, so the layouts must agree."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            entries = optimizer.state.get(param, {})
            for key, value in entries.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    entries[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_state(saved: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Reassemble ``optimizer.state_dict()`` from its JSON part and its tensors (``<param index>/<name>``)."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, entries in saved["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group
              for group in saved["param_groups"]]
    return {"state": state, "param_groups": groups}
