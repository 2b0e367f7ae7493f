"""same_parameters: one parameter list for two functions, shown, checked and filled in."""

import inspect
import warnings

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.captures.signatures import joined_parameters, same_parameters


def first(model, image, steps: int = 20, baseline="mean", **options) -> str:
    return "first"


@same_parameters(first, baseline="blur")
def second(*args, **kwargs) -> int:
    """The second one."""
    return args, kwargs


def test_the_signature_is_the_sources_with_its_own_defaults_and_return():
    shown = inspect.signature(second)
    assert list(shown.parameters) == ["model", "image", "steps", "baseline", "options"]
    assert shown.parameters["baseline"].default == "blur"
    assert shown.return_annotation is int  # its own return annotation, not the source's
    assert second.__name__ == "second" and second.__doc__ == "The second one."


def test_calls_are_bound_and_filled_in_positionally():
    assert second(1, image=2, smooth=4) == ((1, 2, 20, "blur"), {"smooth": 4})
    with pytest.raises(TypeError, match=r"second\(\): missing a required argument: 'image'"):
        second(1)
    with pytest.raises(TypeError, match="second"):
        second(1, 2, 3, 4, 5)


def test_an_unknown_default_is_refused():
    with pytest.raises(ValueError, match="first has no parameter nope"):
        same_parameters(first, nope=1)


def test_the_shared_lists_of_the_package(make_cnn):
    explain, iter_explain = inspect.signature(gw.explain), inspect.signature(gw.iter_explain)
    assert list(explain.parameters.values()) == list(iter_explain.parameters.values())
    deletion = inspect.signature(gw.metrics.deletion).parameters
    insertion = inspect.signature(gw.metrics.insertion).parameters
    assert list(deletion) == list(insertion)
    assert (deletion["baseline"].default, insertion["baseline"].default) == ("mean", "blur")
    model = make_cnn(seed=9)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning
        joined = gw.explain(model, images, None, "conv1", "gradcam", 1)  # positionally
    assert joined.heatmaps.shape == (2, 32, 32) and joined.layer == "conv1"


def test_a_warning_of_explain_points_at_its_caller(lambda_softmax_model):
    images = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    with pytest.warns(UserWarning, match="could not be bypassed") as caught:
        gw.explain(lambda_softmax_model, images)
    assert {warning.filename for warning in caught} == {__file__}


def test_grad_cam_takes_captures_and_cams_parameters_declared_once():
    from gradcam_widget.captures.capturing import Capture, capture

    names = list(inspect.signature(gw.grad_cam).parameters)
    lead = list(inspect.signature(capture).parameters)[:5]
    cam = [name for name in inspect.signature(Capture.cam).parameters if name != "self"]
    assert names == [*lead, *cam[:-1], "target", cam[-1]]
    assert inspect.signature(gw.grad_cam).parameters["pooling"].default == "mean"


def test_grad_cam_binds_positions_and_keywords_as_the_two_calls_do():
    entry = gw.models.load("shapes")
    image = gw.data.sample("two_shapes")
    by_position = gw.grad_cam(entry, image, None, "logit", None, None, "max")
    by_keyword = gw.capture(entry, image).cam(pooling="max", interpolation="nearest")
    assert by_position.pooling == "max" and by_position.interpolation == "bilinear"
    keyword = gw.grad_cam(entry, image, pooling="max", interpolation="nearest")
    np.testing.assert_allclose(keyword.heatmap, by_keyword.heatmap, atol=1e-6)
    with pytest.raises(TypeError, match=r"grad_cam\(\): multiple values for argument 'class_"):
        gw.grad_cam(entry, image, None, class_index=2)
    with pytest.raises(ValueError, match="capture has no parameter tail"):
        joined_parameters(gw.capture, 5, gw.Capture.cam, tail=("tail",))
