"""Defaults that should not surprise: files follow the user's umask (a bundle deployed, or a checkpoint or report
written, under umask 022 is readable by another user), and merging a dataset with itself is refused."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from imitlab.demos.edit import merge
from imitlab.demos.synthetic import write_synthetic_dataset
from imitlab.deploy.bundle import _publish
from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import publish_dir, staging_dir
from imitlab.policies import ImagePolicy, PolicyConfig, save_policy


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_a_published_bundle_follows_the_umask_not_mkdtemp_and_safetensors(umask, tmp_path, mask, file_mode,
                                                                          dir_mode):
    umask(mask)
    staging = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700, like deploy's staging folder
    (staging / "validation").mkdir()
    save_file({"w": torch.zeros(2)}, str(staging / "validation" / "weights.safetensors"))  # 0600
    (staging / "bundle.json").write_text("{}")
    _publish(staging, tmp_path / "bundles" / "b")
    modes = _modes(tmp_path / "bundles" / "b")
    assert modes == {".": dir_mode, "validation": dir_mode, "validation/weights.safetensors": file_mode,
                     "bundle.json": file_mode}
    if mask == 0o022:
        assert all(mode & stat.S_IROTH for mode in modes.values())  # another user can read every file


def test_a_published_run_folder_follows_the_umask(umask, tmp_path):
    """Training checkpoints and evaluation reports are staged in mkdtemp folders and published by publish_dir."""
    umask(0o022)
    target = tmp_path / "run" / "checkpoint"
    staging = staging_dir(target)
    save_file({"w": torch.zeros(2)}, str(staging / "tensors.safetensors"))  # 0600
    publish_dir(staging, target)
    assert _modes(target) == {".": 0o755, "tensors.safetensors": 0o644}


def test_a_saved_policy_is_readable_by_others_under_umask_022(umask, tmp_path):
    policy = ImagePolicy(PolicyConfig(backbone="nature_cnn", pretrained=False, image_keys=("image",), image_size=48,
                                      state_dim=2, action_dim=2))
    save_policy(policy, tmp_path / "best")
    assert {name: mode for name, mode in _modes(tmp_path / "best").items() if name != "."} == {
        "policy.safetensors": 0o644, "policy.json": 0o644}


def test_merging_a_dataset_with_itself_is_refused(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", episodes=2, length=5)
    with pytest.raises(ImitlabError, match="merge got the same dataset twice"):
        merge([a, tmp_path / "x" / ".." / "a"], tmp_path / "m")
    assert not (tmp_path / "m").exists()
