"""The manifest's shape, checked before anything reads it."""

from __future__ import annotations

import json

import pytest

from gradcam_widget.auditing import manifest, store_io, store_layout


def a_manifest() -> dict:
    return {
        "format": 2,
        "job": {
            "model": {"name": "shapes", "hash": "abc"},
            "source": {"description": "scenes", "fingerprint": "f"},
            "options": {"cam_options": {"interpolation": "bilinear"}, "shard_size": 4},
        },
        "status": "complete",
        "images": 8,
        "shards": 2,
        "rows": 8,
    }


def test_a_folder_without_a_manifest_has_none(tmp_path):
    assert manifest.read_manifest(tmp_path) is None
    assert manifest.read_manifest(tmp_path / "missing") is None


def test_a_manifest_of_a_manifests_shape_is_read(tmp_path):
    store_io.write_json(tmp_path, store_layout.MANIFEST, a_manifest())
    assert manifest.read_manifest(tmp_path) == a_manifest()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("job"), "'job'"),
        (lambda m: m["job"]["model"].update(hash=3), "an integer"),
        (lambda m: m.update(rows=9), "rows"),
        (lambda m: m.update(shards=5), "shards"),
    ],
)
def test_a_manifest_of_another_shape_is_one_error_naming_what(tmp_path, change, message):
    content = a_manifest()
    change(content)
    (tmp_path / store_layout.MANIFEST).write_text(json.dumps(content))
    with pytest.raises(store_layout.AuditStoreError, match=message):
        manifest.read_manifest(tmp_path)
    with pytest.raises(store_layout.AuditStoreError, match="not a valid audit manifest"):
        manifest.check_manifest([], "here")


def test_type_names_for_messages():
    assert manifest.type_name(None) == "null"
    assert manifest.type_name({}) == "an object"
    assert manifest.type_name(True) == "true or false"
