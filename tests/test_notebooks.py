"""The committed notebooks are executed, clean and render on GitHub.

nbval re-executes them in CI (``pytest --nbval-lax notebooks``); this file checks the saved
files themselves: outputs present and quiet, widget state valid (GitHub's renderer rejects a
malformed ``metadata.widgets``).
"""

import json
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXECUTED = [
    "01_quickstart.ipynb",
    "02_reading_gradcam.ipynb",
    "04_can_you_trust_the_map.ipynb",
    "05_audit_a_model.ipynb",
    "06_vision_transformers.ipynb",
]
NEEDS_DOWNLOAD = ["03_imagenet_vgg16.ipynb"]  # committed executed, or without any outputs
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
NOISE = re.compile(
    r"I0000|W0000|E0000|tensorflow/|cuda|oneDNN|Warning|WARNING|deprecated|\d+%\|"
    r"|━━|absl::|Traceback",
    re.IGNORECASE,
)


def load(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    return notebook


def output_texts(output):
    """The texts a reader sees. A widget's ``text/plain`` is only its fallback (a progress
    bar's reads ``audit: 100%|...``, the bar a person watched while the cell ran)."""
    if output.get("output_type") == "stream":
        yield output.get("text", "")
    widget = WIDGET_VIEW in output.get("data", {})
    for mime in ("text/html", "text/markdown") if widget else ("text/plain", "text/html",
                                                               "text/markdown"):  # fmt: skip
        value = output.get("data", {}).get(mime)
        if value:
            yield value if isinstance(value, str) else "".join(value)


def check_widget_state(notebook):
    views = {
        output["data"][WIDGET_VIEW]["model_id"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if WIDGET_VIEW in output.get("data", {})
    }
    widgets = notebook.metadata.get("widgets")
    if widgets is None:
        assert not views, "widget views saved without widget state: GitHub shows errors"
        return
    state = widgets[WIDGET_STATE]
    assert isinstance(state["state"], dict) and state["state"]
    assert isinstance(state["version_major"], int) and isinstance(state["version_minor"], int)
    for model in state["state"].values():
        assert {"model_name", "model_module", "state"} <= set(model)
    missing = views - set(state["state"])
    assert not missing, f"widget views without saved state: {missing}"
    json.dumps(widgets)  # serialisable as saved


@pytest.mark.parametrize("name", EXECUTED)
def test_saved_notebook_is_executed_with_quiet_outputs(name):
    notebook = load(name)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code_cells]
    assert counts == list(range(1, len(code_cells) + 1)), f"not executed top to bottom: {counts}"
    images = 0
    for cell in code_cells:
        for output in cell.outputs:
            assert output["output_type"] != "error", cell.source
            assert output.get("name") != "stderr", f"stderr in: {cell.source[:60]}"
            for text in output_texts(output):
                assert not NOISE.search(text), f"noise {NOISE.search(text)[0]!r} in {text[:200]}"
            images += "image/png" in output.get("data", {})
    assert images >= 1, "no figure saved: the notebook would read badly on GitHub"
    check_widget_state(notebook)


@pytest.mark.parametrize("name", NEEDS_DOWNLOAD)
def test_download_notebook_is_clean_or_executed(name):
    notebook = load(name)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    executed = [cell.execution_count is not None for cell in code_cells]
    assert all(executed) or not any(executed)
    if not any(executed):
        assert all(not cell.outputs for cell in code_cells)
    check_widget_state(notebook)


def test_quickstart_shows_the_explorer_and_both_classes():
    notebook = load("01_quickstart.ipynb")
    sources = "\n".join(cell.source for cell in notebook.cells)
    assert "gw.CamExplorer(" in sources and "class_index" in sources
    views = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if WIDGET_VIEW in output.get("data", {})
    ]
    assert views, "the explorer's output was not saved"
