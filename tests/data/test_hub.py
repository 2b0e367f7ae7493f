"""KerasHub vision transformers are explained with no extra argument: grid and class token
inferred, nested layers named by path.

Needs ``keras-hub`` (``pip install -e .[hub]``): without it these tests skip with the reason
locally, and fail with CI set (the CI installs it). Models are built offline from their
configuration, with random weights.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.engine._tf import keras


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _keras_hub():
    if importlib.util.find_spec("keras_hub") is None:
        reason = "keras-hub is not installed: pip install 'gradcam_widget[hub]'"
        if _in_ci():
            pytest.fail(f"{reason} (CI is set: the KerasHub tests must run here)", pytrace=False)
        pytest.skip(reason)
    import keras_hub

    return keras_hub


def hub_backbone(num_layers: int):
    """A small KerasHub ``ViTBackbone`` (64 x 64, patch 16, class token), seeded, offline."""
    keras_hub = _keras_hub()
    keras.utils.set_random_seed(0)
    return keras_hub.models.ViTBackbone(
        image_shape=(64, 64, 3), patch_size=16, num_layers=num_layers, num_heads=2,
        hidden_dim=32, mlp_dim=64, use_class_token=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def hub_vit():
    """A KerasHub ``ViTBackbone`` under a pooling head."""
    backbone = hub_backbone(num_layers=2)
    inputs = keras.Input((64, 64, 3))
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(pooled))


def pictures(count=3):
    return np.random.default_rng(0).integers(0, 255, (count, 64, 64, 3)).astype(np.uint8)


def test_a_keras_hub_vit_needs_no_extra_argument(hub_vit):
    cap = gw.capture(hub_vit, pictures(1)[0], class_index=1, layers="all")
    encoder = next(path for path in cap.layers if path.endswith("vit_encoder"))
    assert "/" in encoder  # nested inside the backbone: named by its path
    assert cap.default_layer == encoder  # pooled patch tokens: the whole encoder's output
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


def test_keras_hubs_own_vit_classifier_is_read_before_its_class_token_readout():
    """``ViTImageClassifier`` reads the class token after the encoder: the encoder's output,
    its final norm and its last block's patch tokens never reach the score. Its blocks are
    candidates one by one (inside the encoder, named by path), and the default is the last
    layer whose patch tokens do reach it: the last block's first norm, which its attention
    reads (the layer pytorch-grad-cam's users are told to pick by hand for such a model)."""
    classifier = _keras_hub().models.ViTImageClassifier(
        backbone=hub_backbone(num_layers=3), num_classes=3, preprocessor=None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default map is not empty: nothing to warn about
        cap = gw.capture(classifier, pictures(1)[0], class_index=1, layers="all")
    blocks = [path for path in cap.layers if re.search(r"vit_encoder/\w*block_\d+$", path)]
    assert len(blocks) == 3 and all(cap.tokens(path) == (1, 4, 4) for path in blocks)
    # the last block's first norm: the patch tokens as its attention reads them
    assert cap.default_layer == f"{blocks[2]}/ln_1"
    assert np.abs(cap.cam().raw).max() > 0
    assert cap.fusion_layers() == (blocks[0], blocks[1], f"{blocks[2]}/ln_1")
    with pytest.warns(UserWarning, match="get no gradient"):  # the last block, asked for
        assert not gw.grad_cam(classifier, pictures(1)[0], layer=blocks[2]).heatmap.any()
