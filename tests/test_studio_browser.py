"""imitlab studio in a real browser: headless Chromium (the Debian package) driven by Selenium through the
system's chromedriver. Skipped, with the reason, when no browser is installed (`.ci/run` installs one).

Key presses are real WebDriver key events. Episodes are recorded in step mode (P pauses, N advances one control
step with the keys then held), so the keys held at every step are known and the saved actions can be checked
exactly; the key plans come from the task's expert, turned into keys and checked to solve the task offline.
Set ``IMITLAB_SCREENSHOTS=<folder>`` to keep screenshots of the teleoperation and review pages.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from imitlab.cli import app as cli_app
from imitlab.demos.controls import ARM_KEYS, DRIVING_KEYS, controls_for
from imitlab.demos.dataset import DemoDataset, read_episode_file
from imitlab.envs import action_labels, make_env, make_expert
from imitlab.studio.browser import chromium_paths, headless_chromium, studio_process

pytest.importorskip("selenium", reason="browser tests need selenium (pip install -e '.[test]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402

pytestmark = pytest.mark.skipif(chromium_paths() is None,
                                reason="no headless browser: install Debian's chromium and chromium-driver "
                                       "(apt-get install -y chromium chromium-driver) to run the studio's browser tests")

REACH = ("imitlab/Reach-v0", {"image_size": 48, "cameras": ["agentview", "wrist"]})
LANE = ("imitlab/LaneFollow-v0", {"image_size": 48, "route_length": 20.0, "time_limit_s": 8.0})
#: Control name -> the key the test presses for it (the first browser key code of that control).
_KEY_FOR: dict[str, str] = {}
for _code, _control in (*DRIVING_KEYS.items(), *ARM_KEYS.items()):
    _KEY_FOR.setdefault(_control, _code)
_WEBDRIVER_KEYS = {"ArrowLeft": Keys.ARROW_LEFT, "ArrowUp": Keys.ARROW_UP, "ArrowRight": Keys.ARROW_RIGHT,
                   "ArrowDown": Keys.ARROW_DOWN, "Space": Keys.SPACE}


def _webdriver_key(code: str) -> str:
    return _WEBDRIVER_KEYS.get(code) or code.removeprefix("Key").lower()


def key_plans(env_id: str, kwargs: dict, seeds: range) -> list[list[set[str]]]:
    """Held controls per step that solve each seed: the expert's action turned into keys, simulated here with the
    same control scheme the studio uses (the env is deterministic per seed, so the studio replays it exactly).
    Cameras do not change the dynamics, so the simulation renders tiny ones."""
    env = make_env(env_id, **{**kwargs, "image_size": 16})
    expert, plans = make_expert(env), []
    controls = controls_for(action_labels(env_id, env.action_space.shape[0]))
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        expert.reset()
        controls.reset()
        plan: list[set[str]] = []
        done, info, action = False, {}, np.zeros(env.action_space.shape, np.float32)
        while not done:
            target, held = expert.act(obs), set()
            names = (("left", "right"), ("up", "down")) if len(target) == 2 else (("x+", "x-"), ("y+", "y-"), ("z+", "z-"))
            for dim, (plus, minus) in enumerate(names):
                # driving: keys move the slew-limited action towards the expert's; arm: a key is a full step
                reference, margin = (action[dim], 0.05) if len(target) == 2 else (0.0, 0.3)
                if target[dim] > reference + margin:
                    held.add(plus)
                elif target[dim] < reference - margin:
                    held.add(minus)
            plan.append(held)
            action = controls.step(held)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert info["is_success"], f"the key plan for {env_id} seed {seed} does not solve it"
        plans.append(plan)
    env.close()
    return plans


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> tuple[str, Path]:
    """``imitlab studio`` on a free port, serving a fresh folder: its printed URL and the folder."""
    root = tmp_path_factory.mktemp("studio")
    with studio_process(root) as url:
        yield url, root


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as driver:
        yield driver


def wait_for(check: Callable[[], object], what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("IMITLAB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def fill(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def start_task(driver, url: str, env_id: str, kwargs: dict, seed: int, dataset: str) -> None:
    if not driver.current_url.endswith("/teleop"):
        driver.get(url + "/teleop")
    fill(driver, "env-id", env_id)
    fill(driver, "env-kwargs", json.dumps(kwargs))
    fill(driver, "seed", str(seed))
    fill(driver, "dataset", dataset)
    fill(driver, "operator", "selenium")
    frames = driver.execute_script("return window.studio.frames")
    driver.find_element(By.ID, "start").click()
    wait_for(lambda: driver.execute_script("return window.studio.frames") > frames, "the first frame")


def drive(driver, plan: list[set[str]]) -> None:
    """Pause, then for each step press the plan's keys (down/up as they change) and N; one WebDriver call."""
    wait_for(lambda: driver.execute_script("return window.studio.mode") == "waiting", "a new episode")
    actions = ActionChains(driver).send_keys("p")
    held: set[str] = set()
    for step in plan:
        codes = {_KEY_FOR[control] for control in step}
        for code in sorted(held - codes):
            actions.key_up(_webdriver_key(code))
        for code in sorted(codes - held):
            actions.key_down(_webdriver_key(code))
        actions.send_keys("n")
        held = codes
    for code in sorted(held):
        actions.key_up(_webdriver_key(code))
    actions.perform()
    wait_for(lambda: driver.execute_script("return window.studio.step") == len(plan), f"{len(plan)} steps")


def save(driver) -> dict:
    count = driver.execute_script("return window.studio.saved.length")
    driver.find_element(By.ID, "save").click()
    return wait_for(lambda: driver.execute_script(f"return window.studio.saved[{count}]"), "the saved episode")


def test_keys_pressed_for_n_steps_are_the_saved_actions(studio, browser):
    url, root = studio
    start_task(browser, url, "imitlab/Reach-v0", {"image_size": 48, "cameras": ["agentview", "wrist"]}, 7, "keys")
    # x+ for 3 steps, then x+ and z- with a gripper press, then y+ alone, then nothing.
    plan = [{"x+"}] * 3 + [{"x+", "z-", "gripper"}] + [{"y+"}] * 2 + [set()]
    drive(browser, plan)
    assert browser.find_element(By.ID, "cam-wrist_image").get_attribute("src")
    saved = save(browser)
    assert saved["steps"] == len(plan)
    episode = read_episode_file(root / saved["path"])
    expected = [[1, 0, 0, -1]] * 3 + [[1, 0, -1, 1], [0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]]
    np.testing.assert_array_equal(episode.actions, expected)
    assert episode.attrs["source"] == "human" and episode.attrs["operator"] == "selenium"
    assert episode.attrs["seed"] == 7 and episode.step_data["intervention"].tolist() == [1] * len(plan)


def test_bad_env_id_kwargs_and_dataset_path_show_one_line_and_the_server_stays_up(studio, browser):
    url, _ = studio
    browser.get(url + "/teleop")
    for env_id, kwargs, expected in [("imitlab/Nope-v0", "{}", "unknown env id"),
                                     ("imitlab/Reach-v0", "{broken", "not valid JSON"),
                                     ("imitlab/Reach-v0", '{"wheels": 4}', "has no argument 'wheels'")]:
        fill(browser, "env-id", env_id)
        fill(browser, "env-kwargs", kwargs)
        browser.find_element(By.ID, "start").click()
        error = browser.find_element(By.ID, "error")
        wait_for(lambda: expected in error.text, f"the error {expected!r}")
        assert error.is_displayed() and "\n" not in error.text
    browser.get(url + "/review")
    fill(browser, "dataset-path", "no/such/dataset")
    browser.find_element(By.ID, "open").click()
    error = browser.find_element(By.ID, "error")
    wait_for(lambda: "dataset not found" in error.text, "the dataset error")
    start_task(browser, url, "imitlab/Reach-v0", {"image_size": 48}, 0, "unused")  # still serving


def test_record_reach_and_lanefollow_by_keys_curate_on_the_review_page_and_train(studio, browser, tmp_path):
    url, root = studio
    for (env_id, kwargs), dataset, seeds in ((REACH, "reach", range(5)), (LANE, "lane", range(2))):
        start_task(browser, url, env_id, kwargs, seeds[0], dataset)
        for seed, plan in zip(seeds, key_plans(env_id, kwargs, seeds)):
            drive(browser, plan)
            if seed == 1 and env_id == REACH[0]:
                screenshot(browser, "studio-teleop.png")
            assert save(browser)["success"], f"{env_id} seed {seed} was not solved"
    reach = DemoDataset(root / "reach")
    assert len(reach) == 5 and len(DemoDataset(root / "lane")) == 2

    browser.get(f"{url}/review?dataset=reach")
    row = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "tr[data-episode=demo_000002]"), "the episode rows")[0]
    row.find_element(By.CSS_SELECTOR, "input.reason").send_keys("overshot the ball")
    row.find_element(By.CSS_SELECTOR, "button.exclude").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "tr.excluded[data-episode=demo_000002]"), "the exclusion")
    Select(browser.find_element(By.CSS_SELECTOR, "tr[data-episode=demo_000004] select.split")).select_by_value("valid")
    wait_for(lambda: browser.execute_script(  # the table is rebuilt after each change: read it by script
        "return document.querySelector('tr[data-episode=demo_000000] select.split').value") == "train", "the new split")
    browser.find_element(By.CSS_SELECTOR, "tr[data-episode=demo_000001] td.name a").click()
    wait_for(lambda: browser.execute_script("return window.review.episode && window.review.episode.name") == "demo_000001",
             "the player")
    browser.execute_script("const s = document.getElementById('scrub'); s.value = 3; s.dispatchEvent(new Event('input'))")
    wait_for(lambda: browser.find_element(By.ID, "frame-image").get_attribute("complete"), "the frame")
    screenshot(browser, "studio-review.png")
    assert (root / "reach" / "episodes" / "demo_000002.hdf5").is_file()

    lengths = {a["seed"]: a["length"] for a in reach.episode_attrs()}
    runner = CliRunner()
    for dataset, seeds in (("reach", [0, 1, 3, 4]), ("lane", [0, 1])):
        out = tmp_path / dataset
        result = runner.invoke(cli_app, ["train", str(root / dataset), "--out", str(out), "--backbone", "nature_cnn",
                                         "--no-pretrained", "--epochs", "1", "--eval-episodes", "1",
                                         "--val-fraction", "0", "--threads", "1"])
        assert result.exit_code == 0, result.output
        policy = json.loads((out / "best" / "policy.json").read_text())
        assert sorted(policy["metadata"]["train_seeds"]) == seeds  # reach: demo_000002 (seed 2) was skipped
    log = json.loads((tmp_path / "reach" / "train_log.json").read_text())  # the page's split: seed 4 validates
    assert (log["train_samples"], log["val_samples"]) == (lengths[0] + lengths[1] + lengths[3], lengths[4])
    assert (root / "reach" / "episodes" / "demo_000002.hdf5").is_file()
