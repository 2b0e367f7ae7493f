"""The checked arguments of an explorer and its session."""

from __future__ import annotations

import pytest

import gradcam_widget as gw
from gradcam_widget.explorer import arguments


def test_explained_splits_a_target_from_a_class():
    assert arguments.explained(None, 3) == (None, 3)
    assert arguments.explained(2, None) == (None, 2)
    assert arguments.explained(gw.targets.Class(4), None) == (None, 4)
    target, index = arguments.explained(gw.targets.Output("cls", 1), None)
    assert isinstance(target, gw.targets.Output) and index is None
    with pytest.raises(ValueError, match="not both"):
        arguments.explained(1, 2)


def test_class_names_and_models_are_checked():
    assert arguments.check_class_names(["a", 2]) == ("a", "2")
    assert arguments.check_class_names(None) is None
    for bad in ("abc", {"a": 1}, 3):
        with pytest.raises(ValueError, match="sequence of class names"):
            arguments.check_class_names(bad)
    entry = arguments.resolve_model("shapes")
    assert entry.model is not None and arguments.resolve_model(entry) is entry
    with pytest.raises(ValueError):
        arguments.resolve_model("no such model")


def test_saliency_options_of_each_guided_mode():
    assert arguments.saliency_options("off") is None
    assert arguments.saliency_options("guided_backprop")["smooth"] == 0
    smooth = arguments.saliency_options("smoothgrad")
    assert smooth["smooth"] == arguments.SMOOTHGRAD["smooth"] and smooth["kind"] == "guided"
    with pytest.raises(ValueError, match="guided"):
        arguments.saliency_options("sharp")
