"""The package's one version: ``gw.__version__`` is what pyproject.toml builds and what an
audit's manifest records."""

from __future__ import annotations

import re
from pathlib import Path

import gradcam_widget as gw
from gradcam_widget import _version


def test_the_version_is_pyprojects():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    version = re.search(r'(?m)^version = "([^"]+)"$', text).group(1)
    assert gw.__version__ == _version.__version__ == version
