"""Category observations (Town-v0's route command) as policy inputs: the branched and concat heads, ONNX parity,
old checkpoints and bundles without them, and record -> train -> eval -> deploy -> /act on Town-v0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imitlab.core.errors import ImitlabError
from imitlab.core.observation_check import ObservationError
from imitlab.deploy.export import export_onnx, parity_error
from imitlab.deploy.runtime import OnnxPolicy, load_bundle
from imitlab.deploy.server import ServerSettings, create_app
from imitlab.deploy.wire import encode_observation
from imitlab.policies import ImagePolicy, PolicyConfig, load_policy, save_policy
from imitlab.policies.command import CommandHead

SIZE = 48
COMMANDS = 4
TOWN_KWARGS = {"image_size": SIZE, "task": "one_turn", "grid": 3, "weather": "clear_noon"}


def _policy(command_head: str = "branched", seed: int = 0) -> ImagePolicy:
    torch.manual_seed(seed)
    return ImagePolicy(PolicyConfig(backbone="nature_cnn", pretrained=False, image_size=SIZE, state_dim=4, action_dim=2,
                                    head_hidden=(16,), category_keys=("command",), category_sizes=(COMMANDS,),
                                    command_head=command_head)).eval()


def _obs(batch: int, commands: list[int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"state": rng.normal(size=(batch, 4)).astype(np.float32),
            "image": rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8),
            "command": np.asarray(commands if commands is not None else rng.integers(0, COMMANDS, batch), np.int64)}


# --- the heads ----------------------------------------------------------------------------------------------------


def test_branched_head_output_is_the_commanded_branch():
    policy = _policy("branched")
    obs = _obs(1)
    same_scene = {k: np.repeat(v, COMMANDS, axis=0) for k, v in obs.items() if k != "command"}
    actions = policy.predict({**same_scene, "command": np.arange(COMMANDS)})
    assert len({tuple(np.round(a, 6)) for a in actions}) == COMMANDS  # only the command differs: four outputs
    head = policy.head
    assert isinstance(head, CommandHead) and len(head.branches) == COMMANDS
    with torch.no_grad():
        state, image = torch.from_numpy(same_scene["state"]), torch.from_numpy(same_scene["image"])
        fused = torch.cat([policy.encode([image]), (state - policy.state_mean) / policy.state_std], dim=1)
        for command in range(COMMANDS):
            torch.testing.assert_close(torch.from_numpy(actions[command]), head.branches[command](fused[command]))


def test_gradients_reach_only_the_commanded_branches():
    policy = _policy("branched").train()
    obs = _obs(3, [1, 3, 1])
    single, inputs = policy.observation_tensors(obs)
    assert not single
    policy(*inputs).pow(2).sum().backward()
    for index, branch in enumerate(policy.head.branches):
        grads = [p.grad for p in branch.parameters()]
        if index in (1, 3):
            assert all(g is not None and g.abs().sum() > 0 for g in grads), index
        else:
            assert all(g is None or not g.any() for g in grads), index


def test_concat_head_takes_the_command_one_hot():
    policy = _policy("concat")
    first = policy.head.mlp[0]
    assert first.in_features == policy.encoder.features_dim + 4 + COMMANDS
    obs = _obs(1)
    scene = {k: np.repeat(v, COMMANDS, axis=0) for k, v in obs.items() if k != "command"}
    actions = policy.predict({**scene, "command": np.arange(COMMANDS)})
    assert len({tuple(np.round(a, 6)) for a in actions}) == COMMANDS


@pytest.mark.parametrize("command_head", ["branched", "concat"])
def test_onnx_export_takes_the_command_and_matches_torch(command_head, tmp_path):
    policy = _policy(command_head)
    export_onnx(policy, tmp_path / "model.onnx")
    spec = {"image_keys": ["image"], "image_size": SIZE, "state_dim": 4, "action_dim": 2,
            "categories": [{"key": "command", "n": COMMANDS, "start": 0}]}
    onnx_policy = OnnxPolicy(tmp_path / "model.onnx", spec)
    assert [i.name for i in onnx_policy.session.get_inputs()] == ["state", "image", "command"]
    obs = _obs(64, seed=1)
    assert parity_error(policy, onnx_policy, obs) <= 1e-4
    single = {k: v[0] for k, v in obs.items()}
    np.testing.assert_allclose(onnx_policy.predict(single), policy.predict(single), atol=1e-4)


@pytest.mark.parametrize("command, message", [(4, "integer in 0..3"), (-1, "integer in 0..3"), (1.5, "integer in 0..3"),
                                              (np.array([1, 2]), r"integers of shape \(\)"), ("left", "integers")])
def test_a_bad_command_is_one_clear_error(command, message):
    obs = {k: v[0] for k, v in _obs(1).items()}
    with pytest.raises(ObservationError, match=message):
        _policy().predict({**obs, "command": command})
    missing = {k: v for k, v in obs.items() if k != "command"}
    with pytest.raises(ObservationError, match="lacks keys"):
        _policy().predict(missing)


@pytest.mark.parametrize("overrides, message", [
    ({"command_head": "tree"}, "command_head 'tree' is not one of branched, concat"),
    ({"category_sizes": (4, 2)}, "one entry per category key"),
    ({"category_keys": ("image",)}, "other than 'state' and the image keys"),
    ({"category_sizes": (0,)}, r"category size = 0 is outside"),
    ({"category_keys": ("a", "b"), "category_sizes": (16, 16)}, "more than 64 branches"),
])
def test_bad_category_config_is_refused(overrides, message):
    values = dict(backbone="nature_cnn", image_size=SIZE, state_dim=4, action_dim=2, category_keys=("command",),
                  category_sizes=(COMMANDS,))
    with pytest.raises(ImitlabError, match=message):
        PolicyConfig(**{**values, **overrides})


def test_a_policy_json_from_before_category_inputs_still_loads(tmp_path):
    torch.manual_seed(0)
    policy = ImagePolicy(PolicyConfig(backbone="nature_cnn", pretrained=False, image_size=SIZE, state_dim=4,
                                      action_dim=2, head_hidden=(16,)))
    save_policy(policy, tmp_path / "old", {"env_id": "imitlab/LaneFollow-v0"})
    path = tmp_path / "old" / "policy.json"
    document = json.loads(path.read_text())
    for name in ("category_keys", "category_sizes", "category_starts", "command_head"):
        del document["config"][name]
    path.write_text(json.dumps(document))
    loaded, _ = load_policy(tmp_path / "old")
    assert loaded.config.category_keys == () and isinstance(loaded.head, torch.nn.Sequential)
    assert "head.0.weight" in loaded.state_dict()  # the weight names of checkpoints saved before
    obs = {k: v for k, v in _obs(2).items() if k != "command"}
    np.testing.assert_array_equal(loaded.predict(obs), policy.predict(obs))


def test_a_bundle_from_before_category_inputs_still_loads(tiny_bundle, tmp_path):
    old = tmp_path / "old_bundle"
    shutil.copytree(tiny_bundle, old)
    spec = json.loads((old / "bundle.json").read_text())
    assert spec.pop("categories") == []
    (old / "bundle.json").write_text(json.dumps(spec))
    policy = load_bundle(old)
    assert policy.categories == ()
    obs = {k: v[0] for k, v in _obs(1).items() if k != "command"}
    assert policy.predict(obs).shape == (2,)


def test_category_names_label_the_command_for_videos_and_reports():
    from gymnasium import spaces

    from imitlab.envs import CategoryNames
    from imitlab.evaluation.video import annotate_frame

    space = spaces.Dict({"image": spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8), "command": spaces.Discrete(4)})
    names = CategoryNames("imitlab/Town-v0", space)
    assert names.lines({"command": np.int64(1)}) == ["command left"]
    seen: dict[str, list[str]] = {}
    for command in (0, 0, 1, 1, 0, 3):
        names.visit(seen, {"command": command})
    assert seen == {"command": ["follow", "left", "follow", "straight"]}
    assert CategoryNames("imitlab/Other-v0", space).lines({"command": 2}) == ["command 2"]  # no names: the value
    frame = np.zeros((240, 320, 3), np.uint8)
    plain = annotate_frame(frame, [], np.zeros(2), ["steer", "throttle"], "seed 0")
    labelled = annotate_frame(frame, [], np.zeros(2), ["steer", "throttle"], "seed 0", categories=["command left"])
    assert plain.shape == labelled.shape and (plain != labelled).any()


# --- Town-v0 end to end -------------------------------------------------------------------------------------------


def _cli(*args: str) -> None:
    """``imitlab ARGS`` in this process (no interpreter start-up and imports per command); it must succeed."""
    from imitlab.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output[-2000:], result.exception)


@pytest.fixture(scope="module")
def town_run(tmp_path_factory) -> Path:
    """Three noisy-expert one-turn Town-v0 episodes at 48 px, and a Nature-CNN policy trained on them for one
    epoch, both through the CLI (a real command-conditioned checkpoint, not a good driver)."""
    root = tmp_path_factory.mktemp("town")
    env_args = [arg for key, value in TOWN_KWARGS.items() for arg in ("--env-arg", f"{key}={value}")]
    _cli("record", "--env", "imitlab/Town-v0", "--episodes", "3", "--noise", "0.1", *env_args,
         "--out", str(root / "demos"))
    _cli("train", str(root / "demos"), "--out", str(root / "run"), "--backbone", "nature_cnn", "--no-pretrained",
         "--epochs", "1", "--eval-episodes", "1", "--val-fraction", "0", "--head-hidden", "32", "--threads", "2",
         "--no-progress")
    return root / "run"


@pytest.mark.slow
def test_town_training_conditions_on_the_command(town_run):
    policy, metadata = load_policy(town_run / "best")
    assert policy.config.category_keys == ("command",) and policy.config.category_sizes == (COMMANDS,)
    assert policy.config.command_head == "branched" and len(policy.head.branches) == COMMANDS
    assert metadata["observation_space"]["spaces"]["command"] == {"type": "Discrete", "n": COMMANDS, "start": 0}


@pytest.mark.slow
def test_town_eval_report_and_video_show_the_command(town_run, tmp_path):
    _cli("eval", str(town_run), "--episodes", "1", "--workers", "1", "--videos", "1", "--out", str(tmp_path / "ev"))
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    episode = report["per_episode"][0]
    commands = episode["categories"]["command"]
    assert commands[0] == "follow" and set(commands) <= {"follow", "left", "right", "straight"}
    assert "collision_kerb" in episode["metrics"] and "red_light" in episode["metrics"]
    markdown = (tmp_path / "ev" / "report.md").read_text()
    assert "| command |" in markdown and " > ".join(commands) in markdown
    assert "<th>command</th>" in (tmp_path / "ev" / "report.html").read_text()
    assert episode["video"] and (tmp_path / "ev" / episode["video"]).is_file()


@pytest.mark.slow
def test_town_bundle_serves_act_with_the_command(town_run, tmp_path):
    from imitlab.deploy.bundle import deploy

    bundle = deploy(town_run, 0.0, episodes=1, out=tmp_path / "bundle", workers=1, videos=0, progress=False).bundle
    spec = json.loads((bundle / "bundle.json").read_text())
    assert spec["categories"] == [{"key": "command", "n": COMMANDS, "start": 0}]
    assert spec["validation"]["parity_max_abs_diff"] <= 1e-4
    runtime = load_bundle(bundle)
    client = TestClient(create_app(bundle, ServerSettings(allowed_hosts=("testserver",))))
    obs = {k: v[0] for k, v in _obs(1).items()}
    answers = []
    for command in range(COMMANDS):
        body = encode_observation({**obs, "command": command}, ["image"], category_keys=["command"])
        response = client.post("/act", json=body)
        assert response.status_code == 200, response.text
        answers.append(response.json()["action"])
        np.testing.assert_allclose(answers[-1], runtime.predict({**obs, "command": command}), atol=1e-6)
    assert len({tuple(np.round(a, 6)) for a in answers}) == COMMANDS
    body = encode_observation(obs, ["image"], category_keys=["command"])
    for bad in (4, True, "left", 1.5):
        body["obs"]["command"] = bad
        response = client.post("/act", json=body)
        assert response.status_code == 422 and "'command' must be an integer 0..3" in response.json()["detail"]
    del body["obs"]["command"]
    assert client.post("/act", json=body).status_code == 422
    schema = client.get("/openapi.json").json()["paths"]["/act"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["obs"]
    assert "command" in schema["required"]
    assert schema["properties"]["command"] | {"description": ""} == {"type": "integer", "minimum": 0, "maximum": 3,
                                                                     "description": ""}


@pytest.mark.slow
def test_explain_films_a_command_policy_with_its_maps(town_run, tmp_path):
    from imitlab.evaluation.saliency import explain

    result = explain(town_run, [1_000_000], tmp_path, sanity_frames=4, progress=False)
    (episode,) = result["episodes"]
    assert Path(episode["video"]).is_file() and Path(episode["frame"]).is_file()
    assert result["randomization_check"]["frames"] == 4
    assert set(result["randomization_check"]["rank_correlation"]) == {"image"}
