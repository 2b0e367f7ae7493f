"""``audit``: explain a whole data set into a results folder (resumable;
:func:`gradcam_widget.audit`), then say what was written in a few lines."""

from __future__ import annotations

import argparse
import os

from gradcam_widget._text import printable, shown
from gradcam_widget.commands import flags


def audit(args: argparse.Namespace) -> int:
    """``audit``: check a Ray address at once (before the model loads), run the audit, print
    what it wrote, its accuracy and its first skipped images."""
    from gradcam_widget.auditing import ray as distributed

    ray = None
    if args.ray is not None:
        ray = True if args.ray == "local" else args.ray
    if args.ray_timeout is not None:  # read by every check of the address in this process
        timeout = distributed.connect_timeout(args.ray_timeout)
        os.environ[distributed.ENV_CONNECT_TIMEOUT] = str(timeout)
    if ray is not None:  # at once, before the model and TensorFlow load (audit checks again)
        distributed.check_before_start(ray)
    from gradcam_widget.auditing import run as auditing

    targets = args.targets
    if targets.lstrip("-").isdigit():
        targets = int(targets)
    results = auditing.audit(
        args.model,
        args.source,
        out=args.out,
        layer=args.layer,
        method=args.method,
        targets=targets,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        score=args.score,
        labels=args.labels,
        progress=not args.quiet,
        ray=ray,
        **flags.chosen(args),
    )
    if results.computed_shards:
        table = results.table
        print(
            f"wrote {shown(results.folder)}: {len(table)} images, {len(results.skipped)} "
            "skipped; explanations.parquet, maps/, thumbs/, manifest.json"
        )
        line = accuracy(table)
        if line:
            print(line)
    for entry in results.skipped[:10]:
        print(f"skipped {shown(entry['id'])}: {printable(entry['error'])}")
    if len(results.skipped) > 10:
        print(f"... {len(results.skipped) - 10} more skipped images listed in manifest.json")
    return 0


def accuracy(table) -> str | None:
    """``"accuracy 92.3% of 13 images with a known class; 3 images had no class"``: the
    accuracy over the rows whose correctness is known, saying over how many (``None`` for an
    audit without labels).

    Args:
        table: an audit's table (its ``correct`` and ``true_label`` columns).
    """
    known = table["correct"].dropna()
    missing = len(table) - len(known)
    if not len(known):
        if table["true_label"].notna().any():  # labelled, but no label named a class
            return f"accuracy unknown: none of the {_images(len(table))} has a known class"
        return None
    text = f"accuracy {known.astype(float).mean():.1%} of {_images(len(known))}"
    if missing:
        text += f" with a known class; {_images(missing)} had no class"
    return text


def _images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"


def add_parsers(commands) -> None:
    """Add ``audit`` to the subparsers ``commands``."""
    parser = commands.add_parser(
        "audit",
        help="explain every image of a data set into a results folder (resumable)",
        description="Explain every image of SOURCE and write explanations.parquet (one row "
        "per image), the maps, overlay thumbnails and manifest.json to --out. Killed and run "
        "again, it resumes; run on finished results, it does nothing.",
    )
    parser.add_argument(
        "source",
        help="a folder of images (recursive), or generated scenes: scenes:START-STOP | "
        "shortcut:START-STOP (e.g. scenes:1000000-1000500)",
    )
    parser.add_argument("--model", default="shapes", help="a model name (shapes, "
                        "shapes_shortcut, vgg16, ...) or a .keras file")  # fmt: skip
    parser.add_argument("--out", default="results", help="results folder (default results/)")
    flags.add_option(parser, "layer")
    flags.add_option(parser, "method")
    parser.add_argument(
        "--targets",
        default="predicted",
        help="predicted (default: each image's top class) | true (its labelled class) | a "
        "class index or name",
    )
    parser.add_argument("--labels", default=None, choices=["folders"],
                        help="take each image's true class from its sub-folder's name")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=256, help="images per saved shard")
    flags.add_option(parser, "score")
    flags.add_cam_flags(parser, default=flags.METHOD_DEFAULT)
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the shards on Ray Data actors: a local Ray (no ADDRESS), or a cluster "
        "(auto, ray://HOST:10001); needs pip install 'gradcam_widget[ray]'",
    )
    parser.add_argument(
        "--ray-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a Ray ADDRESS may take to answer before the audit is refused "
        "(default: GW_RAY_CONNECT_TIMEOUT, else 10)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=audit)
