"""`imitlab benchmark town`: the matrix's cells and seeds, the driving score, a policy against the expert on the
same routes (reproducible seeds, paired statistics, JSON + HTML), and bad input as one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from imitlab.core.errors import ImitlabError
from imitlab.core.seeds import HELD_OUT_SEED_START, HELD_OUT_TOWN, TRAINING_TOWN
from imitlab.envs import make_env, make_expert
from imitlab.evaluation.driving_score import PENALTIES, cell_summary, driving_score
from imitlab.evaluation.town_benchmark import CONDITIONS, SEED_STRIDE, TASKS, select_cells
from imitlab.policies.io import save_policy
from imitlab.policies.policy import ImagePolicy, PolicyConfig

from test_cli_errors import run_cli

SIZE = 36  # the smallest camera nature_cnn takes


@pytest.fixture(scope="module")
def steady_policy(tmp_path_factory) -> Path:
    """A real saved Town-v0 policy whose output is constant: wheel straight, throttle 0.35 (a naive driver)."""
    config = PolicyConfig(backbone="nature_cnn", pretrained=False, image_size=SIZE, state_dim=4, action_dim=2)
    policy = ImagePolicy(config)
    last = [m for m in policy.head if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.atanh(torch.tensor([0.0, 0.35])))
    path = tmp_path_factory.mktemp("steady") / "policy"
    save_policy(policy, path, {"env_id": "imitlab/Town-v0", "train_seeds": [0, 1],
                               "env_kwargs": {"image_size": SIZE, "town": TRAINING_TOWN, "weather": "clear_noon",
                                              "task": "navigation", "traffic": 5}})
    return path


def test_cells_keep_their_seeds_whichever_run() -> None:
    full = select_cells()
    assert len(full) == len(TASKS) * len(CONDITIONS) == 16
    assert [c.index for c in full] == list(range(16))
    subset = select_cells(["navigation_dense"], ["new_town_weather"], dense_traffic=7)
    assert [c.index for c in subset] == [15] and subset[0].task.traffic == 7
    assert subset[0].seeds(HELD_OUT_SEED_START, 3) == [HELD_OUT_SEED_START + 15 * SEED_STRIDE + k for k in range(3)]
    assert subset[0].env_kwargs() == {"town": HELD_OUT_TOWN, "weather": "test", "task": "navigation", "traffic": 7}
    all_seeds = [s for c in full for s in c.seeds(HELD_OUT_SEED_START, 25)]
    assert len(set(all_seeds)) == len(all_seeds)  # a seed names its cell
    with pytest.raises(ImitlabError, match="unknown benchmark task 'parking'"):
        select_cells(["parking"])


def test_driving_score_multiplies_one_penalty_per_infraction() -> None:
    metrics = {"route_completion": 0.8, "collision_vehicle": 1, "red_light": 2, "blocked": 1, "distance": 500.0}
    assert driving_score(metrics) == pytest.approx(0.8 * 0.60 * 0.70**2)
    assert driving_score({"route_completion": 1.0}) == 1.0
    rows = [{"outcome": "success", "success": True, "route_completion": 1.0, "driving_score": 0.7,
             "distance_m": 1500.0, "infractions": {k: int(k == "red_light") for k in PENALTIES}},
            {"outcome": "failure", "success": False, "route_completion": 0.5, "driving_score": 0.3,
             "distance_m": 500.0, "infractions": {k: 2 * int(k == "collision_kerb") for k in PENALTIES}},
            {"outcome": "error", "success": False}]
    summary = cell_summary(rows)
    assert (summary["scored"], summary["errors"], summary["successes"]) == (2, 1, 1)
    assert summary["km"] == pytest.approx(2.0) and summary["all_infractions_per_km"] == pytest.approx(1.5)
    assert summary["infractions_per_km"]["collision_kerb"] == pytest.approx(1.0)
    assert summary["driving_score"] == pytest.approx(0.5) and summary["route_completion"] == pytest.approx(0.75)


def test_policy_and_expert_on_the_same_routes(steady_policy, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "bench"
    code, stdout, err = run_cli(monkeypatch, capsys, "benchmark", "town", str(steady_policy), "--with-expert",
                                "--episodes", "1", "--tasks", "straight", "--conditions", "new_town_weather",
                                "--workers", "1", "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "benchmark.json").read_text())
    assert list(report["agents"]) == [str(steady_policy), "expert"]
    assert report["agents"]["expert"]["env_kwargs"]["image_size"] == SIZE  # the policy's camera
    seed = HELD_OUT_SEED_START + 3 * SEED_STRIDE
    assert [c["seeds"] for c in report["cells"]] == [[seed]]
    assert f"straight/new_town_weather: seeds {seed} (town {HELD_OUT_TOWN}, weather test, traffic 0)" in stdout
    rows = {r["agent"]: r["per_episode"][0] for r in report["results"]}
    for episode in rows.values():
        assert episode["outcome"] != "error", episode
        assert episode["driving_score"] == pytest.approx(episode["route_completion"] * math.prod(
            PENALTIES[k] ** n for k, n in episode["infractions"].items()))
    expert = rows["expert"]
    assert expert["success"] and expert["driving_score"] == 1.0
    # The expert's episode is the one the env and expert give on that seed outside the benchmark.
    env = make_env("imitlab/Town-v0", image_size=SIZE, town=HELD_OUT_TOWN, weather="test", task="straight", traffic=0)
    obs, info = env.reset(seed=seed)
    agent = make_expert(env)
    agent.reset()
    done, steps = False, 0
    while not done:
        obs, _, terminated, truncated, info = env.step(agent.act(obs))
        done, steps = terminated or truncated, steps + 1
    env.close()
    assert (info["is_success"], steps) == (expert["success"], expert["length"])
    assert info["distance"] == pytest.approx(expert["distance_m"])
    (pair,) = report["paired"]
    assert (pair["a"], pair["b"]) == (str(steady_policy), "expert") and pair["overall"]["seeds"] == 1
    assert pair["overall"]["only_b"] == int(not rows[str(steady_policy)]["success"])
    html = (out / "benchmark.html").read_text()
    assert str(seed) in html and "McNemar" in html and "driving score" in html


@pytest.mark.parametrize(("args", "message"), [
    (["--dense-traffic", "-1"], "--dense-traffic must be a non-negative number of cars"),
    (["--env-arg", "weather=train"], "the benchmark sets town, weather, task, traffic per cell"),
    (["--env-arg", "grid=2", "--tasks", "one_turn"], "task 'one_turn' is impossible in town 0 (grid 2)"),
    (["--tasks", "navigation,flying"], "unknown benchmark task 'flying'"),
    (["--env-arg", "image_size=5"], "image_size=5 is not an integer from 16"),
])
def test_bad_benchmark_input_is_one_line(args, message, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "bench"
    code, _, err = run_cli(monkeypatch, capsys, "benchmark", "town", "expert", "--out", str(out), *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("imitlab: error:") and message in lines[0], err
    assert not out.exists()


def test_a_policy_trained_elsewhere_is_refused(steady_policy, tmp_path, monkeypatch, capsys) -> None:
    moved = tmp_path / "moved"
    document = json.loads((steady_policy / "policy.json").read_text())
    document["metadata"]["env_kwargs"]["town"] = HELD_OUT_TOWN
    moved.mkdir()
    (moved / "policy.json").write_text(json.dumps(document))
    (moved / "policy.safetensors").write_bytes((steady_policy / "policy.safetensors").read_bytes())
    code, _, err = run_cli(monkeypatch, capsys, "benchmark", "town", str(moved), "--out", str(tmp_path / "b"))
    assert code == 1 and f"trained in town {HELD_OUT_TOWN}" in err


def test_steady_policy_really_is_constant(steady_policy) -> None:
    from imitlab.policies.io import load_policy

    policy, _ = load_policy(steady_policy)
    obs = {"image": np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8),
           "state": np.zeros((2, 4), np.float32), "command": np.array([0, 1])}
    assert np.allclose(policy.predict(obs), [[0.0, 0.35]] * 2, atol=1e-5)
