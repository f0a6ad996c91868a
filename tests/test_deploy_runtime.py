"""The torch-free runtime: ONNX matches torch on recorded observations, loads without torch, rejects bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imitlab.core.errors import ImitlabError
from imitlab.core.observation_check import ObservationError
from imitlab.demos.dataset import DemoDataset
from imitlab.deploy import bundle as bundle_module
from imitlab.deploy.bundle import deploy
from imitlab.deploy.export import export_onnx, parity_error, quantize_int8
from imitlab.deploy.runtime import OnnxPolicy, load_bundle
from imitlab.deploy.spec import INT8_MODEL_FILE, MODEL_FILE, SPEC_FILE, read_spec
from imitlab.agents import resolve_agent
from imitlab.policies import ImagePolicy, PolicyConfig, load_policy
from imitlab.policies.io import policy_dir


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Path:
    return tiny_bundle


@pytest.fixture(scope="module")
def recorded(tiny_demos: Path) -> dict[str, np.ndarray]:
    """Every observation of the recorded demos."""
    episodes = list(DemoDataset(tiny_demos).episodes())
    return {k: np.concatenate([e.obs[k] for e in episodes]) for k in ("state", "image")}


def test_onnx_matches_torch_on_recorded_observations(tiny_run, bundle, recorded):
    policy, _ = load_policy(policy_dir(tiny_run))
    runtime = load_bundle(bundle)
    torch_actions = policy.predict(recorded)
    onnx_actions = runtime.predict(recorded)
    assert onnx_actions.shape == torch_actions.shape == (len(recorded["state"]), 2)
    assert np.max(np.abs(onnx_actions - torch_actions)) <= 1e-4
    single = {k: v[7] for k, v in recorded.items()}
    assert runtime.predict(single).shape == (2,)
    np.testing.assert_allclose(runtime.predict(single), torch_actions[7], atol=1e-4)


def test_runtime_never_imports_torch(bundle, recorded, tmp_path):
    np.savez(tmp_path / "obs.npz", **{k: v[:5] for k, v in recorded.items()})
    code = f"""
import json, sys
import numpy as np
from imitlab.deploy.runtime import load_bundle
obs = dict(np.load({str(tmp_path / 'obs.npz')!r}))
out = {{m: load_bundle({str(bundle)!r}, m).predict(obs).tolist() for m in ("fp32", "int8")}}
print(json.dumps({{"torch_loaded": "torch" in sys.modules, "actions": out}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["torch_loaded"] is False
    expected = load_bundle(bundle).predict({k: v[:5] for k, v in recorded.items()})
    np.testing.assert_allclose(result["actions"]["fp32"], expected, atol=1e-6)
    assert np.all(np.abs(result["actions"]["int8"]) <= 1.0)


@pytest.mark.parametrize("change, message", [
    (lambda o: o.pop("image"), "lacks keys"),
    (lambda o: o.update(image=o["image"].astype(np.float32)), "expects uint8"),
    (lambda o: o.update(image=o["image"][:, :40]), "expects uint8"),
    (lambda o: o.update(state=o["state"][:3]), "state"),
    (lambda o: o.update(state=np.array(["a", "b", "c", "d"])), "not numeric"),
    (lambda o: o.update(image=np.stack([o["image"]] * 2)), "state"),  # batch of 2 images, one state
])
def test_runtime_rejects_malformed_observations(bundle, recorded, change, message):
    obs = {k: v[0].copy() for k, v in recorded.items()}
    change(obs)
    with pytest.raises(ObservationError, match=message):
        load_bundle(bundle).predict(obs)


def _edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_bundle_loading_errors_are_one_line(bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    with pytest.raises(ImitlabError, match="unknown model variant"):
        load_bundle(broken, "fp16")
    (broken / "model.onnx").write_bytes(b"not a model")
    digest = hashlib.sha256(b"not a model").hexdigest()  # a consistent bundle whose model is not ONNX
    _edit_json(broken / SPEC_FILE, lambda s: s["models"]["fp32"].update(bytes=11, sha256=digest))
    with pytest.raises(ImitlabError, match="cannot load ONNX model"):
        load_bundle(broken)
    spec = read_spec(broken)
    del spec["models"]["int8"]
    (broken / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(ImitlabError, match="no int8 model"):
        load_bundle(broken, "int8")
    (broken / SPEC_FILE).write_text("{")
    with pytest.raises(ImitlabError, match="not valid JSON"):
        load_bundle(broken)
    with pytest.raises(ImitlabError, match="not a deployment bundle"):
        load_bundle(tmp_path)


def test_the_evaluator_resolves_bundles_and_their_model_files(bundle):
    assert resolve_agent(str(bundle)).kind == "bundle"
    assert resolve_agent(str(bundle)).metadata["model_file"] == MODEL_FILE
    assert resolve_agent(str(bundle / INT8_MODEL_FILE)).metadata["model_file"] == INT8_MODEL_FILE
    with pytest.raises(ImitlabError, match="not one of the bundle's models"):
        resolve_agent(str(bundle / "other.onnx"))
    with pytest.raises(ImitlabError, match="validated on"):
        resolve_agent(str(bundle), env_id="imitlab/Reach-v0")


def test_int8_whose_actions_differ_from_fp32_is_not_shipped(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_module, "INT8_MAX_ACTION_DIFF", 0.0)  # any quantisation error is then too much
    monkeypatch.setattr(bundle_module, "CALIBRATION_EPISODES", 1)  # static int8 still calibrated, on fewer frames
    result = deploy(tiny_run, 0.0, episodes=2, out=tmp_path / "bundle", int8=True, workers=1, videos=0,
                    progress=False)
    int8 = result.spec["validation"]["int8"]
    assert int8["included"] is False and int8["max_abs_diff_vs_fp32"] > 0.0
    assert "differ from fp32's" in int8["reason"] and "success_ci95" not in int8  # no rollouts were spent on it
    assert "int8" not in result.spec["models"] and not (tmp_path / "bundle" / INT8_MODEL_FILE).exists()


def test_dynamic_int8_needs_no_calibration_and_static_does(tiny_run, bundle, recorded, tmp_path):
    policy, _ = load_policy(policy_dir(tiny_run))
    fp32 = export_onnx(policy, tmp_path / "model.onnx")
    dynamic = OnnxPolicy(quantize_int8(fp32, tmp_path / "dynamic.onnx", None, "dynamic"), read_spec(bundle))
    batch = {k: v[:16] for k, v in recorded.items()}
    # Weight-only int8 of the head: close to fp32 (a loose bound; the closed-loop check is the real test).
    assert np.max(np.abs(dynamic.predict(batch) - policy.predict(batch))) < 0.1
    with pytest.raises(ImitlabError, match="calibration"):
        quantize_int8(fp32, tmp_path / "static.onnx", None, "static")


def test_a_two_camera_keypoint_lite0_policy_exports_with_parity(tmp_path):
    """The manipulation recipe's policy (spatial-softmax Lite0 over two cameras) survives ONNX export."""
    torch.manual_seed(0)
    config = PolicyConfig(backbone="lite0", pooling="spatial_softmax", keypoints=8, image_size=48, state_dim=3,
                          action_dim=4, head_hidden=(16,), image_keys=("image", "wrist_image"))
    policy = ImagePolicy(config)
    model = export_onnx(policy, tmp_path / "model.onnx")
    spec = {"image_keys": list(config.image_keys), "image_size": 48, "state_dim": 3, "action_dim": 4}
    rng = np.random.default_rng(0)
    observations = {"state": rng.normal(size=(5, 3)).astype(np.float32),
                    **{k: rng.integers(0, 256, (5, 48, 48, 3), dtype=np.uint8) for k in config.image_keys}}
    assert parity_error(policy, OnnxPolicy(model, spec), observations) <= 1e-4


def test_static_int8_picks_only_the_weight_heavy_pointwise_convolutions():
    """Lite0's late 1x1 convolutions are quantised; 3x3, depthwise and small 1x1 ones stay fp32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from imitlab.deploy.export import INT8_MIN_WEIGHTS, _weight_heavy_convs

    def conv(name: str, shape: tuple[int, ...], group: int = 1) -> tuple[onnx.NodeProto, onnx.TensorProto]:
        weight = numpy_helper.from_array(np.zeros(shape, np.float32), f"{name}_w")
        return helper.make_node("Conv", ["x", weight.name], [f"{name}_y"], name=name, group=group), weight

    channels = int(np.sqrt(INT8_MIN_WEIGHTS))
    parts = [conv("heavy", (channels, channels, 1, 1)), conv("small", (channels, channels // 2, 1, 1)),
             conv("spatial", (channels, channels, 3, 3)),
             conv("depthwise", (channels * 4, 1, 1, 1), group=channels * 4)]
    graph = helper.make_graph([n for n, _ in parts], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(f"{n.name}_y", TensorProto.FLOAT, None) for n, _ in parts],
                              initializer=[w for _, w in parts])
    assert _weight_heavy_convs(helper.make_model(graph)) == ["heavy"]
