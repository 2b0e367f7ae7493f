"""The explorer's Image row: the sample menu, the upload button, and reading a new image.

:meth:`~gradcam_widget.widget.CamExplorer.set_image` hands what it is given to
:func:`read_new_image`, which decodes the bytes of an uploaded file (refusing one that is
empty, too large or no image before any model pass), makes a shape scene of a menu entry, and
says what the readout calls the image (:class:`ImageSource`).
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import ipywidgets as widgets
import numpy as np
from PIL import Image as PILImage

from gradcam_widget.captures.capturing import Capture
from gradcam_widget.data import images
from gradcam_widget.data import scenes as data
from gradcam_widget.explorer.controls import dropdown
from gradcam_widget.explorer.upload_button import UploadButton

MAX_UPLOAD_BYTES = 20 * 2**20
"""The largest image file the Image control takes: 20 MiB (also for bytes given to
:meth:`CamExplorer.set_image`; a path is read whatever its size). A larger upload is refused in
the status line before it is decoded. The front end may stop it sooner: a default Jupyter
server drops websocket messages over 10 MiB (Tornado's ``websocket_max_message_size``)."""

MAX_UPLOAD_PIXELS = 40_000_000
"""The most pixels an uploaded image may decode to (40 megapixels; a small file can hold a
huge image). Checked after decoding, before the model; a path is read whatever its size."""

UPLOAD_KEPT_SIDE = 2048
"""An uploaded image is kept at most this many pixels on its longer side (shrunk once, with
Lanczos, as it is read): the explorer fits it to the model's input from there, and a tab does
not hold a 12-megapixel photo for the life of the image."""

UPLOAD_ACCEPT = ".png,.jpg,.jpeg,.webp,.bmp"
"""The file types the upload button offers (the browser's file chooser filters by them; any
image file Pillow reads is taken)."""

SCENE_SAMPLE = "shape scene "
"""A sample menu entry ``"shape scene <seed>"`` is ``data.scene(seed, n_objects=1 + seed % 2)``."""

SAMPLE_SEEDS = (1_000_000, 1_000_001, 1_000_002, 1_000_003)
"""Seeds of the shape scenes in the sample menu: held-out scenes (the ``shapes`` model was
trained on seeds below 1,000,000), one object for an even seed, two for an odd one."""

NO_SAMPLE = ""  # the sample menu's value while an image of no menu entry is on screen


def sample_menu() -> tuple[str, ...]:
    """The entries of the Image control's sample menu, each a name
    :meth:`CamExplorer.set_image` takes.

    ``"two_shapes"``, a shape scene per seed of :data:`SAMPLE_SEEDS` (``"shape scene
    1000000"`` ...), ``"grace_hopper"`` when matplotlib's copy of it is on disk, and the
    scikit-image photos of :data:`gradcam_widget.data.SAMPLES` (``"cat"``, ``"coffee"``,
    ``"astronaut"``) only when scikit-image is installed. All offline.
    """
    names = ["two_shapes", *(f"{SCENE_SAMPLE}{seed}" for seed in SAMPLE_SEEDS)]
    import matplotlib

    if (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").is_file():
        names.append("grace_hopper")
    if importlib.util.find_spec("skimage") is not None:
        names.extend(name for name in data.SAMPLES if name not in ("two_shapes", "grace_hopper"))
    return tuple(names)


class ImageSource(NamedTuple):
    """What the explorer knows of the image on screen, for the readout and the menu."""

    name: str  # as the readout and the status line call it
    size: tuple[int, int] | None  # (H, W) as given, before fitting; None when not known
    nbytes: int | None  # the file's bytes, for bytes (an upload)
    sample: str  # the sample menu's entry for it, or NO_SAMPLE


def size_text(nbytes: int) -> str:
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:.1f} MB"
    return f"{nbytes / 2**10:.1f} KB" if nbytes >= 2**10 else f"{nbytes} bytes"


def _is_file_bytes(image) -> bool:
    """Bytes of a file: ``bytes``, ``bytearray`` or any contiguous ``memoryview`` (read as
    its raw bytes)."""
    if isinstance(image, (bytes, bytearray)):
        return True
    return isinstance(image, memoryview) and image.contiguous


def _scene_seed(image) -> int | None:
    """The seed of a ``"shape scene <seed>"`` entry (``None``: no such entry, or a file of
    that name exists, which wins as it does for sample names)."""
    if not isinstance(image, str) or not image.startswith(SCENE_SAMPLE):
        return None
    seed = image[len(SCENE_SAMPLE) :]
    if not seed.isdigit() or Path(image).expanduser().is_file():
        return None
    return int(seed)


def image_name(image) -> str:
    """What to call an image given to the explorer without a name."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        return path.name if path.is_file() else os.fspath(image)
    if isinstance(image, PILImage.Image):
        filename = getattr(image, "filename", "")
        return Path(filename).name if filename else f"PIL image ({image.mode})"
    if _is_file_bytes(image):
        return "image bytes"
    return "array" if isinstance(image, np.ndarray) else type(image).__name__


def _source_size(image) -> tuple[int, int] | None:
    """``(H, W)`` of an image as given, when known without reading a file."""
    if isinstance(image, PILImage.Image):
        return image.height, image.width
    if isinstance(image, np.ndarray) and image.ndim >= 2:
        return int(image.shape[0]), int(image.shape[1])
    return None


def read_new_image(image, name: str | None = None):
    """What :meth:`CamExplorer.set_image` hands its session: the file's bytes decoded, a
    shape scene entry made, anything else as it is; no model pass.

    Args:
        image: anything :func:`gradcam_widget.capture` takes, the bytes of an image file
            (``bytes``, ``bytearray`` or a ``memoryview``: an upload) or a :func:`sample_menu`
            entry.
        name: what the readout calls it (default: the file's or sample's name).

    Returns:
        ``(image, source)``: the image for the session and what the readout says of it.

    Raises:
        ValueError: for bytes that are empty, over :data:`MAX_UPLOAD_BYTES`, or no image
            Pillow reads (a message that names the file).
    """
    label = str(name) if name is not None else image_name(image)
    sample, nbytes, given = NO_SAMPLE, None, None
    if _is_file_bytes(image):
        nbytes = memoryview(image).nbytes
        if nbytes > MAX_UPLOAD_BYTES:
            raise ValueError(
                f"{label!r} is {size_text(nbytes)}, over the {size_text(MAX_UPLOAD_BYTES)} "
                "limit for an uploaded image (gradcam_widget.widget.MAX_UPLOAD_BYTES): make it "
                "smaller, or pass its path to set_image"
            )
        if isinstance(image, memoryview):
            image = image.cast("B") if image.format != "B" or image.ndim != 1 else image
        image = images.open_image_bytes(image, label)
        if image.width * image.height > MAX_UPLOAD_PIXELS:
            raise ValueError(
                f"{label!r} is {image.width}×{image.height} pixels, over the "
                f"{MAX_UPLOAD_PIXELS / 1e6:.0f}-megapixel limit for an uploaded image "
                "(gradcam_widget.widget.MAX_UPLOAD_PIXELS): make it smaller"
            )
        given = (image.height, image.width)  # the readout says the size as uploaded
        if max(image.size) > UPLOAD_KEPT_SIDE:  # keep no more than the model will ever see
            image.thumbnail((UPLOAD_KEPT_SIDE, UPLOAD_KEPT_SIDE), PILImage.Resampling.LANCZOS)
    elif (seed := _scene_seed(image)) is not None:
        sample = f"{SCENE_SAMPLE}{seed}"
        image = data.scene(seed, n_objects=1 + seed % 2).image
    elif isinstance(image, str) and image in data.SAMPLES and not Path(image).is_file():
        sample = image
    size = given if nbytes is not None else _source_size(image)
    return image, ImageSource(label, size, nbytes, sample)


def image_line(source: ImageSource, cap: Capture) -> str:
    """The readout's line naming the image on screen: its size as given, as fed to the
    model."""
    height, width = cap.image.shape[:2]
    given = ""
    if source.size is not None and source.size != (height, width):
        given = f"{source.size[0]}×{source.size[1]}, "
    file = f" ({size_text(source.nbytes)} file)" if source.nbytes is not None else ""
    fitted = "fitted to " if given else ""
    return f"image <b>{html.escape(source.name)}</b>{file} · {given}{fitted}{height}×{width}"


def make_image_row() -> tuple[widgets.Dropdown, UploadButton]:
    """The Image control: the sample menu and the upload button (one file, at most
    :data:`MAX_UPLOAD_BYTES`, refused in the browser above it)."""
    menu = dropdown(
        "Image",
        [("—", NO_SAMPLE), *((name, name) for name in sample_menu())],
        NO_SAMPLE,
        "a bundled sample: one model pass, every other setting kept",
    )
    menu.add_class("gw-image")
    upload = UploadButton(
        accept=UPLOAD_ACCEPT,
        max_bytes=MAX_UPLOAD_BYTES,
        description="Upload image",
        tooltip=f"your own image: png, jpg, webp or bmp, at most {size_text(MAX_UPLOAD_BYTES)}",
        layout=widgets.Layout(width="180px"),
    )
    upload.add_class("gw-upload")
    return menu, upload


class ImageRow:
    """The Image row's widgets, pointed at the image on screen: a sample chosen or a file
    uploaded is handed to ``show`` (:meth:`CamExplorer.set_image
    <gradcam_widget.widget.CamExplorer.set_image>`, which says a failure in its status line).

    Args:
        show: called as ``show(image)`` for a menu entry, ``show(content, name=file name)``
            for an upload.
        closed: whether the widget the row belongs to is closed (a failed choice then leaves
            the menu alone).
        refuse: called with a ``ValueError`` for a file the browser refused for its size
            (the explorer's status line says it).

    Attributes:
        samples: the sample menu (a Dropdown).
        upload: the upload button (an :class:`~.upload_button.UploadButton`, emptied after
            each file).
    """

    def __init__(self, show: Callable, closed: Callable[[], bool], refuse: Callable = None):
        self._show = show
        self._closed = closed
        self._refuse = refuse
        self._quiet_depth = 0
        self._source: ImageSource | None = None
        self.samples, self.upload = make_image_row()
        self.samples.observe(self._on_sample, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.upload.observe(self._on_refused, names="refused")

    @contextlib.contextmanager
    def _quiet(self):
        self._quiet_depth += 1
        try:
            yield
        finally:
            self._quiet_depth -= 1

    def show(self, source: ImageSource) -> None:
        """Point the sample menu at the image on screen: its entry, or a first entry that
        names it (a file, an array) and does nothing when chosen."""
        self._source = source
        menu = self.samples
        entries = [value for _, value in menu.options if value != NO_SAMPLE]
        chosen = source.sample if source.sample in entries else NO_SAMPLE
        first = "—" if chosen != NO_SAMPLE else source.name
        options = [(first, NO_SAMPLE), *((entry, entry) for entry in entries)]
        with self._quiet():
            if list(menu.options) != options:
                menu.options = options
            menu.value = chosen

    def _on_sample(self, change):
        """A sample chosen in the menu: shown; on a failure the menu goes back."""
        if self._quiet_depth:
            return
        if change["new"] == NO_SAMPLE:  # "—" chosen: nothing to show, the menu names the image
            self.show(self._source)
            return
        try:
            self._show(change["new"])
        except Exception:  # said in the status line; never raised into the notebook
            if not self._closed():
                with self._quiet():
                    self.samples.value = change["old"]

    def _on_refused(self, change):
        """A file over the limit, stopped in the browser: said, nothing sent or changed."""
        refused = change["new"] or {}
        if self._refuse is None or not refused or self._closed():
            return
        name = str(refused.get("name") or "the file")
        size = int(refused.get("size") or 0)
        self._refuse(ValueError(
            f"{name} is {size_text(size)}: the largest image file taken is "
            f"{size_text(MAX_UPLOAD_BYTES)} (refused in the browser, nothing sent)"
        ))  # fmt: skip

    def _on_upload(self, change):
        """A file uploaded: its bytes shown, named by the file name; the upload button is
        emptied (its bytes not kept, the same file can come again)."""
        files = change["new"]
        if self._quiet_depth or not files:
            return
        entry = files[-1]
        content, name = entry["content"], str(entry.get("name") or "upload")
        with self._quiet():
            self.upload.value = ()
        with contextlib.suppress(Exception):  # said in the status line
            self._show(content, name=name)
