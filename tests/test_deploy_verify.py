"""Verified bundles and bounded policy files: a tampered model, a path out of the bundle, absurd sizes and NaN
actions are each refused with one line (and exit 1 from the CLI) before anything is loaded or allocated."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imitlab.deploy.bundle import deploy, probe_observations
from imitlab.deploy.export import parity_error
from imitlab.deploy.runtime import load_bundle
from imitlab.deploy.spec import MODEL_FILE, SPEC_FILE
from imitlab.core.errors import ImitlabError
from imitlab.policies.io import policy_dir
from imitlab.core.limits import MAX_DOCUMENT_BYTES
from imitlab.policies import load_policy, save_policy
from imitlab.policies.io import CONFIG_FILE


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.fixture
def policy_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(policy_dir(tiny_run), tmp_path / "policy"))


def _edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``imitlab ARGS`` in this process (the console entry point, error handling included): exit code, stderr."""
    from imitlab.cli import main

    monkeypatch.setattr(sys, "argv", ["imitlab", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("imitlab: error: "), stderr
    return lines[0]


def test_a_modified_model_is_refused_by_its_sha256(bundle_copy):
    model = bundle_copy / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    model.write_bytes(bytes(data))
    with pytest.raises(ImitlabError, match="sha256 .* does not match"):
        load_bundle(bundle_copy)
    model.write_bytes(bytes(data[:-10]))
    with pytest.raises(ImitlabError, match="bytes, bundle.json says"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "sub/../../model.onnx", "C:\\model.onnx"])
def test_model_paths_are_confined_to_the_bundle(bundle_copy, name):
    shutil.copy(bundle_copy / MODEL_FILE, bundle_copy.parent / MODEL_FILE)  # a valid model just outside
    _edit_json(bundle_copy / SPEC_FILE, lambda s: s["models"]["fp32"].update(file=name))
    with pytest.raises(ImitlabError, match="outside the bundle|invalid file name"):
        load_bundle(bundle_copy)


def test_a_link_out_of_the_bundle_is_refused(bundle_copy):
    outside = bundle_copy.parent / "elsewhere.onnx"
    shutil.move(bundle_copy / MODEL_FILE, outside)
    os.symlink(outside, bundle_copy / MODEL_FILE)
    with pytest.raises(ImitlabError, match="leads outside the bundle"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("field, value, message", [
    ("image_size", 10**6, "image_size = 1000000 is outside"),
    ("image_size", "48", "image_size must be an integer"),
    ("state_dim", 10**12, "state_dim"),
    ("action_dim", -1, "action_dim"),
    ("image_keys", [f"cam{i}" for i in range(100)], "number of image_keys = 100"),
    ("image_keys", ["state"], "image_keys"),
    ("env_kwargs", {f"k{i}": i for i in range(1000)}, "env_kwargs has 1000 keys"),
    ("models", {"fp32": {"file": MODEL_FILE, "sha256": "x"}}, "sha256 hex digest"),
    ("observation_space", {"spaces": {"state": {"low": [0.0] * 10**5}}}, "state low must be"),
])
def test_absurd_or_malformed_bundle_fields_are_refused_before_loading(bundle_copy, field, value, message):
    _edit_json(bundle_copy / SPEC_FILE, lambda s: s.update({field: value}))
    with pytest.raises(ImitlabError, match=message) as error:
        load_bundle(bundle_copy)
    assert "\n" not in str(error.value)


def test_an_oversized_json_document_is_refused_unread(bundle_copy):
    with (bundle_copy / SPEC_FILE).open("r+b") as spec:
        spec.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: no real disk use
    with pytest.raises(ImitlabError, match="larger than 64 MiB"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("field, value, message", [
    ("head_hidden", [10**6, 10**6], "head_hidden width = 1000000 is outside"),
    ("head_hidden", [64] * 1000, "number of head_hidden layers = 1000"),
    ("image_size", 10**5, "image_size = 100000"),
    ("state_dim", 10**10, "state_dim = 10000000000"),
    ("keypoints", 10**9, "keypoints"),
    ("image_keys", [f"cam{i}" for i in range(50)], "number of image_keys = 50"),
])
def test_absurd_policy_sizes_are_refused_before_allocating(policy_copy, field, value, message):
    _edit_json(policy_copy / CONFIG_FILE, lambda d: d["config"].update({field: value}))
    with pytest.raises(ImitlabError, match=message) as error:
        load_policy(policy_copy)
    assert "\n" not in str(error.value)


def test_cli_refuses_absurd_sizes_tampered_models_and_policies_without_env_id(
        policy_copy, bundle_copy, tmp_path, monkeypatch, capsys):
    _edit_json(policy_copy / CONFIG_FILE, lambda d: d["config"].update(head_hidden=[10**6, 10**6]))
    code, err = run_cli(monkeypatch, capsys, "deploy", str(policy_copy), "--min-success", "0",
                        "--out", str(tmp_path / "b1"))
    assert code == 1 and "head_hidden width" in _one_error_line(err)

    _edit_json(policy_copy / CONFIG_FILE, lambda d: (d["config"].update(head_hidden=[256, 256]),
                                                     d["metadata"].pop("env_id")))
    code, err = run_cli(monkeypatch, capsys, "deploy", str(policy_copy), "--min-success", "0",
                        "--out", str(tmp_path / "b2"))
    assert code == 1 and "no env_id" in _one_error_line(err)
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()

    (bundle_copy / MODEL_FILE).write_bytes((bundle_copy / MODEL_FILE).read_bytes() + b"\0")
    code, err = run_cli(monkeypatch, capsys, "serve", str(bundle_copy), "--port", "1")
    assert code == 1 and "modified or damaged" in _one_error_line(err)
    code, err = run_cli(monkeypatch, capsys, "eval", str(bundle_copy), "--episodes", "2",
                        "--out", str(tmp_path / "eval"))
    assert code == 1 and "modified or damaged" in _one_error_line(err)
    assert not (tmp_path / "eval").exists()

    _edit_json(bundle_copy / SPEC_FILE, lambda s: s.update(image_size=10**7))
    code, err = run_cli(monkeypatch, capsys, "serve", str(bundle_copy), "--port", "1")
    assert code == 1 and "image_size = 10000000" in _one_error_line(err)


class _NanOnnx:
    """An exported model that agrees with torch except for one NaN action."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def predict_outputs(self, obs):
        outputs = {name: value.copy() for name, value in self.policy.predict_outputs(obs).items()}
        outputs["action"][-1, 0] = np.nan
        return outputs


def test_parity_is_nan_when_either_side_gives_nan(tiny_run):
    policy, md = load_policy(policy_dir(tiny_run))
    probe = probe_observations(md["env_id"], md["env_kwargs"], ("state", "image"), limit=16)
    assert parity_error(policy, _NanOnnx(policy), probe) != parity_error(policy, _NanOnnx(policy), probe)  # NaN
    assert parity_error(policy, policy, probe) == 0.0


def test_deploy_refuses_a_policy_with_nan_actions(tiny_run, tmp_path):
    policy, md = load_policy(policy_dir(tiny_run))
    with torch.no_grad():
        next(p for name, p in policy.named_parameters() if name.endswith("bias")).fill_(float("nan"))
    save_policy(policy, tmp_path / "nan_policy", md)
    with pytest.raises(ImitlabError, match="non-finite") as error:
        deploy(tmp_path / "nan_policy", 0.0, episodes=2, out=tmp_path / "bundle", workers=1, videos=0, progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "bundle").exists()
