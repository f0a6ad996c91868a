"""Drive the studio from a headless browser: the tests, the latency benchmark and the README screenshots use it.

The browser is the system's Chromium with its chromedriver (Debian: ``apt-get install chromium chromium-driver``),
driven by Selenium (the ``test`` extra); nothing is downloaded at run time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from imitlab.core.errors import ImitlabError


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) executables, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextmanager
def headless_chromium(width: int = 1440, height: int = 1000) -> Iterator[Any]:
    """A Selenium WebDriver on headless Chromium, quit on exit."""
    from selenium import webdriver

    paths = chromium_paths()
    if paths is None:
        raise ImitlabError("no headless browser: install chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(paths[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def studio_process(root: Path) -> Iterator[str]:
    """``imitlab studio --root root --port 0`` in a child process; yields the URL it prints (no trailing /)."""
    process = subprocess.Popen([sys.executable, "-c", "from imitlab.cli import main; main()", "studio", "--root",
                                str(root), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if "http://" not in line:
            process.kill()
            rest = process.stdout.read() if process.stdout else ""
            raise ImitlabError(f"imitlab studio did not print its URL: {(line + rest).strip()}")
        yield line.split()[2].rstrip("/")
    finally:
        process.terminate()
        process.wait(timeout=10)
