"""Feature maps: 4-D maps kept, token layers kept as grids when their count fits the input."""

import numpy as np
import pytest

from gradcam_widget.engine._tf import tf
from gradcam_widget.engine.grids import as_grid, feature_maps, layer_facts
from gradcam_widget.engine.tapping import Record


def _record(**tensors):
    record = Record()
    for path, tensor in tensors.items():
        record[path] = tensor
        record.calls[path] = 1
    return record


def test_feature_maps_keeps_conv_maps_and_fitting_token_layers():
    batch = 2
    record = _record(
        conv=tf.zeros((batch, 8, 8, 4)),  # a map, and the patch grid of what follows
        tokens=tf.zeros((batch, 1 + 64, 6)),  # a class token + an 8 x 8 grid
        odd=tf.zeros((batch, 7, 6)),  # no grid of a 32 x 32 input
        ints=tf.zeros((batch, 8, 8, 4), tf.int32),  # not float
        vector=tf.zeros((batch, 4)),
    )
    maps, tokens = feature_maps(record, (batch, 32, 32, 3))
    assert list(maps) == ["conv", "tokens"]
    assert tokens == {"tokens": (1, 8, 8)}
    with pytest.raises(ValueError, match="layer tokens"):
        feature_maps(record, (batch, 32, 32, 3), {"tokens": ((5, 5), 0)})


def test_as_grid_drops_prefix_tokens_and_layer_facts_reads_the_grids():
    tokens = tf.reshape(tf.range(2 * 5 * 3, dtype=tf.float32), (2, 5, 3))
    grid = as_grid(tokens, (1, 2, 2)).numpy()
    np.testing.assert_array_equal(grid, tokens.numpy()[:, 1:, :].reshape(2, 2, 2, 3))
    assert as_grid(tokens, None) is tokens
    facts = layer_facts(_record(conv=tf.zeros((2, 4, 4, 3))), (2, 16, 16, 3))
    assert facts.grids == {"conv": (4, 4, 3)} and facts.calls == {"conv": 1}
    assert facts.outside == () and facts.squashed == () and facts.outputs is None
