"""Vision-transformer token layers: ``(N, T, C)`` outputs explained as patch grids."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.engine import engine_for, layers
from gradcam_widget.engine._tf import keras, tf

L = keras.layers


def tiny_vit(size=(32, 32), patch=8, dim=16, prefix=1, blocks=2, seed=0):
    """Patch embedding -> tokens -> ``prefix`` learned-free prefix tokens -> attention blocks
    -> mean of all tokens -> logits. Layer ``b{i}_out`` is each block's ``(N, T, dim)``."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, 3))
    x = L.Conv2D(dim, patch, strides=patch, name="patches")(inputs)
    h, w = size[0] // patch, size[1] // patch
    x = L.Reshape((h * w, dim), name="tokens")(x)
    if prefix:
        extra = L.Dense(dim, name="prefix")(
            L.Lambda(lambda t: t[:, :prefix, :] * 0.0 + 1.0, name="ones")(x)
        )
        x = L.Concatenate(axis=1, name="with_prefix")([extra, x])
    for block in range(blocks):
        y = L.LayerNormalization(name=f"b{block}_norm")(x)
        y = L.MultiHeadAttention(2, 8, name=f"b{block}_attn")(y, y)
        x = L.Add(name=f"b{block}_out")([x, y])
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, L.Dense(4, name="logits")(x))


def image(size=(32, 32), seed=0):
    return np.random.default_rng(seed).integers(0, 255, (*size, 3)).astype(np.uint8)


def longhand_token_cam(model, picture, layer, prefix, grid, class_index):
    """Grad-CAM on a token layer by hand: tape, drop the prefix, reshape, mean gradients."""
    probe = keras.Model(model.inputs[0], [model.get_layer(layer).output, model.outputs[0]])
    with tf.GradientTape() as tape:
        tokens, logits = probe(picture[None].astype(np.float32))
        score = logits[:, class_index]
    gradients = tape.gradient(score, tokens)
    h, w = grid
    activations = tokens[0, prefix:].numpy().reshape(h, w, -1)
    weights = gradients[0, prefix:].numpy().reshape(h, w, -1).mean(axis=(0, 1))
    return activations @ weights


@pytest.mark.parametrize(
    ("prefix", "size", "grid"),
    [(1, (32, 32), (4, 4)), (2, (32, 32), (4, 4)), (0, (32, 32), (4, 4)), (1, (32, 48), (4, 6))],
    ids=["class token", "two prefix tokens", "no prefix", "non-square input"],
)
def test_token_layers_are_explained_as_patch_grids(prefix, size, grid):
    model = tiny_vit(size=size, prefix=prefix)
    picture = image(size)
    cap = gw.capture(model, picture, class_index=2, layers="all")
    assert {"b0_out", "b1_out", "b1_attn", "tokens"} <= set(cap.layers)
    assert "pool" not in cap.layers and "logits" not in cap.layers
    result = cap.cam("b1_out")
    assert result.raw.shape == grid and result.heatmap.shape == size
    expected = longhand_token_cam(model, picture, "b1_out", prefix, grid, 2)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-5)
    assert cap.activations("b1_out").shape == (*grid, 16)


def test_token_maps_batch_like_single_captures():
    model = tiny_vit()
    pictures = np.stack([image(seed=k) for k in range(3)])
    ex = gw.explain(model, pictures, targets=[0, 1, 3], layer="b1_out", batch_size=2)
    assert ex.raw.shape == (3, 4, 4)
    for k in range(3):
        single = gw.capture(model, pictures[k], class_index=[0, 1, 3][k]).cam("b1_out")
        np.testing.assert_allclose(ex.raw[k], single.raw, rtol=1e-4, atol=1e-5)


def test_every_method_runs_on_a_token_layer():
    model = tiny_vit()
    cap = gw.capture(model, image(), class_index=1)
    for method in gw.methods.names():
        result = cap.cam("b1_out", method=method)
        assert result.raw.shape == (4, 4) and np.isfinite(result.heatmap).all(), method


def test_the_grid_inference():
    assert layers.token_grids(197, 224, 224)[0] == (1, 14, 14)
    assert layers.token_grid(198, 224, 224) == (2, 14, 14)
    assert layers.token_grid(196, 224, 224) == (0, 14, 14)
    assert layers.token_grid(141, 224, 160) == (1, 14, 10)
    assert layers.token_grid(30, 224, 224) is None  # 22..30 patches tile no grid of 224x224
    assert layers.token_grid(2, 32, 32) is None  # one patch is no grid
    assert layers.token_grid(5, 32, 32) is None  # a 2 x 2 grid is too coarse to be one
    assert layers.token_grid(1024, 32, 32) is None  # 1-pixel "patches": a per-pixel map
    assert layers.token_grid(197, 224, 224, grid=(14, 14)) == (1, 14, 14)
    assert layers.token_grid(197, 224, 224, prefix=1) == (1, 14, 14)
    with pytest.raises(ValueError, match=r"197 tokens \(input 224x224\).*1 prefix \+ 14x14"):
        layers.token_grid(197, 224, 224, grid=(7, 7))
    with pytest.raises(ValueError, match="prefix=3 leaves 194 tokens"):
        layers.token_grid(197, 224, 224, prefix=3)
    assert layers.describe_tokens((1, 14, 14)) == "1 prefix token + 14x14 patches"


def test_a_token_layer_that_fits_no_grid_is_no_candidate():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(3, 8, strides=8, name="patches")(inputs)
    x = L.Reshape((16, 3), name="tokens")(x)
    x = L.Dense(5, name="mixed")(L.Permute((2, 1), name="swap")(x))  # (N, 3, 5): 3 tokens
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.Flatten()(x)))
    cap = gw.capture(model, image(), layers="all")
    assert "tokens" in cap.layers and "swap" not in cap.layers and "mixed" not in cap.layers


def test_the_capture_and_the_widget_name_the_tokens():
    from gradcam_widget.explorer.readout import layer_options as _layer_options

    cap = gw.capture(tiny_vit(prefix=1), image(), layers="all")
    assert cap.tokens("b1_out") == (1, 4, 4) and cap.tokens("patches") is None
    labels = dict((path, label) for label, path in _layer_options(cap))
    assert labels["b1_out"] == "b1_out · 1 prefix token + 4×4 patches ×16"
    assert labels["patches"] == "patches · 4×4×16"


def patch_tokens():
    """Seeded: a 32 x 32 input and its 4 x 4 grid of 8-channel patch tokens ``(N, 16, 8)``."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    patches = L.Conv2D(8, 8, strides=8, name="patches")(inputs)
    return inputs, L.Reshape((16, 8), name="tokens")(patches)


def with_class_token(x):
    """``x`` with a learned class token in front (a Dense of a constant)."""
    token = L.Dense(8, name="cls")(L.Lambda(lambda t: t[:, :1, :] * 0.0 + 1.0, name="one")(x))
    return L.Concatenate(axis=1, name="with_cls")([token, x])


def test_a_token_layer_the_score_cannot_see_is_named_in_a_warning():
    """A class-token readout: after the last block only the class token reaches the logits,
    so that block's patch tokens have no gradient and their map is empty, said once."""
    inputs, x = patch_tokens()
    x = with_class_token(x)
    y = L.MultiHeadAttention(2, 4, name="attn")(x, x)
    x = L.Add(name="block")([x, y])
    x = L.Dense(8, name="last")(x)  # a per-token layer after the last attention
    readout = L.Lambda(lambda t: t[:, 0, :], name="read_cls")(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(readout))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gw.grad_cam(model, image(), layer="last")
    said = " ".join(str(warning.message) for warning in caught)
    assert re.search(r"patch tokens of last \(1 prefix token \+ 4x4 patches\) get no", said)
    assert not result.heatmap.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default is a layer whose patch tokens reach it
        cap = gw.capture(model, image())
    # "last", "block" and "attn" are read per token after the attention: only "with_cls" is
    # left, its patch tokens reaching the class token through the attention's keys and values
    assert cap.default_layer == "with_cls" and cap.cam().heatmap.any()
    assert engine_for(model).reaching_tokens((1, 32, 32, 3)) == {"tokens", "with_cls"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tokens before the attention reach it: no warning
        assert gw.grad_cam(model, image(), layer="with_cls").heatmap.any()


def strided_vit():
    """Patches 8 tall and 4 wide on a 32 x 32 input: a 4 x 8 grid no inference finds."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, (8, 4), strides=(8, 4), name="patches")(inputs)
    x = L.Reshape((32, 16), name="tokens")(x)
    extra = L.Dense(16, name="prefix")(L.Lambda(lambda t: t[:, :1, :] * 0.0 + 1.0)(x))
    x = L.Concatenate(axis=1, name="with_prefix")([extra, x])
    y = L.MultiHeadAttention(2, 8, name="attn")(x, x)
    x = L.Add(name="block")([x, y])
    return keras.Model(inputs, L.Dense(4, name="logits")(L.GlobalAveragePooling1D()(x)))


def test_a_grid_inference_cannot_find_is_set_by_hand():
    model = strided_vit()
    picture = image()
    assert "block" not in gw.capture(model, picture, layers="all").layers  # 33 tokens: no grid
    gw.set_token_grid(model, grid=(4, 8), prefix=1)
    try:
        cap = gw.capture(model, picture, class_index=1, layers="all")
        assert cap.tokens("block") == (1, 4, 8) and "tokens" not in cap.layers  # 32: no fit
        expected = longhand_token_cam(model, picture, "block", 1, (4, 8), 1)
        np.testing.assert_allclose(cap.cam("block").raw, expected, rtol=1e-4, atol=1e-5)
        gw.set_token_grid(model, grid=(4, 4), prefix=1, layer="block")  # wrong for 33 tokens
        with pytest.raises(ValueError, match=r"layer block: grid=\(4, 4\).*33 tokens"):
            gw.capture(model, picture, layers="all")
        with pytest.raises(ValueError, match="unknown layer 'nope'"):
            gw.set_token_grid(model, grid=(4, 8), layer="nope")
        with pytest.raises(ValueError, match="grid must be"):
            gw.set_token_grid(model, grid=(0, 8))
    finally:
        gw.set_token_grid(model, layer="block")
        gw.set_token_grid(model)
    assert "block" not in gw.capture(model, picture, layers="all").layers  # inference again


@pytest.mark.parametrize("head", ["lstm over columns", "learned queries"])
def test_sequence_layers_of_a_cnn_are_not_read_as_patches(head):
    """Rank-3 layers after a CNN whose tokens are not the conv's grid stay no candidates, and
    the default layer stays a 4-D map."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.MaxPooling2D(4, name="pool")(x)  # (16, 16, 8)
    if head == "lstm over columns":
        x = L.Reshape((16, 128), name="columns")(L.Permute((2, 1, 3), name="swap")(x))
        x = L.LSTM(8, return_sequences=True, name="lstm")(x)  # 16 tokens: a 4 x 4 "grid"
    else:
        tokens = L.Reshape((256, 8), name="pixels")(x)
        queries = L.Dense(8, name="queries")(L.Lambda(lambda t: t[:, :16, :] * 0.0 + 1.0)(tokens))
        x = L.MultiHeadAttention(2, 4, name="pool_attn")(queries, tokens)  # 16 queries
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalAveragePooling1D()(x)))
    cap = gw.capture(model, image((64, 64)), layers="all")
    assert cap.tokens(cap.default_layer) is None
    assert not {"lstm", "pool_attn", "queries", "columns"} & set(cap.layers)


def test_the_default_of_a_transformer_is_its_final_norm():
    """Pooled patch tokens after a final norm and the class token cut off: the default is the
    final norm -- the tokens as the head reads them -- not the cut (the same patch tokens) nor
    the last block's output before the norm."""
    inputs, x = patch_tokens()
    x = with_class_token(x)
    for block in (1, 2, 3):
        y = L.MultiHeadAttention(2, 4, name=f"attn{block}")(x, x)
        x = L.Add(name=f"block{block}_out")([x, y])
    x = L.LayerNormalization(name="norm")(x)
    x = L.Cropping1D((1, 0), name="drop_cls")(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalMaxPooling1D()(x)))
    cap = gw.capture(model, image(), layers="all")
    assert {"norm", "drop_cls", "block3_out"} <= set(cap.layers)
    assert cap.tokens("drop_cls") == (0, 4, 4) and cap.tokens("norm") == (1, 4, 4)
    assert cap.default_layer == "norm" and cap.cam().heatmap.any()
    # fused: the default and the block outputs before it (not the attentions)
    assert cap.fusion_layers() == ("block2_out", "block3_out", "norm")
    assert cap.fuse().heatmap.shape == (32, 32)


# --- custom layers opened (KerasHub-style encoders), and the ones left closed --------------


class Encoder(keras.layers.Layer):
    """A custom token encoder holding its blocks (as KerasHub's ``ViTEncoder`` does); two
    inner layers share the name ``proj``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [L.MultiHeadAttention(2, 4, name=f"block_{k}") for k in (1, 2)]
        self.first = L.Dense(8, name="proj")
        self.second = L.Dense(8, name="proj")

    def call(self, x):
        for block in self.blocks:
            x = x + block(x, x)
        return self.second(self.first(x))


class Refine(keras.layers.Layer):
    """A custom layer that runs its conv three times in a loop."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(8, 3, padding="same", activation="relu", name="step")

    def call(self, x):
        return keras.ops.fori_loop(0, 3, lambda _, y: self.conv(y), x)


class MyAttention(L.MultiHeadAttention):
    """A user subclass of a Keras layer: never opened (its query/key/value are no maps)."""


def test_a_custom_token_encoder_is_opened_block_by_block():
    inputs, x = patch_tokens()
    x = Encoder(name="encoder")(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalAveragePooling1D()(x)))
    cap = gw.capture(model, image(), layers="all")
    inner = [path for path in cap.layers if path.startswith("encoder/")]
    assert inner == ["encoder/block_1", "encoder/block_2", "encoder/proj", "encoder/proj#2"]
    assert cap.default_layer == "encoder" and np.abs(cap.cam("encoder/block_2").raw).max() > 0


@pytest.mark.parametrize("kind", ["loop", "custom head", "keras subclass"])
def test_custom_layers_of_a_cnn_keep_its_layers_and_default(kind):
    """A custom layer with a loop inside, a custom head, a subclass of a Keras layer: the CNN
    still runs, and its candidates and default are what they were before layers were
    opened."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    if kind == "loop":
        x = Refine(name="refine")(x)
        expected = "refine"
    elif kind == "custom head":
        x = L.GlobalAveragePooling2D()(L.Conv2D(3, 1, name="class_maps")(x))
        expected = "class_maps"
    else:
        seq = L.Reshape((1024, 8), name="seq")(x)
        x = MyAttention(2, 4, name="attn_pool")(seq[:, :4], seq)
        expected = "c2"
    x = L.Flatten()(x) if kind == "keras subclass" else x
    head = x if kind == "custom head" else L.GlobalAveragePooling2D()(x) if kind == "loop" else x
    model = keras.Model(inputs, L.Dense(3, name="logits")(head) if kind != "custom head" else x)
    cap = gw.capture(model, image(), layers="all")
    assert cap.default_layer == expected, cap.layers
    assert not [path for path in cap.layers if "/" in path], cap.layers
    assert cap.cam().heatmap.shape == (32, 32)


def test_which_tokens_reach_a_softmax_inside_a_lambda():
    """A softmax the engine cannot bypass (inside a Lambda) sums to 1: the reach of the patch
    tokens is still found (random projection), so the default is the block, not the conv."""
    keras.utils.set_random_seed(0)
    model = tiny_vit()
    probabilities = L.Lambda(lambda t: keras.ops.softmax(t), name="soft")(model.outputs[0])
    wrapped = keras.Model(model.inputs, probabilities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the softmax it cannot bypass is said; not tested here
        cap = gw.capture(wrapped, image(), class_index=1)
    assert cap.default_layer == "b1_out"


def test_a_saturated_probability_is_not_called_a_class_token_readout():
    keras.utils.set_random_seed(0)
    model = tiny_vit()
    loud = L.Lambda(lambda t: t * 1e4, name="loud")(model.outputs[0])
    saturated = keras.Model(model.inputs, L.Activation("softmax", name="soft")(loud))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gw.grad_cam(saturated, image(), layer="b1_out", score="probability")
    said = " ".join(str(warning.message) for warning in caught)
    assert "score='logit' explains it" in said and "class token" not in said, said


class LoopedTokens(keras.layers.Layer):
    """A custom token layer that runs its inner layer in a loop: opened, but what the inner
    layer outputs inside the loop belongs to the loop's own graph and is not recorded."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mix = L.Dense(8, activation="relu", name="mix")

    def call(self, x):
        return keras.ops.fori_loop(0, 3, lambda _, y: self.mix(y), x)


def test_a_layer_called_inside_a_loop_is_not_recorded():
    inputs, x = patch_tokens()
    x = LoopedTokens(name="looped")(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalAveragePooling1D()(x)))
    cap = gw.capture(model, image(), layers="all")
    assert "looped" in cap.layers and "looped/mix" not in cap.layers
    assert cap.default_layer == "looped"
