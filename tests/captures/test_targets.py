"""gw.targets: what is explained, on real models, against longhand TensorFlow references."""

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.captures.targets import Class, Output, Region, Regression
from gradcam_widget.engine._tf import keras, tf

SIZE = 32


def _image(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)


def _trunk(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    return inputs, x


@pytest.fixture(scope="module")
def two_heads():
    """A classifier head (softmax) and a regression head on one trunk, as a list."""
    inputs, x = _trunk(0)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(pooled)
    reg = keras.layers.Dense(1, name="reg")(pooled)
    return keras.Model(inputs, [cls, reg])


@pytest.fixture(scope="module")
def segmenter():
    """A segmentation-style model: an (N, h, w, K) map of class logits."""
    inputs, x = _trunk(1)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, name="seg")(x))


@pytest.fixture(scope="module")
def regressor():
    inputs, x = _trunk(2)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="value")(pooled))


def _longhand(model, layer, image, score_of):
    """Grad-CAM raw map by hand: A . mean(dS/dA) with S = score_of(model outputs)."""
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs])
    with tf.GradientTape() as tape:
        activations, outputs = probe(tf.constant(image[None]), training=False)
        score = score_of(outputs)
    gradients = tape.gradient(score, activations)[0].numpy()
    weights = gradients.mean(axis=(0, 1))
    return activations[0].numpy() @ weights


def test_class_targets_are_class_indices(two_heads):
    image = _image()
    cls_only = keras.Model(two_heads.inputs, two_heads.outputs[0])
    by_index = gw.capture(cls_only, image, class_index=2)
    for target in (2, Class(2), [2], lambda outputs: outputs[:, 2]):
        cap = gw.capture(cls_only, image, target=target)
        np.testing.assert_allclose(cap.cam().raw, by_index.cam().raw, rtol=1e-5, atol=1e-6)
    assert gw.capture(cls_only, image, target=Class(2)).class_index == 2
    assert gw.capture(cls_only, image, target=lambda o: o[:, 2]).class_index is None


def test_a_custom_target_sees_logits_or_probabilities(two_heads):
    image = _image(1)
    cls_only = keras.Model(two_heads.inputs, two_heads.outputs[0])
    seen = []

    def second(outputs):
        seen.append(outputs)
        return outputs[:, 1]

    for score in ("logit", "probability"):
        custom = gw.capture(cls_only, image, target=second, score=score)
        by_index = gw.capture(cls_only, image, class_index=1, score=score)
        np.testing.assert_allclose(custom.value, by_index.scores[1], rtol=1e-5)
        np.testing.assert_allclose(custom.cam().raw, by_index.cam().raw, rtol=1e-5, atol=1e-7)
    probabilities = gw.capture(cls_only, image, target=second, score="probability")
    assert probabilities.scores.sum() == pytest.approx(1.0, abs=1e-5)  # softmax outputs
    assert seen  # it was traced with the model's outputs


def test_output_picks_one_head_of_a_multi_output_model(two_heads):
    image = _image(2)
    cls_only = keras.Model(two_heads.inputs, two_heads.outputs[0])
    reference = gw.capture(cls_only, image, class_index=1).cam()
    for target in (Output("cls", 1), Output(0, 1)):
        result = gw.capture(two_heads, image, target=target).cam()
        np.testing.assert_allclose(result.raw, reference.raw, rtol=1e-5, atol=1e-7)
    expected = _longhand(two_heads, "conv", image, lambda outputs: outputs[1][:, 0])
    regression = gw.capture(two_heads, image, target=Regression(output="reg"))
    np.testing.assert_allclose(regression.cam().raw, expected, rtol=1e-4, atol=1e-6)
    assert regression.class_index is None and regression.scores.shape == (1,)


def test_dict_outputs_are_named_by_their_keys():
    inputs, x = _trunk(3)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(
        inputs, {"kind": keras.layers.Dense(4)(pooled), "size": keras.layers.Dense(1)(pooled)}
    )
    image = _image(3)
    expected = _longhand(model, "conv", image, lambda outputs: outputs[0][:, 3])  # "kind"
    cap = gw.capture(model, image, target=Output("kind", 3))
    np.testing.assert_allclose(cap.cam().raw, expected, rtol=1e-4, atol=1e-6)


def test_several_outputs_without_a_target_name_them_and_the_targets_that_fit(two_heads):
    with pytest.raises(ValueError) as error:
        gw.capture(two_heads, _image())
    message = str(error.value)
    assert "2 outputs" in message and "cls" in message and "reg" in message
    assert "Output('cls', k)" in message and "Regression(output='reg')" in message
    with pytest.raises(ValueError, match="unknown output 'nope'.*cls"):
        gw.capture(two_heads, _image(), target=Output("nope"))
    with pytest.raises(ValueError, match="out of range"):
        gw.capture(two_heads, _image(), target=Output(5))


def test_region_is_the_seg_grad_cam_score(segmenter):
    image = _image(4)
    mask = np.zeros((28, 28), bool)
    mask[4:12, 10:20] = True
    expected = _longhand(
        segmenter, "conv2", image,
        lambda outputs: tf.reduce_sum(outputs[0][..., 2] * mask.astype(np.float32)),
    )  # fmt: skip
    cap = gw.capture(segmenter, image, target=Region(2, mask))
    np.testing.assert_allclose(cap.cam("conv2").raw, expected, rtol=1e-4, atol=1e-6)
    assert cap.class_index == 2 and cap.scores.shape == (3,)
    whole = gw.capture(segmenter, image, target=Region(2))
    everything = _longhand(segmenter, "conv2", image, lambda o: tf.reduce_sum(o[0][..., 2]))
    np.testing.assert_allclose(whole.cam("conv2").raw, everything, rtol=1e-4, atol=1e-6)


def test_a_region_mask_at_the_image_size_is_resized_to_the_output_grid(segmenter):
    image = _image(5)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:16] = True  # the top half, at the input size
    on_grid = np.zeros((28, 28), bool)
    on_grid[:14] = True
    resized = gw.capture(segmenter, image, target=Region(1, mask)).value
    direct = gw.capture(segmenter, image, target=Region(1, on_grid)).value
    assert resized == pytest.approx(direct, rel=1e-5)


def test_a_segmentation_output_without_a_target_asks_for_a_region(segmenter):
    with pytest.raises(ValueError, match=r"Region\(k, mask\)"):
        gw.capture(segmenter, _image())
    with pytest.raises(ValueError, match="k must be in 0..2"):
        gw.capture(segmenter, _image(), target=Region(7))
    with pytest.raises(ValueError, match="empty"):
        Region(1, np.zeros((4, 4)))


def test_regression_explains_the_value_and_what_lowers_it(regressor):
    image = _image(6)
    up = gw.capture(regressor, image, target=Regression())
    down = gw.capture(regressor, image, target=Regression(sign=-1))
    expected = _longhand(regressor, "conv", image, lambda outputs: outputs[0][:, 0])
    np.testing.assert_allclose(up.cam().raw, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(down.cam().raw, -up.cam().raw, rtol=1e-5, atol=1e-7)
    assert down.value == pytest.approx(-up.value)
    assert up.value == pytest.approx(float(regressor(image[None])[0, 0]), rel=1e-5)
    with pytest.raises(ValueError, match="score='probability' does not apply"):
        gw.capture(regressor, image, target=Regression(), score="probability")
    with pytest.raises(ValueError, match="sign must be"):
        Regression(sign=2)


def test_bad_targets_are_one_clear_error(two_heads):
    cls_only = keras.Model(two_heads.inputs, two_heads.outputs[0])
    image = _image()
    with pytest.raises(ValueError, match="one score per image"):
        gw.capture(cls_only, image, target=lambda outputs: outputs)
    with pytest.raises(ValueError, match="target broken failed.*ZeroDivisionError"):

        def broken(outputs):
            return 1 / 0

        gw.capture(cls_only, image, target=broken)
    with pytest.raises(ValueError, match="not both"):
        gw.capture(cls_only, image, class_index=1, target=Class(1))
    with pytest.raises(ValueError, match="target must be"):
        gw.capture(cls_only, image, target="cat")
    with pytest.raises(ValueError, match=r"0\.\.2"):
        gw.capture(cls_only, image, target=Class(3))


def test_targets_in_batches(segmenter, regressor):
    images = np.stack([_image(seed) for seed in range(5)])
    ex = gw.explain(segmenter, images, targets=Region(1), layer="conv2", batch_size=2)
    assert ex.class_indices.tolist() == [1] * 5 and ex.scores.shape == (5, 3)
    for index in (0, 4):
        single = gw.capture(segmenter, images[index], target=Region(1)).cam("conv2")
        np.testing.assert_allclose(ex[index].heatmap, single.heatmap, atol=1e-5)
    values = gw.explain(regressor, images, targets=Regression(sign=-1)).values
    np.testing.assert_allclose(values, -regressor(images).numpy()[:, 0], rtol=1e-5)


def test_grad_cam_and_class_scores_take_a_target(two_heads):
    image = _image(7)
    result = gw.grad_cam(two_heads, image, target=Output("cls", 2))
    cls_only = keras.Model(two_heads.inputs, two_heads.outputs[0])
    np.testing.assert_allclose(result.raw, gw.grad_cam(cls_only, image, class_index=2).raw,
                               rtol=1e-5, atol=1e-7)  # fmt: skip
    images = np.stack([_image(seed) for seed in range(3)])
    values = gw.class_scores(two_heads, images, None, score="logit", target=Regression(output=1))
    np.testing.assert_allclose(values, two_heads(images)[1].numpy()[:, 0], rtol=1e-5)


def test_region_masks_are_fed_not_traced(segmenter):
    from gradcam_widget.engine import engine_for

    images = np.stack([_image(seed) for seed in range(4)])
    masks = np.zeros((4, 28, 28), bool)
    for index in range(4):
        masks[index, 3 * index : 3 * index + 6, 5:15] = True
    engine = engine_for(segmenter)
    gw.capture(segmenter, images[0], target=Region(0, masks[0]))
    traced = engine.traces
    ex = gw.explain(segmenter, images, targets=Region(0, masks), layer="conv2", batch_size=3)
    for index in range(4):  # one mask per image, each image's own
        single = gw.capture(segmenter, images[index], target=Region(0, masks[index]))
        np.testing.assert_allclose(ex[index].heatmap, single.cam("conv2").heatmap, atol=1e-5)
        assert ex.values[index] == pytest.approx(single.value, rel=1e-5)
    # new masks of the same size: fed to the compiled passes already traced
    assert engine.traces <= traced + 1  # (the conv2-only pass of explain, once)
    with pytest.raises(ValueError, match="covers 4 images"):
        gw.explain(segmenter, images[:3], targets=Region(0, masks))


# --- found in review: each of these failed before its fix ---------------------------------


def test_per_image_region_masks_reach_score_cam_and_fill_in(segmenter):
    images = np.stack([_image(seed) for seed in range(4)])
    masks = np.zeros((4, 28, 28), bool)
    for index in range(4):
        masks[index, 6 * index : 6 * index + 6] = True
    for batch_size in (4, 3):
        ex = gw.explain(segmenter, images, targets=Region(1, masks), layer="conv2",
                        method="scorecam", max_channels=4, batch_size=batch_size)  # fmt: skip
        for index in (0, 3):
            single = gw.capture(segmenter, images[index], target=Region(1, masks[index]))
            expected = single.cam("conv2", method="scorecam", max_channels=4)
            np.testing.assert_allclose(ex[index].heatmap, expected.heatmap, atol=1e-5)
    one = gw.capture(segmenter, images[0], target=Region(1, masks[:1]))
    assert one.cam("conv", method="scorecam", max_channels=3).heatmap.shape == (SIZE, SIZE)


def test_dict_outputs_in_any_key_order_are_squashed_once():
    inputs, x = _trunk(5)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(
        inputs,
        {
            "zeta": keras.layers.Dense(3, activation="softmax", name="cls")(pooled),
            "alpha": keras.layers.Dense(1, name="box")(pooled),
        },
    )
    image = _image(8) / 40.0  # small inputs: a softmax that is not saturated
    cap = gw.capture(model, image, target=Output("zeta", 1), score="probability")
    expected = model(image[None].astype(np.float32))["zeta"].numpy()[0]
    np.testing.assert_allclose(cap.scores, expected, rtol=1e-5)


def test_a_class_an_output_does_not_have_is_refused(two_heads):
    with pytest.raises(ValueError, match=r"k must be in 0\.\.2; got 99"):
        gw.capture(two_heads, _image(), target=Output("cls", 99))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, name="conv")
            self.head = keras.layers.Dense(3)

        def call(self, inputs):
            return self.head(keras.ops.mean(self.conv(inputs), axis=(1, 2)))

    model = Subclassed()
    model(np.zeros((1, SIZE, SIZE, 3), np.float32))
    images = np.stack([_image(seed) for seed in range(2)])
    with pytest.raises(ValueError, match=r"class_index must be in 0\.\.2; got 5"):
        gw.class_scores(model, images, 5, score="logit")
    with pytest.raises(ValueError, match=r"class_index must be in 0\.\.2; got 7"):
        gw.capture(model, images[0], class_index=7)


def test_a_custom_target_of_the_wrong_length_or_kind_is_refused(two_heads):
    cls_only = keras.Model(two_heads.inputs, two_heads.outputs[0])
    images = np.stack([_image(seed) for seed in range(3)])
    longer = lambda o: keras.ops.concatenate([o[:, 0], o[:1, 0]])  # noqa: E731
    with pytest.raises(ValueError, match=r"one score per image.*\(4,\) for 3 images"):
        gw.explain(cls_only, images, targets=longer)
    with pytest.raises(ValueError, match=r"one score per image.*\(1,\) for 3 images"):
        gw.explain(cls_only, images, targets=lambda o: keras.ops.ones((1,)))
    with pytest.raises(ValueError, match="returned None"):
        gw.explain(cls_only, images, targets=lambda o: None)
    with pytest.raises(ValueError, match="int32 values; it must return float"):
        gw.explain(cls_only, images, targets=lambda o: keras.ops.cast(o[:, 0], "int32"))
    with pytest.warns(UserWarning, match="gradient of .* is zero .* 3 of 3"):
        ex = gw.explain(cls_only, images, targets=lambda o: keras.ops.zeros_like(o[:, 0]) + 1.0)
    assert not ex.heatmaps.any()


def test_bad_class_targets_are_one_value_error(two_heads):
    cls_only = keras.Model(two_heads.inputs, two_heads.outputs[0])
    images = np.stack([_image(seed) for seed in range(2)])
    for bad in ([], 2.0, True, [1.5, 2]):
        with pytest.raises(ValueError):
            gw.explain(cls_only, images, targets=bad)
    with pytest.raises(ValueError, match="empty"):
        Class([])
    ex = gw.explain(cls_only, images, targets=np.array(2))  # a 0-d array is one class index
    assert ex.class_indices.tolist() == [2, 2]
    assert gw.explain(cls_only, images, targets=np.array([0, 2])).class_indices.tolist() == [0, 2]


def test_regression_on_a_sigmoid_head_gives_the_map_of_the_value():
    inputs, x = _trunk(6)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="p")(pooled))
    image = _image(9) / 50.0
    cap = gw.capture(model, image, target=Regression())
    expected = _longhand(model, "conv", image, lambda outputs: outputs[0][:, 0])
    np.testing.assert_allclose(cap.cam().heatmap, gw.core.to_heatmap(expected, (SIZE, SIZE)),
                               atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="before a final sigmoid"):
        gw.capture(model, image, target=Regression(), score="probability")


def test_no_logit_warning_for_an_output_the_target_does_not_read(lambda_softmax_model):
    inputs = lambda_softmax_model.inputs
    features = lambda_softmax_model.get_layer("c").output
    box = keras.layers.Dense(2, name="box")(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, [lambda_softmax_model.outputs[0], box])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gw.capture(model, _image(), target=Output("box", 1))
    with pytest.warns(UserWarning, match="could not be bypassed"):
        gw.capture(model, _image(), target=Output(0, 1))


def test_a_dropped_custom_target_is_freed_once_its_trace_is_evicted(two_heads):
    import gc
    import weakref

    from gradcam_widget.engine import MAX_TRACES

    cls_only = keras.Model(two_heads.inputs, two_heads.outputs[0])
    images = np.stack([_image(seed) for seed in range(2)])

    class Weights:
        vector = np.array([0.5, 0.25, 0.25], np.float32)

    held = Weights()
    ref = weakref.ref(held)
    gw.explain(cls_only, images, targets=lambda o, w=held: keras.ops.sum(o * w.vector, axis=1))
    del held
    for step in range(MAX_TRACES + 1):
        gw.explain(cls_only, images, targets=lambda o, s=step: o[:, s % 3])
    gc.collect()
    assert ref() is None
