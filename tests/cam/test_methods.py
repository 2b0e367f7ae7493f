"""Every CAM method against a straightforward implementation written here, on a tiny model.

The cached activations and gradients themselves are checked against an eager tape in
test_capture.py; here each method's formula is written out longhand (loops over channels
and positions) and compared with the registered, vectorised one.
"""

import cv2
import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.cam import methods
from gradcam_widget.engine import bfloat16_supported
from gradcam_widget.engine._tf import tf


@pytest.fixture(scope="module")
def model(make_cnn):
    """24 x 32 input, two convolutions, a max-pool + flatten head of 3 logits."""
    return make_cnn(
        seed=31,
        input_shape=(24, 32, 3),
        filters=(6, 10),
        classes=3,
        activation=None,
        head="flatten",
    )


@pytest.fixture(scope="module")
def cap(model):
    image = np.random.default_rng(32).uniform(0, 255, (24, 32, 3))
    return gw.capture(model, image, class_index=1)


def longhand_combine(activations, weights):
    h, w, channels = activations.shape
    raw = np.zeros((h, w))
    for k in range(channels):
        raw += weights[k] * activations[:, :, k]
    return raw


def reference(name, A, G):
    """Each method's map and weights, from its paper's formula, one channel at a time."""
    A, G = A.astype(np.float64), G.astype(np.float64)
    h, w, channels = A.shape
    weights = np.zeros(channels)
    if name == "gradcam++":
        for k in range(channels):
            for i in range(h):
                for j in range(w):
                    g = G[i, j, k]
                    denominator = 2 * g**2 + A[:, :, k].sum() * g**3
                    alpha = g**2 / denominator if denominator != 0 else 0.0
                    weights[k] += alpha * max(g, 0.0)
        return longhand_combine(A, weights), weights
    if name == "xgradcam":
        for k in range(channels):
            total = A[:, :, k].sum()
            weights[k] = (A[:, :, k] * G[:, :, k]).sum() / total if total != 0 else 0.0
        return longhand_combine(A, weights), weights
    if name == "hirescam":
        raw = np.zeros((h, w))
        for k in range(channels):
            raw += G[:, :, k] * A[:, :, k]
        return raw, None
    if name == "layercam":
        raw = np.zeros((h, w))
        for k in range(channels):
            raw += np.maximum(G[:, :, k], 0) * A[:, :, k]
        return raw, None
    if name == "eigencam":
        flat = A.reshape(h * w, channels)
        centred = flat - flat.mean(axis=0)
        direction = np.linalg.svd(centred)[2][0]
        return (flat @ direction).reshape(h, w), direction
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"])
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_method_matches_its_longhand_formula(cap, name, layer):
    result = cap.cam(layer, method=name)
    expected_raw, expected_weights = reference(name, cap.activations(layer), cap.gradients(layer))
    if name == "eigencam":  # an eigenvector's sign is arbitrary: compare up to sign
        sign = np.sign(np.dot(result.weights, expected_weights))
        expected_raw, expected_weights = sign * expected_raw, sign * expected_weights
    scale = max(np.abs(expected_raw).max(), 1e-12)
    np.testing.assert_allclose(result.raw / scale, expected_raw / scale, atol=1e-4)
    if expected_weights is not None:
        np.testing.assert_allclose(
            result.weights, expected_weights, atol=1e-4 * max(np.abs(expected_weights).max(), 1e-12)
        )
    assert result.method == name and result.heatmap.shape == (24, 32)
    assert (
        np.isfinite(result.heatmap).all() and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
    )


def test_eigencam_sign_follows_the_activation_mass(cap):
    result = cap.cam("conv2", method="eigencam")
    mean_activation = cap.activations("conv2").mean(axis=-1)
    assert np.corrcoef(result.raw.ravel(), mean_activation.ravel())[0, 1] > 0


@pytest.mark.parametrize("max_channels", [4, 10])
def test_scorecam_matches_masked_forward_passes(model, cap, max_channels):
    layer = "conv2"
    cap = gw.capture(model, cap.image, class_index=1, score="probability")  # as in the paper
    A = cap.activations(layer)
    variance = A.reshape(-1, A.shape[-1]).var(axis=0)
    kept = sorted(np.argsort(-variance)[:max_channels])
    image = cap.image.astype(np.float32)  # no preprocess on this model
    scores = []
    for k in kept:
        upsampled = cv2.resize(A[:, :, k], (32, 24))
        low, high = upsampled.min(), upsampled.max()
        mask = (upsampled - low) / (high - low) if high > low else np.zeros_like(upsampled)
        masked = tf.constant((image * mask[:, :, None])[None])
        scores.append(float(tf.nn.softmax(model(masked))[0, 1]))  # the class probability
    scores = np.array(scores)
    softmax = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    weights = np.zeros(A.shape[-1])
    weights[kept] = softmax
    result = cap.cam(layer, method="scorecam", max_channels=max_channels, batch_size=3)
    np.testing.assert_allclose(result.weights, weights, atol=2e-4)
    np.testing.assert_allclose(result.raw, longhand_combine(A, weights), rtol=1e-3, atol=1e-4)


def test_scorecam_batches_forward_passes_without_retracing(model, cap):
    from gradcam_widget.engine import engine_for

    engine = engine_for(model)
    cap.cam("conv2", method="scorecam", max_channels=7, batch_size=3)
    traces, seen = engine.traces, engine.forward_images
    cap.cam("conv1", method="scorecam", max_channels=5, batch_size=2)
    assert engine.forward_images == seen + 5
    assert engine.traces == traces


def test_gradcam_is_the_default_and_reads_pooling_and_channels(cap):
    assert methods.names()[0] == "gradcam"
    assert methods.get("gradcam").options == {"pooling", "channels"}
    assert methods.get("layercam").options == frozenset()
    np.testing.assert_array_equal(
        cap.cam("conv2").heatmap, cap.cam("conv2", method="gradcam").heatmap
    )


def test_fusion_combines_normalised_layer_maps(cap):
    assert cap.fusion_layers() == ("conv1", "conv2")
    fused = cap.fuse()
    per_layer = [cap.cam(name, method="layercam").heatmap for name in ("conv1", "conv2")]
    np.testing.assert_allclose(
        fused.heatmap, gw.core.normalize(np.max(per_layer, axis=0)), atol=1e-6
    )
    assert fused.raw.shape == (24, 32)  # the finest grid
    assert fused.layer == "conv1+conv2"
    mean = cap.fuse(["conv2", "conv1"], method="gradcam", combine="mean")
    assert mean.layer == "conv2+conv1"


def test_bad_method_arguments_are_clear(cap):
    with pytest.raises(ValueError, match="'gradcam', 'gradcam\\+\\+'"):
        cap.cam(method="gradcam+++")
    with pytest.raises(ValueError, match="max_channels"):
        cap.cam(method="scorecam", max_channels=0)
    with pytest.raises(ValueError, match="does not take"):
        cap.cam(method="layercam", max_channels=3)
    with pytest.raises(ValueError, match="'max', 'mean'"):
        cap.fuse(combine="sum")


def test_methods_never_return_nan_on_dead_maps():
    zeros = np.zeros((5, 6, 4), np.float32)

    class Dead:
        input_size = (10, 12)

        def activations(self, layer):
            return zeros

        def gradients(self, layer):
            return zeros

    for name in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"):
        raw, weights = methods.get(name).compute(Dead(), "x")
        heatmap = gw.core.to_heatmap(raw, Dead.input_size)
        assert np.isfinite(raw).all() and np.isfinite(weights).all()
        assert not heatmap.any()


@pytest.mark.skipif(not bfloat16_supported(), reason="this CPU has neither AMX nor AVX512-BF16")
def test_scorecam_bfloat16_agrees_with_float32_which_stays_exact(shapes):
    scene = gw.data.sample_scene("two_shapes")
    cap = gw.capture(shapes, scene.image, class_index=scene.labels[0])
    exact = cap.cam(method="scorecam", max_channels=32)
    fast = cap.cam(method="scorecam", max_channels=32, precision="bfloat16")
    again = cap.cam(method="scorecam", max_channels=32)
    np.testing.assert_array_equal(again.weights, exact.weights)  # the switch is undone
    assert not np.array_equal(fast.weights, exact.weights)  # bfloat16 really ran
    assert np.corrcoef(fast.heatmap.ravel(), exact.heatmap.ravel())[0, 1] > 0.99
    assert np.array_equal(np.flatnonzero(fast.weights), np.flatnonzero(exact.weights))
    assert (
        tf.config.optimizer.get_experimental_options().get(
            "auto_mixed_precision_onednn_bfloat16", False
        )
        is False
    )


def test_scorecam_precision_is_checked(cap):
    with pytest.raises(ValueError, match="'float32', 'bfloat16'"):
        cap.cam("conv2", method="scorecam", precision="float16")


@pytest.mark.skipif(not bfloat16_supported(), reason="this CPU has neither AMX nor AVX512-BF16")
def test_float32_passes_in_other_threads_stay_exact_during_bfloat16(model, shapes):
    """The bfloat16 rewrite is a global option: a float32 pass of *another* model, in another
    thread, made while Score-CAM runs in bfloat16, must wait for it and stay exact."""
    import threading
    import time

    from gradcam_widget.captures.capturing import class_scores

    scene = gw.data.sample_scene("two_shapes")
    images = np.random.default_rng(5).uniform(0, 255, (4, 24, 32, 3)).astype(np.float32)
    reference = class_scores(model, images, 1, score="logit")
    seen = []

    def bfloat16_on():
        options = tf.config.optimizer.get_experimental_options()
        return options.get("auto_mixed_precision_onednn_bfloat16", False)

    def worker():  # its first TensorFlow call is made while bfloat16 is switched on
        deadline = time.monotonic() + 60
        while not bfloat16_on() and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert bfloat16_on(), "the bfloat16 run never switched the option on"
        for _ in range(3):
            seen.append(class_scores(model, images, 1, score="logit"))

    cap = gw.capture(shapes, scene.image, class_index=1)
    thread = threading.Thread(target=worker)
    thread.start()
    cap.cam(method="scorecam", max_channels=128, batch_size=8, precision="bfloat16")
    thread.join()
    assert len(seen) == 3
    for scores in seen:
        np.testing.assert_array_equal(scores, reference)


def test_precision_blocks_restore_the_option_and_refuse_mixing(monkeypatch):

    from gradcam_widget.engine import precision as capture_module

    def option():
        return tf.config.optimizer.get_experimental_options().get(
            "auto_mixed_precision_onednn_bfloat16", False
        )

    with pytest.raises(KeyError), capture_module.precision_scope("bfloat16"):
        assert option() is True
        raise KeyError("boom")
    assert option() is False
    with (
        pytest.raises(RuntimeError, match="float32 pass cannot run inside a bfloat16"),
        capture_module.precision_scope("bfloat16"),
        capture_module.precision_scope("float32"),
    ):
        pass
    assert option() is False
    with capture_module.precision_scope("bfloat16"), capture_module.precision_scope("bfloat16"):
        assert option() is True  # nesting the same precision is fine
    assert option() is False
    monkeypatch.setattr(capture_module, "bfloat16_supported", lambda: False)
    with pytest.raises(ValueError, match="AMX or AVX512-BF16"):
        capture_module.check_precision("bfloat16")


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
