"""Policy checkpoints: `policy.safetensors` (weights) + `policy.json` (config and metadata); nothing is unpickled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from imitlab.core.documents import read_format_document
from imitlab.core.errors import ImitlabError
from imitlab.core.fsio import publish_dir, staging_dir
from imitlab.core.permissions import apply_umask
from imitlab.policies.policy import ImagePolicy, PolicyConfig

FORMAT = "imitlab-policy"
FORMAT_VERSION = 1
WEIGHTS_FILE = "policy.safetensors"
CONFIG_FILE = "policy.json"


def save_policy(policy: ImagePolicy, directory: Path, metadata: dict[str, Any] | None = None) -> None:
    """Write the checkpoint as the folder `directory`, replacing one already there as a whole.

    Both files are staged in a folder beside it, fsynced and renamed into place together, so a crash never
    leaves new weights beside old metadata (which would load silently). `metadata` is free-form JSON (env_id,
    env_kwargs, observation/action spaces, training info) kept for evaluation and deployment.
    """
    directory = Path(directory)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": policy.config.to_dict(),
                "metadata": metadata or {}}
    try:
        text = json.dumps(document, indent=2)
    except (TypeError, ValueError) as error:
        raise ImitlabError(f"{directory / CONFIG_FILE}: metadata is not JSON-serialisable ({error})") from error
    # channels_last weights are not contiguous; safetensors stores plain row-major tensors.
    tensors = {name: t.detach().cpu().contiguous() for name, t in policy.state_dict().items()}
    try:
        staging = staging_dir(directory)
        try:
            save_file(tensors, str(staging / WEIGHTS_FILE))
            (staging / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
            apply_umask(staging)  # mkdtemp made it 0700 and safetensors writes 0600
            publish_dir(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        raise ImitlabError(f"{directory}: cannot write policy ({error.strerror or error})") from error


def load_policy(directory: Path) -> tuple[ImagePolicy, dict[str, Any]]:
    """Rebuild a saved policy (on CPU, in eval mode) and return it with its metadata.

    Any problem with the checkpoint raises ImitlabError naming the file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ImitlabError(f"{directory}: policy directory not found")
    config, metadata = _read_document(directory / CONFIG_FILE)
    state = _read_weights(directory / WEIGHTS_FILE)
    policy = ImagePolicy(config, load_pretrained=False)
    _check_matches(directory / WEIGHTS_FILE, policy, state)
    policy.load_state_dict(state, strict=True)
    policy.eval()
    return policy, metadata


def policy_dir(path: Path) -> Path:
    """A policy folder, given it or a training run folder that holds ``best/`` (or ``policy/``)."""
    if not path.exists():
        raise ImitlabError(f"policy not found: {path}")
    for candidate in (path, path / "best", path / "policy"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ImitlabError(f"no {CONFIG_FILE} in {path} (expected a policy folder or a training run folder)")


def read_policy_metadata(directory: Path) -> dict[str, Any]:
    """The metadata of a saved policy without building the network (cheap; validates policy.json)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImitlabError(f"{directory}: policy directory not found")
    return _read_document(directory / CONFIG_FILE)[1]


def _read_document(path: Path) -> tuple[PolicyConfig, dict[str, Any]]:
    document = read_format_document(path, FORMAT, FORMAT_VERSION)
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ImitlabError(f"{path}: \"metadata\" must be an object")
    try:
        config = PolicyConfig.from_dict(document.get("config"))
    except ImitlabError as error:
        raise ImitlabError(f"{path}: {error}") from error
    return config, metadata


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ImitlabError(f"{path}: file not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ImitlabError(f"{path}: corrupt or truncated safetensors file ({reason})") from error


def _check_matches(path: Path, policy: ImagePolicy, state: dict[str, torch.Tensor]) -> None:
    """Compare names and shapes first so a mismatch yields one readable line, not torch's multi-line report."""
    expected = policy.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if wrong:
        problems.append(f"shape mismatch {_first(wrong)}")
    if problems:
        raise ImitlabError(f"{path}: weights do not match {CONFIG_FILE} ({'; '.join(problems)})")


def _first(items: list[str], limit: int = 3) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
