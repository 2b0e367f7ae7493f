"""The explorer's readout: what its lines say of a real capture and map."""

from __future__ import annotations

import pytest

import gradcam_widget as gw
from gradcam_widget.explorer import readout
from gradcam_widget.explorer.session import ExplorerSession


@pytest.fixture(scope="module")
def session():
    session = ExplorerSession("shapes")
    session.set_image(gw.data.scene(1_000_001, n_objects=2).image, layers=["block5_conv3"])
    yield session
    session.close()


def test_the_lines_name_the_layer_the_class_and_what_ran(session):
    step = session.view({"layer": "block5_conv3", "interpolation": "nearest"})
    cap, result = step.capture, step.result
    assert step.result.interpolation == "nearest"
    options = dict((value, label) for label, value in readout.layer_options(cap))
    assert options["block5_conv3"].startswith("block5_conv3 · 14×14×")
    titles = readout.panel_titles(cap, result, 0.4)
    assert titles["heatmap"] == "heatmap 224×224" and "opacity 0.40" in titles["overlay"]
    text = readout.readout_html(
        session, cap, result, step, image_line=None, method_label="Grad-CAM",
        guided=(None, "off"), render_ms=1.0,
    )  # fmt: skip
    name = session.class_name(cap, cap.class_index)
    assert f"class {cap.class_index} <b>{name}</b>" in text and "block5_conv3" in text
    assert "once, cached" in text  # the image's pass was not this call's
    assert "other layers: one more pass on first use" in text


def test_why_a_control_is_disabled_and_the_guided_labels():
    why = readout.disabled_reasons(gw.methods.get("layercam"), None)
    assert "does not apply" in why["pooling"] and why["score"] is None
    assert readout.guided_label("smoothgrad").startswith("SmoothGrad (guided, 16")
    assert readout.PANELS[-1] == readout.GUIDED_PANEL == "guided"
    assert readout.warning_html("<x>") == "<span style='color:#a05a00'>⚠ &lt;x&gt;</span>"
