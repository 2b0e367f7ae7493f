"""``demo`` and ``saliency``: one capture of an image, drawn to a figure file.

``demo`` renders the four panels of one Grad-CAM view; ``saliency`` does what the seed's
``compute_saliency`` did: prints the top-5 classes with their probabilities, then writes the
Grad-CAM overlay, Guided Backpropagation and Guided Grad-CAM in one figure (``--separate``:
also as three PNGs). ``--out`` is a file, or an existing folder to write a file named after
the model, the image and the class into.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from gradcam_widget import options
from gradcam_widget._text import shown
from gradcam_widget.commands import flags


def slug(text: str) -> str:
    """``text`` as a piece of a file name: runs of other characters become ``-``."""
    return re.sub(r"[^\w.]+", "-", text).strip("-.") or "image"


def output(out: str):
    """``(folder, None)`` when ``--out`` is an existing folder, else ``(None, file)``, the
    file :func:`gradcam_widget.render.save_figure` will write (checked now, before any work).
    """
    from gradcam_widget.data import render

    out = os.path.expanduser(out)
    if os.path.isdir(out):
        return Path(out), None
    return None, render.figure_path(out)  # the str: a trailing "/" names a missing folder


def captured(args: argparse.Namespace):
    """The checks that need no model (errors come before a slow load), then the model and
    one capture of the image: ``(capture, image label, output folder or None, output file)``.

    Raises:
        ValueError: for a bad opacity, colormap, output, image, model or class.
    """
    from gradcam_widget.captures.capturing import capture
    from gradcam_widget.data import images, models, render

    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be in 0..1; got {args.opacity:g}")
    render.lookup_table(args.colormap)
    folder, out = output(args.out)
    rgb = images.as_rgb_image(args.image)
    source = Path(args.image).expanduser()
    label = source.stem if source.is_file() else args.image

    entry = models.load(args.model)
    # uint8 for the capture: exactly the pixels read, whatever rules it has for floats.
    cap = capture(entry, images.shown_image(rgb), class_index=args.class_index, score=args.score)
    return cap, label, folder, out


def named_file(folder: Path, kind: str, args: argparse.Namespace, label: str, cap) -> Path:
    """``<kind>_<model>_<image>_<class>-<name>.png`` in ``folder``."""
    parts = f"{slug(args.model)}_{slug(label)}_{cap.class_index}-{slug(cap.class_name())}"
    return folder / f"{kind}_{parts}.png"


def demo(args: argparse.Namespace) -> int:
    """``demo``: write the four panels of one Grad-CAM view and say so in one line."""
    from gradcam_widget.data import render

    cap, label, folder, out = captured(args)
    result = cap.cam(args.layer, **flags.chosen(args))
    name = cap.class_name()
    if folder is not None:
        out = named_file(folder, "gradcam", args, label, cap)
    resize = f" · resize {result.interpolation}"  # said only when not the default
    if result.interpolation == options.TABLE["interpolation"].default:
        resize = ""
    title = (
        f"{args.model} · {label} · class {cap.class_index} '{name}' ({cap.score} "
        f"{cap.scores[cap.class_index]:.3g}) · {result.layer} · pooling {result.pooling} · "
        f"channels {result.channels} · {result.order}{resize}"
    )
    written = render.save_figure(out, cap.image, result, args.colormap, args.opacity, title=title)
    h, w = result.raw.shape
    print(
        f"wrote {shown(written)}: class {cap.class_index} '{name}', layer {result.layer} "
        f"({h}x{w} map -> {result.heatmap.shape[0]}x{result.heatmap.shape[1]}), "
        f"model pass {cap.seconds * 1000:.0f} ms"
    )
    return 0


def saliency(args: argparse.Namespace) -> int:
    """``saliency``: print the top-5 classes, then write the seed's three maps."""
    from gradcam_widget.data import render

    cap, label, folder, out = captured(args)
    layer = cap.resolve(args.layer)  # a bad layer fails before the guided pass
    top, how = render.top_probabilities(cap, 5)
    name = cap.class_name()
    if folder is not None:
        out = named_file(folder, "saliency", args, label, cap)
    written = render.save_saliency(
        out, cap, layer, args.colormap, args.opacity, style=args.style, separate=args.separate
    )
    print(f"Model prediction ({how}):")
    for index, class_name, probability in top:
        print(f"\t{class_name:15s}\t({index})\twith probability {probability:.3f}")
    print(f"explaining class {cap.class_index} '{name}' ({cap.score}), Grad-CAM at {layer}")
    for path in written:
        print(f"wrote {shown(path)}")
    return 0


def add_parsers(commands) -> None:
    """Add ``demo`` and ``saliency`` to the subparsers ``commands``."""
    parser = commands.add_parser("demo", help="render the four panels to an image file")
    flags.add_picture_flags(parser, "demo.png", "gradcam")
    parser.add_argument("--layer", default=None, help=options.TABLE["layer"].help)
    flags.add_cam_flags(parser)
    parser.set_defaults(run=demo)

    parser = commands.add_parser(
        "saliency",
        help="print the top-5 classes, then write Grad-CAM, Guided Backpropagation and "
        "Guided Grad-CAM (the seed's three maps)",
    )
    flags.add_picture_flags(parser, "saliency.png", "saliency")
    parser.add_argument("--layer", default=None, help="the Grad-CAM layer")
    parser.add_argument(
        "--style",
        default="seed",
        choices=["seed", "abs"],
        help="guided maps: seed (centred, std 0.1 around grey; default) | abs (grey magnitude)",
    )
    parser.add_argument(
        "--separate",
        action="store_true",
        help="also write the three pictures as <stem>_gradcam.png, <stem>_guided_backprop.png "
        "and <stem>_guided_gradcam.png next to the figure",
    )
    parser.set_defaults(run=saliency)
