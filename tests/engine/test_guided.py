"""Guided Backpropagation, the vanilla gradient, SmoothGrad and Guided Grad-CAM, against an
independent reference written here with ``tf.custom_gradient``."""

import threading

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.engine._tf import keras, tf

SIZE = 24


@tf.custom_gradient
def reference_guided_relu(x):
    """The seed's override, written independently: ``grad * (grad > 0) * (x > 0)``."""

    def backward(dy):
        return dy * tf.cast(dy > 0, dy.dtype) * tf.cast(x > 0, dy.dtype)

    return tf.nn.relu(x), backward


def reference_guided_relu6(x):
    @tf.custom_gradient
    def relu6(x):
        def backward(dy):
            gate = tf.cast(dy > 0, dy.dtype) * tf.cast(x > 0, dy.dtype) * tf.cast(x < 6, dy.dtype)
            return dy * gate

        return tf.clip_by_value(x, 0.0, 6.0), backward

    return relu6(x)


def _conv(x, layer):
    kernel, bias = layer.kernel, layer.bias
    return tf.nn.conv2d(x, kernel, 1, layer.padding.upper()) + bias


def _dense(x, layer):
    return tf.matmul(x, layer.kernel) + layer.bias


def _image(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)


def _reference(forward, image, class_index):
    inputs = tf.constant(image[None])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        score = forward(inputs)[0, class_index]
    return tape.gradient(score, inputs)[0].numpy()


def _plain():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu", name="d1")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))

    def forward(x, relu=reference_guided_relu):
        get = model.get_layer
        x = relu(_conv(x / 255, get("c1")))
        x = relu(_conv(x, get("c2")))
        x = relu(_dense(tf.reduce_mean(x, axis=(1, 2)), get("d1")))
        return _dense(x, get("out"))  # the logit: the softmax bypassed

    return model, forward


def _plain_gradient(forward, inputs, class_index):
    """d logit / d inputs through plain ReLUs, summed over the batch."""
    inputs = tf.constant(inputs)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        total = tf.reduce_sum(forward(inputs, relu=tf.nn.relu)[:, class_index])
    return tape.gradient(total, inputs).numpy()


def _standalone():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="c1")(keras.layers.Rescaling(1 / 64)(inputs))
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.Activation("relu", name="a2")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c3")(x)
    x = keras.layers.ReLU(max_value=6.0, name="r3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))

    def forward(x):
        get = model.get_layer
        x = reference_guided_relu(_conv(x / 64, get("c1")))
        x = reference_guided_relu(_conv(x, get("c2")))
        x = reference_guided_relu6(_conv(x, get("c3")))
        return _dense(tf.reduce_mean(x, axis=(1, 2)), get("out"))

    return model, forward


def _nested():
    keras.utils.set_random_seed(2)
    base_inputs = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b1")(base_inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu6", name="b2")(y)
    base = keras.Model(base_inputs, y, name="base")
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1 / 255),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )

    def forward(x):
        x = reference_guided_relu(_conv(x / 255, base.get_layer("b1")))
        x = reference_guided_relu6(_conv(x, base.get_layer("b2")))
        return _dense(tf.reduce_mean(x, axis=(1, 2)), model.get_layer("out"))

    return model, forward


@pytest.mark.parametrize(
    "build", [_plain, _standalone, _nested], ids=["plain", "standalone", "nested"]
)
def test_guided_backprop_matches_an_independent_reference(build):
    model, forward = build()
    for seed, class_index in ((0, 0), (1, 2)):
        image = _image(seed)
        expected = _reference(forward, image, class_index)
        got = gw.saliency(model, image, kind="guided", class_index=class_index)
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max(), rtol=1e-5)


def test_the_vanilla_gradient_is_the_plain_input_gradient():
    model, forward = _plain()
    image = _image(3)
    expected = _plain_gradient(forward, image[None], 1)[0]
    got = gw.saliency(model, image, kind="vanilla", class_index=1)
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max(), rtol=1e-5)


def test_guided_passes_leave_the_model_as_it_was():
    model, forward = _plain()
    weights = [w.copy() for w in model.get_weights()]
    image = _image(4)
    before = model(image[None]).numpy()
    cap = gw.capture(model, image)
    cap.saliency("guided")
    cap.saliency("guided", smooth=4)
    cap.guided_grad_cam()
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    np.testing.assert_array_equal(model(image[None]).numpy(), before)
    # and the plain gradient after a guided pass is plain again (nothing leaked)
    plain = _plain_gradient(forward, image[None], 0)[0]
    np.testing.assert_allclose(gw.saliency(model, image, kind="vanilla", class_index=0), plain,
                               atol=1e-5 * np.abs(plain).max())  # fmt: skip
    assert not np.allclose(plain, gw.saliency(model, image, class_index=0))


def test_another_thread_sees_plain_gradients_during_guided_passes():
    """While a guided pass is being traced (its ReLUs replaced), another thread computes plain
    gradients through the same model: each trace waits inside the model's call, guided
    replacements installed, until the other thread has computed a whole gradient that
    started after the trace reached that point -- so the overlap is proven, not hoped for."""
    from gradcam_widget.engine import engine_for

    model, _ = _plain()
    image = tf.constant(_image(5)[None])
    c1, c2 = model.get_layer("c1"), model.get_layer("c2")
    plain_relu, c2_call = c1.activation, c2.call
    tracer = threading.get_ident()
    turn = threading.Condition()
    counts = {"waiting": 0, "proved": 0, "guided_traces": 0}

    def plain_gradient():  # through the model itself, as another caller would
        with tf.GradientTape() as tape:
            tape.watch(image)
            score = model(image)[0, 2]
        return tape.gradient(score, image).numpy()

    def pausing_call(*args, **kwargs):
        # in the tracing thread, inside a guided trace (c1's ReLU replaced): wait for a
        # gradient of the other thread computed entirely while this trace is paused here
        if (
            threading.get_ident() == tracer
            and not tf.executing_eagerly()
            and c1.activation is not plain_relu
        ):
            with turn:
                counts["guided_traces"] += 1
                counts["waiting"] += 1
                generation = counts["waiting"]
                turn.notify_all()
                assert turn.wait_for(lambda: counts["proved"] >= generation, timeout=60)
        return c2_call(*args, **kwargs)

    expected = plain_gradient()
    c2.call = pausing_call  # the layer's own call, wrapped on the instance as tapped does
    mismatches, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            with turn:
                generation = counts["waiting"]
                paused = generation > counts["proved"]  # a trace waits at c2 right now
            if not np.allclose(plain_gradient(), expected, rtol=1e-4, atol=1e-12):
                mismatches.append(1)
            if paused:
                with turn:
                    counts["proved"] = max(counts["proved"], generation)
                    turn.notify_all()

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        cap = gw.capture(model, _image(10))
        for seed in range(10):
            engine_for(model).set_token_grid(None, None, None)  # drop the traces: trace again
            cap._saliencies.clear()
            cap.saliency("guided", smooth=seed % 2)
    finally:
        stop.set()
        worker.join()
        del c2.call
    assert counts["guided_traces"] >= 10  # every pass traced, guided, and paused
    assert counts["proved"] == counts["waiting"]  # each pause saw a whole plain gradient
    assert not mismatches


def test_smoothgrad_averages_noisy_copies_in_one_pass():
    from gradcam_widget.engine import engine_for

    model, forward = _plain()
    cap = gw.capture(model, _image(6), class_index=1)
    passes = engine_for(model).passes
    smooth = cap.saliency("vanilla", smooth=6, sigma=0.1, seed=3)
    assert engine_for(model).passes == passes + 1  # n copies, one batched pass
    assert cap.saliency("vanilla", smooth=6, sigma=0.1, seed=3) is smooth  # cached
    assert engine_for(model).passes == passes + 1
    # by hand: the same noise, all copies differentiated together
    inputs = _image(6)[None]
    spread = float(inputs.max() - inputs.min())
    noise = np.random.default_rng(3).normal(0.0, 0.1 * spread, (6, *inputs.shape[1:]))
    copies = (inputs + noise).astype(np.float32)
    expected = _plain_gradient(forward, copies, 1).mean(axis=0)
    np.testing.assert_allclose(smooth, expected, atol=1e-5 * np.abs(expected).max())


def test_guided_grad_cam_is_guided_backprop_times_the_heatmap():
    model, _ = _plain()
    cap = gw.capture(model, _image(7))
    result = cap.guided_grad_cam("c1", pooling="max", order="resize_first")
    heatmap = cap.cam("c1", pooling="max", order="resize_first").heatmap
    np.testing.assert_allclose(result, cap.saliency("guided") * heatmap[..., None], rtol=1e-6)
    assert gw.guided_grad_cam(model, _image(7), layer="c1").shape == (SIZE, SIZE, 3)


def test_guided_backprop_is_for_relu_networks_only():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="gelu", name="g")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ValueError, match="defined for ReLU networks; layer g uses 'gelu'"):
        gw.saliency(model, _image())
    assert gw.saliency(model, _image(), kind="vanilla").shape == (SIZE, SIZE, 3)
    leaky = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.LeakyReLU(name="leaky")(keras.layers.Conv2D(4, 3)(inputs)))))  # fmt: skip
    with pytest.raises(ValueError, match="layer leaky is a LeakyReLU"):
        gw.saliency(leaky, _image())


def test_bad_saliency_options_are_one_clear_error():
    model, _ = _plain()
    cap = gw.capture(model, _image())
    with pytest.raises(ValueError, match="kind must be one of 'guided', 'vanilla'"):
        cap.saliency("deconvnet")
    with pytest.raises(ValueError, match="smooth must be a non-negative int"):
        cap.saliency(smooth=-1)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        cap.saliency(smooth=2, sigma=0)


def test_saliency_images_render_as_the_seed_did():
    gradients = np.random.default_rng(0).normal(0, 3.0, (8, 8, 3)).astype(np.float32)
    seed = gw.render.saliency_image(gradients).astype(np.float64) / 255
    centred = (gradients - gradients.mean()) / gradients.std() * 0.1 + 0.5
    np.testing.assert_allclose(seed, np.clip(centred, 0, 1), atol=1 / 255)
    grey = gw.render.saliency_image(gradients, "abs")
    assert grey.shape == (8, 8, 3) and (grey[..., 0] == grey[..., 1]).all() and grey.max() == 255
    assert (gw.render.saliency_image(np.zeros((4, 4, 3))) == 128).all()
    with pytest.raises(ValueError, match="NaN"):
        gw.render.saliency_image(np.full((4, 4, 3), np.nan))


def test_saliency_in_batches_equals_one_image_at_a_time():
    model, _ = _plain()
    images = np.stack([_image(seed) for seed in range(5)])
    ex = gw.explain(model, images, targets=[0, 1, 2, 0, 1], layer="c2", batch_size=2,
                    saliency="guided")  # fmt: skip
    assert ex.saliency.shape == (5, SIZE, SIZE, 3)
    for index in (0, 4):
        single = gw.capture(model, images[index], class_index=[0, 1, 2, 0, 1][index])
        expected = single.saliency("guided")
        np.testing.assert_allclose(ex.saliency[index], expected, atol=1e-6 * np.abs(expected).max())
        np.testing.assert_allclose(
            ex.saliency[index] * ex.heatmaps[index][..., None],
            single.guided_grad_cam("c2"),
            atol=1e-6 * np.abs(expected).max(),
        )
    assert gw.explain(model, images, targets=1).saliency is None
    with pytest.raises(ValueError, match="saliency must be one of"):
        gw.explain(model, images, saliency="deconv")


def test_the_saliency_cache_of_a_capture_is_bounded():
    from gradcam_widget.captures.capturing import SALIENCY_CACHE

    model, _ = _plain()
    cap = gw.capture(model, _image(8))
    before = cap.nbytes
    for seed in range(SALIENCY_CACHE + 5):
        cap.saliency("vanilla", smooth=2, seed=seed)
    assert len(cap._saliencies) == SALIENCY_CACHE
    assert cap.nbytes == before + SALIENCY_CACHE * SIZE * SIZE * 3 * 4
