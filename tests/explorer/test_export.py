"""The static explorer (``gradcam_widget.export``): one self-contained HTML file, every
combination of the recipe's choices once, bounded in size, refused arguments, the CLI and the
explorer's ``export_html``. Every file is written under ``tmp_path``."""

from __future__ import annotations

import base64
import itertools
import json
import re

import cv2
import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget import options
from gradcam_widget.__main__ import main
from gradcam_widget.cam import core, methods
from gradcam_widget.explorer import export

INTERPOLATIONS = options.TABLE["interpolation"].values

SCRIPT_DATA = re.compile(r'<script type="application/json" id="gw-data">(.*?)</script>', re.S)


def table_of(text: str) -> dict:
    """The page's embedded table: combos, pictures, uses."""
    match = SCRIPT_DATA.search(text)
    assert match is not None, "no embedded table"
    return json.loads(match.group(1))


def picture(uri: str) -> np.ndarray:
    """A ``data:`` URI's picture decoded to BGR pixels."""
    header, payload = uri.split(",", 1)
    assert header in ("data:image/jpeg;base64", "data:image/png;base64"), header
    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(payload), np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None
    return pixels


@pytest.fixture(scope="module")
def shapes_capture():
    return gw.capture(gw.models.load("shapes"), "two_shapes")


@pytest.fixture(scope="module")
def lesson(shapes_capture, tmp_path_factory):
    """The default export of the shapes model on two_shapes: ``(Export, text)``."""
    path = tmp_path_factory.mktemp("export") / "lesson.html"
    written = export.write_capture(shapes_capture, path)
    return written, path.read_text(encoding="utf-8")


def test_one_self_contained_file(lesson):
    written, text = lesson
    assert written.path.is_file()
    assert [p.name for p in written.path.parent.iterdir()] == ["lesson.html"]
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.search(r"<script[^>]*\bsrc=", text), "an external script"
    for attribute in re.findall(r'\b(?:src|href)="([^"]*)"', text):
        assert attribute.startswith("data:"), attribute
    for uri in table_of(text)["pictures"]:
        assert uri.startswith("data:image/jpeg;base64,")


def test_size_under_the_documented_bound(lesson):
    written, text = lesson
    assert written.nbytes == len(text.encode("utf-8")) == written.path.stat().st_size
    assert written.nbytes < export.MAX_BYTES == 8_000_000
    assert written.nbytes < 3_000_000  # the docstring says "about 2.5 MB" for this model


def test_every_combination_once(lesson, shapes_capture):
    written, text = lesson
    table = table_of(text)
    layers = export.default_layers(shapes_capture)
    assert layers == ("block3_conv2", "block4_conv2", "block5_conv3", "fused")
    expected = [
        export.combination_key(*values)
        for values in itertools.product(
            methods.names(), layers, core.POOLINGS, core.CHANNELS, core.ORDERS, INTERPOLATIONS
        )
    ]
    assert sorted(table["combos"]) == sorted(expected)
    assert written.combinations == len(expected) == 7 * 4 * 8 * 3
    for key in expected:  # once in the file itself, not only in the parsed table
        assert text.count(json.dumps(key, ensure_ascii=False) + ":") == 1, key
    used = set()
    for raw, overlay, caption in table["combos"].values():
        used.update((raw, overlay))
        assert isinstance(caption, str) and caption.startswith("method ")
    assert used | {0} == set(range(len(table["pictures"])))  # 0: the input
    assert written.pictures == len(table["pictures"])


def test_the_pictures_and_captions_follow_the_choices(lesson):
    combos = table_of(lesson[1])["combos"]
    first = combos["gradcam|block5_conv3|mean|weighted|relu_first|bilinear"]
    assert first[2].startswith(
        "method Grad-CAM · layer block5_conv3 · pooling mean · channels weighted · "
        "order relu_first · resize bilinear · raw map 14×14"
    )
    other_layer = combos["gradcam|block4_conv2|mean|weighted|relu_first|bilinear"]
    other_pooling = combos["gradcam|block5_conv3|max|weighted|relu_first|bilinear"]
    other_order = combos["gradcam|block5_conv3|mean|weighted|resize_first|bilinear"]
    assert "layer block4_conv2" in other_layer[2] and "raw map 28×28" in other_layer[2]
    assert "pooling max" in other_pooling[2]
    assert other_layer[1] != first[1] and other_pooling[1] != first[1]
    assert other_order[1] != first[1] and other_order[0] == first[0]  # raw map: same grid
    fused = combos["gradcam|fused|mean|weighted|relu_first|bilinear"]
    assert "block3_conv2+block4_conv2+block5_conv3 (fused)" in fused[2]
    # a method that ignores pooling and channels: one picture for all their values
    hires = {combos[f"hirescam|block5_conv3|{p}|{c}|relu_first|bilinear"][1]
             for p in core.POOLINGS for c in core.CHANNELS}  # fmt: skip
    assert len(hires) == 1
    hires_top = combos["hirescam|block5_conv3|max|top|relu_first|bilinear"]
    assert "pooling max (not used)" in hires_top[2]


def test_pictures_decode_at_their_sizes(lesson):
    table = table_of(lesson[1])
    pictures = table["pictures"]
    assert picture(pictures[0]).shape == (224, 224, 3)
    raw, overlay, _ = table["combos"]["gradcam|block5_conv3|mean|weighted|relu_first|bilinear"]
    assert picture(pictures[raw]).shape == (224, 224, 3)  # 14×14 cells of 16 px
    assert picture(pictures[overlay]).shape == (224, 224, 3)


def test_page_shows_the_class_and_controls(lesson):
    text = lesson[1]
    assert "class 3 star · logit" in text
    for option in export.MENUS:
        assert f'data-option="{option}"' in text
    assert '<option value="block5_conv3" selected>' in text
    assert '<option value="gradcam" selected>' in text
    assert '<option value="relu_first" selected>ReLU → resize</option>' in text  # the table's
    assert '<option value="bilinear" selected>bilinear</option>' in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layers": ["block9_conv9"]}, "block9_conv9"),
        ({"layers": "block5_conv3,nope"}, "nope"),
        ({"format": "gif"}, "format"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"methods": ["gradcam", "magic"]}, "magic"),
        ({"layers": []}, "at least one layer"),
        ({"colormap": "nocolour"}, "colormap"),
        ({"opacity": 2}, "opacity"),
    ],
)
def test_bad_arguments_one_clear_error(shapes_capture, tmp_path, options, message):
    path = tmp_path / "lesson.html"
    with pytest.raises(ValueError, match=re.escape(message)):
        export.write_capture(shapes_capture, path, **options)
    assert not path.exists()


def test_bad_format_names_the_formats(shapes_capture, tmp_path):
    with pytest.raises(ValueError) as error:
        export.write_capture(shapes_capture, tmp_path / "x.html", format="webp")
    assert "jpeg" in str(error.value) and "png" in str(error.value)


def test_over_max_bytes_is_refused_and_nothing_written(shapes_capture, tmp_path):
    path = tmp_path / "lesson.html"
    with pytest.raises(ValueError, match="over max_bytes"):
        export.write_capture(
            shapes_capture, path, methods=["gradcam"], layers=["block5_conv3"], max_bytes=10_000
        )
    assert not path.exists()


def test_png_and_all_layers(shapes_capture, tmp_path):
    # 16 layers of PNG pictures, 7 per layer: over MAX_BYTES, so written without a limit
    chosen = {"methods": ["eigencam"], "layers": "all", "format": "png"}
    written = export.write_capture(shapes_capture, tmp_path / "png.html", max_bytes=None,
                                   **chosen)  # fmt: skip
    table = table_of(written.path.read_text(encoding="utf-8"))
    layers = len(shapes_capture.layers) + 1
    assert written.combinations == len(table["combos"]) == layers * 8 * 3
    assert written.pictures <= 1 + layers * 7 + 2  # the docstring's bound
    assert all(uri.startswith("data:image/png;base64,") for uri in table["pictures"])


SMALL = ["--methods", "gradcam,eigencam", "--layers", "block5_conv3,fused"]


def test_cli_writes_the_same(tmp_path, capfd, shapes_capture):
    out = tmp_path / "cli.html"
    status = main(["export", "--out", str(out), *SMALL])
    captured = capfd.readouterr()
    assert status == 0, captured.err
    assert captured.out.startswith(f"wrote {out}: ") and "96 combinations" in captured.out
    direct = export.write_capture(
        shapes_capture,
        tmp_path / "direct.html",
        methods=["gradcam", "eigencam"],
        layers=["block5_conv3", "fused"],
    )
    cli_text, direct_text = out.read_text(encoding="utf-8"), direct.path.read_text("utf-8")
    assert SCRIPT_DATA.sub("", cli_text) == SCRIPT_DATA.sub("", direct_text)  # the page
    cli_table, direct_table = table_of(cli_text), table_of(direct_text)
    assert cli_table["combos"].keys() == direct_table["combos"].keys()
    assert [c[2] for c in cli_table["combos"].values()] == [
        c[2] for c in direct_table["combos"].values()
    ]
    assert len(cli_table["pictures"]) == len(direct_table["pictures"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "gif"], "format"),
        (["--layers", "block9_conv9"], "block9_conv9"),
        (["--quality", "0"], "quality"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capfd, argv, message):
    out = tmp_path / "bad.html"
    status = main(["export", "--out", str(out), *argv])
    captured = capfd.readouterr()
    err = captured.err.splitlines()
    assert status == 2 and captured.out == ""
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_explorer_exports_its_view(tmp_path):
    ex = gw.CamExplorer("shapes", "two_shapes", layer="block4_conv1")
    try:
        ex.pooling = "max"
        ex.colormap = "viridis"
        written = ex.export_html(tmp_path / "view.html", methods=["gradcam", "layercam"])
    finally:
        ex.close()
    text = written.path.read_text(encoding="utf-8")
    table = table_of(text)
    assert '<option value="block4_conv1" selected>' in text  # the layer on screen
    assert '<option value="max" selected>' in text
    assert "Colormap viridis" in text
    assert "gradcam|block4_conv1|max|weighted|relu_first|bilinear" in table["combos"]
    assert "gradcam|fused|mean|top|resize_first|nearest" in table["combos"]
    assert len(table["combos"]) == 2 * 5 * 24  # 3 fusion layers, block4_conv1, fused


def test_an_export_of_a_randomised_view_says_so(tmp_path):
    ex = gw.CamExplorer("shapes", "two_shapes")
    try:
        ex.randomize = 1
        written = ex.export_html(tmp_path / "random.html", methods=["gradcam"])
    finally:
        ex.close()
    text = written.path.read_text(encoding="utf-8")
    assert "RANDOMISED model (1 block re-initialised" in text


def test_no_text_in_the_table_can_end_or_reopen_its_script(tmp_path, monkeypatch):
    """A method label with ``<!--<script>`` or ``</script>`` stays inside the JSON block."""
    from gradcam_widget.explorer import export

    cap = gw.capture(gw.models.load("shapes"), "two_shapes", layers=["block5_conv3"])
    real = export._caption
    monkeypatch.setattr(export, "_caption", lambda *a: "<!--<script></script>&" + real(*a))
    written = export.write_capture(cap, tmp_path / "x.html", layers=["block5_conv3"],
                                   methods=["gradcam"])  # fmt: skip
    text = written.path.read_text(encoding="utf-8")
    data = SCRIPT_DATA.search(text).group(1)
    assert "<" not in data and ">" not in data and "&" not in data.replace("\\u0026", "")
    assert table_of(text)["combos"]


def test_the_interpolation_menu_switches_the_maps(lesson):
    """The Resize menu offers the table's interpolations; each shows its own overlay (the raw
    map, on the layer's grid, is the same), and the caption names it."""
    text = lesson[1]
    menu = re.search(r'<select id="gw-interpolation" data-option="interpolation">(.*?)</select>',
                     text)  # fmt: skip
    assert menu is not None and text.index("gw-order") < text.index("gw-interpolation")
    assert re.findall(r'<option value="([a-z]+)"', menu.group(1)) == list(INTERPOLATIONS)
    assert "<label>Resize <select" in text
    table = table_of(text)
    shown = {}
    for interpolation in INTERPOLATIONS:
        key = f"gradcam|block5_conv3|mean|weighted|relu_first|{interpolation}"
        raw, overlay, caption = table["combos"][key]
        assert f"resize {interpolation} · raw map 14×14" in caption
        shown[interpolation] = (raw, picture(table["pictures"][overlay]).astype(np.float32))
    assert len({raw for raw, _ in shown.values()}) == 1
    pairs = itertools.combinations(INTERPOLATIONS, 2)
    for a, b in pairs:
        assert float(np.abs(shown[a][1] - shown[b][1]).mean()) > 0.5, (a, b)
    # a fused map is resized to the finest grid first: its raw map follows the menu too
    fused = {table["combos"][f"gradcam|fused|mean|weighted|relu_first|{i}"][0]
             for i in INTERPOLATIONS}  # fmt: skip
    assert len(fused) == 3


def test_the_menus_are_the_tables(shapes_capture, tmp_path):
    """The page's menus are the options the table offers on the export, labelled from it; a
    ``selected`` interpolation opens the page on it."""
    assert tuple(row.name for row in options.on(options.EXPORT)) == export.MENUS
    written = export.write_capture(
        shapes_capture,
        tmp_path / "n.html",
        methods=["gradcam"],
        layers=["block5_conv3"],
        selected={"interpolation": "nearest"},
    )
    text = written.path.read_text(encoding="utf-8")
    for name in export.MENUS[2:]:
        row = options.option(name)
        assert f"<label>{row.label} <select" in text
        for value, label in row.choices:
            assert f'<option value="{value}"' in text and f">{label}</option>" in text
    assert '<option value="nearest" selected>nearest</option>' in text


def test_the_export_does_not_import_the_widget():
    """The labels come from the options table: no import of the widget (no import cycle)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(export))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}  # fmt: skip
    assert "gradcam_widget.explorer.widget" not in imported, imported
    from_explorer = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and node.module == "gradcam_widget.explorer"]  # fmt: skip
    assert all(a.name != "widget" for node in from_explorer for a in node.names)
