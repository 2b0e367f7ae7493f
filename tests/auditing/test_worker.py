"""What explains an audit's shards, here or on Ray: the options, the worker, the model's
identity."""

from __future__ import annotations

import numpy as np
import pytest

from gradcam_widget.auditing import sources, worker
from gradcam_widget.data import models


def test_a_models_identity_is_its_weights_not_its_name(shapes):
    identity = worker.model_identity(shapes)
    assert identity["name"] == "shapes" and len(identity["hash"]) == 24
    assert worker.model_identity(shapes) == identity
    renamed = worker.HeadedModel("other", shapes.model, None, tuple(shapes.class_names))
    assert worker.model_identity(renamed)["hash"] == identity["hash"]
    permuted = models.load("shapes_permuted")
    assert worker.model_identity(permuted)["hash"] != identity["hash"]
    head = worker.model_head(shapes)
    assert head["class_names"] == list(shapes.class_names)
    assert head["multi_label"] is bool(shapes.multi_label)
    assert worker.model_head(shapes.model) == {"class_names": None, "multi_label": False,
                                               "preprocess": None}  # fmt: skip


def test_options_as_recorded_in_the_job():
    options = worker.Options(image_size=(32, 48), cam_options=(("interpolation", "nearest"),))
    recorded = options.as_dict()
    assert recorded["image_size"] == [32, 48]
    assert recorded["cam_options"] == {"interpolation": "nearest"}
    assert recorded["shard_size"] == worker.DEFAULT_SHARD_SIZE
    assert recorded["thumbnail_side"] == worker.THUMBNAIL_SIDE
    assert worker.callable_name(np.mean) == "numpy.mean"
    assert worker.callable_name(None) is None


def test_a_worker_explains_a_shard_and_lists_what_it_skipped(shapes):
    options = worker.Options(cam_options=(("interpolation", "nearest"),))
    explain = worker.ShardWorker(shapes, options, batch_size=4)
    assert explain.size == tuple(shapes.model.inputs[0].shape[1:3])
    scenes = sources.Scenes(1_000_000, 1_000_003)
    items = list(scenes.items(0, 3))
    broken = sources.Item(index=3, id="broken", error="unreadable")
    result = explain(5, [*items, broken])
    assert result.shard == 5 and len(result.rows) == 3 and result.raw.dtype == np.float16
    assert [row["index"] for row in result.rows] == [0, 1, 2]
    assert result.skipped == [{"index": 3, "id": "broken", "error": "unreadable"}]
    assert all(thumb[:3] == b"\xff\xd8\xff" for thumb in result.thumbnails)
    assert result.layer
    assert explain.label(0) == shapes.class_names[0] and explain.label(99) == "99"
    empty = explain(6, [broken])
    assert empty.rows == [] and empty.raw.shape[0] == 0


def test_a_worker_for_true_targets_skips_images_without_a_class(shapes):
    explain = worker.ShardWorker(shapes, worker.Options(targets="true"))
    item = sources.Item(index=0, id="x", image=np.zeros((64, 64, 3), np.float32))
    assert explain(0, [item]).skipped[0]["error"] == "no true class (targets='true')"
    with pytest.raises(ValueError, match="unknown layer"):
        worker.ShardWorker(shapes, worker.Options(layer="nope"))(0, list(
            sources.Scenes(1_000_000, 1_000_001).items(0, 1)))  # fmt: skip
