"""Randomised copies of a model: a copy, never the model; an entry keeps its preprocess."""

from __future__ import annotations

import numpy as np

from gradcam_widget.checks import sanity
from gradcam_widget.data import models
from gradcam_widget.engine import ModelRef
from gradcam_widget.explorer import copies


def test_a_copy_of_an_entry_keeps_its_preprocess_and_leaves_the_model_alone():
    entry = models.load("shapes")
    before = [weight.copy() for weight in entry.model.get_weights()]
    copy = copies.randomized(entry, 1)
    assert copy.keras_model is not entry.model
    assert isinstance(copy.model, ModelRef) and copy.model.model is copy.keras_model
    assert copy.model.preprocess is entry.preprocess
    assert copy.names == tuple(sanity.blocks(entry.model))[:1]
    assert copy.nbytes == sum(weight.nbytes for weight in copy.keras_model.get_weights())
    for kept, now in zip(before, entry.model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, now)
    bare = copies.randomized(entry.model, 1)
    assert bare.model is bare.keras_model  # a keras.Model: the copy itself
