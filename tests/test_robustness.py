"""The robustness suite: same per-episode results for any worker count, paired cells, reports, bad input, and
an episode whose worker raises or dies listed as an error while the suite goes on."""

from __future__ import annotations

import json

import cv2
import pytest
from typer.testing import CliRunner

from imitlab.agents import resolve_agents
from imitlab.cli import app
from imitlab.core.errors import ImitlabError
from imitlab.evaluation.agent_spec import AgentSpec
from imitlab.evaluation.robustness import CLEAN, run_suite, suite_cells, write_suite_report

from conftest import TINY_ENV_ID, TINY_ENV_KWARGS
from fault_agents import FaultyExpertFactory


def _episodes(report):
    return {(c["agent"], c["perturbation"], c["severity"]): c["per_episode"] for c in report["cells"]}


def test_suite_is_identical_for_any_worker_count_and_pairs_the_seeds(tiny_run, tmp_path):
    agents = {"a": str(tiny_run), "b": str(tiny_run)}
    short = {"time_limit_s": 3.0}  # 30 steps: a tiny policy rarely leaves the road sooner
    specs = resolve_agents(agents, env_kwargs=short)
    one = run_suite(specs, ["noise", "camera_pose"], [5], [1_000_000, 1_000_001], workers=1,
                    video_dir=tmp_path / "videos", worst_videos=1, progress=False)
    two = run_suite(specs, ["noise", "camera_pose"], [5], [1_000_000, 1_000_001], workers=2, progress=False)
    assert _episodes(one) == _episodes(two)
    cells = _episodes(one)
    assert set(cells) == {(a, p, s) for a in "ab" for p, s in ((CLEAN, 0), ("noise", 5), ("camera_pose", 5))}
    clean, noisy = cells[("a", CLEAN, 0)], cells[("a", "noise", 5)]
    assert [e["seed"] for e in clean] == [e["seed"] for e in noisy] == [1_000_000, 1_000_001]
    assert [e["return"] for e in clean] != [e["return"] for e in noisy]  # the workers really perturbed the env
    for paired in one["paired"]:  # the same policy on the same seeds: never discordant
        assert paired["only_a"] == paired["only_b"] == 0 and paired["mcnemar_p"] == 1.0
    paths = write_suite_report(one, tmp_path / "report")
    assert cv2.imread(str(paths["plot"])) is not None
    saved = json.loads(paths["json"].read_text())
    assert saved["format"] == "imitlab-robustness" and len(saved["videos"]) == 1
    assert (paths["json"].parent / saved["videos"][0]["video"]).is_file()
    assert "data:video/mp4;base64," in paths["html"].read_text()


@pytest.mark.parametrize("names, severities, message", [
    (["fog"], [1], "unknown perturbation 'fog'"),
    (["noise"], [0], "severity must be an integer from 1 to 5, got 0"),
    (["noise"], [6], "got 6"),
])
def test_bad_suite_input_is_one_clear_error(names, severities, message):
    with pytest.raises(ImitlabError, match=message):
        suite_cells(names, severities)
    result = CliRunner().invoke(app, ["robustness", "expert", "--env", "imitlab/Reach-v0", "--perturbations",
                                      ",".join(names), "--severities", ",".join(map(str, severities))])
    assert result.exit_code != 0 and isinstance(result.exception, ImitlabError)
    assert message in str(result.exception)


def test_an_episode_that_raises_or_crashes_is_listed_as_an_error_and_the_suite_goes_on():
    seeds = [1_000_000, 1_000_001, 1_000_002]
    faults = {seeds[0]: "raise", seeds[2]: "segfault"}
    spec = AgentSpec("custom", "faulty expert", FaultyExpertFactory(faults), TINY_ENV_ID,
                     {**TINY_ENV_KWARGS, "time_limit_s": 2.0})
    report = run_suite({"faulty": spec}, ["noise"], [3], seeds, workers=2, progress=False)
    for row in report["cells"]:
        assert row["errors"] == 2
        by_seed = {e["seed"]: e for e in row["per_episode"]}
        assert "RuntimeError: injected fault" in by_seed[seeds[0]]["error"]
        assert "SIGSEGV" in by_seed[seeds[2]]["error"]
        assert "error" not in by_seed[seeds[1]] and by_seed[seeds[1]]["length"] == 20  # ran to its time limit


def test_cli_names_the_compared_policies_once_and_prints_the_paired_cells(tiny_run, tmp_path):
    result = CliRunner().invoke(app, ["robustness", str(tiny_run), "--compare", "expert", "--perturbations", "noise",
                                      "--severities", "3", "--episodes", "2", "--env-arg", "time_limit_s=1.0",
                                      "--videos", "0", "--workers", "1", "--out", str(tmp_path / "report")],
                                terminal_width=80)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"A = {tiny_run}" in result.output and "B = expert" in result.output
    report = json.loads((tmp_path / "report" / "robustness.json").read_text())
    for row in report["paired"]:  # each paired cell is printed with its difference and p
        label = CLEAN if row["perturbation"] == CLEAN else f"{row['perturbation']}@{row['severity']}"
        assert any([cell.strip() for cell in line.split("│")[1:3]] == [label, f"{100 * row['success_diff']:+.0f}"]
                   for line in result.output.splitlines()), result.output
