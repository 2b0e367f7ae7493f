"""The package's shape: modules not hidden by functions, TensorFlow only in the engine, methods
that declare their options."""

import ast
import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget import methods

PACKAGE = Path(gw.__file__).parent
TENSORFLOW_MODULES = {"_tf", "engine", "tapping", "models"}  # models builds Keras models


def test_no_module_is_hidden_by_a_function_of_the_same_name():
    for info in pkgutil.iter_modules([str(PACKAGE)]):
        module = importlib.import_module(f"gradcam_widget.{info.name}")
        if hasattr(gw, info.name):
            assert getattr(gw, info.name) is module, f"gw.{info.name} hides the module"


def _imports_tensorflow(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name.startswith("tensorflow") for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom):
            if (node.module or "").startswith("tensorflow"):
                return True
            if node.module == "gradcam_widget._tf" and any(a.name == "tf" for a in node.names):
                return True
    return False


def test_tensorflow_stays_in_the_engine():
    users = {path.stem for path in PACKAGE.glob("*.py") if _imports_tensorflow(path)}
    assert users <= TENSORFLOW_MODULES, sorted(users - TENSORFLOW_MODULES)
    assert {"engine", "tapping"} <= users


def test_methods_declare_their_options_by_signature():
    assert methods.get("gradcam").parameters == {"pooling": "mean", "channels": "weighted"}
    assert methods.get("gradcam").options == {"pooling", "channels"}
    assert methods.get("layercam").parameters == {} and methods.get("layercam").options == set()
    assert set(methods.get("scorecam").parameters) == {"max_channels", "batch_size", "precision"}
    assert all(methods.get(name).label for name in methods.names())


def test_a_result_records_only_the_options_its_method_used():
    entry = gw.models.load("shapes")
    cap = gw.capture(entry, gw.data.sample("two_shapes"))
    assert (cap.cam(pooling="max").pooling, cap.cam(pooling="max").options) == ("max", {})
    layercam = cap.cam(method="layercam", pooling="max")
    assert (layercam.pooling, layercam.channels, layercam.options) == (None, None, {})
    scorecam = cap.cam(method="scorecam", max_channels=4)
    assert scorecam.options == {"max_channels": 4, "batch_size": 32, "precision": "float32"}
    assert scorecam.pooling is None


def test_an_option_a_method_does_not_declare_is_refused_by_name():
    cap = gw.capture(gw.models.load("shapes"), gw.data.sample("two_shapes"))
    with pytest.raises(ValueError, match=r"'layercam' does not take 'max_channels'.*no options"):
        cap.cam(method="layercam", max_channels=3)
    with pytest.raises(ValueError, match="'scorecam' does not take 'sharpness'; it takes max_ch"):
        cap.cam(method="scorecam", sharpness=3)
    with pytest.raises(ValueError, match="pooling must be one of"):
        cap.cam(method="layercam", pooling="median")  # a bad shared value is still refused


def test_a_registered_method_without_a_default_is_refused():
    with pytest.raises(TypeError, match="needs a default"):

        @methods.register("broken")
        def broken(capture, layer, strength):
            return np.zeros((1, 1)), np.zeros(1)

    assert "broken" not in methods.names()
