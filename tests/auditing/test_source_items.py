"""What every source gives: items, printable names, fingerprints' hashes, images as arrays."""

from __future__ import annotations

import numpy as np

from gradcam_widget.auditing import source_items


def test_a_name_that_is_not_text_is_printable_and_turns_back():
    name = b"bad\xff.png".decode("utf-8", "surrogateescape")
    shown = source_items.printable_name(name)
    assert shown == "bad\\xff.png"
    shown.encode("utf-8")  # valid text: the table and the manifest hold it
    assert source_items.name_of_id(shown) == name
    assert source_items.printable_name("star.png") == "star.png"
    assert source_items.encoded(name) == b"bad\xff.png"


def test_hash_parts_tells_parts_apart():
    assert source_items.hash_parts("a", 1) == source_items.hash_parts("a", 1)
    assert source_items.hash_parts("a", 1) != source_items.hash_parts("a1")
    assert source_items.hash_parts(b"x") == source_items.hash_parts("x")


def test_an_array_is_an_item_or_says_why_it_is_not():
    good = source_items.read_array(3, np.full((10, 20, 3), 7, np.uint8), "3", size=(5, 8))
    assert good.error is None and good.image.shape == (5, 8, 3) and good.index == 3
    nan = np.zeros((4, 4, 3), np.float32)
    nan[0, 0, 0] = np.nan
    assert "NaN" in source_items.read_array(0, nan, "0").error
    bad = source_items.read_array(1, np.zeros((4,)), "1", true_label="star")
    assert bad.image is None and bad.error and bad.true_label == "star"
    assert "\n" not in bad.error


def test_label_fields_of_an_index_or_a_name():
    names = ["circle", "star"]
    assert source_items.label_fields(1, names) == {"true_class": 1, "true_label": "star"}
    assert source_items.label_fields(1.0, names) == {"true_class": 1, "true_label": "star"}
    assert source_items.label_fields("circle", names) == {"true_class": 0, "true_label": "circle"}
    assert source_items.label_fields("cross", names) == {"true_label": "cross"}
    assert source_items.label_fields(None, names) == {}


def test_a_source_cuts_its_items_into_shards_skipping_those_done():
    source = source_items.Source()
    assert source.distributable
    from gradcam_widget.auditing import sources

    arrays = sources.Arrays(np.zeros((5, 4, 4, 3), np.uint8))
    shards = list(arrays.shards(2, skip={1}))
    assert [(shard, [item.index for item in items]) for shard, items in shards] == [
        (0, [0, 1]),
        (2, [4]),
    ]
