"""The ``>>>`` examples of every docstring the API reference shows run, and print what they
say they print (doctest, in a process of its own): the modules of ``automodule`` and the
classes of ``autoclass`` in docs/api/*.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from site_build import LOOPBACK_ONLY

REPO = Path(__file__).resolve().parents[2]
DIRECTIVE = re.compile(r"^\.\. auto(module|class):: (\S+)", re.MULTILINE)

RUNNER = (
    LOOPBACK_ONLY
    + """
import doctest, importlib, sys
import matplotlib
matplotlib.use("Agg")
failed = attempted = 0
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
runner = doctest.DocTestRunner(optionflags=flags)
for kind, name in [line.split(" ", 1) for line in sys.argv[1:]]:
    if kind == "module":
        target = importlib.import_module(name)
    else:
        module, _, attribute = name.rpartition(".")
        target = getattr(importlib.import_module(module), attribute)
    # the object itself, and for a module each object its __all__ offers (defined elsewhere,
    # documented on this module's page)
    shown = [(target, name)]
    for member in getattr(target, "__all__", ()) if kind == "module" else ():
        value = getattr(target, member)
        if callable(value) and getattr(value, "__module__", name) != name:
            shown.append((value, f"{name}.{member}"))
    for value, label in shown:
        for test in doctest.DocTestFinder(exclude_empty=True).find(value, label):
            result = runner.run(test)
            failed += result.failed
            attempted += result.attempted
print(f"DOCTESTS attempted={attempted} failed={failed}")
sys.exit(1 if failed else 0)
"""
)


def documented() -> list[str]:
    """``"module NAME"`` / ``"class NAME"`` for each autodoc directive of the API pages."""
    found = []
    for page in sorted((REPO / "docs" / "api").glob("*.md")):
        found += [f"{kind} {name}" for kind, name in DIRECTIVE.findall(page.read_text())]
    return found


def test_the_api_pages_are_read():
    targets = documented()
    assert "module gradcam_widget" in targets and "class gradcam_widget.CamExplorer" in targets


@pytest.mark.slow
def test_every_docstring_example_the_api_shows_runs(tmp_path):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    run = subprocess.run(
        [sys.executable, "-c", RUNNER, *documented()],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    attempted = int(re.search(r"attempted=(\d+)", run.stdout).group(1))
    assert attempted >= 16, run.stdout[-2000:]  # the package's, the models' and sanity's
