"""The explorer's Image control: uploads and the sample menu replace the image with one model
pass and every other setting kept; a bad file is refused in the status line, the view stays."""

import datetime
import gc
import io
import re
import sys
import weakref

import cv2
import numpy as np
import pytest
from PIL import Image

import gradcam_widget as gw
from gradcam_widget.engine import engine_for
from gradcam_widget.explorer import upload as upload_module
from gradcam_widget.explorer import widget
from gradcam_widget.explorer.widget import PANELS

SKIMAGE_PHOTOS = ("cat", "coffee", "astronaut")


@pytest.fixture
def model(make_cnn):
    """The tiny seeded CNN with a flatten head (mean and max pooling differ); a fresh one per
    test, so its engine counts only that test's passes."""
    return make_cnn(seed=3, head="flatten", classes=5)


@pytest.fixture
def explorer(model):
    image = np.random.default_rng(30).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    ex = gw.CamExplorer(model, image)
    yield ex
    ex.close()


def photo(height=300, width=200, seed=31) -> np.ndarray:
    """A photo larger than the model's 32 x 32 input, with structure (not only noise)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    cv2.circle(image, (width // 3, height // 3), min(height, width) // 5, (255, 40, 0), -1)
    return image


def encoded(image: np.ndarray, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, kind)
    return buffer.getvalue()


def upload(ex, name: str, content: bytes, kind: str = "image/png"):
    """Set the FileUpload's value as ipywidgets 8 does when a browser sends one file."""
    ex.upload.value = (
        {
            "name": name,
            "type": kind,
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.datetime.now(datetime.timezone.utc),
        },
    )


def view(ex) -> dict:
    """Everything the user sees: every panel's PNG and title, the readout, the settings, the
    menu and the image's name."""
    return {
        "panels": {title: ex.panel_png(title) for title in PANELS},
        "titles": {title: ex.titles[title].value for title in PANELS},
        "readout": ex.readout.value,
        "settings": settings(ex),
        "menu": (ex.samples.value, tuple(ex.samples.options)),
        "image": ex.image_name,
    }


def settings(ex) -> dict:
    names = ["method", "layer", "pooling", "channels", "order", "score", "class_index"]
    names += ["colormap", "opacity", "guided", "randomize"]
    return {name: getattr(ex, name) for name in names}


def test_a_png_upload_replaces_the_image_with_one_pass_and_keeps_every_setting(explorer, model):
    ex = explorer
    ex.layer = "conv1"  # the fill-in pass for conv1 runs here, before the count
    ex.pooling, ex.channels, ex.order = "max", "top", "resize_first"
    ex.score, ex.colormap, ex.opacity = "probability", "viridis", 0.7
    kept = {name: value for name, value in settings(ex).items() if name != "class_index"}
    before = view(ex)
    passes, engine_passes = ex.model_passes, engine_for(model).passes

    picture = photo()
    upload(ex, "holiday photo.png", encoded(picture))

    assert ex.model_passes == passes + 1 and engine_for(model).passes == engine_passes + 1
    assert ex.error is None and ex.upload.value == ()  # the upload's bytes are not kept
    assert {k: v for k, v in settings(ex).items() if k != "class_index"} == kept
    after = view(ex)
    assert all(after["panels"][title] != before["panels"][title] for title in ("input", "raw map"))
    decoded = cv2.imdecode(np.frombuffer(ex.panel_png("input"), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (32, 32, 3)  # the 300 x 200 photo fitted to the model's input
    expected = gw.capture(model, picture, score="probability")
    np.testing.assert_array_equal(ex.capture.image, expected.image)
    assert ex.class_index == expected.class_index  # the class follows the new top prediction
    cam = expected.cam("conv1", pooling="max", channels="top", order="resize_first")
    np.testing.assert_allclose(ex.result.heatmap, cam.heatmap, atol=1e-5)
    assert ex.image_name == "holiday photo.png"
    assert "image <b>holiday photo.png</b>" in ex.readout.value
    assert "300×200, fitted to 32×32" in ex.readout.value
    assert "new image <b>holiday photo.png</b>" in ex.status.value and "ready" in ex.status.value
    assert ex.samples.value == widget.NO_SAMPLE and ex.samples.options[0][0] == "holiday photo.png"


@pytest.mark.parametrize(("kind", "mime"), [("JPEG", "jpeg"), ("WEBP", "webp"), ("BMP", "bmp")])
def test_jpeg_webp_and_bmp_uploads_are_read(explorer, kind, mime):
    before, passes = explorer.panel_png("input"), explorer.model_passes
    upload(explorer, f"photo.{mime}", encoded(photo(120, 90), kind), f"image/{mime}")
    assert explorer.error is None and explorer.model_passes == passes + 1
    assert explorer.panel_png("input") != before
    assert explorer.image_name == f"photo.{mime}" and "120×90, fitted to 32×32" in (
        explorer.readout.value
    )


def test_guided_randomise_and_method_stay_on_across_a_new_image(explorer):
    ex = explorer
    ex.method, ex.guided, ex.randomize = "hirescam", "guided_backprop", 1
    guided_before = ex.panel_png("guided")
    ex.set_image(encoded(photo(seed=40)), name="second.png")
    assert (ex.method, ex.guided, ex.randomize) == ("hirescam", "guided_backprop", 1)
    assert ex.panel_png("guided") not in (b"", guided_before)  # recomputed for the new image
    assert "randomised" in ex.readout.value and "second.png" in ex.readout.value
    assert ex.error is None


@pytest.mark.parametrize(
    ("name", "content", "limit", "pixels", "message"),
    [
        ("notes.jpg", b"these are my notes, not a photo\n" * 10, None, None, "not a PNG, JPEG"),
        ("empty.png", b"", None, None, "it is empty (0 bytes)"),
        ("big.png", encoded(photo()), 1000, None, "over the 1000 bytes limit"),
        ("cut.png", encoded(photo())[:200], None, None, "cannot read 'cut.png'"),
        ("bomb.png", encoded(photo()), None, 40_000, "DecompressionBombWarning"),
        ("wide.png", encoded(photo()), None, "upload", "over the 0-megapixel limit"),
    ],
    ids=["text", "empty", "over-limit", "truncated", "too-many-pixels", "over-upload-pixels"],
)
def test_a_bad_upload_is_refused_in_the_status_line_and_the_view_stays(
    explorer, monkeypatch, name, content, limit, pixels, message
):
    ex = explorer
    ex.pooling = "max"
    if limit is not None:
        monkeypatch.setattr(upload_module, "MAX_UPLOAD_BYTES", limit)
    if pixels == "upload":  # the upload's own limit, far below Pillow's
        monkeypatch.setattr(upload_module, "MAX_UPLOAD_PIXELS", 50_000)
    elif pixels is not None:  # 300 x 200 = 60,000 pixels: over it, under twice it (a warning)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    before, passes = view(ex), ex.model_passes

    upload(ex, name, content)  # no exception escapes the widget's event

    assert view(ex) == before and ex.model_passes == passes
    assert ex.upload.value == ()
    status = ex.status.value
    assert message.replace("'", "&#x27;") in status and "previous view is kept" in status
    assert ex.error is not None and "Traceback" not in status and "tensorflow" not in status
    with pytest.raises(ValueError, match=re.escape(message)):  # the same from code
        ex.set_image(content, name=name)
    assert view(ex) == before and ex.model_passes == passes
    monkeypatch.undo()
    upload(ex, "good.png", encoded(photo(seed=41)))  # the widget still works
    assert ex.error is None and ex.image_name == "good.png" and ex.pooling == "max"
    assert ex.model_passes == passes + 1


def test_the_size_limit_is_documented_and_offered_to_the_browser():
    assert widget.MAX_UPLOAD_BYTES == 20 * 2**20
    assert "MAX_UPLOAD_BYTES" in gw.CamExplorer.__doc__
    assert "MAX_UPLOAD_BYTES" in gw.CamExplorer.set_image.__doc__
    accepted = set(widget.UPLOAD_ACCEPT.split(","))
    assert accepted == {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def test_a_sample_from_the_menu_replaces_the_image_with_one_pass(shapes):
    ex = gw.CamExplorer(shapes)  # the default image, "two_shapes", is a menu entry
    try:
        assert ex.samples.value == "two_shapes" and ex.image_name == "two_shapes"
        entries = [value for _, value in ex.samples.options]
        assert "shape scene 1000000" in entries and "shape scene 1000001" in entries
        ex.layer, ex.colormap = "block4_conv2", "magma"  # not the default layer
        layer, passes = ex.layer, ex.model_passes

        ex.samples.value = "shape scene 1000001"

        assert ex.model_passes == passes + 1 and ex.error is None
        scene = gw.data.scene(1_000_001, n_objects=2)
        np.testing.assert_array_equal(ex.capture.image, scene.image)
        assert (ex.layer, ex.colormap) == (layer, "magma")
        assert "image <b>shape scene 1000001</b>" in ex.readout.value
        assert "new image <b>shape scene 1000001</b>" in ex.status.value
        ex.set_image("shape scene 1000000")  # from code: the menu follows
        assert ex.samples.value == "shape scene 1000000" and ex.model_passes == passes + 2
        np.testing.assert_array_equal(ex.capture.image, gw.data.scene(1_000_000, 1).image)
        if "grace_hopper" in entries:
            ex.samples.value = "grace_hopper"
            assert ex.error is None and ex.image_name == "grace_hopper"
            assert ex.model_passes == passes + 3
    finally:
        ex.close()


def test_skimage_photos_are_listed_only_when_scikit_image_is_importable(monkeypatch, model):
    pytest.importorskip("skimage")
    assert set(SKIMAGE_PHOTOS) <= set(widget.sample_menu())
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if it were not installed
    menu = widget.sample_menu()
    assert not set(SKIMAGE_PHOTOS) & set(menu)
    assert menu[0] == "two_shapes" and "shape scene 1000000" in menu
    ex = gw.CamExplorer(model, photo(32, 32))
    offered = {value for _, value in ex.samples.options}
    ex.close()
    assert not set(SKIMAGE_PHOTOS) & offered and "two_shapes" in offered


def test_a_sample_that_fails_to_load_puts_the_menu_back(explorer, monkeypatch):
    pytest.importorskip("skimage")
    ex = explorer
    upload(ex, "mine.png", encoded(photo(seed=42)))
    before, passes = view(ex), ex.model_passes

    monkeypatch.setitem(sys.modules, "skimage", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    ex.samples.value = "coffee"
    assert "needs scikit-image" in ex.status.value and "previous view is kept" in ex.status.value
    assert view(ex) == before and ex.model_passes == passes
    assert ex.samples.value == widget.NO_SAMPLE and ex.image_name == "mine.png"


def test_the_previous_images_captures_are_freed(explorer):
    ex = explorer
    for class_index in range(5):  # several captures of the first image
        ex.class_index = class_index
    assert len(ex.session.captures) == 5
    old = [weakref.ref(ex.session.captures.get(key)) for key in list(ex.session.captures)]
    for seed in range(3):
        upload(ex, f"photo{seed}.png", encoded(photo(seed=50 + seed)))
    gc.collect()
    assert all(ref() is None for ref in old)  # none of the first image's captures is held
    assert len(ex.session.captures) == 1 and len(ex.session.results) == 1
    assert ex.cached_bytes == ex.capture.nbytes + ex.session.results.nbytes


def test_the_file_name_is_escaped_in_the_readout_and_status(explorer):
    upload(explorer, "<img src=x onerror=alert(1)>.png", encoded(photo(seed=43)))
    for html_text in (explorer.readout.value, explorer.status.value):
        assert "<img" not in html_text and "&lt;img src=x" in html_text


def test_a_large_upload_is_kept_shrunk_and_the_readout_says_its_size(explorer, monkeypatch):
    """The decoded upload is kept at most UPLOAD_KEPT_SIDE on its longer side (a tab does not
    hold a huge photo); the readout still names the size as uploaded."""
    ex = explorer
    monkeypatch.setattr(upload_module, "UPLOAD_KEPT_SIDE", 100)
    upload(ex, "tall.png", encoded(photo(300, 200)))
    assert ex.error is None and max(ex.session.image.size) == 100
    assert "300×200" in ex.readout.value


def test_a_memoryview_of_any_item_size_is_read_as_the_files_bytes(explorer):
    content = encoded(photo())
    words = memoryview(content[: len(content) // 2 * 2]).cast("H")  # 2-byte items
    padded = content if len(content) % 2 == 0 else content + b"\0"
    ex = explorer
    ex.set_image(memoryview(padded).cast("H") if len(content) % 2 else words, name="w.png")
    assert ex.error is None and ex.image_name == "w.png"


def test_choosing_the_dash_in_the_menu_keeps_the_menu_on_the_image(shapes):
    ex = gw.CamExplorer(shapes, "two_shapes")
    try:
        assert ex.samples.value == "two_shapes"
        ex.samples.value = widget.NO_SAMPLE
        assert ex.samples.value == "two_shapes" and ex.image_name == "two_shapes"
    finally:
        ex.close()
