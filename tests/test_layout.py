"""The package's shape: modules not hidden by functions, TensorFlow and JAX only in their
engines, methods that declare their options."""

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.cam import methods

PACKAGE = Path(gw.__file__).parent
# engine and tapping import TensorFlow only on its backend, inside the functions that need it
TENSORFLOW_MODULES = {"_tf", "engine", "engine_tf", "tapping"}
JAX_MODULES = {"engine_jax", "tapping"}  # tapping: the guided ReLU's custom VJP
TORCH_MODULES = {"engine_torch", "tapping"}


def test_no_module_is_hidden_by_a_function_of_the_same_name():
    for info in pkgutil.iter_modules([str(PACKAGE)]):
        optional = {"engine_jax": "jax", "engine_torch": "torch"}.get(info.name)
        if optional and importlib.util.find_spec(optional) is None:
            continue  # an engine for a backend that is not installed
        module = importlib.import_module(f"gradcam_widget.{info.name}")
        if hasattr(gw, info.name):
            assert getattr(gw, info.name) is module, f"gw.{info.name} hides the module"


def _imports(path: Path, library: str) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports inside functions too
        if isinstance(node, ast.Import) and any(
            a.name == library or a.name.startswith(f"{library}.") for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == library or module.startswith(f"{library}."):
                return True
            tf_alias = any(a.name == "tf" for a in node.names)
            if library == "tensorflow" and module == "gradcam_widget._tf" and tf_alias:
                return True
    return False


def test_tensorflow_stays_in_the_engines():
    users = {path.stem for path in PACKAGE.glob("*.py") if _imports(path, "tensorflow")}
    assert users <= TENSORFLOW_MODULES, sorted(users - TENSORFLOW_MODULES)
    assert {"engine_tf", "tapping"} <= users


@pytest.mark.parametrize(("library", "allowed"), [("jax", JAX_MODULES), ("torch", TORCH_MODULES)])
def test_jax_and_torch_stay_in_their_engines(library, allowed):
    users = {path.stem for path in PACKAGE.glob("*.py") if _imports(path, library)}
    assert users <= allowed, sorted(users - allowed)
    assert f"engine_{library}" in users


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
