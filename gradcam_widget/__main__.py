"""Command line: ``python -m gradcam_widget demo --out demo.png`` (no Jupyter needed).

``demo`` renders the four panels of one Grad-CAM view to an image file; ``--image`` takes a
file of your own (PNG, JPEG, ...) or a sample name. ``saliency`` does what the seed's
``compute_saliency`` did: prints the top-5 classes with their probabilities, then writes the
Grad-CAM overlay, Guided Backpropagation and Guided Grad-CAM in one figure (``--separate``:
also as three PNGs). ``fetch`` downloads pretrained weights. ``audit`` explains a whole data
set into a results folder (resumable; see :func:`gradcam_widget.audit`). ``app`` serves the
explorer as a web page with Voila (:data:`APP_NOTEBOOK`; one kernel per browser tab).

Every error is one line on stderr, ``error: ...``, with exit status 2 (argument errors
included); warnings are one line each, ``warning: ...``. Ctrl-C keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import html
import os
import re
import sys
import warnings
from pathlib import Path

from gradcam_widget._text import printable as _printable
from gradcam_widget._text import shown as _shown

EXIT_ERROR = 2
"""Exit status of every error, as argparse uses for bad arguments."""

APP_NOTEBOOK = Path(__file__).resolve().parent / "app" / "explorer_app.ipynb"
"""The notebook ``app`` serves with Voila (shipped as package data; its code is not shown)."""

APP_MODEL_VARIABLE = "GW_APP_MODEL"
"""Environment variable through which ``app`` tells the app notebook its first model."""

APP_PORT = 8866
"""Default port of ``app`` (Voila's own default)."""

APP_WEBSOCKET_BYTES = 32 * 2**20
"""Tornado's ``websocket_max_message_size`` for ``app``: above
:data:`gradcam_widget.widget.MAX_UPLOAD_BYTES` (20 MiB) plus the message's own overhead, so an
upload up to that limit reaches the kernel (Tornado's default drops messages over 10 MiB)."""


class _UsageError(Exception):
    """A bad command line, raised instead of argparse's two-line usage message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _slug(text: str) -> str:
    """``text`` as a piece of a file name: runs of other characters become ``-``."""
    return re.sub(r"[^\w.]+", "-", text).strip("-.") or "image"


def _output(out: str):
    """``(folder, None)`` when ``--out`` is an existing folder, else ``(None, file)``, the
    file :func:`gradcam_widget.render.save_figure` will write (checked now, before any work).
    """
    from gradcam_widget.data import render

    out = os.path.expanduser(out)
    if os.path.isdir(out):
        return Path(out), None
    return None, render.figure_path(out)  # the str: a trailing "/" names a missing folder


def _captured(args):
    """The checks that need no model (errors come before a slow load), then the model and
    one capture of the image: ``(capture, image label, output folder or None, output file)``."""
    import gradcam_widget as gw
    from gradcam_widget.data import images, models, render

    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be in 0..1; got {args.opacity:g}")
    render.lookup_table(args.colormap)
    folder, out = _output(args.out)
    rgb = images.as_rgb_image(args.image)
    source = Path(args.image).expanduser()
    label = source.stem if source.is_file() else args.image

    entry = models.load(args.model)
    # uint8 for the capture: exactly the pixels read, whatever rules it has for floats.
    cap = gw.capture(entry, images.shown_image(rgb), class_index=args.class_index, score=args.score)
    return cap, label, folder, out


def _named_file(folder: Path, kind: str, args, label: str, cap) -> Path:
    """``<kind>_<model>_<image>_<class>-<name>.png`` in ``folder``."""
    parts = f"{_slug(args.model)}_{_slug(label)}_{cap.class_index}-{_slug(cap.class_name())}"
    return folder / f"{kind}_{parts}.png"


def _demo(args) -> int:
    from gradcam_widget.data import render

    cap, label, folder, out = _captured(args)
    result = cap.cam(args.layer, pooling=args.pooling, channels=args.channels, order=args.order)
    name = cap.class_name()
    if folder is not None:
        out = _named_file(folder, "gradcam", args, label, cap)
    title = (
        f"{args.model} · {label} · class {cap.class_index} '{name}' ({cap.score} "
        f"{cap.scores[cap.class_index]:.3g}) · {result.layer} · pooling {result.pooling} · "
        f"channels {result.channels} · {result.order}"
    )
    written = render.save_figure(out, cap.image, result, args.colormap, args.opacity, title=title)
    h, w = result.raw.shape
    print(
        f"wrote {_shown(written)}: class {cap.class_index} '{name}', layer {result.layer} "
        f"({h}x{w} map -> {result.heatmap.shape[0]}x{result.heatmap.shape[1]}), "
        f"model pass {cap.seconds * 1000:.0f} ms"
    )
    return 0


def _saliency(args) -> int:
    from gradcam_widget.data import render

    cap, label, folder, out = _captured(args)
    layer = cap.resolve(args.layer)  # a bad layer fails before the guided pass
    top, how = render.top_probabilities(cap, 5)
    name = cap.class_name()
    if folder is not None:
        out = _named_file(folder, "saliency", args, label, cap)
    written = render.save_saliency(
        out, cap, layer, args.colormap, args.opacity, style=args.style, separate=args.separate
    )
    print(f"Model prediction ({how}):")
    for index, class_name, probability in top:
        print(f"\t{class_name:15s}\t({index})\twith probability {probability:.3f}")
    print(f"explaining class {cap.class_index} '{name}' ({cap.score}), Grad-CAM at {layer}")
    for path in written:
        print(f"wrote {_shown(path)}")
    return 0


def _export(args) -> int:
    from gradcam_widget.explorer import export

    export.check_format(args.format, args.quality)  # before the slow model load
    out = Path(args.out).expanduser()
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {out}: the folder {out.parent} does not exist")
    written = export.export_html(
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
    )
    print(
        f"wrote {_shown(written.path)}: {written.nbytes / 1e6:.2f} MB, {written.combinations} "
        f"combinations, {written.pictures} pictures, {written.seconds:.1f} s"
    )
    return 0


def _fetch(args) -> int:
    from gradcam_widget.data import models

    for name in args.names:
        entry = models.load(name, progress=False)
        print(f"{_shown(name)}: ready ({len(entry.class_names)} classes, input {entry.input_size})")
    return 0


def _audit(args) -> int:
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

    cam_options = {}
    for option in ("pooling", "channels", "order"):
        if getattr(args, option) is not None:
            cam_options[option] = getattr(args, option)
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
        **cam_options,
    )
    if results.computed_shards:
        table = results.table
        print(
            f"wrote {_shown(results.folder)}: {len(table)} images, {len(results.skipped)} "
            "skipped; explanations.parquet, maps/, thumbs/, manifest.json"
        )
        accuracy = _accuracy(table)
        if accuracy:
            print(accuracy)
    for entry in results.skipped[:10]:
        print(f"skipped {_shown(entry['id'])}: {_printable(entry['error'])}")
    if len(results.skipped) > 10:
        print(f"... {len(results.skipped) - 10} more skipped images listed in manifest.json")
    return 0


def _accuracy(table) -> str | None:
    """``"accuracy 92.3% of 13 images with a known class; 3 images had no class"``: the
    accuracy over the rows whose correctness is known, saying over how many (``None`` for an
    audit without labels)."""
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


def app_model(model: str) -> str:
    """The ``--model`` of ``app`` checked, as the app notebook gets it: a name of
    :data:`gradcam_widget.models.MODEL_NAMES` whose weights are here, or the absolute path of a
    ``.keras`` / ``.h5`` file (the app's kernels run in another folder).

    Raises:
        ValueError: for an unknown name, a missing file, or ImageNet weights not cached.
    """
    from gradcam_widget.data import models

    if model in models.MODEL_NAMES:
        if not models.weights_cached(model):
            raise ValueError(
                f"the ImageNet weights of {model!r} are not cached: run `gradcam-widget fetch "
                f"{model}` first (the app downloads nothing)"
            )
        return model
    path = Path(os.path.expanduser(model))
    if path.suffix in (".keras", ".h5"):
        if not path.is_file():
            raise ValueError(f"model file {model!r} does not exist")
        return str(path.resolve())
    raise ValueError(
        f"unknown model {model!r}: use one of {', '.join(models.MODEL_NAMES)} or a .keras file"
    )


def app_models(initial: str = "shapes") -> list[tuple[str, str]]:
    """The app's model menu, ``(label, value)`` pairs: every shipped model, the ImageNet ones
    whose weights are cached (:func:`gradcam_widget.models.weights_cached`), and ``initial``
    first when it is a model file (labelled with its file name)."""
    from gradcam_widget.data import models

    menu = [(name, name) for name in models.MODEL_NAMES if models.weights_cached(name)]
    if initial not in models.MODEL_NAMES:
        menu.insert(0, (Path(initial).name, initial))
    return menu


def app_url(ip: str, port: int, base_url: str = "/") -> str:
    """Where the app answers: ``http://IP:PORT/BASE_URL/`` (``0.0.0.0`` / ``::`` read as this
    machine's name, since a browser cannot open them)."""
    import socket

    host = socket.gethostname() if ip in ("0.0.0.0", "::", "") else ip
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{_base_url(base_url)}"


def _base_url(base_url: str) -> str:
    """``base_url`` with one slash at each end (``/`` for none)."""
    inner = base_url.strip("/")
    return f"/{inner}/" if inner else "/"


def app_command(
    port: int = APP_PORT,
    ip: str = "localhost",
    base_url: str = "/",
    open_browser: bool = False,
    extra=(),
    notebook: Path = APP_NOTEBOOK,
) -> list[str]:
    """The Voila command line ``app`` runs (this Python's ``-m voila``).

    Code cells hidden (``--strip_sources=True``), every tab its own kernel (Voila's way), no
    port retries (the printed URL is the one served), and Tornado's websocket limit raised to
    :data:`APP_WEBSOCKET_BYTES` so uploads up to
    :data:`gradcam_widget.widget.MAX_UPLOAD_BYTES` arrive (as a dict literal: traitlets reads
    ``key=value`` as a string). ``extra`` Voila options come last (they win); a
    ``--Voila.tornado_settings={...}`` among them is merged into that one (Voila takes one).

    Raises:
        ValueError: for a ``tornado_settings`` in ``extra`` that is not a dict literal.
    """
    settings = {"websocket_max_message_size": APP_WEBSOCKET_BYTES}
    rest = []
    for part in extra:
        name, _, value = part.partition("=")
        if name in ("--Voila.tornado_settings", "--tornado_settings"):
            try:
                given = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                given = None
            if not isinstance(given, dict):
                raise ValueError(f"{name} must be a Python dict literal; got {value!r}")
            settings.update(given)
        else:
            rest.append(part)
    command = [
        sys.executable, "-m", "voila",
        str(notebook),
        f"--Voila.ip={ip}",
        f"--Voila.port={port}",
        "--Voila.port_retries=0",
        f"--Voila.base_url={_base_url(base_url)}",
        "--strip_sources=True",
        f"--Voila.tornado_settings={settings!r}",
    ]  # fmt: skip
    if not open_browser:
        command.append("--no-browser")
    return [*command, *rest]


def app_view(initial: str = "shapes"):
    """The app's page: a Model menu (:func:`app_models`) above a
    :class:`~gradcam_widget.widget.CamExplorer`; choosing another model replaces the explorer
    (the image on screen is kept). What the app notebook displays.

    Args:
        initial: a model name or ``.keras`` path (as :func:`app_model` returns it).
    """
    import ipywidgets as widgets

    from gradcam_widget.auditing.run import load_model
    from gradcam_widget.explorer.widget import CamExplorer

    menu = widgets.Dropdown(description="Model", options=app_models(initial), value=initial)
    menu.add_class("gw-app-model")
    note = widgets.HTML()
    note.add_class("gw-app-note")
    view = widgets.VBox([widgets.HBox([menu, note])])
    view.add_class("gw-app")

    def show(model: str, previous=None):
        note.value = f"loading <b>{model}</b> ..."
        explorer = CamExplorer(load_model(model)[0])
        if previous is not None and previous.image_name != explorer.image_name:
            explorer.set_image(previous.capture.image, name=previous.image_name)
        if previous is not None:
            previous.close()
        view.children = [view.children[0], explorer]
        view.explorer = explorer
        note.value = ""

    def on_model(change):
        menu.disabled = True
        try:
            show(change["new"], getattr(view, "explorer", None))
        except Exception as error:  # the explorer on screen stays
            note.value = f"⚠ {html.escape(_one_line(error))}"
        finally:
            menu.disabled = False

    show(initial)
    menu.observe(on_model, names="value")
    return view


def _app(args) -> int:
    import importlib.util
    import subprocess

    model = app_model(args.model)
    if importlib.util.find_spec("voila") is None:
        raise ValueError("the app needs Voila: pip install 'gradcam_widget[app]'")
    if not APP_NOTEBOOK.is_file():
        raise FileNotFoundError(f"the app notebook {APP_NOTEBOOK} is missing from the installation")
    command = app_command(args.port, args.ip, args.base_url, not args.no_browser, args.voila)
    environment = dict(os.environ, **{APP_MODEL_VARIABLE: model})
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    url = app_url(args.ip, args.port, args.base_url)
    print(f"gradcam-widget app ({_shown(model)}): {url}", flush=True)
    return subprocess.run(command, env=environment, stdin=subprocess.DEVNULL).returncode


def _parser() -> argparse.ArgumentParser:
    from gradcam_widget.data.scenes import SAMPLES

    parser = _Parser(prog="python -m gradcam_widget")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="render the four panels to an image file")
    _common_arguments(demo, "demo.png", "gradcam", SAMPLES)
    demo.add_argument("--layer", default=None)
    demo.add_argument("--pooling", default="mean", choices=["mean", "max"])
    demo.add_argument("--channels", default="weighted", choices=["weighted", "top"])
    demo.add_argument("--order", default="relu_first", choices=["relu_first", "resize_first"])
    saliency = commands.add_parser(
        "saliency",
        help="print the top-5 classes, then write Grad-CAM, Guided Backpropagation and "
        "Guided Grad-CAM (the seed's three maps)",
    )
    _common_arguments(saliency, "saliency.png", "saliency", SAMPLES)
    saliency.add_argument("--layer", default=None, help="the Grad-CAM layer")
    saliency.add_argument(
        "--style",
        default="seed",
        choices=["seed", "abs"],
        help="guided maps: seed (centred, std 0.1 around grey; default) | abs (grey magnitude)",
    )
    saliency.add_argument(
        "--separate",
        action="store_true",
        help="also write the three pictures as <stem>_gradcam.png, <stem>_guided_backprop.png "
        "and <stem>_guided_gradcam.png next to the figure",
    )
    audit = commands.add_parser(
        "audit",
        help="explain every image of a data set into a results folder (resumable)",
        description="Explain every image of SOURCE and write explanations.parquet (one row "
        "per image), the maps, overlay thumbnails and manifest.json to --out. Killed and run "
        "again, it resumes; run on finished results, it does nothing.",
    )
    audit.add_argument(
        "source",
        help="a folder of images (recursive), or generated scenes: scenes:START-STOP | "
        "shortcut:START-STOP (e.g. scenes:1000000-1000500)",
    )
    audit.add_argument("--model", default="shapes", help="a model name (shapes, "
                       "shapes_shortcut, vgg16, ...) or a .keras file")  # fmt: skip
    audit.add_argument("--out", default="results", help="results folder (default results/)")
    audit.add_argument("--layer", default=None)
    audit.add_argument("--method", default="gradcam")
    audit.add_argument(
        "--targets",
        default="predicted",
        help="predicted (default: each image's top class) | true (its labelled class) | a "
        "class index or name",
    )
    audit.add_argument("--labels", default=None, choices=["folders"],
                       help="take each image's true class from its sub-folder's name")  # fmt: skip
    audit.add_argument("--batch-size", type=int, default=32)
    audit.add_argument("--shard-size", type=int, default=256, help="images per saved shard")
    audit.add_argument("--score", default="logit", choices=["logit", "probability"])
    audit.add_argument("--pooling", default=None, choices=["mean", "max"])
    audit.add_argument("--channels", default=None, choices=["weighted", "top"])
    audit.add_argument("--order", default=None, choices=["relu_first", "resize_first"])
    audit.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the shards on Ray Data actors: a local Ray (no ADDRESS), or a cluster "
        "(auto, ray://HOST:10001); needs pip install 'gradcam_widget[ray]'",
    )
    audit.add_argument(
        "--ray-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a Ray ADDRESS may take to answer before the audit is refused "
        "(default: GW_RAY_CONNECT_TIMEOUT, else 10)",
    )
    audit.add_argument("--quiet", action="store_true", help="no progress bar")
    export = commands.add_parser(
        "export",
        help="write the static explorer: one self-contained HTML file (no server, no kernel)",
        description="Write one HTML file holding the image and every combination of method x "
        "layer x pooling x channels x order for the explained class, switched by plain HTML "
        "menus; it opens from file:// with no network. Size: at most 3 pictures per layer and "
        "method (12 for Grad-CAM), ~5-20 KB each as JPEG; about 1 MB for the shapes model.",
    )
    export.add_argument("--out", default="lesson.html", help="the HTML file (default "
                        "lesson.html)")  # fmt: skip
    export.add_argument("--model", default="shapes", help="shapes (offline) | vgg16 | ...")
    export.add_argument("--image", default="two_shapes", help=f"an image file or a sample: "
                        f"{', '.join(SAMPLES)} (default two_shapes)")  # fmt: skip
    export.add_argument("--class", dest="class_index", type=int, default=None)
    export.add_argument("--score", default="logit", choices=["logit", "probability"])
    export.add_argument(
        "--layers",
        default=None,
        help="comma-separated layer names, 'fused' for the fusion, or 'all' (default: the "
        "default layer, the fusion layers and fused)",
    )
    export.add_argument("--methods", default=None, help="comma-separated method names "
                        "(default all)")  # fmt: skip
    export.add_argument("--format", default="jpeg", help="jpeg (default) | png")
    export.add_argument("--quality", type=int, default=85, help="JPEG quality 1..100")
    export.add_argument("--colormap", default="jet")
    export.add_argument("--opacity", type=float, default=0.5, help="overlay opacity, 0..1")
    export.add_argument("--max-mb", type=float, default=8.0,
                        help="refuse a file larger than this many MB (0: no limit)")  # fmt: skip
    app = commands.add_parser(
        "app",
        help="serve the explorer as a web page with Voila (one kernel per browser tab)",
        description="Serve the explorer, with a menu of the models available offline, as a web "
        "page (Voila, no code shown). Every browser tab gets its own kernel. Voila options go "
        "after --, e.g. gradcam-widget app -- --Voila.token=SECRET",
    )
    app.add_argument("--model", default="shapes", help="the first model: shapes (default), "
                     "shapes_vit, ... or a .keras file")  # fmt: skip
    app.add_argument("--port", type=int, default=APP_PORT, help=f"default {APP_PORT}")
    app.add_argument("--ip", default="localhost", help="address to listen on (default "
                     "localhost; 0.0.0.0: every network interface)")  # fmt: skip
    app.add_argument("--base-url", default="/", help="URL prefix, behind a reverse proxy "
                     "(e.g. /gradcam/)")  # fmt: skip
    app.add_argument("--no-browser", action="store_true", help="do not open a browser")
    app.add_argument("voila", nargs="*", metavar="VOILA_OPTION",
                     help="more Voila options, after --")  # fmt: skip
    fetch = commands.add_parser("fetch", help="download pretrained weights into the Keras cache")
    fetch.add_argument("names", nargs="+", help="vgg16 | resnet50 | mobilenet_v2")
    return parser


def _common_arguments(command, default_out: str, kind: str, samples) -> None:
    """The arguments every rendering subcommand takes: output, model, image, class, score,
    colormap, opacity."""
    command.add_argument(
        "--out",
        default=default_out,
        help=f"output file (.png, .pdf, .svg, ...; default {default_out}), or an existing "
        f"folder to write {kind}_<model>_<image>_<class>.png into",
    )
    command.add_argument("--model", default="shapes", help="shapes (offline) | vgg16 | ...")
    command.add_argument(
        "--image",
        default="two_shapes",
        help=f"an image file (PNG, JPEG, ...) or a sample: {', '.join(samples)} "
        "(default two_shapes)",
    )
    command.add_argument("--class", dest="class_index", type=int, default=None)
    command.add_argument("--score", default="logit", choices=["logit", "probability"])
    command.add_argument("--colormap", default="jet")
    command.add_argument("--opacity", type=float, default=0.5, help="overlay opacity, 0..1")


def _one_line(error: BaseException) -> str:
    """An exception as one line: its message (with its type unless it is a plain
    ValueError / OSError, whose messages are written for users)."""
    message = " ".join(str(error).split())
    if message and isinstance(error, (ValueError, OSError, _UsageError)):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {_printable(' '.join(str(message).split()))}", file=sys.stderr)


def main(argv=None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 after printing one ``error: ...`` line on stderr. Only
        ``--help`` (exit 0) and KeyboardInterrupt leave by an exception.
    """
    with warnings.catch_warnings():  # restores warnings.showwarning when main returns
        warnings.showwarning = _show_warning
        try:
            args = _parser().parse_args(argv)
            commands = {
                "demo": _demo,
                "saliency": _saliency,
                "fetch": _fetch,
                "audit": _audit,
                "export": _export,
                "app": _app,
            }
            return commands[args.command](args)
        except Exception as error:  # not KeyboardInterrupt / SystemExit: those propagate
            print(f"error: {_printable(_one_line(error))}", file=sys.stderr)
            return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
