"""Command line: ``python -m gradcam_widget demo --out demo.png`` (no Jupyter needed)."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    import gradcam_widget as gw
    from gradcam_widget import data, models, render

    entry = models.load(args.model)
    image = data.sample(args.image)
    cap = gw.capture(entry, image, class_index=args.class_index, score=args.score)
    result = cap.cam(args.layer, pooling=args.pooling, channels=args.channels, order=args.order)
    name = cap.class_name()
    title = (
        f"{args.model} · class {cap.class_index} '{name}' ({cap.score} "
        f"{cap.scores[cap.class_index]:.3g}) · {result.layer} · pooling {result.pooling} · "
        f"channels {result.channels} · {result.order}"
    )
    render.save_figure(args.out, cap.image, result, args.colormap, args.opacity, title=title)
    h, w = result.raw.shape
    print(
        f"wrote {args.out}: class {cap.class_index} '{name}', layer {result.layer} "
        f"({h}x{w} map -> {result.heatmap.shape[0]}x{result.heatmap.shape[1]}), "
        f"model pass {cap.seconds * 1000:.0f} ms"
    )
    return 0


def _fetch(args) -> int:
    from gradcam_widget import models

    for name in args.names:
        entry = models.load(name, progress=False)
        print(f"{name}: ready ({len(entry.class_names)} classes, input {entry.input_size})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradcam_widget")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="render the four panels to an image file")
    demo.add_argument("--out", default="demo.png", help="output file (default demo.png)")
    demo.add_argument("--model", default="shapes", help="shapes (offline) | vgg16 | ...")
    demo.add_argument("--image", default="two_shapes", help="a gradcam_widget.data sample")
    demo.add_argument("--class", dest="class_index", type=int, default=None)
    demo.add_argument("--layer", default=None)
    demo.add_argument("--score", default="logit", choices=["logit", "probability"])
    demo.add_argument("--pooling", default="mean", choices=["mean", "max"])
    demo.add_argument("--channels", default="weighted", choices=["weighted", "top"])
    demo.add_argument("--order", default="relu_first", choices=["relu_first", "resize_first"])
    demo.add_argument("--colormap", default="jet")
    demo.add_argument("--opacity", type=float, default=0.5)
    fetch = commands.add_parser("fetch", help="download pretrained weights into the Keras cache")
    fetch.add_argument("names", nargs="+", help="vgg16 | resnet50 | mobilenet_v2")
    args = parser.parse_args(argv)
    try:
        return _demo(args) if args.command == "demo" else _fetch(args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
