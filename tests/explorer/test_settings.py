"""The explorer's settings table: every choice of the options table is a setting and a
control with no code of its own; the checks that read the explorer's state."""

from __future__ import annotations

import pytest

import gradcam_widget as gw
from gradcam_widget import options
from gradcam_widget.explorer import settings


def test_every_fixed_choice_of_the_table_is_a_setting_and_a_control():
    fixed = {row.name for row in options.on(options.WIDGET) if row.choices} - {"opacity"}
    assert set(settings.TABLE_CONTROLS) == fixed and "interpolation" in fixed
    assert fixed <= set(settings.SETTINGS)
    made = settings.make_controls()
    for name in settings.SETTINGS:
        assert settings.SETTINGS[name].control in made
    for name in fixed:
        assert made[name].description == options.option(name).label
        assert f"gw-{name}" in made[name].get_state()["_dom_classes"]
    placed = {name for row in settings.ROWS for name in row}
    assert placed <= set(made) and "interpolation" not in placed  # a row of its own


def test_the_old_label_names_are_the_tables():
    assert settings.POOLING_LABELS == (("mean (GAP)", "mean"), ("max", "max"))
    assert settings.ORDER_LABELS[0] == ("ReLU → resize", "relu_first")
    assert dict(settings.CHANNEL_LABELS)["top channel"] == "top"
    assert settings.SCORE_LABELS[1] == ("probability", "probability")


def test_the_checks_that_read_the_explorer_refuse_with_the_choices():
    ex = gw.CamExplorer("shapes", "two_shapes", layer="block5_conv3")
    try:
        assert settings.check_layer(ex, "fused") == "fused"
        with pytest.raises(ValueError, match="candidate layers"):
            settings.check_layer(ex, "nope")
        check_class = settings.SETTINGS["class_index"].check
        assert check_class(ex, None) == ex.class_index  # the top class
        with pytest.raises(ValueError):
            check_class(ex, len(ex.capture.scores))
        with pytest.raises(ValueError, match="randomize must be an int"):
            settings.SETTINGS["randomize"].check(ex, True)
    finally:
        ex.close()
