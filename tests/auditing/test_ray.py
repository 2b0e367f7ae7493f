"""``gw.audit(..., ray=True)`` on a real local Ray (2 CPUs): the same results as a local run,
resume over a folder with missing shards, and errors that read like a local run's.

Needs ``ray[data]`` (``pip install -e .[ray]``): without it these tests skip locally with the
reason, and fail with CI set (CI=true).
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import gradcam_widget as gw
from gradcam_widget.auditing import ray as distributed
from gradcam_widget.auditing import run as auditing
from gradcam_widget.auditing import store
from gradcam_widget.data import models

pytestmark = pytest.mark.slow  # ~2 min on 2 shared cores: Ray's start and TensorFlow in each actor

SCENES = "scenes:1000000-1000080"
SHARD_SIZE = 16  # 5 shards
FLOAT_KINDS = ("f",)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs for the module (the audit joins it), stopped at the end."""
    if importlib.util.find_spec("ray") is None:
        reason = f"ray is not installed: {distributed.INSTALL_HINT}"
        if _in_ci():
            pytest.fail(f"{reason} (CI is set: the Ray tests must run here)", pytrace=False)
        pytest.skip(reason)
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="warning",
            runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}},
        )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The audit of SCENES run here, without Ray."""
    out = tmp_path_factory.mktemp("local") / "results"
    return gw.audit("shapes", SCENES, out=out, shard_size=SHARD_SIZE, progress=False)


def _assert_same_results(expected: gw.AuditResults, found: gw.AuditResults) -> None:
    table, other = expected.table, found.table
    assert list(table.columns) == list(other.columns)
    assert len(table) == len(other) == 80
    for column in table.columns:
        left, right = table[column], other[column]
        if left.dtype.kind in FLOAT_KINDS:
            np.testing.assert_allclose(left.to_numpy(), right.to_numpy(), rtol=1e-4, atol=1e-5,
                                       equal_nan=True, err_msg=column)  # fmt: skip
        elif column not in ("thumb_offset", "thumb_size"):  # JPEG bytes may differ by a bit
            pd.testing.assert_series_equal(left, right, check_names=False, obj=column)
    for index in table["index"]:
        np.testing.assert_allclose(expected.raw(index), found.raw(index), rtol=1e-2, atol=1e-3)
    assert expected.manifest["job"] == found.manifest["job"]
    assert found.complete and found.manifest["rows"] == 80


def test_ray_audit_equals_local(ray_local, local_run, tmp_path, monkeypatch):
    def not_here(self, shard, items):
        raise AssertionError("a shard was explained in the driver, not on a Ray actor")

    monkeypatch.setattr(auditing.ShardWorker, "__call__", not_here)  # actors are other processes
    results = gw.audit(
        "shapes", SCENES, out=tmp_path / "ray", shard_size=SHARD_SIZE, progress=False, ray=True
    )
    assert results.computed_shards == 5
    assert results.manifest["run"]["ray"] == "True"
    _assert_same_results(local_run, results)


def test_ray_resumes_only_missing_shards(ray_local, local_run, tmp_path):
    folder = tmp_path / "resume"
    shutil.copytree(local_run.folder, folder)
    for shard in (1, 3):
        store.part_path(folder, shard).unlink()
    results = gw.audit(
        "shapes", SCENES, out=folder, shard_size=SHARD_SIZE, progress=False, ray=True
    )
    assert results.computed_shards == 2
    assert store.done_shards(folder) == set(range(5))
    _assert_same_results(local_run, results)


def test_dataset_source_is_refused(ray_local, tmp_path):
    from gradcam_widget.engine._tf import tf

    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((4, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match=r"tf\.data\.Dataset cannot be sent to Ray workers"):
        gw.audit("shapes", dataset, out=tmp_path / "ds", progress=False, ray=True)
    assert not (tmp_path / "ds").exists()  # refused before anything is written


@pytest.mark.parametrize("where", ["driver", "worker"])
def test_bad_layer_is_one_clear_value_error(ray_local, tmp_path, monkeypatch, where):
    """Caught before Ray starts when it can be; else raised from the actor as itself."""
    if where == "worker":  # skip the driver's check: the actor meets the bad name
        monkeypatch.setattr(distributed, "_check_layer", lambda model, layer: None)
        monkeypatch.setenv(distributed.ENV_WORKERS, "1")
    with pytest.raises(ValueError, match="unknown layer 'block9_conv9'") as caught:
        gw.audit("shapes", "scenes:1000000-1000016", out=tmp_path / "bad", shard_size=8,
                 layer="block9_conv9", progress=False, ray=True)  # fmt: skip
    error = caught.value
    assert type(error) is ValueError
    assert error.__cause__ is None and not isinstance(
        error.__context__, ray_local.exceptions.RayError
    )
    assert ("Ray worker" in "".join(getattr(error, "__notes__", []))) == (where == "worker")


def test_model_spec_round_trip_keeps_the_entry(ray_local):
    """An in-memory entry travels as .keras bytes and comes back with its names and head."""
    entry = models.load("shapes")
    renamed = type(entry)(**{**entry.__dict__, "name": "my_shapes"})
    spec = distributed.model_spec(renamed, None)
    assert set(spec) == {"keras", "suffix", "shell"} and spec["shell"].model is None
    loaded = distributed.load_spec(spec)
    assert loaded.class_names == entry.class_names
    assert loaded.multi_label == entry.multi_label and loaded.name == "my_shapes"
    assert auditing.model_identity(loaded)["hash"] == auditing.model_identity(entry)["hash"]
    assert distributed.model_spec(entry, "shapes") == {"name": "shapes"}


def test_the_cli_runs_on_ray(ray_local, local_run, tmp_path, capfd):
    from gradcam_widget.__main__ import main

    out = tmp_path / "cli"
    status = main(["audit", SCENES, "--out", str(out), "--shard-size", str(SHARD_SIZE),
                   "--quiet", "--ray"])  # fmt: skip
    captured = capfd.readouterr()
    assert status == 0, captured.err
    assert "80 images" in captured.out
    results = gw.AuditResults(out)
    assert results.manifest["run"]["ray"] == "True"
    _assert_same_results(local_run, results)
