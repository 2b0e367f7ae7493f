"""One reader for every image file and upload: only PNG, JPEG, WebP, BMP, GIF and TIFF are
decoded, by content; PostScript (which Pillow would hand to Ghostscript) and every other format
are refused with one line, and no other program is ever started."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from gradcam_widget.data import images

POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ } loop\nshowpage\n"


def picture(seed=5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (20, 30, 3)).astype(np.uint8)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_allowed_format_is_read_from_a_file_and_from_bytes(tmp_path, kind):
    buffer = io.BytesIO()
    Image.fromarray(picture()).save(buffer, kind)
    path = tmp_path / "picture.img"  # the name says nothing: the content decides
    path.write_bytes(buffer.getvalue())
    from_file = images.as_rgb_image(path)
    from_bytes = images.as_rgb_image(buffer.getvalue())
    assert from_file.shape == from_bytes.shape == (20, 30, 3)
    np.testing.assert_array_equal(from_file, from_bytes)
    if kind in ("PNG", "BMP", "TIFF"):  # lossless
        np.testing.assert_array_equal(from_file, picture())


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (POSTSCRIPT, "PostScript"),
        (b"\xc5\xd0\xd3\xc6" + bytes(28) + POSTSCRIPT, "binary EPS"),
        (b"%PDF-1.4\n1 0 obj\n<< >>\nendobj\n", "PDF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>', "SVG"),
    ],
)
def test_other_formats_are_refused_by_content_in_one_line(tmp_path, content, named):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    for source in (path, str(path), content):
        with pytest.raises(ValueError) as error:
            images.as_rgb_image(source)
        message = str(error.value)
        assert "\n" not in message and named in message
        assert "PNG, JPEG, WebP, BMP, GIF or TIFF" in message


def test_an_ico_file_pillow_reads_is_refused(tmp_path):
    """A format Pillow decodes by itself but the allow-list leaves out is refused too."""
    buffer = io.BytesIO()
    Image.fromarray(picture()).save(buffer, "ICO")
    with pytest.raises(ValueError, match="not a PNG, JPEG, WebP, BMP, GIF or TIFF image"):
        images.open_image_bytes(buffer.getvalue(), "icon.png")


GHOST = """#!/bin/sh
echo "$0 $*" >> "{record}"
exit 1
"""

READERS = textwrap.dedent(
    """
    import datetime, json, sys
    import numpy as np
    from pathlib import Path
    import gradcam_widget as gw
    from gradcam_widget import images

    folder = Path(sys.argv[1])
    upload = folder / "images" / "upload.png"
    content = upload.read_bytes()
    outcome = {}
    for name, read in [
        ("path", lambda: images.as_rgb_image(upload)),
        ("bytes", lambda: images.as_rgb_image(content)),
        ("open_image_bytes", lambda: images.open_image_bytes(content, "upload.png")),
        ("capture", lambda: gw.capture(gw.models.load("shapes"), str(upload))),
    ]:
        try:
            read()
            outcome[name] = "read"
        except ValueError as error:
            outcome[name] = str(error)
    ex = gw.CamExplorer(gw.models.load("shapes"), gw.data.sample("two_shapes"))
    try:
        ex.set_image(content, name="upload.png")
        outcome["set_image"] = "read"
    except ValueError as error:
        outcome["set_image"] = str(error)
    now = datetime.datetime.now(datetime.timezone.utc)
    ex.upload.value = ({"name": "upload.png", "type": "image/png", "size": len(content),
                        "content": memoryview(content), "last_modified": now},)
    outcome["widget"] = ex.status.value
    ex.close()
    results = gw.audit(
        "shapes", folder / "images", out=folder / "out", progress=False, shard_size=4
    )
    outcome["audit_rows"] = len(results)
    outcome["audit_skipped"] = [entry["error"] for entry in results.skipped]
    print(json.dumps(outcome))
    """
)


@pytest.mark.slow
def test_postscript_reaches_no_interpreter_on_any_path(tmp_path):
    """A stand-in ``gs`` first on PATH records any call: a file read, a capture, an explorer
    upload and an audit of a folder holding PostScript named ``upload.png`` start no program
    and each say why the file was refused (in a fresh process: Pillow remembers where it found
    Ghostscript)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "gs_calls.txt"
    for name in ("gs", "gswin64c", "gswin32c"):
        script = bin_dir / name
        script.write_text(GHOST.format(record=record))
        script.chmod(0o755)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "upload.png").write_bytes(POSTSCRIPT)
    Image.fromarray(picture()).save(tmp_path / "images" / "fine.png")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        [sys.executable, "-c", READERS, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not record.exists(), f"Ghostscript was started: {record.read_text()}"
    import json

    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("path", "bytes", "open_image_bytes", "capture", "set_image"):
        assert "PostScript" in outcome[name], (name, outcome[name])
    assert "PostScript" in outcome["widget"]
    assert outcome["audit_rows"] == 1
    assert len(outcome["audit_skipped"]) == 1 and "PostScript" in outcome["audit_skipped"][0]
