"""Dataset surgery without touching the inputs: merge datasets, split train/valid, filter episodes.

``merge`` and ``filter_dataset`` write a new folder and copy episode files byte for byte (no decode and
re-encode, so nothing changes and copying is as fast as the disk); ``split`` only adds ``masks.json``.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from imitlab.core.errors import ImitlabError
from imitlab.demos.audit import CHECKS, AuditConfig, audit
from imitlab.demos.dataset import DemoDataset, DemoWriter, env_difference, file_attrs, open_episode_file

#: Masks ``split`` writes (robomimic's filter-key names).
TRAIN_MASK, VALID_MASK = "train", "valid"


@dataclass
class CopyResult:
    """What a merge or filter wrote."""

    path: Path
    kept: int
    dropped: int


@contextmanager
def new_dataset_folder(out: Path, inputs: Sequence[Path] = ()) -> Iterator[Path]:
    """Commands that derive a dataset write a new (or empty) folder, never an existing dataset or one of
    their inputs; if they fail halfway, what they wrote is removed, so no half-made dataset is left behind."""
    if out.exists() and not out.is_dir():
        raise ImitlabError(f"{out} is a file, not a folder; choose a new folder for the output dataset")
    if out.exists() and any(out.iterdir()):
        raise ImitlabError(f"{out} exists and is not empty; choose a new folder for the output dataset")
    for src in inputs:
        if out.resolve() == Path(src).resolve():
            raise ImitlabError(f"output {out} is also an input; choose a new folder")
    existed = out.exists()
    try:
        yield out
    except BaseException:
        if out.exists():
            shutil.rmtree(out)
            if existed:
                out.mkdir()
        raise


def _writer_like(dataset: DemoDataset, out: Path) -> DemoWriter:
    return DemoWriter(out, dataset.env_id, dataset.env_kwargs, dataset.observation_space, dataset.action_space)


def merge(inputs: Sequence[Path], out: Path) -> CopyResult:
    """Concatenate datasets of the same env (same kwargs and spaces) into ``out``, in argument order.

    Masks are not carried over: the inputs' splits do not combine into a meaningful one, so run ``split``
    on the result.
    """
    if len(inputs) < 2:
        raise ImitlabError("merge needs at least two datasets")
    resolved = [Path(p).resolve() for p in inputs]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ImitlabError(f"merge got the same dataset twice ({inputs[resolved.index(path)]} and {inputs[i]}): "
                               "its episodes would be copied twice")
    datasets = [DemoDataset(p) for p in inputs]
    first = datasets[0]
    for other in datasets[1:]:
        key = env_difference(first.header, other.header)
        if key is not None:
            raise ImitlabError(f"cannot merge {other.path} into {first.path}: different {key} "
                               f"({other.header.get(key)!r} vs {first.header.get(key)!r})")
    paths = [path for dataset in datasets for path in dataset.episode_paths()]
    for path in paths:
        _check_readable(path)
    with new_dataset_folder(out, inputs):
        writer = _writer_like(first, out)
        for path in paths:
            writer.append_file(path)
    return CopyResult(path=out, kept=len(paths), dropped=0)


def _check_readable(path: Path) -> None:
    """Refuse to propagate a damaged episode: the file must open and have its arrays (read lazily)."""
    with open_episode_file(path) as f:
        lengths = {f["actions"].shape[0], f["rewards"].shape[0], *(f["obs"][k].shape[0] for k in f["obs"])}
    if len(lengths) != 1:
        raise ImitlabError(f"corrupt episode file {path}: arrays have different lengths {sorted(lengths)}")


def _is_readable(path: Path) -> bool:
    try:
        _check_readable(path)
    except ImitlabError:
        return False
    return True


def split(dataset: DemoDataset, valid_fraction: float, seed: int = 0, overwrite: bool = False) -> dict[str, list[str]]:
    """Write seeded ``train``/``valid`` masks by episode into ``masks.json`` (other masks are kept); an episode
    file that cannot be opened (truncated, damaged) is in neither."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ImitlabError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    masks = dataset.masks()
    if not overwrite and (TRAIN_MASK in masks or VALID_MASK in masks):
        raise ImitlabError(f"{dataset.path} already has train/valid masks; pass --overwrite to replace them")
    names = [p.stem for p in dataset.episode_paths() if _is_readable(p)]  # a damaged file is in neither mask
    if not names:
        raise ImitlabError(f"dataset {dataset.path} has no readable episodes to split")
    order = np.random.default_rng(seed).permutation(len(names))
    n_valid = int(round(len(names) * valid_fraction))
    if valid_fraction > 0 and len(names) > 1:
        n_valid = min(max(n_valid, 1), len(names) - 1)
    valid = {names[i] for i in order[:n_valid]}
    masks[TRAIN_MASK] = [n for n in names if n not in valid]
    masks[VALID_MASK] = [n for n in names if n in valid]
    dataset.write_masks(masks)
    return masks


def filter_dataset(dataset: DemoDataset, out: Path, *, success_only: bool = False,
                   sources: Sequence[str] = (), drop_checks: Sequence[str] = (),
                   audit_config: AuditConfig | None = None) -> CopyResult:
    """Copy the episodes that pass every given condition into ``out``; masks are carried over, renamed.

    ``drop_checks``: audit check codes (or ``"all"``) whose flagged episodes are dropped.
    """
    unknown = set(drop_checks) - set(CHECKS) - {"all"}
    if unknown:
        raise ImitlabError(f"unknown audit check(s) {sorted(unknown)}; known: {', '.join(CHECKS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # checked again on writing; early saves the audit
        raise ImitlabError(f"{out} exists and is not an empty folder; choose a new folder for the output dataset")
    dropped_by_audit: set[str] = set()
    if drop_checks:
        report = audit(dataset, audit_config)
        dropped_by_audit = report.flagged(None if "all" in drop_checks else set(drop_checks))

    def keep(attrs: dict[str, Any]) -> bool:
        if success_only and not attrs.get("success", False):
            return False
        return not sources or attrs.get("source") in sources

    selected = []
    for path in dataset.episode_paths():
        if path.stem in dropped_by_audit:
            continue
        with open_episode_file(path) as f:
            attrs = file_attrs(f)
        if keep(attrs):
            selected.append(path)
    if not selected:
        raise ImitlabError(f"no episode of {dataset.path} passes the filter; nothing written")
    for path in selected:
        _check_readable(path)
    masks = dataset.masks()
    with new_dataset_folder(out, [dataset.path]):
        writer = _writer_like(dataset, out)
        renamed = {path.stem: writer.append_file(path).stem for path in selected}
        masks = {name: [renamed[e] for e in episodes if e in renamed] for name, episodes in masks.items()}
        if masks:
            DemoDataset(out).write_masks(masks)
    total = len(dataset.episode_paths())
    return CopyResult(path=out, kept=len(selected), dropped=total - len(selected))
