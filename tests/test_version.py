"""The package's one version: ``gradcam_widget/_version.py``. ``gw.__version__`` reads it,
pyproject.toml declares the version dynamic from it (setuptools reads the file statically, so a
build never imports the package), and the installed distribution carries it (an audit's
manifest records it)."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest
from packaging.version import Version

import gradcam_widget as gw
from gradcam_widget import _version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).parents[1]


def test_the_version_is_one_valid_version():
    assert gw.__version__ == _version.__version__
    assert str(Version(gw.__version__)) == gw.__version__  # PEP 440, written normalised


def test_the_installed_distribution_has_the_version():
    assert importlib.metadata.version("gradcam_widget") == gw.__version__


def test_pyproject_reads_the_version_from_version_py():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert "version" not in project  # one place only
    assert "version" in project["dynamic"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "gradcam_widget._version.__version__"}


def test_version_py_is_read_statically():
    """setuptools takes ``attr`` from the module's AST when the value is a literal assignment;
    anything else would make it import the package (and TensorFlow) during a build."""
    tree = ast.parse((ROOT / "gradcam_widget" / "_version.py").read_text())
    literals = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(target, "id", None) for target in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert literals == [gw.__version__]
