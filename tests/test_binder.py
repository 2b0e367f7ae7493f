"""Binder, as far as it can run here: no Docker engine, so no repo2docker build.

What repo2docker would do, step by step: a fresh virtual environment from
``binder/requirements.txt``, then ``binder/postBuild`` (which installs the package itself;
the weight download is switched off, this machine is offline), then the quickstart notebook
executed in that environment.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_binder_requirements_cover_every_dependency():
    """postBuild installs the package with --no-deps: each runtime dependency must be listed."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = (REPO / "binder" / "requirements.txt").read_text().splitlines()
    listed = {re.split(r"[<>=\[ ]", line, maxsplit=1)[0].lower() for line in lines
              if line.strip() and not line.startswith("#")}  # fmt: skip
    for dependency in project["dependencies"]:
        name = re.split(r"[<>=\[ ]", dependency, maxsplit=1)[0].lower()
        assert name in listed or f"{name}-cpu" in listed, name


@pytest.mark.slow
def test_binder_environment_runs_the_quickstart(tmp_path):
    assert (REPO / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    requirements = (REPO / "binder" / "requirements.txt").read_text()
    assert "tensorflow-cpu" in requirements
    post_build = (REPO / "binder" / "postBuild").read_text()
    assert "set -e" in post_build and "pip install --no-deps ." in post_build
    assert os.access(REPO / "binder" / "postBuild", os.X_OK)
    start = (REPO / "binder" / "start").read_text()  # memory: see benchmarks/bench_memory.py
    assert "TF_ENABLE_ONEDNN_OPTS=0" in start and start.rstrip().endswith('exec "$@"')
    assert os.access(REPO / "binder" / "start", os.X_OK)

    venv = tmp_path / "binder-venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "-r", str(REPO / "binder" / "requirements.txt")])
    environment = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "GW_BINDER_NO_DOWNLOAD": "1",
        "PYTHONWARNINGS": "ignore",
    }
    # postBuild runs from the repository root; build in a copy so the checkout stays clean
    checkout = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for name in ("gradcam_widget", "notebooks", "binder"):
        shutil.copytree(REPO / name, checkout / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, checkout / name)
    run(["bash", "binder/postBuild"], cwd=checkout, env=environment)
    where = "import gradcam_widget; print(gradcam_widget.__file__)"
    installed = run([str(python), "-c", where], cwd=tmp_path, env=environment)
    assert str(venv) in installed.stdout  # the installed copy, not the source tree

    executed = tmp_path / "quickstart.ipynb"
    run(
        [str(checkout / "binder" / "start"), str(venv / "bin" / "jupyter"), "nbconvert",
         "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=600", "--output", str(executed),
         str(checkout / "notebooks" / "01_quickstart.ipynb")],
        cwd=tmp_path, env=environment,
    )  # fmt: skip
    notebook = nbformat.read(executed, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
