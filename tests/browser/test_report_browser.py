"""The report in headless Chromium: loads without errors and opens on the
category overview; a category and a head can be clicked, the head's gloss and
both programs (short and full) show, its heatmaps render, and the screenshot
shows the grid (IoU view) and them.

Skips only when Chromium (or its driver) is not installed.  The screenshot is
written to the test's temporary directory, copied into the fake run as
``report-screenshot.png``, and to ``$ATTNDSL_SCREENSHOT`` when that is set;
the paths are printed (``pytest -s`` shows them).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.browser.chromium import console_errors, find_chromium, headless_chromium, read_png

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from attndsl.reporting.report import build_report
    from tests.test_report import make_fake_run

    run = make_fake_run(tmp_path_factory.mktemp("browser") / "run", with_short=True)
    return build_report(run)


def _pixel_box(driver, element):
    """(x0, y0, x1, y1) of an element in screenshot pixels."""
    rect = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.left, r.top, r.right, r.bottom, window.devicePixelRatio || 1];",
        element,
    )
    scale = rect[4]
    return tuple(int(round(v * scale)) for v in rect[:4])


def test_report_in_headless_chromium(report, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from attndsl.reporting.report import CATEGORY_COLOURS, iou_colour
    from tests.test_report import page_data

    data = page_data(report.read_text(encoding="utf-8"))
    target = next(h for h in data["heads"] if (h["layer"], h["head"]) == (2, 1))
    with headless_chromium(CHROMIUM, tmp_path / "profile") as driver:
        driver.get(report.resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        assert console_errors(driver) == []
        assert driver.execute_script("return window.__reportErrors") == []

        # the page opens on the answer: the category overview is the first thing under the header,
        # on screen, and the grid is coloured by category
        first_section = driver.execute_script("return document.querySelector('main section').id")
        assert first_section == "heads-section"
        overview = driver.find_element(By.ID, "categories")
        top = driver.execute_script("return arguments[0].getBoundingClientRect().top", overview)
        assert 0 <= top < driver.execute_script("return window.innerHeight")
        assert top < driver.execute_script("return document.getElementById('grid').getBoundingClientRect().top")
        rows = driver.find_elements(By.CSS_SELECTOR, "#categories .category-row")
        assert [r.get_attribute("data-category") for r in rows] == [c["key"] for c in data["categories"]]
        assert sum(int(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows) == len(data["heads"])
        cells = driver.find_elements(By.CSS_SELECTOR, "#grid .cell")
        assert len(cells) == data["n_layers"] * data["n_heads"]
        for h in data["heads"]:
            colour = driver.find_element(By.ID, f"cell-{h['layer']}-{h['head']}").value_of_css_property("background-color")
            assert colour.replace(" ", "") == "rgba({},{},{},1)".format(*CATEGORY_COLOURS[h["category"]]) or \
                colour.replace(" ", "") == "rgb({},{},{})".format(*CATEGORY_COLOURS[h["category"]])

        # click a category: its best example head opens, the other categories' cells dim
        previous = next(c for c in data["categories"] if c["key"] == "previous")
        driver.find_element(By.CSS_SELECTOR, "#categories .category-row[data-category='previous']").click()
        assert driver.find_element(By.ID, "head-title").text == "Layer {}, head {}".format(*previous["best"])
        assert "previous token" in driver.find_element(By.ID, "head-category").text
        dimmed = {(int(c.get_attribute("data-layer")), int(c.get_attribute("data-head")))
                  for c in driver.find_elements(By.CSS_SELECTOR, "#grid .cell.dim")}
        assert dimmed == {(h["layer"], h["head"]) for h in data["heads"] if h["category"] != "previous"}

        # click a head: its gloss and both programs
        driver.find_element(By.ID, "cell-2-1").click()
        title = driver.find_element(By.ID, "head-title").text
        assert title == "Layer 2, head 1"
        assert driver.find_element(By.ID, "head-gloss").text == target["gloss"]
        source = driver.find_element(By.ID, "program-source").text
        program = data["programs"][target["program"]]
        assert source.startswith(f"program {program['name']}")
        short = driver.find_element(By.ID, "program-source-short").text
        assert short.startswith("program " + data["programs"][target["short"]["program"]]["name"])
        assert short != source
        assert f"{target['heldout_iou']:.3f}" in driver.find_element(By.ID, "head-scores").text

        # clicking the category again shows every head; then the IoU view
        driver.find_element(By.CSS_SELECTOR, "#categories .category-row[data-category='previous']").click()
        assert driver.find_elements(By.CSS_SELECTOR, "#grid .cell.dim") == []
        driver.find_element(By.ID, "view-iou").click()
        assert driver.find_element(By.ID, "grid").get_attribute("data-view") == "iou"
        driver.find_element(By.ID, "cell-2-1").click()

        # its heatmaps: real and program side by side for every example, drawn
        canvases = driver.find_elements(By.CSS_SELECTOR, "#heatmaps canvas.heatmap")
        assert len(canvases) == 2 * len(data["examples"])
        inked = driver.execute_script(
            """
            return Array.from(document.querySelectorAll('#heatmaps canvas.heatmap')).map(function (c) {
              const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let blue = 0;
              for (let i = 0; i < px.length; i += 4) if (px[i + 2] - px[i] > 60) blue++;
              return [c.dataset.rendered, blue];
            });"""
        )
        assert all(rendered == "1" and blue > 0 for rendered, blue in inked), inked

        # the other sections rendered too
        assert driver.find_elements(By.CSS_SELECTOR, "#perplexity-plot polyline.series")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#layers-plot circle")) == len(data["heads"])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#library tbody tr")) == len(data["programs"])
        assert console_errors(driver) == []

        grid_boxes = {(h["layer"], h["head"]): _pixel_box(driver, driver.find_element(By.ID, f"cell-{h['layer']}-{h['head']}"))
                      for h in data["heads"]}
        heat_box = _pixel_box(driver, canvases[0])
        png = driver.get_screenshot_as_png()

    shot = tmp_path / "report.png"
    shot.write_bytes(png)
    copies = [report.parent / "report-screenshot.png"]
    if os.environ.get("ATTNDSL_SCREENSHOT"):
        copies.append(Path(os.environ["ATTNDSL_SCREENSHOT"]))
    for copy in copies:
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, copy)
    print(f"\nreport screenshot: {shot} (copies: {', '.join(map(str, copies))})")

    image = read_png(shot.read_bytes())
    assert image.shape[0] > 500 and image.shape[1] > 500
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50, "the screenshot is blank"
    # every grid cell shows its head's colour at its centre (the selected one has a border, not a fill change)
    for h in data["heads"]:
        x0, y0, x1, y1 = grid_boxes[(h["layer"], h["head"])]
        centre = image[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)
        assert np.abs(centre - np.array(iou_colour(h["heldout_iou"]))).max() <= 3, (h, centre)
    # the first heatmap holds attention shades (blue) inside its box
    x0, y0, x1, y1 = heat_box
    region = image[y0:y1, x0:x1].astype(int)
    assert region.size, "the heatmap is outside the screenshot"
    assert ((region[..., 2] - region[..., 0]) > 60).sum() > 20


@pytest.mark.parametrize("text", ["/*@COLOURS@*/", "<!--<script>"])
def test_hostile_strings_do_not_blank_the_page(report, tmp_path, text):
    """A program string or a corpus file name holding a template marker or ``<!--<script>``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from attndsl.reporting.report import build_report
    from tests.test_report import _hostile_run, page_data

    page = build_report(_hostile_run(report.parent, tmp_path, text))
    data = page_data(page.read_text(encoding="utf-8"))
    with headless_chromium(CHROMIUM, tmp_path / "profile") as driver:
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        assert console_errors(driver) == []
        assert len(driver.find_elements(By.CSS_SELECTOR, "#grid .cell")) == data["n_layers"] * data["n_heads"]
        settings = driver.find_element(By.ID, "settings").text
        assert text in settings  # the corpus name shows as text
