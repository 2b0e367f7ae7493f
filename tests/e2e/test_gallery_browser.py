"""What the user sees: a CamGallery in JupyterLab, sorted, filtered and clicked in the browser.

The test writes a one-cell notebook into a folder of its own and serves that folder (the
``lab_root`` and ``notebook`` fixtures below override the conftest's). The cell audits 36
scenes with the ``shapes`` model into that folder and shows ``gw.CamGallery`` of the results.
In the browser the test picks another sort column and a class, clicks one thumbnail's open
button, and checks that the explorer beside the grid shows that very image: the pixels of its
input panel are the scene's.

Run: ``pytest -m e2e tests/e2e/test_gallery_browser.py`` (after ``bash scripts/e2e_setup.sh``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from e2e_page import PAGE_LOAD_TIMEOUT_MS, ExplorerPage, PlaywrightTimeout
from test_browser import LAB_FINISHED, run_all_cells

pytestmark = pytest.mark.e2e

SCENES = "scenes:1000000-1000036"
FIRST_SEED, SCENE_COUNT = 1_000_000, 36
PAGE_SIZE = 12
SORT_COLUMN = "entropy"
CLASS_NAME = "star"
# Kernel start + TensorFlow import + model load + auditing 36 scenes on 2 busy cores.
GALLERY_TIMEOUT_S = 240.0
UPDATE_TIMEOUT_S = 30.0
OPEN_TIMEOUT_S = 120.0  # the first click makes the explorer: one model pass and its widgets

CELL = """\
import gradcam_widget as gw

results = gw.audit("shapes", "{scenes}", out="audit", shard_size=12, progress=False)
gallery = gw.CamGallery(results, page_size={page_size}, columns=6)
gallery"""

# The gallery is drawn: a summary, and every visible cell's thumbnail decoded.
GALLERY_READY = """() => {
    const summary = document.querySelector(".gw-gallery .gw-gallery-summary");
    const cells = [...document.querySelectorAll(".gw-gallery .gw-gallery-cell")]
        .filter((cell) => cell.offsetParent !== null);
    return summary !== null && summary.textContent.includes("showing") && cells.length > 0
        && cells.every((cell) => {
            const image = cell.querySelector("img");
            return image !== null && image.complete && image.naturalWidth > 0;
        });
}"""

# The text of every visible cell's caption and open button.
VISIBLE_CELLS = """() => [...document.querySelectorAll(".gw-gallery .gw-gallery-cell")]
    .filter((cell) => cell.offsetParent !== null)
    .map((cell) => ({
        caption: cell.querySelector(".gw-gallery-caption").textContent,
        button: cell.querySelector(".gw-gallery-open").textContent.trim()}))"""

# The explorer beside the grid is ready and its input panel decoded.
EXPLORER_READY = """() => {
    const pane = document.querySelector(".gw-gallery-explorer");
    const status = pane && pane.querySelector(".gw-explorer .gw-status");
    const input = pane && pane.querySelector("img.gw-panel-input");
    return status !== null && status.textContent.includes("ready") && input !== null
        && input.complete && input.naturalWidth > 0;
}"""

# The pixels of the explorer's input panel, as the browser decoded them.
INPUT_PIXELS = """() => {
    const image = document.querySelector(".gw-gallery-explorer img.gw-panel-input");
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    return {width: canvas.width, height: canvas.height, rgba: Array.from(data)};
}"""


@pytest.fixture
def lab_root(tmp_path) -> Path:
    """The folder JupyterLab serves: the notebook and, once it ran, the audit."""
    root = tmp_path / "lab"
    root.mkdir()
    return root


@pytest.fixture
def notebook(lab_root) -> Path:
    """``gallery.ipynb`` (relative to ``lab_root``): one cell that audits and shows the
    gallery."""
    import nbformat

    cell = nbformat.v4.new_code_cell(CELL.format(scenes=SCENES, page_size=PAGE_SIZE))
    document = nbformat.v4.new_notebook(cells=[cell])
    document.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}  # fmt: skip
    nbformat.write(document, lab_root / "gallery.ipynb")
    return Path("gallery.ipynb")


def scene_pixels(index: int) -> np.ndarray:
    """Scene ``index`` of the audit as the explorer shows it: ``(H, W, 3)`` uint8 at the
    model's input size."""
    from gradcam_widget import images, sources

    image = sources.Scenes.parse(SCENES).scene(index).image
    return images.shown_image(images.fit(image, 224, 224))


def wait_for(page, script: str, timeout_s: float, what: str, explorer: ExplorerPage):
    try:
        page.wait_for_function(script, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        raise AssertionError(
            f"{what} within {timeout_s:.0f} s; gallery status "
            f"{text_of(page, '.gw-gallery-status')!r}, summary "
            f"{text_of(page, '.gw-gallery-summary')!r}; stderr outputs "
            f"{explorer.stderr_outputs()}{explorer.diagnostics()}"
        ) from None


def text_of(page, selector: str) -> str | None:
    found = page.locator(selector)
    return found.first.text_content() if found.count() else None


def choose(page, control: str, label: str):
    """Pick the option of dropdown ``.gw-gallery-<control>`` that reads ``label`` (ipywidgets
    draws the spaces of option labels as no-break spaces)."""
    select = page.locator(f".gw-gallery-{control} select").first
    labels = select.locator("option").all_text_contents()
    matches = [text for text in labels if text.replace("\xa0", " ").strip() == label]
    assert matches, f"dropdown .gw-gallery-{control} offers {labels}, not {label!r}"
    select.select_option(label=matches[0])


def selected_count(page) -> int:
    match = re.search(r"of ([\d,]+) selected", text_of(page, ".gw-gallery-summary") or "")
    assert match, f"no selection count in the summary {text_of(page, '.gw-gallery-summary')!r}"
    return int(match[1].replace(",", ""))


def test_jupyterlab_gallery_sort_filter_and_open_one_image(
    jupyter_lab, page, notebook, screenshot_dir, tmp_path
):
    started = time.monotonic()
    explorer = ExplorerPage(page)  # records browser errors; reads stderr outputs
    page.goto(jupyter_lab.url(f"/lab/tree/{notebook.as_posix()}"), wait_until="domcontentloaded",
              timeout=PAGE_LOAD_TIMEOUT_MS)  # fmt: skip
    run_all_cells(page)
    try:
        wait_for(page, GALLERY_READY, GALLERY_TIMEOUT_S, "the gallery did not show", explorer)
        page.wait_for_function(LAB_FINISHED, timeout=UPDATE_TIMEOUT_S * 1000)
    except (AssertionError, PlaywrightTimeout) as error:
        shot = explorer.screenshot_failure(tmp_path / "gallery_failure.png")
        raise AssertionError(f"{error} {shot}\nserver log:\n{jupyter_lab.log_tail()}") from None
    assert not explorer.stderr_outputs(), explorer.stderr_outputs()
    cells = page.evaluate(VISIBLE_CELLS)
    assert len(cells) == PAGE_SIZE, cells
    assert selected_count(page) == SCENE_COUNT
    assert page.locator(".gw-gallery-explorer .gw-explorer").count() == 0  # not before a click

    # sort by another column, in the browser: every caption names it
    choose(page, "sort", SORT_COLUMN)
    wait_for(
        page,
        f"""() => [...document.querySelectorAll(".gw-gallery-cell")]
            .filter((cell) => cell.offsetParent !== null)
            .every((cell) => cell.textContent.includes("{SORT_COLUMN} "))""",
        UPDATE_TIMEOUT_S, f"the captions did not show {SORT_COLUMN}", explorer,
    )  # fmt: skip
    values = [float(re.search(rf"{SORT_COLUMN} ([-\d.e]+)", cell["caption"])[1])
              for cell in page.evaluate(VISIBLE_CELLS)]  # fmt: skip
    assert values == sorted(values), f"{SORT_COLUMN} values on the page are not sorted: {values}"

    # filter by a class: fewer selected, each shown image truly of that class
    choose(page, "class", f"{CLASS_NAME} (#3)")
    wait_for(
        page,
        f"""() => !document.querySelector(".gw-gallery-summary").textContent
            .includes("of {SCENE_COUNT} selected")""",
        UPDATE_TIMEOUT_S, "the summary did not follow the class filter", explorer,
    )  # fmt: skip
    chosen = selected_count(page)
    cells = page.evaluate(VISIBLE_CELLS)
    assert 0 < chosen < SCENE_COUNT and len(cells) == min(chosen, PAGE_SIZE), (chosen, cells)
    assert all(f"{CLASS_NAME} →" in cell["caption"] for cell in cells), cells

    # open one: the explorer beside the grid shows that very image
    button = page.locator(".gw-gallery-cell:visible .gw-gallery-open").nth(1)
    index = int(re.fullmatch(r"open #(\d+)", button.text_content().strip())[1])
    button.click()
    scene_id = f"scenes-{FIRST_SEED + index}"
    wait_for(
        page,
        f"""() => (document.querySelector(".gw-gallery-status").textContent || "")
            .includes("opened #{index} {scene_id}")""",
        OPEN_TIMEOUT_S, f"the gallery did not say it opened #{index}", explorer,
    )  # fmt: skip
    wait_for(page, EXPLORER_READY, UPDATE_TIMEOUT_S, "the explorer did not get ready", explorer)
    assert scene_id in text_of(page, ".gw-gallery-explorer-title")
    shown = page.evaluate(INPUT_PIXELS)
    pixels = np.asarray(shown["rgba"], np.int16).reshape(shown["height"], shown["width"], 4)
    expected = scene_pixels(index).astype(np.int16)
    other = scene_pixels(index + 1 if index + 1 < SCENE_COUNT else index - 1).astype(np.int16)
    assert pixels.shape[:2] == expected.shape[:2]
    difference = float(np.abs(pixels[..., :3] - expected).mean())
    assert difference < 1.0, f"the explorer's input differs from scene #{index} by {difference}"
    assert float(np.abs(pixels[..., :3] - other).mean()) > 5 * max(difference, 1.0)
    assert not explorer.stderr_outputs(), explorer.stderr_outputs()
    assert explorer.options("gallery-sort")[1] == SORT_COLUMN
    page.locator(".gw-gallery").first.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "jupyterlab_gallery.png"))
    print(f"JupyterLab: gallery checked in {time.monotonic() - started:.1f} s")
