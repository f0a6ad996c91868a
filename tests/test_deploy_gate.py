"""The deploy gate with real policies: it accepts exactly at the bar the policy's validation supports, refuses
just above it and refuses an untrained policy, writing nothing when it refuses.

Choice of bars: the module trains a small driving policy that succeeds on some held-out seeds (a short road),
measures its torch closed-loop success on the validation seeds, and sets the bar to that result's Wilson lower
bound L. The exported ONNX model must reproduce the torch result seed by seed, so the gate must accept at L and
refuse at L + 0.01; the untrained policy (random weights, same architecture) never reaches the road's end, so it
must be refused at L. A gate that compared the wrong number, rounded, or validated the wrong model fails one of these.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from imitlab.core.errors import ImitlabError
from imitlab.demos.recorder import record
from imitlab.deploy.bundle import deploy
from imitlab.deploy.spec import INT8_MODEL_FILE, MODEL_FILE, SPEC_FILE, read_spec
from imitlab.agents import resolve_agent
from imitlab.core.seeds import HELD_OUT_SEED_START
from imitlab.evaluation.evaluate import evaluate
from imitlab.evaluation.stats import wilson_interval
from imitlab.policies import ImagePolicy, load_policy, save_policy
from imitlab.training.bc import TrainConfig, train

#: A 25 m road with an 8 s limit: the expert needs ~5 s, a policy that never finishes fails quickly.
ENV_KWARGS = {"image_size": 48, "route_length": 25.0, "time_limit_s": 8.0}
EPISODES = 10
SEEDS = list(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + EPISODES))


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> dict[str, Path]:
    """A policy trained on 16 noisy-expert demos and an untrained one with the same config and metadata."""
    root = tmp_path_factory.mktemp("gate")
    record("imitlab/LaneFollow-v0", root / "demos", episodes=16, noise_std=0.3, env_kwargs=ENV_KWARGS, progress=False)
    train(TrainConfig(dataset=str(root / "demos"), out=str(root / "trained"), backbone="nature_cnn",
                      pretrained=False, epochs=2, eval_episodes=4, progress=False))
    trained, metadata = load_policy(root / "trained" / "best")
    torch.manual_seed(1)
    save_policy(ImagePolicy(trained.config), root / "untrained", metadata)
    return {"trained": root / "trained", "untrained": root / "untrained"}


@pytest.fixture(scope="module")
def torch_result(policies) -> dict:
    """The torch policy's closed-loop result on the validation seeds, and the bar it supports."""
    summary = evaluate(resolve_agent(str(policies["trained"])), SEEDS, workers=2, progress=False)
    if summary.successes == 0:
        pytest.fail("the fixture policy succeeded on no validation seed; the gate test needs one that sometimes does")
    bar, _ = wilson_interval(summary.successes, EPISODES)
    return {"bar": bar, "per_seed": {e.seed: e.success for e in summary.episodes}}


@pytest.fixture(scope="module")
def accepted(policies, torch_result, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "accepted"
    result = deploy(policies["trained"], torch_result["bar"], episodes=EPISODES, out=out, int8=True, workers=2,
                    videos=2, progress=False)
    return result


def test_gate_accepts_at_the_lower_bound_and_writes_a_complete_bundle(accepted, torch_result):
    bundle = accepted.bundle
    spec = read_spec(bundle)
    assert spec == accepted.spec
    validation = spec["validation"]
    assert validation["fp32"]["success_ci95"][0] == pytest.approx(torch_result["bar"])
    assert validation["parity_max_abs_diff"] <= 1e-4
    assert spec["env_kwargs"] == ENV_KWARGS and spec["camera"]["image_size"] == 48
    assert spec["normalisation"]["in_graph"] is True and len(spec["normalisation"]["state_mean"]) == spec["state_dim"]
    assert [i["name"] for i in spec["inputs"]] == ["state", "image"]
    assert {"imitlab", "torch", "onnx", "onnxruntime", "mujoco"} <= set(spec["versions"])
    assert spec["train_config"]["backbone"] == "nature_cnn" and spec["dataset_summary"]["episodes"] == 16
    entry = spec["models"]["fp32"]
    assert entry["file"] == MODEL_FILE
    assert hashlib.sha256((bundle / MODEL_FILE).read_bytes()).hexdigest() == entry["sha256"]
    for name in ("report.json", "report.md", "report.html"):
        assert (bundle / "validation" / name).is_file()
    assert (bundle / "README.md").is_file()
    # int8: shipped only if its actions stay within 0.02 of fp32's and, in closed loop, its success lies inside
    # fp32's interval and clears the same bar.
    int8 = validation["int8"]
    assert int8["calibration_frames"] > len(spec["validation"]["seeds"])
    if int8["max_abs_diff_vs_fp32"] > int8["max_abs_diff_allowed"] == 0.02:
        assert not int8["included"] and "success_ci95" not in int8
    else:
        fp32_low, fp32_high = validation["fp32"]["success_ci95"]
        assert int8["included"] == (fp32_low <= int8["success_rate"] <= fp32_high
                                    and int8["success_ci95"][0] >= validation["min_success"])
    assert int8["included"] or int8["reason"]
    assert (bundle / INT8_MODEL_FILE).is_file() == int8["included"] == ("int8" in spec["models"])
    assert set(spec["latency_ms_batch1"]) == {"torch", "fp32", "int8"}
    assert not list(bundle.parent.glob(".*partial*"))


def test_onnx_reproduces_the_torch_policys_success_seed_by_seed(accepted, torch_result):
    onnx_per_seed = accepted.spec["validation"]["fp32"]["per_seed_success"]
    assert {int(seed): ok for seed, ok in onnx_per_seed.items()} == torch_result["per_seed"]


def test_validation_report_films_a_success_and_a_failure(accepted):
    report = json.loads((accepted.bundle / "validation" / "report.json").read_text())
    filmed = [e for e in report["per_episode"] if e["video"]]
    outcomes = {e["success"] for e in report["per_episode"]}
    assert {e["success"] for e in filmed} == outcomes  # both outcomes occurred here, so both are on film
    for episode in filmed:
        assert (accepted.bundle / "validation" / episode["video"]).is_file()
    page = (accepted.bundle / "validation" / "report.html").read_text()
    assert page.count("data:video/mp4;base64,") == len(filmed)


def test_the_evaluator_runs_a_bundle(accepted):
    summary = evaluate(resolve_agent(str(accepted.bundle)), SEEDS[:2], workers=2, progress=False)
    per_seed = accepted.spec["validation"]["fp32"]["per_seed_success"]
    assert [e.success for e in summary.episodes] == [per_seed[str(s)] for s in SEEDS[:2]]
    assert summary.to_json()["policy"]["kind"] == "bundle"


def test_gate_refuses_just_above_the_lower_bound_and_writes_nothing(policies, torch_result, tmp_path, monkeypatch,
                                                                   capsys):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "refused"
    with pytest.raises(ImitlabError, match="deploy refused") as error:
        deploy(policies["trained"], torch_result["bar"] + 0.01, episodes=EPISODES, out=out, workers=2, videos=2)
    assert "\n" not in str(error.value)
    bars = capsys.readouterr().err  # named after the bundle being validated, not its staging folder
    assert f"eval {out} (fp32)" in bars and "imitlab-bundle-" not in bars
    assert not out.exists()
    assert list(scratch.iterdir()) == []  # the staging folder is gone too
    assert list(tmp_path.iterdir()) == [scratch]


def test_cli_refuses_the_untrained_policy_with_one_line_and_exit_1(policies, torch_result, tmp_path):
    out = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-m", "imitlab.cli", "deploy", str(policies["untrained"]),
                           "--min-success", str(torch_result["bar"]), "--episodes", str(EPISODES), "--workers", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("imitlab: error:")]
    assert len(errors) == 1 and "deploy refused: success 0/10" in errors[0]
    assert not out.exists()


def test_gate_checks_its_arguments_before_any_work(policies, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ImitlabError, match="already exists"):
        deploy(policies["trained"], 0.5, out=tmp_path / "taken")
    with pytest.raises(ImitlabError, match="min-success"):
        deploy(policies["trained"], 1.5, out=tmp_path / "b")
    with pytest.raises(ImitlabError, match="no policy.json"):
        deploy(tmp_path, 0.5, out=tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert not (Path(policies["trained"]) / SPEC_FILE).exists()
