"""Shared by the checks' tests: a subclassed model (randomised in place), a snapshot of a
model's weights to tell that it was left bit for bit, and random images."""

import numpy as np
import pytest

from gradcam_widget.engine._tf import keras


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(5, 3, activation="relu", name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, inputs):
        return self.head(self.gap(self.conv(inputs)))


@pytest.fixture(scope="module")
def subclassed():
    keras.utils.set_random_seed(7)
    model = SubclassedNet()
    model(np.zeros((1, 32, 32, 3), np.float32))
    return model


class Weights:
    """A copy of a model's weights; :meth:`match` tells whether a model holds them, bit for
    bit."""

    def __init__(self, model):
        self.values = [np.array(variable.numpy(), copy=True) for variable in model.weights]

    def match(self, model) -> bool:
        after = Weights(model).values
        if len(self.values) != len(after):
            return False
        pairs = zip(self.values, after, strict=True)
        return all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in pairs)


@pytest.fixture
def weights():
    """``weights(model)``: a :class:`Weights` snapshot."""
    return Weights


@pytest.fixture
def random_images():
    """``random_images(count, size=32, seed=0)``: ``(count, size, size, 3)`` uint8."""

    def make(count, size=32, seed=0):
        return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), np.uint8)

    return make
