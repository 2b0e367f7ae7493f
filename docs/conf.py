"""Sphinx configuration of the gradcam_widget docs site.

Sphinx + MyST (Markdown pages) + MyST-NB (the notebooks, rendered with their saved outputs and
widget state, not re-executed: nbval executes them in the tests) + the PyData theme, the tool
chain of ipywidgets' and Jupyter's own docs. Built strictly by ``scripts/build_docs.py`` (``-W
--keep-going -n``) in the tests. ``_ext/`` holds what the build needs besides the
pages: the landing page's static explorer (``gradcam-widget export``), the widget manager the
notebook pages load (a pinned ``@jupyter-widgets/html-manager``, served from the site itself),
and the explorer's settings table.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the checkout's package when it is not installed

from gradcam_widget import __version__  # noqa: E402

project = "gradcam_widget"
author = "the gradcam_widget developers"
copyright = "2026, the gradcam_widget developers"  # noqa: A001
version = release = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "gw_assets",
    "gw_settings",
    "gw_references",
]

root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "notebooks/README.md"]
templates_path: list[str] = []
html_static_path = ["_static"]

# MyST: Markdown pages with fenced directives and heading anchors for links between pages
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# MyST-NB: the committed notebooks as they are (outputs and widget state saved by
# scripts/build_notebooks.py); the widget manager from this site, never from a CDN
nb_execution_mode = "off"
nb_ipywidgets_js = {
    # a third-party widget's module is looked up under widgets/cdn/ (none is served: it shows
    # its saved state as nothing rather than fetching code from the internet)
    "widgets/embed.js": {"data-jupyter-widgets-cdn": "widgets/cdn/"},
}
nb_merge_streams = True

# API reference from the docstrings (Google style: Args / Returns / Raises)
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# a class's Attributes section as fields, not entries that would clash with its properties
napoleon_use_ivar = True

html_theme = "pydata_sphinx_theme"
html_title = f"gradcam_widget {release}"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": [], "changelog": []}
html_last_updated_fmt = None

# A reference to an object of this package must resolve (also where the build is not run by
# scripts/build_docs.py, such as Read the Docs, which adds -W but not -n).
nitpicky = True
# Other libraries' objects are not linked (the build is offline: no intersphinx inventories),
# so their names are not checked.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(numpy|np|collections|pathlib|typing|types|keras|tensorflow|tf|ipywidgets|widgets"
        r"|pandas|pd|PIL|jax|torch|traitlets|matplotlib|ray|pyarrow|concurrent|threading|os|io"
        r"|datetime|enum|abc|contextlib|dataclasses|asyncio|starlette|uvicorn|solara)\b.*",
    ),
]
