"""The docs site: built strictly (any warning fails: a broken link, a reference to no object,
a docstring Sphinx cannot read), every guide one click from the landing page, the API
reference covering every public name, the notebooks rendered with their widget state, and no
page that loads anything from another site. The browser opens it in tests/e2e/test_docs_site.py.
"""

from __future__ import annotations

import html.parser
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
from site_build import build

import gradcam_widget as gw

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
pytestmark = pytest.mark.slow  # one strict build of the whole site (about two minutes)


class Links(html.parser.HTMLParser):
    """Every ``href`` and ``src`` of a page, with the tag that holds it."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in {"href", "src"} and value:
                self.found.append((tag, name, value))


def links(page: Path) -> list[tuple[str, str, str]]:
    parser = Links()
    parser.feed(page.read_text())
    return parser.found


def test_every_guide_is_one_click_from_the_landing_page(built_site):
    linked = {value.split("#")[0] for tag, _, value in links(built_site / "index.html")}
    guides = sorted(path.stem for path in (DOCS / "guides").glob("*.md") if path.stem != "index")
    assert len(guides) >= 9, guides
    missing = [name for name in guides if f"guides/{name}.html" not in linked]
    assert not missing, f"guides not linked from the landing page: {missing}"
    for page in ("get-started", "notebooks", "api/index", "performance", "architecture"):
        assert f"{page}.html" in linked, page


def test_the_landing_page_embeds_the_static_explorer(built_site):
    frames = [value for tag, _, value in links(built_site / "index.html") if tag == "iframe"]
    assert frames == ["_static/lesson/quickstart.html"]
    lesson = (built_site / frames[0]).read_text()
    assert lesson.count("<select") >= 5 and "data:image/jpeg;base64," in lesson


def test_no_page_loads_anything_from_another_site(built_site):
    """Scripts, styles, images and frames all come from the site: only ``<a>`` links leave."""
    outside = []
    for page in built_site.rglob("*.html"):
        for tag, attribute, value in links(page):
            remote = re.match(r"^(https?:)?//", value)
            if remote and not (tag == "a" and attribute == "href"):
                outside.append(f"{page.relative_to(built_site)}: <{tag} {attribute}={value}>")
    assert not outside, "\n".join(outside[:20])


def documented_ids(built_site: Path, *pages: str) -> set[str]:
    found = set()
    for page in pages:
        found |= set(re.findall(r'<dt class="[^"]*" id="([^"]+)"', (built_site / page).read_text()))
    return found


def public_names(module) -> list[str]:
    """The module's public functions and classes: those of its ``__all__``, else those
    defined in it. (Constants have no entries of their own.)"""
    if hasattr(module, "__all__"):
        return [name for name in module.__all__ if callable(getattr(module, name))]
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    ]


def test_the_api_reference_documents_every_public_name(built_site):
    ids = documented_ids(built_site, "api/gw.html", "api/widgets.html")
    skipped = {"core", "targets", "__version__"}  # modules (their own pages) and the version
    missing = [
        f"gw.{name}"
        for name in gw.__all__
        if name not in skipped and f"gradcam_widget.{name}" not in ids
    ]
    for page, module in (
        ("targets", gw.targets),
        ("sanity", gw.sanity),
        ("render", gw.render),
        ("models", gw.models),
        ("data", gw.data.scenes),
        ("data", gw.data.images),
    ):
        found = documented_ids(built_site, f"api/{page}.html")
        names = public_names(module)
        assert names, module
        missing += [
            f"{module.__name__}.{name}"
            for name in names
            if f"{module.__name__}.{name}" not in found
        ]
    assert not missing, f"not in the API reference: {missing}"


def test_every_local_link_of_the_site_leads_to_a_file(built_site):
    broken = []
    pages = [page for page in built_site.rglob("*.html") if "_static" not in page.parts]
    assert len(pages) > 30, len(pages)  # the pages, not the theme's templates under _static
    for page in pages:
        for _, _, value in links(page):
            if re.match(r"^([a-z]+:|//|#)", value):
                continue
            target = (page.parent / value.split("#")[0].split("?")[0]).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(built_site)} -> {value}")
    assert not broken, "\n".join(broken[:20])


def test_the_widgets_page_lists_every_settable_property(built_site):
    from gradcam_widget.explorer.settings import SETTINGS

    text = (built_site / "api" / "widgets.html").read_text()
    start = text.index("settable properties")
    table = text[start : text.index("</table>", start)]
    missing = [name for name in SETTINGS if f'<span class="pre">{name}</span>' not in table]
    assert not missing, missing


def test_the_notebooks_are_rendered_with_their_widget_state(built_site):
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        page = built_site / "notebooks" / f"{notebook.stem}.html"
        assert page.exists(), page
        state = json.loads(notebook.read_text())["metadata"].get("widgets")
        text = page.read_text()
        if state:
            assert 'type="application/vnd.jupyter.widget-state+json"' in text, page
            assert 'type="application/vnd.jupyter.widget-view+json"' in text, page
            assert "_static/widgets/embed.js" in text, page
    assert (built_site / "_static" / "widgets" / "embed.js").stat().st_size > 1_000_000


def minimal_site(folder: Path, page: str) -> Path:
    """The site's configuration and extensions with one page (``page``) under an index."""
    source = folder / "docs"
    source.mkdir(parents=True)
    shutil.copy(DOCS / "conf.py", source)
    shutil.copytree(DOCS / "_ext", source / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DOCS / "_static", source / "_static")
    (source / "index.md").write_text("# Index\n\n```{toctree}\npage\n```\n")
    (source / "page.md").write_text(page)
    return source


def test_a_broken_link_or_reference_fails_the_build(tmp_path):
    """The build is strict: a page linking to no page, or naming no object of the package,
    fails it; the same page without them builds."""
    good = "# Page\n\nSee [the index](index.md) and {py:func}`gradcam_widget.capture`.\n"
    run = build(tmp_path / "good" / "html", minimal_site(tmp_path / "good", good))
    # gradcam_widget.capture has no entry on this one-page site, which documents no module:
    # a real object, shown as code
    assert run.returncode == 0, run.stderr[-3000:]
    broken = good + "\n[The missing page](no_such_page.md), {py:func}`gradcam_widget.no_such`.\n"
    run = build(tmp_path / "bad" / "html", minimal_site(tmp_path / "bad", broken))
    assert run.returncode != 0
    assert "no_such_page" in run.stderr and "gradcam_widget.no_such" in run.stderr, run.stderr[
        -3000:
    ]
