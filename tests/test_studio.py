"""imitlab studio without a browser: control schemes, exclusions (loader, demos info), the session's saved
episodes, and the HTTP/WebSocket APIs through FastAPI's test client (bad input answered, server still up)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imitlab.cli import app as cli_app
from imitlab.core.errors import ImitlabError
from imitlab.demos.controls import ArmControls, DrivingControls, controls_for, dead_zone
from imitlab.demos.dataset import DemoDataset, read_episode_file
from imitlab.demos.exclusions import EXCLUSIONS, read_exclusions, set_excluded
from imitlab.demos.loader import DemoLoader
from imitlab.studio.app import create_app
from imitlab.studio.session import TeleopSession


@pytest.fixture
def demos_copy(tiny_demos: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny dataset (these tests write exclusions and masks into it)."""
    return Path(shutil.copytree(tiny_demos, tmp_path / "demos"))


def test_dead_zone_is_zero_inside_and_rescaled_outside():
    assert dead_zone(0.1) == 0.0 and dead_zone(-0.15) == 0.0
    assert dead_zone(1.0) == 1.0 and dead_zone(-1.0) == -1.0
    assert dead_zone(0.575) == pytest.approx(0.5)


def test_driving_controls_slew_towards_keys_and_gamepad_overrides():
    controls = DrivingControls()
    steps = [controls.step({"left", "up"}) for _ in range(3)]
    np.testing.assert_allclose(steps, [[0.25, 0.15], [0.5, 0.3], [0.75, 0.45]], rtol=1e-6)
    controls.reset()
    # Stick fully right steers right (negative); a stick inside the dead zone leaves the keys in charge.
    assert controls.step(set(), {"steer": 1.0})[0] == pytest.approx(-0.25)
    controls.reset()
    assert controls.step({"left"}, {"steer": 0.05})[0] == pytest.approx(0.25)
    controls.continue_from(np.array([-0.9, 0.6]))  # assist: the human takes over where the expert was
    np.testing.assert_allclose(controls.step({"up"}), [-0.65, 0.75], rtol=1e-6)


def test_arm_controls_toggle_the_gripper_once_per_press_and_drive_yaw_when_present():
    controls = ArmControls(action_dim=4)
    assert not any(name.startswith("yaw") for name in controls.keys.values())
    np.testing.assert_array_equal(controls.step({"x+", "z-"}), [1, 0, -1, -1])
    np.testing.assert_array_equal(controls.step({"gripper"}), [0, 0, 0, 1])
    np.testing.assert_array_equal(controls.step({"gripper"}), [0, 0, 0, 1])  # held, not pressed again
    np.testing.assert_array_equal(controls.step(set()), [0, 0, 0, 1])
    np.testing.assert_array_equal(controls.step({"gripper", "y-"}), [0, -1, 0, -1])
    controls.continue_from(np.array([0.3, 0, 0, 0.8]))  # assist: the expert had closed the jaw
    np.testing.assert_array_equal(controls.step(set()), [0, 0, 0, 1])
    five = ArmControls(action_dim=5)
    np.testing.assert_allclose(five.step({"yaw+"}, {"x": 0.5}), [dead_zone(0.5), 0, 0, -1, 1], rtol=1e-6)
    assert isinstance(controls_for(["steer", "throttle"]), DrivingControls)
    with pytest.raises(ImitlabError, match="no human control scheme"):
        controls_for(["a0", "a1", "a2"])


def test_excluded_episodes_are_kept_on_disk_skipped_by_the_loader_and_shown_by_info(demos_copy: Path):
    dataset = DemoDataset(demos_copy)
    before = sorted(p.name for p in (demos_copy / "episodes").iterdir())
    all_paths = DemoLoader(dataset, successful_only=False).paths
    set_excluded(dataset, "demo_000001", "drove off the road")
    assert read_exclusions(dataset) == {"demo_000001": "drove off the road"}
    loader = DemoLoader(dataset, successful_only=False)
    assert [p.stem for p in loader.paths] == [p.stem for p in all_paths if p.stem != "demo_000001"]
    assert loader.excluded == 1 and "1 excluded" in loader.plan
    assert sorted(p.name for p in (demos_copy / "episodes").iterdir()) == before
    info = CliRunner().invoke(cli_app, ["demos", "info", str(demos_copy), "--json"])
    assert json.loads(info.output)["excluded"] == {"demo_000001": "drove off the road"}
    set_excluded(dataset, "demo_000001", None)
    assert len(DemoLoader(dataset, successful_only=False).paths) == len(all_paths)
    with pytest.raises(ImitlabError, match="reason is empty"):
        set_excluded(dataset, "demo_000002", "  ")
    with pytest.raises(ImitlabError, match="no episode 'demo_000099'"):
        set_excluded(dataset, "demo_000099", "x")
    (demos_copy / EXCLUSIONS).write_text("{not json")
    with pytest.raises(ImitlabError, match="corrupt exclusion file"):
        DemoLoader(dataset)


def test_session_saves_the_human_steps_with_intervention_and_operator(tmp_path: Path):
    session = TeleopSession("imitlab/Reach-v0", {"image_size": 32, "cameras": ["agentview", "wrist"]}, seed=3,
                            assist=True)
    try:
        session.step(set())  # the expert drives until the human touches a control
        session.take_over()
        session.step({"x+", "gripper"})
        session.step({"z+"})
        assert set(session.frames()) == {"view", "image", "wrist_image"}
        path = session.save(tmp_path / "human", "ada")
        assert session.steps == 3
    finally:
        session.close()
    episode = read_episode_file(path)
    np.testing.assert_array_equal(episode.step_data["intervention"], [0, 1, 1])
    np.testing.assert_array_equal(episode.actions[1:], [[1, 0, 0, 1], [0, 0, 1, 1]])
    assert episode.attrs["source"] == "human" and episode.attrs["operator"] == "ada" and episode.attrs["seed"] == 3
    assert episode.attrs["assisted"] is True and episode.attrs["truncated"] is True
    with pytest.raises(ImitlabError, match="operator"):
        TeleopSession("imitlab/Reach-v0", {"image_size": 32}).save(tmp_path / "other", " ")


def _frame_header(data: bytes) -> dict:
    (length,) = struct.unpack(">I", data[:4])
    return json.loads(data[4:4 + length])


def test_teleop_socket_reports_bad_input_in_one_line_and_keeps_serving(tmp_path: Path):
    client = TestClient(create_app(tmp_path))
    with client.websocket_connect("/ws/teleop") as ws:
        for bad, expected in [({"env_id": "imitlab/Nope-v0"}, "unknown env id"),
                              ({"env_id": "imitlab/Reach-v0", "env_kwargs": "{oops"}, "not valid JSON"),
                              ({"env_id": "imitlab/Reach-v0", "env_kwargs": {"wheels": 3}}, "has no argument 'wheels'")]:
            ws.send_json({"type": "start", **bad})
            reply = ws.receive_json()
            assert reply["type"] == "error" and expected in reply["message"] and "\n" not in reply["message"]
        ws.send_json({"type": "start", "env_id": "imitlab/Reach-v0", "env_kwargs": '{"image_size": 32}', "seed": 5})
        session = ws.receive_json()
        assert session["type"] == "session" and session["labels"] == ["dx", "dy", "dz", "gripper"]
        assert _frame_header(ws.receive_bytes())["mode"] == "waiting"
        ws.send_json({"type": "pause"})
        ws.send_json({"type": "input", "codes": ["KeyW"]})
        ws.send_json({"type": "step"})
        header = _frame_header(ws.receive_bytes())
        assert header["report"]["step"] == 1 and header["report"]["action"] == [1.0, 0.0, 0.0, -1.0]
        ws.send_json({"type": "save", "dataset": "../outside", "operator": "ada"})
        assert "outside the studio's folder" in ws.receive_json()["message"]
        ws.send_json({"type": "save", "dataset": "human", "operator": "ada"})
        saved = ws.receive_json()
        assert saved["type"] == "saved" and saved["steps"] == 1 and saved["path"].startswith("human/episodes/")
        assert _frame_header(ws.receive_bytes())["seed"] == 6  # the next episode starts on the next seed
    assert len(DemoDataset(tmp_path / "human")) == 1
    assert client.get("/api/envs").status_code == 200


def test_review_api_lists_excludes_splits_and_serves_frames(demos_copy: Path):
    root = demos_copy.parent
    client = TestClient(create_app(root))
    assert client.get("/api/datasets").json()[0]["path"] == "demos"
    listing = client.get("/api/dataset", params={"path": "demos"}).json()
    assert [e["name"] for e in listing["episodes"]] == [f"demo_{i:06d}" for i in range(4)]
    assert listing["episodes"][0]["source"] == "noisy_expert" and listing["episodes"][0]["excluded"] is None
    episode = client.get("/api/episode", params={"path": "demos", "name": "demo_000002"}).json()
    assert episode["action_labels"] == ["steer", "throttle"] and len(episode["actions"]) == episode["length"]
    frame = client.get("/api/frame", params={"path": "demos", "name": "demo_000002", "camera": "image", "t": 3})
    assert frame.headers["content-type"] == "image/jpeg" and frame.content[:2] == b"\xff\xd8"
    assert client.post("/api/exclude", json={"path": "demos", "name": "demo_000002", "reason": "jerky"}).json() == {
        "demo_000002": "jerky"}
    assert client.post("/api/split", json={"path": "demos", "name": "demo_000003", "split": "valid"}).json() == {
        "train": ["demo_000000", "demo_000001", "demo_000002"], "valid": ["demo_000003"]}
    assert DemoDataset(demos_copy).masks()["valid"] == ["demo_000003"]
    loader = DemoLoader(DemoDataset(demos_copy), successful_only=False)  # demo_000002 is excluded
    assert [[loader.paths[i].stem for i in part] for part in loader.mask_split()] == [
        ["demo_000000", "demo_000001"], ["demo_000003"]]
    auto = client.post("/api/split/auto", json={"path": "demos", "valid_fraction": 0.5}).json()
    assert len(auto["valid"]) == 2
    for params, expected in [({"path": "missing"}, "dataset not found"), ({"path": "/etc"}, "outside")]:
        response = client.get("/api/dataset", params=params)
        assert response.status_code == 400 and expected in response.json()["detail"]
    response = client.get("/api/frame", params={"path": "demos", "name": "demo_000002", "camera": "image", "t": 999})
    assert response.status_code == 400 and "outside episode" in response.json()["detail"]
    assert client.get("/review").status_code == 200


def test_runs_api_lists_runs_and_compares_two_on_shared_seeds(tiny_run: Path, tmp_path: Path):
    root = tmp_path / "runs"
    for name, successes in (("a", [True, True, False]), ("b", [False, True, False])):
        run = Path(shutil.copytree(tiny_run, root / name, ignore=shutil.ignore_patterns("tb")))
        (run / "eval").mkdir()
        episodes = [{"seed": 1_000_000 + i, "success": ok, "episode_return": float(ok), "length": 10,
                     "terminated": False, "metrics": {}, "inference_ms": 1.0} for i, ok in enumerate(successes)]
        (run / "eval" / "report.json").write_text(json.dumps({
            "env_id": "imitlab/LaneFollow-v0", "successes": sum(successes), "episodes": 3,
            "success_rate": sum(successes) / 3, "success_ci95": [0.1, 0.9], "per_episode": episodes}))
        (run / "eval" / "report.html").write_text("<html>report</html>")
    client = TestClient(create_app(root))
    runs = {r["path"]: r for r in client.get("/api/runs").json()}
    assert runs["a"]["heldout"]["successes"] == 2 and runs["a"]["report"] == "/files/a/eval/report.html"
    assert runs["a"]["best_validation"] is not None
    assert client.get(runs["a"]["report"]).text == "<html>report</html>"
    result = client.get("/api/compare", params={"a": "a", "b": "b"}).json()
    assert result["success"]["only_a"] == 1 and result["success"]["both_succeed"] == 1
    assert "Paired comparison on 3 seeds" in result["markdown"]
    response = client.get("/api/compare", params={"a": "a", "b": "missing"})
    assert response.status_code == 400 and "not found" in response.json()["detail"]
