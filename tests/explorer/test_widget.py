"""CamExplorer driven from code: panels, cache discipline, errors, programmatic API."""

import html

import cv2
import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.data import render
from gradcam_widget.engine import engine_for
from gradcam_widget.engine._tf import keras

CLASS_NAMES = ["ant", "bee", "cat", "dog", "eel"]


@pytest.fixture(scope="module")
def model():
    """A tiny CNN with a max-pool + flatten head, so gradients vary over space (with a GAP
    head right after the last conv, mean and max pooling of the gradients coincide)."""
    keras.utils.set_random_seed(21)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture
def image():
    return np.random.default_rng(22).integers(0, 256, (32, 32, 3)).astype(np.uint8)


@pytest.fixture
def explorer(model, image):
    return gw.CamExplorer(model, image, class_names=CLASS_NAMES)


def png_shape(data: bytes):
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None, "not a PNG"
    return decoded.shape


def snapshot(ex):
    return {title: ex.panel_png(title) for title in render.PANEL_TITLES}


def changed_panels(before, after):
    return {title for title in render.PANEL_TITLES if before[title] != after[title]}


def test_first_view_shows_four_panels_readout_and_status(explorer):
    for title in render.PANEL_TITLES:
        assert png_shape(explorer.panel_png(title))[2] == 3
    assert png_shape(explorer.panel_png("input"))[:2] == (32, 32)
    assert explorer.layer == "conv2" and explorer.result.layer == "conv2"
    readout = explorer.readout.value
    assert "activations (1, 16, 16, 12)" in readout and "weights (12,)" in readout
    assert "raw (16, 16)" in readout and "heatmap (32, 32)" in readout
    assert "top channel #" in readout and "model pass" in readout and "just now" in readout
    assert "ready" in explorer.status.value and explorer.error is None
    class_labels = [label for label, _ in explorer.controls["class"].options]
    assert class_labels[0].startswith("#1 ") and len(class_labels) == 5
    assert any(name in label for label in class_labels for name in CLASS_NAMES)
    layer_labels = dict((v, k) for k, v in explorer.controls["layer"].options)
    assert layer_labels["conv2"] == "conv2 · 16×16×12"


def test_result_is_the_cam_of_the_current_settings(explorer, model, image):
    explorer.layer, explorer.pooling, explorer.channels = "conv1", "max", "top"
    explorer.order = "resize_first"
    expected = gw.capture(model, image, class_index=explorer.class_index).cam(
        "conv1", pooling="max", channels="top", order="resize_first"
    )
    np.testing.assert_allclose(explorer.result.heatmap, expected.heatmap, atol=1e-6)
    np.testing.assert_allclose(explorer.result.raw, expected.raw, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "value"),
    [("pooling", "max"), ("channels", "top"), ("order", "resize_first"), ("layer", "conv1")],
)
def test_cam_settings_redraw_cam_panels_without_a_model_pass(explorer, name, value):
    explorer.capture.gradients("conv1")  # every layer held (the first switch's pass: below)
    before, result_before, passes = snapshot(explorer), explorer.result, explorer.model_passes
    setattr(explorer, name, value)
    assert getattr(explorer, name) == value
    assert explorer.model_passes == passes
    after = snapshot(explorer)
    assert "input" not in changed_panels(before, after)
    heat_changed = not np.array_equal(result_before.heatmap, explorer.result.heatmap)
    raw_changed = not np.array_equal(result_before.raw, explorer.result.raw)
    assert ("heatmap" in changed_panels(before, after)) == heat_changed
    assert ("overlay" in changed_panels(before, after)) == heat_changed
    assert ("raw map" in changed_panels(before, after)) == raw_changed
    if name in ("pooling", "layer", "channels"):  # these do change the map on this model
        assert heat_changed and raw_changed


def test_style_settings_touch_only_the_coloured_panels(explorer):
    before, result, passes = snapshot(explorer), explorer.result, explorer.model_passes
    explorer.colormap = "viridis"
    mid = snapshot(explorer)
    assert changed_panels(before, mid) == {"heatmap", "overlay"}
    explorer.opacity = 0.9
    assert changed_panels(mid, snapshot(explorer)) == {"overlay"}
    assert explorer.result is result and explorer.model_passes == passes


def test_setting_the_same_value_changes_nothing(explorer):
    before = snapshot(explorer)
    explorer.pooling = explorer.pooling
    explorer.layer = explorer.layer
    assert changed_panels(before, snapshot(explorer)) == set()


def test_raw_panel_is_drawn_as_cells_following_the_layer_grid(explorer):
    for layer, grid in (("conv2", 16), ("conv1", 32), ("pool2", 8)):
        explorer.layer = layer
        cell = render.cell_size((grid, grid))
        assert png_shape(explorer.panel_png("raw map"))[:2] == (grid * cell, grid * cell)
        assert f"raw map {grid}×{grid}" in explorer.titles["raw map"].value
    panel = cv2.imdecode(np.frombuffer(explorer.panel_png("raw map"), np.uint8), 1)
    cell = render.cell_size((8, 8))
    block = panel[:cell, :cell]
    assert (block == block[0, 0]).all()  # one flat colour per feature-map position


def test_class_and_score_changes_run_at_most_one_pass_and_are_cached(model, image):
    ex = gw.CamExplorer(model, image, class_names=CLASS_NAMES, cache_size=3)
    first_class = ex.class_index
    other = [index for index in range(len(CLASS_NAMES)) if index != first_class]
    passes = ex.model_passes
    ex.class_index = other[0]
    assert ex.model_passes == passes + 1 and ex.result.class_index == other[0]
    assert ex.controls["class"].value == other[0]
    assert set(ex.capture.held_layers) == {"conv2"}  # the class pass stopped at the shown layer
    ex.layer, ex.pooling = "conv1", "max"  # first use of another layer: one pass fills all
    assert ex.model_passes == passes + 2
    ex.layer = "pool1"
    assert ex.model_passes == passes + 2
    ex.class_index = first_class  # cached, but the first view held conv2 only: pool1 fills in
    assert ex.model_passes == passes + 3
    ex.score = "probability"
    assert ex.model_passes == passes + 4
    assert ex.capture.scores.sum() == pytest.approx(1.0, abs=1e-4)
    ex.score = "logit"  # cached
    assert ex.model_passes == passes + 4
    # cache is bounded: 3 captures; (first, prob) and (other0, logit) fall out in LRU order
    ex.class_index = other[1]
    ex.class_index = other[2]
    assert ex.model_passes == passes + 6 and len(ex.session.captures) == 3
    ex.class_index = other[0]  # evicted -> one pass again
    assert ex.model_passes == passes + 7


def test_class_dropdown_and_index_box_stay_in_sync(explorer):
    lowest = int(np.argmin(explorer.capture.scores))
    explorer.controls["class_index"].value = lowest  # as the browser would
    assert explorer.controls["class"].value == lowest and explorer.result.class_index == lowest
    top = explorer.controls["class"].options[0][1]
    explorer.controls["class"].value = top
    assert explorer.class_index == top and explorer.result.class_index == top


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("pooling", "avg", "'mean', 'max'"),
        ("channels", "all", "'weighted', 'top'"),
        ("order", "relu", "'relu_first', 'resize_first'"),
        ("score", "softmax", "'logit', 'probability'"),
        ("layer", "block5_conv3", "candidate layers are: conv1, pool1, conv2, pool2"),
        ("class_index", 99, "0..4"),
        ("colormap", "rainbowz", "'jet'"),
        ("opacity", 1.5, "[0, 1]"),
    ],
)
def test_bad_settings_raise_and_land_in_the_status_line(explorer, name, value, message):
    before, result = snapshot(explorer), explorer.result
    with pytest.raises(ValueError) as error:
        setattr(explorer, name, value)
    assert message in str(error.value)
    assert message in explorer.status.value.replace("&#x27;", "'")
    assert explorer.result is result and snapshot(explorer) == before
    explorer.pooling = "max"  # still usable
    assert explorer.result.pooling == "max" and "ready" in explorer.status.value


def test_a_failing_model_call_keeps_the_view_and_every_control(explorer, monkeypatch):
    engine = engine_for(explorer.session.model)
    before, result, old_class = snapshot(explorer), explorer.result, explorer.class_index
    target = next(i for i in range(len(CLASS_NAMES)) if i != old_class)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(engine, "run", broken)
    explorer.controls["class_index"].value = target  # the browser path: must not raise
    assert "out of memory (simulated)" in explorer.status.value
    assert "previous view is kept" in explorer.status.value
    assert explorer.result is result and snapshot(explorer) == before
    assert explorer.class_index == old_class  # the control is back on what is shown
    assert explorer.controls["class"].value == old_class
    with pytest.raises(RuntimeError, match="simulated"):
        explorer.score = "probability"
    assert explorer.score == "logit"
    monkeypatch.undo()
    explorer.pooling = "max"  # every control keeps working
    explorer.class_index = target
    assert explorer.result.class_index == target and "ready" in explorer.status.value


def test_set_image_keeps_settings_and_redraws(explorer):
    explorer.layer, explorer.pooling = "conv1", "max"
    before = snapshot(explorer)
    explorer.set_image(np.random.default_rng(23).integers(0, 256, (32, 32)))  # grayscale
    assert explorer.layer == "conv1" and explorer.pooling == "max"
    assert changed_panels(before, snapshot(explorer)) == set(render.PANEL_TITLES)
    assert "just now" in explorer.readout.value
    kept = snapshot(explorer)
    with pytest.raises(ValueError, match="NaN"):
        explorer.set_image(np.full((32, 32, 3), np.nan))
    assert "NaN" in explorer.status.value and snapshot(explorer) == kept


def test_save_png_writes_the_titled_four_panel_figure(explorer, tmp_path):
    path = explorer.save_png(tmp_path / "view.png")
    height, width, _ = cv2.imread(str(path)).shape
    assert width > 3 * height  # four panels side by side


def test_constructor_rejects_bad_input_clearly(model, image):
    with pytest.raises(ValueError, match="expected an image"):
        gw.CamExplorer(model, np.zeros((32, 32, 7)))
    with pytest.raises(ValueError, match="candidate layers"):
        gw.CamExplorer(model, image, layer="nope")


def test_method_dropdown_disables_what_a_method_ignores(explorer):
    passes = explorer.model_passes
    controls = explorer.controls
    explorer.method = "layercam"
    assert explorer.result.method == "layercam"
    assert controls["pooling"].disabled and controls["channels"].disabled
    assert "does not apply" in controls["pooling"].tooltip
    assert not controls["class"].disabled
    explorer.method = "eigencam"
    assert controls["class"].disabled and "class-agnostic" in controls["class_index"].tooltip
    explorer.method = "gradcam"
    assert not controls["pooling"].disabled and not controls["class"].disabled
    assert "does not apply" not in controls["pooling"].tooltip
    assert explorer.model_passes == passes  # every one of these is numpy over the cache
    with pytest.raises(ValueError, match="'gradcam', 'gradcam\\+\\+'"):
        explorer.method = "guided"


def test_fused_layer_entry(explorer):
    values = [value for _, value in explorer.controls["layer"].options]
    assert values[-1] == "fused"
    explorer.method = "layercam"
    explorer.layer = "fused"
    assert explorer.result.layer == "conv1+conv2"
    assert explorer.result.raw.shape == (32, 32)
    assert "<b>conv1</b>" in explorer.readout.value and "<b>conv2</b>" in explorer.readout.value


def test_scorecam_runs_forward_passes_once_per_setting(explorer):
    engine = engine_for(explorer.session.model)
    passes, scored = explorer.model_passes, engine.forward_images
    explorer.method = "scorecam"
    assert engine.forward_images > scored and explorer.model_passes == passes
    scored = engine.forward_images
    explorer.opacity = 0.3
    explorer.layer = "conv1"
    explorer.layer = "conv2"  # back: the result is cached, no new forward passes for conv2
    after_conv1 = engine.forward_images
    explorer.layer = "conv1"
    assert engine.forward_images == after_conv1 > scored


def test_scorecam_says_it_is_working_then_ready(explorer):
    shown = []
    explorer.status.observe(lambda change: shown.append(change["new"]), "value")
    explorer.method = "scorecam"
    assert any("forward passes" in value for value in shown), shown
    assert "ready" in explorer.status.value


# --- reliability (issue 11) -------------------------------------------------------------


def test_a_closed_explorer_closes_every_child_and_is_freed(model, image):
    import gc
    import weakref

    ex = gw.CamExplorer(model, image)
    ex.class_index = (ex.class_index + 1) % len(CLASS_NAMES)
    descendants, stack = [], list(ex.children)
    while stack:
        child = stack.pop()
        descendants.append(child)
        stack.extend(getattr(child, "children", ()))
    assert len(descendants) > 20
    ref, cap_ref = weakref.ref(ex), weakref.ref(ex.capture)
    ex.close()
    assert all(child.comm is None for child in descendants) and ex.comm is None
    assert ex.cached_bytes == 0
    with pytest.raises(RuntimeError, match="closed"):
        ex.layer = "conv1"
    del ex, descendants, child, stack
    gc.collect()
    assert ref() is None and cap_ref() is None


def test_caches_are_bounded_in_bytes_and_results_leave_with_their_capture(model, image):
    ex = gw.CamExplorer(model, image)
    ex.layer = "conv1"  # fills in every layer
    every_layer = ex.capture.nbytes
    budget = 3 * 20_000
    ex = gw.CamExplorer(model, image, cache_bytes=budget, cache_size=100)
    assert every_layer > budget  # a capture holding every layer is over the budget alone
    for class_index in range(len(CLASS_NAMES)):
        ex.class_index = class_index
        ex.pooling = "max"
        ex.pooling = "mean"
        held = ex.session.captures.nbytes
        assert held <= max(budget, ex.capture.nbytes)
        assert ex.cached_bytes == held + ex.session.results.nbytes
    kept = set(ex.session.captures)
    assert 1 < len(kept) < len(CLASS_NAMES)  # class captures hold one layer: several fit
    assert {key[0] for key in ex.session.results} <= kept  # no result outlives its capture
    assert set(ex.capture.held_layers) == {ex.layer}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache_size": 0}, "cache_size must be a positive int; got 0"),
        ({"cache_size": 2.7}, "cache_size must be a positive int; got 2.7"),
        ({"cache_size": "x"}, "cache_size must be a positive int; got 'x'"),
        ({"cache_size": None}, "cache_size must be a positive int; got None"),
        ({"cache_bytes": -1}, "cache_bytes must be a non-negative int; got -1"),
        ({"class_names": 5}, "class_names must be a sequence of class names"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names but the model has 5 classes"),
    ],
)
def test_constructor_arguments_are_checked_by_name(model, image, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gw.CamExplorer(model, image, **kwargs)


def test_class_index_none_means_the_top_class(explorer):
    top = explorer.class_index
    explorer.class_index = (top + 1) % len(CLASS_NAMES)
    explorer.class_index = None
    assert explorer.class_index == top and explorer.result.class_index == top


def test_layer_labels_follow_the_grid_of_a_new_image_size():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    rng = np.random.default_rng(1)
    ex = gw.CamExplorer(model, rng.integers(0, 256, (40, 24, 3)).astype(np.uint8))
    assert "c2 · 20×12×6" in dict(ex.controls["layer"].options)
    ex.set_image(rng.integers(0, 256, (64, 80, 3)).astype(np.uint8))
    labels = dict(ex.controls["layer"].options)
    assert "c2 · 32×40×6" in labels and "c2 · 20×12×6" not in labels
    assert ex.result.raw.shape == (32, 40) and ex.result.heatmap.shape == (64, 80)


def test_score_warnings_reach_the_readout_and_the_status_line(image, lambda_softmax_model):
    with pytest.warns(UserWarning, match="could not be bypassed"):
        ex = gw.CamExplorer(lambda_softmax_model, image)
    assert "could not be bypassed" in ex.readout.value
    assert "could not be bypassed" in ex.status.value and "ready" in ex.status.value


def test_a_float_image_in_0_1_shows_the_picture_the_user_sees(model, image):
    with pytest.warns(UserWarning, match="0..1"):
        ex = gw.CamExplorer(model, image / 255.0)
    shown = cv2.imdecode(np.frombuffer(ex.panel_png("input"), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(shown[..., ::-1], image)


def test_a_refused_explorer_leaves_no_widget_and_no_capture(model, image):
    import gc
    import weakref

    from ipywidgets.widgets.widget import _instances

    def alive():
        gc.collect()
        return sum(isinstance(obj, gw.CamExplorer) for obj in gc.get_objects())

    gw.CamExplorer(model, image).close()
    registered, explorers = len(_instances), alive()
    for kwargs in ({"class_names": ["a", "b"]}, {"layer": "nope"}, {"class_index": 7}):
        with pytest.raises(ValueError):
            gw.CamExplorer(model, image, **kwargs)
    assert alive() == explorers and len(_instances) == registered
    ex = gw.CamExplorer(model, image)
    ref = weakref.ref(model)
    ex.close()
    assert ex.session.model is None and ref() is model  # the closed explorer no longer holds it
    with pytest.raises(RuntimeError, match="closed"):
        ex.save_png("x.png")


# --- issue 12: a first view as cheap as one layer, targets, the settings table -----------


def sequential_cnn():
    keras.utils.set_random_seed(31)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1"),
            keras.layers.MaxPooling2D(name="p1"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, activation="softmax", name="head"),
        ]
    )


def two_headed_cnn():
    """Features -> a 3-class softmax ``cls`` and a one-value ``box`` (a regression)."""
    keras.utils.set_random_seed(32)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    classes = keras.layers.Dense(3, activation="softmax", name="cls")(features)
    return keras.Model(inputs, [classes, keras.layers.Dense(1, name="box")(features)])


def regression_cnn():
    keras.utils.set_random_seed(33)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Flatten()(x)  # gradients vary over space: mean and max pooling differ
    return keras.Model(inputs, keras.layers.Dense(1, name="value")(x))


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_first_view_runs_one_pass_down_to_the_shown_layer_and_the_first_switch_one_more(
    kind, model, image
):
    net = model if kind == "functional" else sequential_cnn()
    passes = engine_for(net).passes
    ex = gw.CamExplorer(net, image)
    cap = ex.capture
    assert engine_for(net).passes == passes + 1
    assert cap.held_layers == (cap.default_layer,) == (ex.layer,)
    assert len(cap.layers) > 2  # every candidate is known, only one layer's tensors held
    assert "other layers: one more pass on first use" in ex.readout.value
    others = [layer for layer in cap.layers if layer != ex.layer]
    ex.layer = others[0]
    assert ex.model_passes == passes + 2 and ex.capture is cap
    assert cap.held_layers == cap.layers and len(cap.fill_ins) == 1
    assert "other layers: filled in by one more pass" in ex.readout.value
    assert "ms (just now)" in ex.readout.value
    for layer in [cap.default_layer, *others[1:], "fused"]:
        ex.layer = layer
    assert ex.model_passes == passes + 2 and ex.error is None
    assert "filled in by one more pass" in ex.readout.value and "(once, cached)" in ex.readout.value
    ex.layer = others[0]
    ex.set_image(np.random.default_rng(5).integers(0, 256, (32, 32, 3)).astype(np.uint8))
    assert ex.model_passes == passes + 3 and ex.capture.held_layers == (others[0],)


def test_the_layer_argument_is_the_only_layer_the_first_view_holds(model, image):
    passes = engine_for(model).passes
    ex = gw.CamExplorer(model, image, layer="conv1")
    assert engine_for(model).passes == passes + 1
    assert ex.layer == "conv1" and ex.result.layer == "conv1"
    assert ex.capture.held_layers == ("conv1",)
    fused = gw.CamExplorer(model, image, layer="fused")
    assert fused.layer == "fused" and fused.result.layer == "conv1+conv2"


def test_a_regression_target_hides_the_class_controls_and_disables_score(image):
    net = regression_cnn()
    ex = gw.CamExplorer(net, image, target=gw.targets.Regression())
    controls = ex.controls
    assert controls["class"].layout.display == "none"
    assert controls["class_index"].layout.display == "none"
    assert ex.class_index is None and ex.target.label == "value"
    assert "target <b>value</b> · value " in ex.readout.value
    assert f"{ex.capture.value:.4g}" in ex.readout.value and "class " not in ex.readout.value
    assert controls["score"].disabled and "no probability" in controls["score"].tooltip
    with pytest.raises(ValueError, match="score='probability' does not apply"):
        ex.score = "probability"
    with pytest.raises(ValueError, match="class_index does not apply"):
        ex.class_index = 0
    assert ex.score == "logit" and ex.pooling == "mean"
    mean_map = ex.result.raw
    ex.pooling = "max"
    assert ex.result.pooling == "max" and not np.array_equal(ex.result.raw, mean_map)
    expected = gw.capture(net, image, target=gw.targets.Regression()).cam(pooling="max")
    np.testing.assert_allclose(ex.result.raw, expected.raw, rtol=1e-5, atol=1e-6)
    ex.set_image(np.random.default_rng(6).integers(0, 256, (32, 32, 3)).astype(np.uint8))
    assert ex.capture.target.label == "value" and "target <b>value</b>" in ex.readout.value
    assert controls["class"].layout.display == "none" and ex.error is None


def test_an_output_target_explains_one_head_of_a_two_output_model(image):
    net = two_headed_cnn()
    with pytest.raises(ValueError, match=r"2 outputs \(cls \(None, 3\), box \(None, 1\)\)"):
        gw.CamExplorer(net, image)
    with pytest.raises(ValueError, match="not both"):
        gw.CamExplorer(net, image, class_index=1, target=gw.targets.Output("cls", 1))
    ex = gw.CamExplorer(net, image, target=gw.targets.Output("cls", 1))
    assert ex.class_index == 1 and ex.result.class_index == 1
    assert "target <b>cls[1]</b> · logit " in ex.readout.value
    assert ex.controls["class"].layout.display == "none"
    assert not ex.controls["score"].disabled  # a class of one output has a probability
    passes = ex.model_passes
    ex.score = "probability"
    assert ex.model_passes == passes + 1 and "cls[1]</b> · probability" in ex.readout.value
    ex.score = "logit"  # cached
    assert ex.model_passes == passes + 1
    ex.score = "probability"
    expected = gw.capture(net, image, score="probability", target=gw.targets.Output("cls", 1))
    np.testing.assert_allclose(ex.result.raw, expected.cam().raw, rtol=1e-5, atol=1e-6)


def good_and_bad_values(explorer) -> dict:
    """A value each setting accepts (other than the current one) and one it refuses."""
    lowest = int(np.argmin(explorer.capture.scores))
    return {
        "method": ("layercam", "guided", "'gradcam', 'gradcam++'"),
        "layer": ("conv1", "nope", "candidate layers are: conv1, pool1, conv2, pool2"),
        "pooling": ("max", "avg", "'mean', 'max'"),
        "channels": ("top", "all", "'weighted', 'top'"),
        "order": ("resize_first", "relu", "'relu_first', 'resize_first'"),
        "interpolation": ("nearest", "lanczos", "'bilinear', 'nearest', 'bicubic'"),
        "score": ("probability", "softmax", "'logit', 'probability'"),
        "class_index": (lowest, 99, "0..4"),
        "colormap": ("viridis", "rainbowz", "'jet'"),
        "opacity": (0.25, 1.5, "[0, 1]"),
        "guided": ("guided_gradcam", "sharp", "'off', 'guided_backprop'"),
        "randomize": (1, 4, "0..3 (the model's blocks, top first: head, conv2, conv1)"),
    }


def test_every_setting_of_the_table_round_trips_and_refuses_a_bad_value(explorer):
    from gradcam_widget.explorer import widget

    cases = good_and_bad_values(explorer)
    assert set(widget.SETTINGS) == set(cases)
    for name, (good, bad, choices) in cases.items():
        setting = widget.SETTINGS[name]
        assert getattr(gw.CamExplorer, name).setting is setting  # made from the table
        assert getattr(explorer, name) != good
        setattr(explorer, name, good)
        assert getattr(explorer, name) == good == explorer.controls[setting.control].value
        assert explorer.error is None and "ready" in explorer.status.value
        with pytest.raises(ValueError) as error:
            setattr(explorer, name, bad)
        assert choices in str(error.value)
        assert choices in html.unescape(explorer.status.value)
        assert getattr(explorer, name) == good  # the refused value changed nothing
    assert explorer.result.method == "layercam" and explorer.result.layer == "conv1"
    assert explorer.result.score == "probability" and explorer.result.order == "resize_first"


def test_panels_are_keyed_by_title_and_method_labels_come_from_the_methods(explorer):
    from gradcam_widget.cam import methods

    assert set(explorer.panels) == {*render.PANEL_TITLES, "guided"}
    with pytest.raises(ValueError, match="'input', 'raw map', 'heatmap', 'overlay'"):
        explorer.panel_png("colorbar")
    offered = dict((name, label) for label, name in explorer.controls["method"].options)
    assert offered == {name: methods.get(name).label for name in methods.names()}
    explorer.method = "hirescam"
    assert "HiResCAM · weights" in explorer.readout.value


# --- issue 13: the Guided panel and the Randomise slider -----------------------------------


def guided_png(gradients) -> bytes:
    return render.encode_png(render.saliency_image(gradients))


def test_the_guided_panel_costs_one_pass_when_switched_on_and_none_after(model, image):
    ex = gw.CamExplorer(model, image, class_names=CLASS_NAMES)
    guided_box, panel = ex.boxes["guided"], ex.panels["guided"]
    assert (
        "gw-panel-guided" in panel.get_state()["_dom_classes"]
        and "gw-guided" in ex.controls["guided"].get_state()["_dom_classes"]
    )
    assert ex.guided == "off" and panel.layout.display == guided_box.layout.display == "none"
    assert bytes(ex.panel_png("guided")) == b""
    ex.capture.gradients("conv1")  # every layer held: later layer changes need no fill-in
    passes = ex.model_passes
    ex.guided = "guided_backprop"
    assert ex.model_passes == passes + 1  # the guided pass to the input, once
    assert panel.layout.display is None and guided_box.layout.display is None
    cap = ex.capture
    assert ex.panel_png("guided") == guided_png(cap.saliency("guided"))
    assert "Guided Backprop 32×32" in ex.titles["guided"].value
    assert "input gradients (32, 32, 3)" in ex.readout.value and "(just now)" in ex.readout.value
    shown = ex.panel_png("guided")
    for name, value in (
        ("pooling", "max"),
        ("channels", "top"),
        ("order", "resize_first"),
        ("layer", "conv1"),
        ("colormap", "viridis"),
        ("method", "layercam"),
    ):
        setattr(ex, name, value)
        assert ex.error is None and ex.panel_png("guided") == shown  # guided backprop alone
    assert ex.model_passes == passes + 1
    ex.guided = "guided_gradcam"
    for name, value in (("layer", "conv2"), ("method", "gradcam"), ("pooling", "mean")):
        setattr(ex, name, value)
        expected = cap.saliency("guided") * ex.result.heatmap[..., None]
        assert ex.panel_png("guided") == guided_png(expected)  # follows the heatmap
    assert "× heatmap of conv2" in ex.titles["guided"].value
    assert ex.model_passes == passes + 1  # Guided Grad-CAM: numpy over the cached map
    ex.guided = "off"
    assert panel.layout.display == "none" and bytes(ex.panel_png("guided")) == b""
    ex.guided = "guided_backprop"  # on again: cached on the capture
    assert ex.model_passes == passes + 1 and panel.layout.display is None
    assert "(once, cached)" in ex.readout.value
    other = next(k for k in range(len(CLASS_NAMES)) if k != ex.class_index)
    ex.class_index = other  # the class's capture pass, then its guided pass
    assert ex.model_passes == passes + 3 and ex.capture is not cap
    assert ex.panel_png("guided") == guided_png(ex.capture.saliency("guided"))
    ex.guided = "smoothgrad"  # the noisy copies: one batched pass
    assert ex.model_passes == passes + 4
    assert ex.panel_png("guided") == guided_png(ex.capture.saliency("guided", smooth=16))
    ex.set_image(np.random.default_rng(7).integers(0, 256, (32, 32, 3)).astype(np.uint8))
    assert ex.model_passes == passes + 6  # a new image: its pass, then its guided pass


def test_the_guided_saliency_is_counted_in_the_byte_budget(model, image):
    one = gw.CamExplorer(model, image).capture.nbytes  # a capture of one layer
    ex = gw.CamExplorer(model, image, cache_bytes=2 * one + one // 4, cache_size=100)
    first = ex.class_index
    ex.class_index = (first + 1) % len(CLASS_NAMES)
    assert len(ex.session.captures) == 2  # two one-layer captures fit
    held = ex.cached_bytes
    ex.guided = "guided_backprop"
    gradients = ex.guided_map  # computed by the explorer, cached on its capture
    assert ex.capture.nbytes == one + gradients.nbytes
    assert list(ex.session.captures) == [ex.session.key(ex.capture)]  # the older one left
    assert ex.cached_bytes == ex.capture.nbytes + ex.session.results.nbytes < held + one


def test_guided_on_a_gelu_network_is_refused_and_the_explorer_keeps_working(image):
    keras.utils.set_random_seed(41)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="gelu", name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    net = keras.Model(inputs, keras.layers.Dense(3, name="head")(
        keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))))  # fmt: skip
    ex = gw.CamExplorer(net, image)
    before, passes = snapshot(ex), ex.model_passes
    with pytest.raises(ValueError, match="defined for ReLU networks; layer c1 uses 'gelu'"):
        ex.guided = "guided_backprop"
    assert "defined for ReLU networks" in ex.status.value
    assert ex.guided == "off" and ex.panels["guided"].layout.display == "none"
    ex.controls["guided"].value = "smoothgrad"  # the browser path: never raises
    status = html.unescape(ex.status.value)
    assert "guided backpropagation is defined for ReLU networks; layer c1 uses 'gelu'" in status
    assert "<br>" not in ex.status.value  # one line
    assert ex.guided == "off" and ex.controls["guided"].value == "off"
    assert ex.panels["guided"].layout.display == "none"
    assert snapshot(ex) == before and ex.model_passes == passes
    ex.pooling = "max"  # the rest keeps working
    assert ex.result.pooling == "max" and "ready" in ex.status.value and ex.error is None


def test_the_randomise_slider_shows_the_view_of_a_copy_and_restores_the_model(make_cnn, image):
    net = make_cnn(seed=12, classes=5, head="flatten")
    weights = [array.copy() for array in net.get_weights()]
    batch = image[None].astype(np.float32)
    outputs = net(batch).numpy()
    ex = gw.CamExplorer(net, image)
    slider = ex.controls["randomize"]
    assert "gw-randomize" in slider.get_state()["_dom_classes"] and (slider.min, slider.max) == (
        0,
        3,
    )
    ex.layer, ex.pooling = "conv1", "max"
    ex.guided = "guided_backprop"
    before, result, guided = snapshot(ex), ex.result, ex.panel_png("guided")
    shown_class, cap = ex.class_index, ex.capture
    ex.randomize = 1
    assert ex.error is None and ex.capture is not cap
    assert ex.session.blocks_of(ex.capture) == 1  # a copy, never the model
    assert ex.capture.class_index == shown_class and ex.result.layer == "conv1"
    assert (ex.result.pooling, ex.class_index, ex.layer) == ("max", shown_class, "conv1")
    assert "randomised</b>: the top 1 block (head)" in ex.readout.value
    assert not np.array_equal(ex.result.raw, result.raw)
    assert changed_panels(before, snapshot(ex)) == {"raw map", "heatmap", "overlay"}
    assert ex.panel_png("guided") != guided  # the guided map of the copy
    ex.randomize = 3
    assert "the top 3 blocks (head, conv2, conv1)" in ex.readout.value
    ex.pooling = "mean"
    ex.pooling = "max"
    ex.randomize = 0
    assert ex.error is None and "randomised" not in ex.readout.value
    assert snapshot(ex) == before and ex.panel_png("guided") == guided  # exactly
    np.testing.assert_array_equal(ex.result.raw, result.raw)
    assert len(ex.session.clones) == 0
    assert all(key.blocks == 0 for key in ex.session.captures)
    for kept, now in zip(weights, net.get_weights(), strict=True):
        assert kept.tobytes() == now.tobytes()  # bitwise
    assert net(batch).numpy().tobytes() == outputs.tobytes()


def test_randomised_copies_are_freed_at_zero_and_on_close(make_cnn, image):
    import gc
    import weakref

    net = make_cnn(seed=13, classes=5)
    ex = gw.CamExplorer(net, image)
    ex.randomize = 2
    ex.guided = "guided_gradcam"
    copy = weakref.ref(ex.session.randomized_copy(2).keras_model)
    ex.randomize = 0
    gc.collect()
    assert copy() is None
    ex.randomize = 1
    copy = weakref.ref(ex.session.randomized_copy(1).keras_model)
    assert ex.cached_bytes > ex.session.captures.nbytes + ex.session.results.nbytes
    ex.close()
    gc.collect()
    assert copy() is None and ex.cached_bytes == 0


def test_randomize_refuses_a_count_outside_the_blocks(explorer):
    before = snapshot(explorer)
    for bad in (4, -1, 1.0, True, "1"):
        with pytest.raises(ValueError, match=r"randomize must be an int in 0\.\.3"):
            explorer.randomize = bad
        assert explorer.randomize == 0 and snapshot(explorer) == before
    assert "head, conv2, conv1" in html.unescape(explorer.status.value)


def test_every_choice_of_the_options_table_is_a_control_with_its_labels(explorer):
    from gradcam_widget import options

    for row in options.on(options.WIDGET):
        control = explorer.controls[row.name]
        assert control.description == row.label
        if row.choices:
            assert [(value, label) for label, value in control.options] == list(row.choices)
            assert getattr(explorer, row.name) == control.value


def test_interpolation_is_a_control_and_changes_the_heatmap_only(explorer):
    before, result = snapshot(explorer), explorer.result
    assert explorer.interpolation == "bilinear"
    explorer.interpolation = "nearest"
    assert explorer.error is None and explorer.result.interpolation == "nearest"
    np.testing.assert_array_equal(explorer.result.raw, result.raw)  # the same layer map
    assert not np.array_equal(explorer.result.heatmap, result.heatmap)
    assert changed_panels(before, snapshot(explorer)) == {"heatmap", "overlay"}
    expected = explorer.capture.cam(explorer.layer, interpolation="nearest")
    np.testing.assert_array_equal(explorer.result.heatmap, expected.heatmap)
    explorer.controls["interpolation"].value = "bicubic"  # as the browser would
    assert explorer.result.interpolation == "bicubic" and explorer.error is None
    assert "gw-interpolation" in explorer.controls["interpolation"].get_state()["_dom_classes"]


def test_the_last_step_says_what_ran_for_this_explorer_only(model, image):
    ex = gw.CamExplorer(model, image)
    other = gw.CamExplorer(model, image)  # the same model: passes of its own
    assert ex.last_step.captured and "just now" in ex.readout.value
    ex.pooling = "max"
    assert not ex.last_step.captured and "once, cached" in ex.readout.value
    other.class_index = (other.class_index + 1) % len(CLASS_NAMES)  # a pass, not ex's
    ex.opacity = 0.3
    assert not ex.last_step.captured and "once, cached" in ex.readout.value
    ex.class_index = (ex.class_index + 1) % len(CLASS_NAMES)
    assert ex.last_step.captured and not ex.last_step.guided_pass
    ex.guided = "guided_backprop"
    assert ex.last_step.guided_pass and not ex.last_step.captured
    ex.close()
    other.close()
