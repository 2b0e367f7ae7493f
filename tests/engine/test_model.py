"""What is read off a model: the argument split (ModelRef), input size, outputs, classes."""

import pytest

from gradcam_widget.engine._tf import keras
from gradcam_widget.engine.inputs import ModelCheckError
from gradcam_widget.engine.model import (
    ModelRef,
    model_input_size,
    model_outputs,
    num_classes,
    only_output,
    output_parts,
    unwrap,
)


def _model(outputs=1, channels_first=False):
    inputs = keras.Input((3, 16, 16) if channels_first else (16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    heads = [keras.layers.Dense(4, name=f"head{i}")(x) for i in range(outputs)]
    return keras.Model(inputs, heads if outputs > 1 else heads[0])


def test_unwrap_gives_a_model_ref_that_still_unpacks_as_a_tuple(shapes):
    bare = _model()
    assert unwrap(bare) == ModelRef(bare, None, None, False)
    ref = unwrap(shapes)
    keras_model, preprocess, class_names, multi_label = ref
    assert ref.model is keras_model is shapes.model
    assert ref.class_names == class_names and len(class_names) > 1
    assert ref.multi_label is multi_label
    with pytest.raises(ValueError, match="keras.Model"):
        unwrap("not a model")


def test_input_size_outputs_and_classes():
    model = _model()
    assert model_input_size(model) == (16, 16, 3)
    assert model_outputs(model) == {"head0": (None, 4)}
    assert num_classes(model) == 4
    two = _model(outputs=2)
    assert list(model_outputs(two)) == ["head0", "head1"]
    assert num_classes(two) is None
    with pytest.raises(ValueError, match="channels-first"):
        model_input_size(_model(channels_first=True))


def test_only_output_and_output_parts():
    assert only_output({"a": 1}) == 1 and only_output([2]) == 2 and only_output(3) == 3
    assert output_parts({"a": 1, "b": 2}) == [1, 2] and output_parts(5) == [5]
    with pytest.raises(ModelCheckError, match="2 outputs"):
        only_output([1, 2])
