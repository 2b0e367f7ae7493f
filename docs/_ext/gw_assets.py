"""The files the docs site serves besides its pages, made at build time so none goes stale.

- ``_static/lesson/quickstart.html``: the landing page's live explorer, the one-file static
  export of ``gradcam-widget export`` on the shipped shapes model (no kernel, no network). Made
  by a subprocess and cached while the package's files and the libraries' versions are the same.
- ``_static/widgets/``: ``@jupyter-widgets/html-manager`` (pinned, checked by its SHA-256),
  the script that draws the notebooks' saved widget state. The site serves it itself, so no
  page of the site asks anything of a CDN.

The widget manager is fetched once into the cache (``python scripts/build_docs.py --fetch``,
which ``scripts/test.sh`` runs as part of its set-up); with ``GW_DOCS_OFFLINE=1`` (the tests) a
missing tarball fails the build instead of being fetched.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

REPO = Path(__file__).resolve().parents[2]  # the checkout (where the cache goes by default)
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.14"
HTML_MANAGER_SHA256 = "9d647396585ef74da93f87f645c5dcc14bebf5784192c577f72b199597614e81"
HTML_MANAGER_TGZ = "jupyter-widgets-html-manager-1.0.14.tgz"
HTML_MANAGER_URL = (
    "https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-1.0.14.tgz"
)
LESSON = ["--model", "shapes", "--image", "two_shapes"]
LESSON_LIBRARIES = ("tensorflow", "keras", "numpy", "opencv-python-headless", "pillow")


def cache_dir() -> Path:
    """Where fetched and generated files outlive one build (``GW_DOCS_CACHE`` or build/)."""
    folder = Path(os.environ.get("GW_DOCS_CACHE", REPO / "build" / "docs-cache"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch() -> Path:
    """The pinned widget-manager tarball in the cache, fetched from the npm registry when it
    is not there yet: with npm when there is one (its registry and proxy settings apply), else
    from the registry's URL. Checked by its SHA-256 either way."""
    tarball = cache_dir() / HTML_MANAGER_TGZ
    if tarball.exists() and sha256(tarball) == HTML_MANAGER_SHA256:
        return tarball
    where = f"put {HTML_MANAGER_TGZ} (sha256 {HTML_MANAGER_SHA256}) in {cache_dir()}"
    if os.environ.get("GW_DOCS_OFFLINE"):
        raise ExtensionError(
            f"the docs need {HTML_MANAGER} and GW_DOCS_OFFLINE forbids fetching it: run "
            f"`python scripts/build_docs.py --fetch` first, or {where}"
        )
    npm = shutil.which("npm")
    try:
        if npm is not None:
            subprocess.run(
                [npm, "pack", HTML_MANAGER, "--pack-destination", str(tarball.parent), "--silent"],
                check=True,
                capture_output=True,
                timeout=300,
            )
        else:
            with urllib.request.urlopen(HTML_MANAGER_URL, timeout=120) as response:
                tarball.write_bytes(response.read())
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or error
        raise ExtensionError(f"could not fetch {HTML_MANAGER} ({detail!s}): {where}") from None
    if sha256(tarball) != HTML_MANAGER_SHA256:
        tarball.unlink()
        raise ExtensionError(f"the fetched {HTML_MANAGER} is not the pinned one (SHA-256 differs)")
    return tarball


def widget_manager(static: Path) -> None:
    """Unpack the pinned html-manager's ``embed.js`` (and the fonts it names) into
    ``static/widgets``."""
    target = static / "widgets"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fetch()) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("package/")
            if not member.isfile() or not (name.startswith("dist/") or name == "LICENSE"):
                continue
            if name.endswith((".map", "-amd.js")):
                continue
            (target / Path(name).name).write_bytes(archive.extractfile(member).read())
    (target / "cdn").mkdir(exist_ok=True)  # third-party widget modules: none served, none fetched


def lesson_fingerprint() -> str:
    """A hash of the package's files and the versions of the libraries the export runs on."""
    digest = hashlib.sha256()
    for name in LESSON_LIBRARIES:
        try:
            digest.update(f"{name}={importlib.metadata.version(name)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{name}=none".encode())
    package = Path(importlib.util.find_spec("gradcam_widget").origin).parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def lesson(static: Path) -> None:
    """The static explorer for the landing page, exported by the CLI (in its own process);
    older cached exports are removed."""
    cached = cache_dir() / f"lesson-{lesson_fingerprint()}.html"
    if not cached.exists():
        partial = cached.with_suffix(".partial")
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        command = [sys.executable, "-m", "gradcam_widget", "export", *LESSON]
        run = subprocess.run(
            [*command, "--out", str(partial)],
            cwd=cache_dir(),
            env=environment,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if run.returncode != 0:
            raise ExtensionError(f"{' '.join(command)} failed:\n{run.stderr[-3000:]}")
        partial.replace(cached)
        for old in cache_dir().glob("lesson-*.html"):
            if old != cached:
                old.unlink()
    target = static / "lesson"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, target / "quickstart.html")


def prepare(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    static = Path(app.doctreedir).parent / "gw_static"
    static.mkdir(parents=True, exist_ok=True)
    widget_manager(static)
    lesson(static)
    app.config.html_static_path.append(str(static))


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", prepare)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
