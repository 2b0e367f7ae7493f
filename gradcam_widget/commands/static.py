"""``export``: the static explorer, one self-contained HTML file
(:func:`gradcam_widget.export.export_html`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradcam_widget import options
from gradcam_widget._text import shown
from gradcam_widget.commands import flags


def export(args: argparse.Namespace) -> int:
    """``export``: write the page and say so in one line (size, combinations, pictures)."""
    from gradcam_widget.explorer import export as static

    static.check_format(args.format, args.quality)  # before the slow model load
    out = Path(args.out).expanduser()
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {out}: the folder {out.parent} does not exist")
    selected = flags.chosen(args, options.map_keywords()) or None
    written = static.export_html(
        out,
        args.model,
        args.image,
        class_index=args.class_index,
        score=args.score,
        layers=args.layers,
        methods=args.methods,
        format=args.format,
        quality=args.quality,
        colormap=args.colormap,
        opacity=args.opacity,
        max_bytes=None if args.max_mb is None or args.max_mb <= 0 else int(args.max_mb * 1e6),
        selected=selected,
    )
    print(
        f"wrote {shown(written.path)}: {written.nbytes / 1e6:.2f} MB, {written.combinations} "
        f"combinations, {written.pictures} pictures, {written.seconds:.1f} s"
    )
    return 0


def add_parsers(commands) -> None:
    """Add ``export`` to the subparsers ``commands``."""
    from gradcam_widget.data.scenes import SAMPLES

    menus = " x ".join(row.name for row in options.on(options.EXPORT))
    parser = commands.add_parser(
        "export",
        help="write the static explorer: one self-contained HTML file (no server, no kernel)",
        description=f"Write one HTML file holding the image and every combination of {menus} "
        "for the explained class, switched by plain HTML menus; it opens from file:// with no "
        "network. Size: at most 7 pictures per layer and method (28 for Grad-CAM), ~5-20 KB "
        "each as JPEG; about 2.5 MB for the shapes model.",
    )
    parser.add_argument("--out", default="lesson.html", help="the HTML file (default "
                        "lesson.html)")  # fmt: skip
    flags.add_model_flags(parser, SAMPLES)
    flags.add_option(parser, "score")
    parser.add_argument(
        "--layers",
        default=None,
        help="comma-separated layer names, 'fused' for the fusion, or 'all' (default: the "
        "default layer, the fusion layers and fused)",
    )
    parser.add_argument("--methods", default=None, help="comma-separated method names "
                        "(default all)")  # fmt: skip
    flags.add_first_choice_flags(parser, "the page")
    parser.add_argument("--format", default="jpeg", help="jpeg (default) | png")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality 1..100")
    flags.add_look_flags(parser)
    parser.add_argument("--max-mb", type=float, default=8.0,
                        help="refuse a file larger than this many MB (0: no limit)")  # fmt: skip
    parser.set_defaults(run=export)
