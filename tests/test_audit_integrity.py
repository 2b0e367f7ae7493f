"""The audit store's integrity, as a hostile review tested it: user files in ``out=``, shards
damaged or copied by hand, refusals that wrote, manifests of the wrong shape, a model known
by its weights, and two audits writing one folder (here, on Ray, and after a SIGKILL).

Real files, the shipped ``shapes`` model and a few scenes; the Ray tests use a local Ray
started here (marked slow, as in ``test_distributed.py``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gradcam_widget as gw
from gradcam_widget import auditing, data, distributed, store
from gradcam_widget.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
SCENES = "scenes:1000000-1000008"  # 2 shards of 4
OPTIONS = {"shard_size": 4, "batch_size": 4}
CLI_OPTIONS = ["--shard-size", "4", "--batch-size", "4", "--quiet"]
WAIT_S = 600  # generous: a condition, never a race against work


def quiet_audit(model, out, source=SCENES, **options):
    return gw.audit(model, source, out=out, progress=False, **(OPTIONS | options))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """SCENES audited by ``shapes``: a complete store to copy and damage."""
    return quiet_audit("shapes", tmp_path_factory.mktemp("integrity") / "results")


def copy_of(results: store.AuditResults, tmp_path: Path, name: str = "copy") -> Path:
    folder = tmp_path / name
    shutil.copytree(results.folder, folder)
    return folder


def listing(folder: Path) -> dict:
    """Every file and folder under ``folder``: size and modification time."""
    return {
        path.relative_to(folder).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(Path(folder).rglob("*"))
    }


def assert_same_results(found: store.AuditResults, expected: store.AuditResults) -> None:
    a, b = found.table, expected.table
    assert a["index"].tolist() == b["index"].tolist()
    for column in store.COLUMNS:
        if column in ("thumb_offset", "thumb_size"):
            continue
        if a[column].dtype.kind == "f":
            np.testing.assert_allclose(a[column], b[column], rtol=1e-4, atol=1e-5,
                                       equal_nan=True, err_msg=column)  # fmt: skip
        else:
            assert a[column].astype(object).where(a[column].notna(), None).tolist() == (
                b[column].astype(object).where(b[column].notna(), None).tolist()
            ), column
    for index in a["index"]:
        np.testing.assert_allclose(found.raw(index), expected.raw(index), rtol=2e-3, atol=1e-4)


def one_error_line(captured) -> str:
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


# --- 1: user files in folders named like the store's --------------------------------------


@pytest.mark.parametrize("planted", [".partial/notes.txt", "maps/00000.npy", ".lock"])
def test_user_files_in_folders_named_like_the_stores_are_not_taken_for_empty(tmp_path, planted):
    out = tmp_path / "out"
    for name in (store.TABLE, "maps", "thumbs", ".partial"):
        (out / name).mkdir(parents=True)
    (out / planted).write_bytes(b"the user's own file, not the package's\n")
    before = listing(out)
    with pytest.raises(auditing.AuditError, match="not empty and holds no audit"):
        quiet_audit("shapes", out)
    assert listing(out) == before  # nothing deleted, overwritten or added
    with pytest.raises(auditing.AuditError, match=re.escape(f"({planted})")):
        quiet_audit("shapes", out)  # the message names what is in the way


# --- 2: shards damaged after their commit -------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _change_last_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))


DAMAGE = {
    "part truncated": (f"{store.TABLE}/part-00001.parquet", _truncate),
    "maps deleted": ("maps/00001.npy", Path.unlink),
    "maps changed": ("maps/00001.npy", _change_last_byte),  # same size: found by SHA-256
    "thumbnails truncated": ("thumbs/00001.jpg.bin", _truncate),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_shard_is_named_on_open_and_recomputed_on_rerun(finished, tmp_path, capsys,
                                                                  damage):  # fmt: skip
    name, harm = DAMAGE[damage]
    folder = copy_of(finished, tmp_path)
    harm(folder / name)
    with pytest.raises(store.AuditStoreError, match=rf"shard 1 damaged .*{re.escape(name)}"):
        gw.AuditResults(folder)
    capsys.readouterr()
    resumed = gw.audit("shapes", SCENES, out=folder, progress=True, **OPTIONS)
    said = capsys.readouterr().out
    assert "shard 1 was damaged" in said and name in said and "nothing to do" not in said
    assert resumed.computed_shards == 1
    assert_same_results(gw.AuditResults(folder), finished)


def test_a_complete_audit_missing_a_shard_is_named_on_open(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    for name in ("part-00000.parquet", "maps/00000.npy", "thumbs/00000.jpg.bin",
                 "commits/00000.json"):  # fmt: skip
        (folder / (f"{store.TABLE}/{name}" if name.startswith("part") else name)).unlink()
    with pytest.raises(store.AuditStoreError, match=r"shard 0 of this complete audit"):
        gw.AuditResults(folder)
    assert quiet_audit("shapes", folder).computed_shards == 1


def test_a_store_of_format_1_is_checked_by_its_parts_and_adopted(finished, tmp_path):
    """A folder written before commit records (format 1) is read, its parts checked by their
    footers and sizes; a run writes the records, recomputing a damaged shard."""
    folder = copy_of(finished, tmp_path)
    shutil.rmtree(folder / store.COMMITS)
    manifest = json.loads((folder / store.MANIFEST).read_text())
    del manifest["job"]["model"]["head"]
    (folder / store.MANIFEST).write_text(json.dumps(manifest | {"format": 1}))
    assert_same_results(gw.AuditResults(folder), finished)
    _truncate(folder / "thumbs" / "00001.jpg.bin")
    with pytest.raises(store.AuditStoreError, match=r"shard 1 damaged .*thumbs/00001\.jpg\.bin"):
        gw.AuditResults(folder)
    assert quiet_audit("shapes", folder).computed_shards == 1
    assert store.done_shards(folder) == {0, 1} and store.record_path(folder, 0).is_file()
    assert_same_results(gw.AuditResults(folder), finished)


# --- 3: a stray part ----------------------------------------------------------------------


def test_a_stray_copy_of_a_part_is_never_read(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    table = folder / store.TABLE
    shutil.copy(table / "part-00000.parquet", table / "part-00099.parquet")
    assert gw.AuditResults(folder).table["index"].tolist() == list(range(8))
    again = quiet_audit("shapes", folder)
    assert again.computed_shards == 0
    assert again.table["index"].tolist() == list(range(8))


# --- 4: a refusal writes nothing ----------------------------------------------------------


def test_refusals_leave_the_folder_as_it_was(finished, tmp_path, capfd):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(data.scene(1_000_000 + i, n_objects=1).image).save(images / f"{i}.png")
    before = listing(images)
    status = main(["audit", str(images), "--out", str(images), *CLI_OPTIONS])
    line = one_error_line(capfd.readouterr())
    assert status == 2
    assert listing(images) == before  # no .lock left in the user's folder
    assert str(images) in line and "the folder of images being audited" in line
    other = copy_of(finished, tmp_path)  # another job's results
    before = listing(other)
    status = main(["audit", SCENES, "--out", str(other), "--layer", "block4_conv3", *CLI_OPTIONS])
    assert status == 2 and "holds another audit" in one_error_line(capfd.readouterr())
    assert listing(other) == before


# --- 5: a manifest of the wrong shape -----------------------------------------------------


def _drop_job(manifest):
    del manifest["job"]


def _hash_a_number(manifest):
    manifest["job"]["model"]["hash"] = 5


def _options_a_string(manifest):
    manifest["job"]["options"] = "fast"


def _status_unknown(manifest):
    manifest["status"] = "sometimes"


BAD_MANIFESTS = {
    "a list": ([1, 2], "it holds a list"),
    "no job": (_drop_job, "'job' is missing"),
    "hash a number": (_hash_a_number, "'job.model.hash' is an integer (5), expected a string"),
    "options a string": (_options_a_string, "'job.options' is a string"),
    "status unknown": (_status_unknown, "'status' is 'sometimes'"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_manifest_of_the_wrong_shape_is_one_clear_error(finished, tmp_path, capfd, case):
    folder = copy_of(finished, tmp_path)
    path = folder / store.MANIFEST
    change, expected = BAD_MANIFESTS[case]
    content = json.loads(path.read_text())
    if callable(change):
        change(content)
    else:
        content = change
    path.write_text(json.dumps(content))
    before = listing(folder)
    message = rf"{re.escape(str(path))} is not a valid audit manifest: {re.escape(expected)}"
    with pytest.raises(store.AuditStoreError, match=message):
        gw.AuditResults(folder)
    with pytest.raises(store.AuditStoreError, match=message):
        quiet_audit("shapes", folder)
    status = main(["audit", SCENES, "--out", str(folder), *CLI_OPTIONS])
    line = one_error_line(capfd.readouterr())
    assert status == 2 and re.search(message, line), line
    assert listing(folder) == before


# --- 6: models compared by their weights --------------------------------------------------


def test_the_same_weights_under_another_name_resume(finished, shapes, tmp_path, capsys):
    weights = tmp_path / "weights.keras"
    shapes.model.save(weights)  # a bare keras.Model: another name, no class names
    folder = copy_of(finished, tmp_path)
    capsys.readouterr()
    again = gw.audit(str(weights), SCENES, out=folder, progress=True, **OPTIONS)
    said = capsys.readouterr().out
    assert again.computed_shards == 0 and "nothing to do" in said
    assert f"named 'shapes', this one {shapes.model.name!r}" in said
    # incomplete: the missing shard is computed with the stored audit's head (its class
    # names and sigmoid), so its rows are the rows the named model gave
    store.record_path(folder, 1).unlink()
    resumed = quiet_audit(str(weights), folder)
    assert resumed.computed_shards == 1 and resumed.class_names == shapes.class_names
    assert_same_results(resumed, finished)
    store.record_path(folder, 0).unlink()
    renamed = dataclasses.replace(shapes, name="my_shapes")
    assert quiet_audit(renamed, folder).computed_shards == 1
    assert_same_results(gw.AuditResults(folder), finished)
    relabelled = dataclasses.replace(shapes, class_names=tuple("abcde"))  # rows would differ
    with pytest.raises(auditing.AuditError, match=r"model\.head\.class_names"):
        quiet_audit(relabelled, folder)


# --- 7: one writer per folder -------------------------------------------------------------


def _holder_pattern(pid: int) -> str:
    host = re.escape(socket.gethostname())
    return rf"another audit is writing to .*\(pid {pid} on {host}, since 20"


def test_a_run_holding_the_folder_is_named_and_nothing_is_written(tmp_path, capfd):
    out = tmp_path / "out"
    with store.lock(out):
        content = json.loads((out / store.LOCK).read_text())
        assert content["pid"] == os.getpid() and content["host"] == socket.gethostname()
        before = listing(out)
        with pytest.raises(store.AuditStoreError, match=_holder_pattern(os.getpid())):
            quiet_audit("shapes", out)
        status = main(["audit", SCENES, "--out", str(out), *CLI_OPTIONS])
        assert status == 2 and re.search(_holder_pattern(os.getpid()),
                                         one_error_line(capfd.readouterr()))  # fmt: skip
        assert listing(out) == before
        assert store.lock_holder(out).startswith(f"pid {os.getpid()} on ")
    assert not out.exists()  # the lock's folder, with nothing written, is removed
    assert store.lock_holder(out) is None


HOLDER = """
import os, sys, time
from pathlib import Path
import gradcam_widget as gw

out, gates, ray, hold_at = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def gate(batch):
    # the input as it is; batch number hold_at (1, 2, ...) waits for the file `release`,
    # holding the folder meanwhile (the batches of one shard run one after the other)
    calls = len(list(gates.glob("call-*"))) + 1
    (gates / f"call-{calls}").touch()
    if calls == hold_at:
        (gates / "waiting").touch()
        while not (gates / "release").exists():
            time.sleep(0.05)
    return batch


results = gw.audit("shapes", "scenes:1000000-1000012", out=out, shard_size=4, batch_size=4,
                   progress=False, preprocess=gate, ray=None if ray == "none" else ray)
print("computed", results.computed_shards, flush=True)
"""
HELD_SCENES = "scenes:1000000-1000012"  # 3 shards of 4


class Holder:
    """A real process auditing ``out`` (locally, or on the Ray at ``ray``) that stops in its
    batch number ``hold_at`` until released (0: never)."""

    def __init__(self, tmp_path: Path, out: Path, name: str, ray: str = "none", hold_at: int = 0):
        self.out, self.gates = out, tmp_path / f"gates-{name}"
        self.gates.mkdir()
        script = tmp_path / "holder.py"
        script.write_text(HOLDER)
        self.log = tmp_path / f"{name}.log"
        environment = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0",
                                    distributed.ENV_WORKERS: "1"}  # fmt: skip
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(script), str(out), str(self.gates), ray, str(hold_at)],
                env=environment, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.pid = self.process.pid

    def wait_holding(self, committed: int) -> None:
        """Until it waits in its gate with ``committed`` shards committed."""
        deadline = time.monotonic() + WAIT_S
        while not ((self.gates / "waiting").exists()
                   and len(store.done_shards(self.out)) >= committed):  # fmt: skip
            assert self.process.poll() is None, f"the holder ended: {self.log.read_text()}"
            assert time.monotonic() < deadline, "the holder never reached its gate"
            time.sleep(0.05)
        assert store.lock_holder(self.out).startswith(f"pid {self.pid} on ")

    def release(self) -> str:
        (self.gates / "release").touch()
        assert self.process.wait(timeout=WAIT_S) == 0, self.log.read_text()
        return self.log.read_text().strip().splitlines()[-1]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WAIT_S)
        (self.gates / "release").touch()  # a Ray actor of the killed driver stops waiting too


@pytest.mark.slow
def test_sigkilled_holder_leaves_no_lock_and_the_audit_resumes(tmp_path, capfd):
    out = tmp_path / "out"
    holder = Holder(tmp_path, out, "holder", hold_at=2)
    holder.wait_holding(committed=1)  # shard 0 committed, the run in shard 1
    before = listing(out)
    with pytest.raises(store.AuditStoreError, match=_holder_pattern(holder.pid)):
        quiet_audit("shapes", out, source=HELD_SCENES)
    status = main(["audit", HELD_SCENES, "--out", str(out), *CLI_OPTIONS])
    assert status == 2 and re.search(_holder_pattern(holder.pid),
                                     one_error_line(capfd.readouterr()))  # fmt: skip
    assert listing(out) == before  # the refused runs wrote nothing
    holder.kill()
    assert store.lock_holder(out) is None  # the kernel released it with the process
    assert (out / store.LOCK).exists()  # the dead holder's file is left, and harmless
    resumed = Holder(tmp_path, out, "resumed")
    assert resumed.release() == "computed 2"
    reference = quiet_audit("shapes", tmp_path / "reference", source=HELD_SCENES)
    assert_same_results(gw.AuditResults(out), reference)
    assert not (out / store.LOCK).exists()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs for the module (audits here and in holders join it)."""
    if importlib.util.find_spec("ray") is None:
        reason = f"ray is not installed: {distributed.INSTALL_HINT}"
        if _in_ci():
            pytest.fail(f"{reason} (CI is set: the Ray tests must run here)", pytrace=False)
        pytest.skip(reason)
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="warning",
                 runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}})  # fmt: skip
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_a_ray_audit_is_refused_while_a_local_one_writes(ray_local, tmp_path, capfd):
    out = tmp_path / "out"
    holder = Holder(tmp_path, out, "local", hold_at=2)
    holder.wait_holding(committed=1)
    before = listing(out)
    with pytest.raises(store.AuditStoreError, match=_holder_pattern(holder.pid)):
        quiet_audit("shapes", out, source=HELD_SCENES, ray=True)
    status = main(["audit", HELD_SCENES, "--out", str(out), "--ray", *CLI_OPTIONS])
    assert status == 2 and re.search(_holder_pattern(holder.pid),
                                     one_error_line(capfd.readouterr()))  # fmt: skip
    assert listing(out) == before
    assert holder.release() == "computed 3"
    assert gw.AuditResults(out).table["index"].tolist() == list(range(12))


@pytest.mark.slow
def test_a_local_audit_is_refused_while_a_ray_one_writes(ray_local, tmp_path, capfd):
    out = tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    holder = Holder(tmp_path, out, "ray", ray=address, hold_at=1)  # waits on a Ray actor
    holder.wait_holding(committed=0)
    before = listing(out)
    with pytest.raises(store.AuditStoreError, match=_holder_pattern(holder.pid)):
        quiet_audit("shapes", out, source=HELD_SCENES)
    status = main(["audit", HELD_SCENES, "--out", str(out), *CLI_OPTIONS])
    assert status == 2 and re.search(_holder_pattern(holder.pid),
                                     one_error_line(capfd.readouterr()))  # fmt: skip
    assert listing(out) == before
    assert holder.release() == "computed 3"
    results = gw.AuditResults(out)
    assert results.manifest["run"]["ray"] == address
    assert results.table["index"].tolist() == list(range(12))
