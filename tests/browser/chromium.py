"""Headless Chromium for tests, driven through Selenium and Debian's chromedriver.

`find_chromium()` returns the browser and driver paths, or None when either
is absent (tests skip then; CI installs Debian's ``chromium`` and
``chromium-driver``).  `headless_chromium()` starts a fresh browser with its
own profile directory and no network side traffic, collecting console
messages, and always quits it.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

#: flags that keep a headless browser quiet, offline and sandbox-free (containers run as root)
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


@dataclass(frozen=True)
class Chromium:
    browser: str
    driver: str


def find_chromium() -> Chromium | None:
    """Paths of chromium and chromedriver, or None if either is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return None
    return Chromium(browser, driver)


@contextmanager
def headless_chromium(chromium: Chromium, profile_dir: Path, width: int = 1500, height: int = 1500) -> Iterator:
    """A Selenium WebDriver on a fresh headless Chromium (quit on exit)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium.browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromium.driver), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[str]:
    """Console messages of level SEVERE (errors) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def read_png(data: bytes):
    """An RGB uint8 array [height, width, 3] of a PNG (Pillow)."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
