"""The upload button: what it offers the browser (its limit, its file types), a file the
browser refused for its size said in the status line with nothing changed, and the state it
sends when a file is taken (checked in Chromium by tests/e2e/test_app_browser.py)."""

from __future__ import annotations

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.explorer import upload as upload_module
from gradcam_widget.explorer.upload_button import UploadButton


@pytest.fixture
def explorer(make_cnn):
    image = np.random.default_rng(30).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    ex = gw.CamExplorer(make_cnn(seed=3, classes=5), image)
    yield ex
    ex.close()


def test_the_button_offers_the_limit_and_types_to_the_browser(explorer):
    button = explorer.upload
    assert isinstance(button, UploadButton)
    state = button.get_state()
    assert state["max_bytes"] == upload_module.MAX_UPLOAD_BYTES
    assert state["accept"] == upload_module.UPLOAD_ACCEPT
    assert state["description"] == "Upload image" and "20" in state["tooltip"]
    assert "gw-upload" in button._dom_classes
    assert 'file.size > model.get("max_bytes")' in UploadButton._esm  # checked before reading


def test_a_file_refused_in_the_browser_is_said_and_changes_nothing(explorer):
    ex = explorer
    ex.pooling = "max"
    before, passes, name = ex.panel_png("overlay"), ex.model_passes, ex.image_name
    ex.upload.refused = {"name": "huge<photo>.png", "size": 40 * 2**20, "at": 1}  # as the JS sets
    status = ex.status.value
    assert "huge&lt;photo&gt;.png is 40.0 MB" in status and "refused in the browser" in status
    assert "previous view is kept" in status and ex.error.startswith("ValueError")
    assert ex.panel_png("overlay") == before and ex.model_passes == passes
    assert ex.image_name == name and ex.pooling == "max"
    ex.upload.refused = {"name": "huge<photo>.png", "size": 40 * 2**20, "at": 2}  # again: said
    assert "refused in the browser" in ex.status.value
    ex.set_image("two_shapes")  # still usable
    assert ex.error is None


def test_the_state_a_taken_file_arrives_in_is_read(explorer):
    """The browser sends ``value`` as a list of one dict whose content is a buffer; ipywidgets
    puts the buffer back as a memoryview (what set_state receives)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(buffer, "PNG")
    content = memoryview(buffer.getvalue())
    explorer.upload.set_state({"value": [{"name": "mine.png", "type": "image/png",
                                          "size": len(content), "content": content}]})  # fmt: skip
    assert explorer.error is None and explorer.image_name == "mine.png"
    assert explorer.upload.value == ()  # emptied: the bytes are not kept
