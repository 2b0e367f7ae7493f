"""Model surgery: blocks of weighted layers, a clone re-initialised block by block (the same
values for a block whatever else is random), and the user's model never changed."""

import gc
import weakref

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.checks import randomize, sanity
from gradcam_widget.engine import ModelRef


def test_blocks_group_by_name_prefix_top_first(make_cnn, shapes):
    assert randomize.blocks(make_cnn()) == ("head", "conv2", "conv1")
    assert randomize.blocks(shapes) == ("logits", "block5", "block4", "block3", "block2", "block1")
    assert randomize.block_key("block_16_project") == "block_16"
    assert randomize.block_key("dense_1") == "dense_1"
    assert randomize.block_key("base/block5_conv3") == "base/block5"


def test_cascade_and_one_at_a_time_states(make_cnn, weights):
    model = make_cnn(seed=4)
    before = weights(model)
    with randomize.Randomizer(model, seed=1) as randomizer:
        clone = randomizer.model
        assert clone is not model and randomizer.blocks == ("head", "conv2", "conv1")
        assert before.match(clone)  # the clone starts with the model's weights
        randomizer.top(2)  # head and conv2 random, conv1 trained
        changed = {
            layer.name: not np.array_equal(
                layer.get_weights()[0], model.get_layer(layer.name).get_weights()[0]
            )  # fmt: skip
            for layer in clone.layers
            if layer.weights
        }
        assert changed == {"conv1": False, "conv2": True, "head": True}
        cascade_conv2 = clone.get_layer("conv2").get_weights()[0]
        randomizer.set([1])  # conv2 only: the same random values, head trained again
        np.testing.assert_array_equal(clone.get_layer("conv2").get_weights()[0], cascade_conv2)
        np.testing.assert_array_equal(
            clone.get_layer("head").get_weights()[0], model.get_layer("head").get_weights()[0]
        )
        assert before.match(model)
    assert before.match(model)


def test_randomized_context_leaves_the_model_and_frees_the_clone(make_cnn, weights, random_images):
    model = make_cnn(seed=5)
    before = weights(model)
    image = random_images(1)[0]
    with randomize.randomized(model, blocks=1) as clone:
        assert before.match(model)  # the user's model is never touched
        assert not np.array_equal(
            clone.get_layer("head").get_weights()[0], model.get_layer("head").get_weights()[0]
        )
        gw.capture(clone, image).cam()  # the clone gets an engine of its own
        ref = weakref.ref(clone)
        del clone
    gc.collect()
    assert ref() is None  # nothing (engine cache, traces, captures) keeps the clone alive
    assert before.match(model)
    with randomize.randomized(model, blocks=0) as same:
        assert same is model
    with pytest.raises(RuntimeError, match="inside"), randomize.randomized(model, blocks=3):
        raise RuntimeError("raised inside")
    assert before.match(model)
    with pytest.raises(ValueError, match="count"), randomize.randomized(model, blocks=4):
        pass


def test_randomized_copy_is_a_cascade_of_the_same_values(make_cnn, weights):
    model = make_cnn(seed=11)
    before = weights(model)
    one, names_one = randomize.randomized_copy(model, 1, seed=2)
    two, names_two = randomize.randomized_copy(model, 2, seed=2)
    assert names_one == ("head",) and names_two == ("head", "conv2")
    np.testing.assert_array_equal(
        one.get_layer("head").get_weights()[0], two.get_layer("head").get_weights()[0]
    )
    assert not np.array_equal(
        one.get_layer("head").get_weights()[0], model.get_layer("head").get_weights()[0]
    )
    np.testing.assert_array_equal(  # not re-initialised: still the model's values
        one.get_layer("conv2").get_weights()[0], model.get_layer("conv2").get_weights()[0]
    )
    assert before.match(model)


def test_randomized_copy_refuses_a_model_it_cannot_clone(subclassed, weights):
    before = weights(subclassed)
    with pytest.raises(ValueError, match="never changed"):
        randomize.randomized_copy(subclassed, 1)
    assert before.match(subclassed)


def test_a_randomised_entry_keeps_its_preprocess_and_names(shapes, make_cnn):
    with randomize.Randomizer(shapes) as randomizer:  # a dataclass entry: a copy of it
        assert randomizer.model.name == shapes.name and randomizer.model.model is not shapes.model
        assert randomizer.model.class_names == shapes.class_names
    model = make_cnn(seed=12)
    given = ModelRef(model, preprocess=np.negative, class_names=("a", "b", "c"), multi_label=True)
    with randomize.Randomizer(given) as randomizer:  # any other entry: a ModelRef
        copy = randomizer.model
        assert isinstance(copy, ModelRef) and copy.model is not model
        assert copy[1:] == (np.negative, ("a", "b", "c"), True)
    assert randomizer.model is None  # closed: the clone let go


def test_the_surgery_is_still_offered_by_sanity():
    for name in ("Randomizer", "blocks", "randomized", "randomized_copy"):
        assert getattr(sanity, name) is getattr(randomize, name)
