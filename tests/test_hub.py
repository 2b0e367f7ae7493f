"""KerasHub vision transformers are explained with no extra argument: grid and class token
inferred, nested layers named by path.

Needs ``keras-hub`` (``pip install -e .[hub]``): without it these tests skip with the reason
locally, and fail with CI set (the CI installs it). Models are built offline from their
configuration, with random weights.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget._tf import keras


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def hub_vit():
    """A KerasHub ``ViTBackbone`` (64 x 64, patch 16, class token) under a pooling head."""
    if importlib.util.find_spec("keras_hub") is None:
        reason = "keras-hub is not installed: pip install 'gradcam_widget[hub]'"
        if _in_ci():
            pytest.fail(f"{reason} (CI is set: the KerasHub tests must run here)", pytrace=False)
        pytest.skip(reason)
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(64, 64, 3), patch_size=16, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64, use_class_token=True,
    )  # fmt: skip
    inputs = keras.Input((64, 64, 3))
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(pooled))


def pictures(count=3):
    return np.random.default_rng(0).integers(0, 255, (count, 64, 64, 3)).astype(np.uint8)


def test_a_keras_hub_vit_needs_no_extra_argument(hub_vit):
    cap = gw.capture(hub_vit, pictures(1)[0], class_index=1, layers="all")
    encoder = next(path for path in cap.layers if path.endswith("vit_encoder"))
    assert "/" in encoder  # nested inside the backbone: named by its path
    assert cap.default_layer == encoder
    assert cap.tokens(encoder) == (1, 4, 4)  # the class token left out of a 4x4 grid
    result = cap.cam()
    assert result.raw.shape == (4, 4) and result.heatmap.shape == (64, 64)
    assert np.abs(cap.gradients(encoder)).max() > 0


def test_a_keras_hub_vit_batches_like_single_captures(hub_vit):
    images = pictures()
    ex = gw.explain(hub_vit, images, targets=[0, 2, 1])
    for k, class_index in enumerate([0, 2, 1]):
        single = gw.capture(hub_vit, images[k], class_index=class_index).cam()
        np.testing.assert_allclose(ex.raw[k], single.raw, rtol=1e-4, atol=1e-5)
