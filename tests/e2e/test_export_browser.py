"""What a student sees where no kernel runs: the static explorer opened from disk.

The test exports the shipped ``shapes`` model on the ``two_shapes`` sample into a temporary
folder (``gradcam_widget.export``), opens the file from ``file://`` in headless Chromium,
switches layer and pooling with the page's plain ``<select>`` menus, and checks that the
pictures on screen change (their decoded pixels, from element screenshots) and the caption
names the new choices — with no network request at all.

Run: ``pytest -m e2e tests/e2e/test_export_browser.py`` (after ``bash scripts/e2e_setup.sh``).
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.e2e

PICTURES_READY = """() => ["gw-input", "gw-raw", "gw-overlay"].every((id) => {
    const image = document.getElementById(id);
    return image !== null && image.complete && image.naturalWidth > 0;
})"""
MIN_CHANGE = 2.0  # mean absolute difference (0..255) between two different maps on screen
SAME_PICTURE = 1.0  # ... between two decoders' pixels of one JPEG
SHOWN = 224  # the pictures' size on the page, CSS pixels (device scale factor 1)


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    """The default export of the quickstart scene, written into a temporary folder."""
    from gradcam_widget import export

    path = tmp_path_factory.mktemp("static") / "lesson.html"
    export.export_html(path, "shapes", "two_shapes")
    return path


DECODED = """(id) => {
    const image = document.getElementById(id);
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
}"""


def pixels(page, selector: str) -> np.ndarray:
    """The element's pixels as Chromium draws them on screen: a PNG screenshot of its
    ``SHOWN`` × ``SHOWN`` box (rounded to whole pixels), decoded to BGR."""
    box = page.locator(selector).bounding_box()
    assert box is not None and round(box["width"]) == round(box["height"]) == SHOWN, box
    clip = {"x": round(box["x"]), "y": round(box["y"]), "width": SHOWN, "height": SHOWN}
    png = page.screenshot(type="png", clip=clip)
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (SHOWN, SHOWN, 3)
    return decoded.astype(np.float32)


def browser_decoded(page, element_id: str) -> np.ndarray:
    """The element's picture as Chromium decoded it (drawn on a canvas), as BGR."""
    rgba = np.array(page.evaluate(DECODED, element_id), np.float32)
    side = int(np.sqrt(rgba.size // 4))
    return rgba.reshape(side, side, 4)[..., 2::-1]


def source_pixels(page, selector: str) -> np.ndarray:
    """The element's picture decoded from its ``data:`` URI (what the file holds)."""
    uri = page.locator(selector).get_attribute("src")
    assert uri is not None and uri.startswith("data:image/"), uri
    payload = base64.b64decode(uri.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)


def change(before: np.ndarray, after: np.ndarray) -> float:
    assert before.shape == after.shape
    return float(np.abs(before - after).mean())


def view(page) -> dict:
    """What the page shows now: caption, the overlay and raw map on screen and in the file."""
    page.wait_for_function(PICTURES_READY)
    return {
        "caption": page.locator("#gw-caption").inner_text(),
        "overlay": pixels(page, "#gw-overlay"),
        "raw": pixels(page, "#gw-raw"),
        "overlay_source": source_pixels(page, "#gw-overlay"),
        "overlay_decoded": browser_decoded(page, "gw-overlay"),
    }


def test_static_explorer_from_disk(page, lesson):
    requests: list[str] = []
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(("data:", "file:")) else requests.append(request.url)
        ),
    )
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(lesson.as_uri())
    assert page.url.startswith("file://")

    assert "class 3 star" in page.locator("#gw-class").inner_text()
    first = view(page)
    assert first["caption"].startswith("method Grad-CAM · layer block5_conv3 · pooling mean")
    assert "raw map 14×14" in first["caption"]

    page.select_option("#gw-layer", "block4_conv2")
    second = view(page)
    assert "layer block4_conv2" in second["caption"] and "raw map 28×28" in second["caption"]
    assert "pooling mean" in second["caption"]
    assert change(first["overlay"], second["overlay"]) > MIN_CHANGE
    assert change(first["raw"], second["raw"]) > MIN_CHANGE
    assert change(first["overlay_source"], second["overlay_source"]) > MIN_CHANGE

    page.select_option("#gw-pooling", "max")
    third = view(page)
    assert "layer block4_conv2 · pooling max" in third["caption"]
    assert change(second["overlay"], third["overlay"]) > MIN_CHANGE
    assert change(second["overlay_source"], third["overlay_source"]) > MIN_CHANGE

    # the picture on screen is the one the file holds for that choice
    assert change(third["overlay_decoded"], third["overlay_source"]) < SAME_PICTURE
    assert change(second["overlay_decoded"], third["overlay_decoded"]) > MIN_CHANGE

    # a method that ignores pooling disables the menu; back to Grad-CAM enables it
    page.select_option("#gw-method", "eigencam")
    assert page.locator("#gw-pooling").is_disabled()
    assert "Eigen-CAM" in view(page)["caption"]
    page.select_option("#gw-method", "gradcam")
    assert page.locator("#gw-pooling").is_enabled()
    assert view(page)["caption"] == third["caption"]

    assert errors == []
    assert requests == [], f"network requests from a static page: {requests}"
