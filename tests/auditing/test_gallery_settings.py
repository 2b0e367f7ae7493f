"""The gallery's settings table: each check refuses with the choices, on a real gallery."""

from __future__ import annotations

import pytest

import gradcam_widget as gw
from gradcam_widget.auditing import gallery_settings
from gradcam_widget.auditing.gallery import CamGallery
from gradcam_widget.auditing.gallery_rows import ALL_CLASSES, NO_THRESHOLD


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    out = tmp_path_factory.mktemp("settings") / "audit"
    gallery = CamGallery(gw.audit("shapes", "scenes:1000000-1000010", out=out, progress=False))
    yield gallery
    gallery.close()


def test_every_property_of_the_gallery_is_a_row(gallery):
    settings = gallery_settings.SETTINGS
    assert set(settings) == {
        "sort_by", "ascending", "class_filter", "class_of", "correct_filter", "threshold", "page"
    }  # fmt: skip
    for name, setting in settings.items():
        assert getattr(CamGallery, name).setting is setting
        assert setting.control in gallery.controls


def test_the_checks_give_control_values_or_refuse(gallery):
    check = {name: setting.check for name, setting in gallery_settings.SETTINGS.items()}
    assert check["class_filter"](gallery, None) == ALL_CLASSES
    index, label = next(iter(gallery.classes.items()))
    assert check["class_filter"](gallery, label) == index
    with pytest.raises(ValueError, match="one of the classes"):
        check["class_filter"](gallery, 99)
    assert check["threshold"](gallery, None) == {"threshold_column": NO_THRESHOLD}
    assert check["threshold"](gallery, ("object_share", "≥", 1))["threshold_operator"] == ">="
    with pytest.raises(ValueError, match="finite"):
        check["threshold"](gallery, ("object_share", "<=", float("inf")))
    with pytest.raises(ValueError, match="True or False"):
        check["ascending"](gallery, 1)
    with pytest.raises(ValueError, match=r"page must be an int in 1\.\.1"):
        check["page"](gallery, 2)
