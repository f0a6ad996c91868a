"""Studio frame latency: from the end of an env step on the server to the frame on the page, in headless Chromium.

Each frame carries the wall-clock time its env step finished (``stamp_ms``); the page notes when the WebSocket
message arrives and when the scene image has been decoded (ready to paint). The env runs at its control rate
(10 Hz for every task) while a key is held, as a person would drive it.

    python benchmarks/bench_studio.py [--seconds 8]

Needs chromium + chromium-driver and selenium (the test extra). Numbers depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from imitlab.studio.browser import headless_chromium, studio_process

#: (label, env id, kwargs, key held): the driving camera at its default size, the arm with its wrist camera.
CASES = [
    ("LaneFollow, 84 px camera + 640x480 chase view", "imitlab/LaneFollow-v0", {}, Keys.ARROW_UP),
    ("Reach, agent view + wrist 84 px + 640x480 view", "imitlab/Reach-v0", {"cameras": ["agentview", "wrist"]}, "w"),
]


def measure(driver, url: str, env_id: str, kwargs: dict, key: str, seconds: float) -> dict[str, float]:
    driver.get(url + "/teleop")
    for field, value in (("env-id", env_id), ("env-kwargs", json.dumps(kwargs))):
        element = driver.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    driver.find_element(By.ID, "start").click()
    deadline = time.monotonic() + 60
    while not driver.execute_script("return window.studio.frames") and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.execute_script("window.studio.latencies.length = 0")
    ActionChains(driver).key_down(key).perform()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if driver.execute_script("return window.studio.mode") == "done":  # an episode ended: next seed
            ActionChains(driver).key_up(key).perform()
            driver.find_element(By.ID, "reset").click()
            time.sleep(0.2)
            ActionChains(driver).key_down(key).perform()
        time.sleep(0.1)
    ActionChains(driver).key_up(key).perform()
    elapsed = time.monotonic() - start
    time.sleep(0.3)
    records = [r for r in driver.execute_script("return window.studio.latencies") if r["mode"] in ("running", "done")]
    arrival = np.array([r["arrival"] for r in records])
    shown = np.array([r["shown"] for r in records if r["shown"] is not None])
    return {"frames": len(records), "rate": len(records) / elapsed,
            "arrival_median": float(np.median(arrival)), "arrival_p95": float(np.percentile(arrival, 95)),
            "shown_median": float(np.median(shown)), "shown_p95": float(np.percentile(shown, 95)),
            "shown_max": float(shown.max()), "within_100ms": float(np.mean(shown <= 100.0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="Driving time per task.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, studio_process(Path(root)) as url, headless_chromium() as driver:
        print(f"{'task':48s} {'frames':>6s} {'steps/s':>7s}  {'arrival ms (median/p95)':>24s}  "
              f"{'decoded ms (median/p95/max)':>28s}  {'<=100 ms':>8s}")
        for label, env_id, kwargs, key in CASES:
            r = measure(driver, url, env_id, kwargs, key, args.seconds)
            print(f"{label:48s} {r['frames']:6d} {r['rate']:7.1f}  {r['arrival_median']:11.1f} / {r['arrival_p95']:10.1f}  "
                  f"{r['shown_median']:9.1f} / {r['shown_p95']:6.1f} / {r['shown_max']:7.1f}  {100 * r['within_100ms']:7.0f} %")


if __name__ == "__main__":
    main()
