"""Layer choices: names resolved, token grids inferred or overridden."""

import pytest

from gradcam_widget.engine.layers import resolve, token_grid, token_grids


def test_names_resolve_to_paths_and_say_the_candidates():
    candidates = ("c1", "block/c2", "other/c3", "more/c3")
    assert resolve("c2", candidates) == "block/c2"
    assert resolve("block/c2", candidates) == "block/c2"
    with pytest.raises(ValueError, match="ambiguous"):
        resolve("c3", candidates)
    with pytest.raises(ValueError, match="candidate layers are: c1"):
        resolve("nope", candidates)


def test_token_grids_are_inferred_with_the_fewest_prefix_tokens_or_overridden():
    assert token_grid(197, 224, 224) == (1, 14, 14)  # ViT-B/16: a class token
    assert token_grid(196, 224, 224) == (0, 14, 14)
    assert (2, 14, 14) in token_grids(198, 224, 224)
    assert token_grid(198, 224, 224, prefix=2) == (2, 14, 14)
    assert token_grid(7, 224, 224) is None
    with pytest.raises(ValueError):
        token_grid(197, 224, 224, grid=(10, 10))
