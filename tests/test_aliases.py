"""The modules' old flat names (:mod:`gradcam_widget._aliases`): each is the very module under
its new name, and a folder that offers its old module's names imports only what is asked."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gradcam_widget as gw
from gradcam_widget import _aliases

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("old", sorted(_aliases.MOVED))
def test_each_old_module_name_is_the_module_under_its_new_name(old):
    if old in {"engine_jax", "engine_torch"}:
        pytest.importorskip(old.removeprefix("engine_"))
    moved = importlib.import_module(f"gradcam_widget.{_aliases.MOVED[old]}")
    assert importlib.import_module(f"gradcam_widget.{old}") is moved
    assert getattr(gw, old) is moved
    assert moved.__spec__.name == f"gradcam_widget.{_aliases.MOVED[old]}"


def test_a_folder_offers_its_old_modules_names():
    from gradcam_widget import auditing, captures, data, engine

    assert auditing.audit is gw.audit and auditing.load_model is gw.data.models.load_model
    assert captures.Capture is gw.Capture and data.sample is gw.data.scenes.sample
    assert engine.ModelCheckError is gw.engine.inputs.ModelCheckError
    with pytest.raises(AttributeError):
        auditing.no_such_name  # noqa: B018


def test_a_module_of_a_folder_is_itself_not_what_the_old_module_offered():
    """``from gradcam_widget.auditing import sources`` imports that module alone (a lookup in
    the run module would import the run, and with it whatever imports ``sources``)."""
    script = (
        "import sys\n"
        "from gradcam_widget.auditing import sources\n"
        "print(sources.__name__, 'gradcam_widget.auditing.run' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["gradcam_widget.auditing.sources", "False"]
