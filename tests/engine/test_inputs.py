"""Input checks: class indices, image batches, image labels."""

import numpy as np
import pytest

from gradcam_widget.engine.inputs import (
    ModelCheckError,
    check_class_index,
    check_image_batch,
    image_label,
)


def test_class_indices_are_checked_against_the_classes():
    assert check_class_index(None, 3) is None
    assert check_class_index(np.int64(2), 3) == 2
    for bad, message in ((3, r"0\.\.2"), (True, "int"), (1.0, "int"), (-1, r"0\.\.2")):
        with pytest.raises(ValueError, match=message):
            check_class_index(bad, 3)
    assert issubclass(ModelCheckError, ValueError)


def test_image_batches_are_checked_against_the_input_size():
    batch = check_image_batch(np.zeros((2, 8, 8, 3)), (8, 8, 3))
    assert batch.shape == (2, 8, 8, 3)
    with pytest.raises(ValueError):
        check_image_batch(np.zeros((2, 8, 8, 3)), (16, 16, 3))
    with pytest.raises(ValueError):
        check_image_batch(np.zeros((8, 8, 3)), (8, 8, 3))
    assert image_label(0, 3) != image_label(1, 3)
