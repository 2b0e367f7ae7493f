"""``export`` on the command line (``gradcam_widget.commands.static``): the page written, its
menus opened on ``--interpolation``, bad arguments refused before the model loads."""

from __future__ import annotations

from gradcam_widget.__main__ import build_parser, main
from gradcam_widget.commands import static


def test_the_flags():
    args = build_parser().parse_args(["export"])
    assert (args.out, args.model, args.image, args.interpolation) == (
        "lesson.html", "shapes", "two_shapes", None
    )  # fmt: skip
    assert (args.score, args.colormap, args.opacity, args.max_mb) == ("logit", "jet", 0.5, 8.0)
    assert args.run is static.export


def test_the_page_opens_on_the_interpolation_given(tmp_path, capfd):
    out = tmp_path / "nearest.html"
    status = main(["export", "--out", str(out), "--methods", "eigencam", "--layers",
                   "block5_conv3", "--interpolation", "nearest"])  # fmt: skip
    captured = capfd.readouterr()
    assert status == 0, captured.err
    assert captured.out.startswith(f"wrote {out}: ") and " 24 combinations" in captured.out
    text = out.read_text(encoding="utf-8")
    assert '<option value="nearest" selected>nearest</option>' in text


def test_a_missing_folder_is_one_line_before_any_work(tmp_path, capfd):
    out = tmp_path / "missing" / "x.html"
    assert main(["export", "--out", str(out)]) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and "does not exist" in err[0], err
