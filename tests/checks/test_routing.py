"""Method routing of the sanity checks: which methods they take, which options reach which
method, and the (absolute, signed) maps of one capture for a CAM and a gradient method."""

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.checks import routing, sanity


def test_method_names_are_the_cam_methods_then_the_gradient_methods():
    names = routing.method_names()
    assert names == gw.methods.names() + routing.GRADIENT_METHODS
    assert sanity.method_names is routing.method_names


def test_method_list_takes_one_name_or_several_and_refuses_bad_ones():
    assert routing.method_list("gradcam") == (("gradcam",), True)
    assert routing.method_list(["gradcam", "vanilla"]) == (("gradcam", "vanilla"), False)
    with pytest.raises(ValueError, match="at least one"):
        routing.method_list([])
    with pytest.raises(ValueError, match="method"):
        routing.method_list("nope")
    with pytest.raises(ValueError, match="repeat"):
        routing.method_list(["vanilla", "vanilla"])


def test_route_options_gives_each_method_only_what_it_takes():
    routed = routing.route_options(
        ["gradcam", "smoothgrad", "guided"], {"order": "resize_first", "smooth": 4}
    )
    assert routed == {
        "gradcam": {"order": "resize_first"},
        "smoothgrad": {"smooth": 4},
        "guided": {},
    }
    with pytest.raises(ValueError, match="max_channels"):
        routing.route_options(["guided"], {"max_channels": 4})


def test_maps_of_a_cam_method_and_of_a_gradient_method(make_cnn):
    model = make_cnn(seed=3)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cap = gw.capture(model, image)
    absolute, signed = routing.maps(cap, "gradcam", "conv2", {}, seed=0)
    result = cap.cam("conv2")
    np.testing.assert_array_equal(absolute, result.heatmap)
    np.testing.assert_array_equal(signed, gw.core.resize(result.raw, (32, 32), "bilinear"))
    absolute, signed = routing.maps(cap, "vanilla", "conv2", {}, seed=0)
    gradients = cap.saliency("vanilla")
    np.testing.assert_allclose(absolute, np.abs(gradients).max(axis=-1))
    np.testing.assert_allclose(signed, gradients.sum(axis=-1), rtol=1e-6)
