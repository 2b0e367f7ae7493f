"""The audit store's integrity, as a hostile review tested it: user files in ``out=``, shards
damaged or copied by hand, refusals that wrote, manifests of the wrong shape, a model known
by its weights, and two audits writing one folder (here, on Ray, and after a SIGKILL).

Real files, the shipped ``shapes`` model and a few scenes; the Ray tests use a local Ray
started here (marked slow, as in ``test_distributed.py``).
"""

from __future__ import annotations

import contextlib
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
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gradcam_widget as gw
from gradcam_widget.__main__ import main
from gradcam_widget.auditing import ray as distributed
from gradcam_widget.auditing import run as auditing
from gradcam_widget.auditing import store
from gradcam_widget.data import scenes as data

ROOT = Path(__file__).resolve().parents[2]
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


# --- 8: what a second hostile review found --------------------------------------------------


def scene_folder(folder: Path, count: int, unreadable=()) -> Path:
    """``count`` one-object scenes saved as PNG files ``00.png`` ...; the numbers in
    ``unreadable`` are text files named ``.png`` instead (skipped by an audit)."""
    folder.mkdir(parents=True)
    for i in range(count):
        if i in unreadable:
            (folder / f"{i:02d}.png").write_text("not an image")
        else:
            image = data.scene(1_000_000 + i, n_objects=1).image
            Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


PRECIOUS = "the user's own file\n"
SHARD_FILES = (f"{store.TABLE}/part-00001.parquet", "maps/00001.npy", "thumbs/00001.jpg.bin",
               "commits/00001.json")  # fmt: skip


def test_a_shard_copied_under_a_number_beyond_the_count_is_never_read(tmp_path):
    """Shard 1's four files copied to the names of shard 7 (of 3) are never read: not at the
    end of a run (its rows and skipped files counted twice), not when the folder opens."""
    images = scene_folder(tmp_path / "images", 12, unreadable=(5, 6))  # 2 skipped in shard 1
    out = tmp_path / "out"
    first = quiet_audit("shapes", out, source=images)
    assert (first.manifest["shards"], first.manifest["rows"], len(first.skipped)) == (3, 10, 2)
    for name in SHARD_FILES:
        shutil.copy(out / name, out / name.replace("00001", "00007"))
    store.record_path(out, 0).unlink()  # so that the run computes a shard and finishes
    again = quiet_audit("shapes", out, source=images)
    assert again.computed_shards == 1
    assert again.manifest["rows"] == 10 and len(again.table) == 10
    assert [entry["index"] for entry in again.skipped] == [5, 6]
    assert again.shards == (0, 1, 2)
    opened = gw.AuditResults(out)
    assert opened.shards == (0, 1, 2) and opened.manifest["rows"] == 10
    assert opened.table["index"].tolist() == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]


def _files_numbers(record: dict) -> None:
    record["files"] = dict.fromkeys(record["files"], 5)


def _files_without_size(record: dict) -> None:
    for entry in record["files"].values():
        del entry["size"]


def _deeply_nested(record):
    return "[" * 100_000 + "]" * 100_000


BAD_RECORDS = {
    "files numbers": _files_numbers,
    "files without size": _files_without_size,
    "deeply nested": _deeply_nested,
    "rows a string": lambda record: record.update(rows="four"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_record_not_of_a_records_shape_is_named_on_open_and_recomputed(finished, tmp_path,
                                                                         case):  # fmt: skip
    folder = copy_of(finished, tmp_path)
    path = store.record_path(folder, 1)
    record = json.loads(path.read_text())
    changed = BAD_RECORDS[case](record)
    path.write_text(changed if isinstance(changed, str) else json.dumps(record))
    with pytest.raises(store.AuditStoreError) as refused:
        gw.AuditResults(folder)
    message = str(refused.value)
    assert "\n" not in message
    assert "shard 1 damaged" in message
    assert "commits/00001.json is not a valid record of shard 1" in message
    resumed = quiet_audit("shapes", folder)
    assert resumed.computed_shards == 1
    assert_same_results(gw.AuditResults(folder), finished)


def test_deeply_nested_json_in_a_manifest_is_one_error_naming_it(finished, tmp_path):
    folder = copy_of(finished, tmp_path)
    path = folder / store.MANIFEST
    path.write_text("[" * 100_000 + "]" * 100_000)
    before = listing(folder)
    for attempt in (lambda: gw.AuditResults(folder), lambda: quiet_audit("shapes", folder)):
        with pytest.raises(store.AuditStoreError) as refused:
            attempt()
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"{path} is not a readable manifest (")
    assert listing(folder) == before


HUGE_COUNTS = """
import json, re, resource, sys, time
from pathlib import Path

import gradcam_widget as gw
from gradcam_widget import store

mode, folders = sys.argv[1], sys.argv[2:]
if mode == "audit":
    model = gw.models.load("shapes")
# the address space this process has now, and 2 GiB more (at least 4 GiB in all): a range
# of 10**12 shard numbers built would take tens of gigabytes, and fails here instead
size = int(re.search(r"VmSize:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) << 10
limit = max(4 << 30, size + (2 << 30))
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for folder in folders:
    started = time.monotonic()
    try:
        if mode == "open":
            store.AuditResults(folder)
        else:
            gw.audit(model, "scenes:1000000-1000008", out=folder, shard_size=4, batch_size=4,
                     progress=False)
        outcome = "done"
    except ValueError as error:  # AuditStoreError, AuditError
        outcome = "refused: " + str(error)
    except MemoryError:
        outcome = "MemoryError"
    print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}), flush=True)
"""


def _limited_run(tmp_path: Path, mode: str, folders: list[Path]) -> list[dict]:
    """HUGE_COUNTS in a process of bounded address space (2 GiB more than its imports take,
    at least 4 GiB): one outcome per folder."""
    if not Path("/proc/self/status").exists():
        pytest.skip("the address space is measured in /proc (Linux)")
    environment = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0",
                                "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}  # fmt: skip
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")])
    )
    process = subprocess.run(
        [sys.executable, "-c", HUGE_COUNTS, mode, *map(str, folders)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    outcomes = [json.loads(line) for line in process.stdout.splitlines()]
    assert len(outcomes) == len(folders), process.stdout
    return outcomes


def test_huge_counts_in_a_manifest_are_refused_quickly_without_memory(finished, tmp_path):
    """``shards`` or ``images`` of 10**12 is refused by the manifest's check in one line, in
    well under a second, in a process of bounded memory (a range of the count built would
    take tens of gigabytes); counts that agree with each other are compared arithmetically:
    the folder opens with one line, and a run puts the manifest right."""
    huge = 10**12
    cases = {
        "shards": ({"shards": huge}, f"'shards' is {huge}, expected 2 ('images' 8 in shards of 4)"),
        "images": ({"images": huge}, f"'shards' is 2, expected {huge // 4} ('images' {huge}"),
        "rows": ({"rows": huge}, f"'rows' is {huge}, more than its 8 images"),
        "negative": ({"shards": -huge}, f"'shards' is {-huge}, expected a count"),
    }
    folders = {}
    for name, (change, _) in [*cases.items(), ("agreeing", ({"images": 4 * huge,
                                                              "shards": huge}, None))]:  # fmt: skip
        folder = folders[name] = copy_of(finished, tmp_path, name)
        manifest = json.loads((folder / store.MANIFEST).read_text())
        (folder / store.MANIFEST).write_text(json.dumps(manifest | change))
    opened = dict(zip(folders, _limited_run(tmp_path, "open", list(folders.values())),
                      strict=True))  # fmt: skip
    for name, (_, expected) in cases.items():
        outcome = opened[name]["outcome"]
        path = folders[name] / store.MANIFEST
        assert outcome.startswith(f"refused: {path} is not a valid audit manifest: "), outcome
        assert expected in outcome and "\n" not in outcome, outcome
        assert opened[name]["seconds"] < 5, opened[name]
    outcome = opened["agreeing"]["outcome"]
    assert outcome.startswith("refused: ") and "\n" not in outcome, outcome
    assert f"shard 2 of this complete audit is missing (no commits{os.sep}00002.json, and " \
        f"{huge - 3} more)" in outcome, outcome  # fmt: skip
    assert opened["agreeing"]["seconds"] < 5, opened["agreeing"]
    ran = dict(zip(folders, _limited_run(tmp_path, "audit", list(folders.values())), strict=True))
    for name, (_, expected) in cases.items():
        assert ran[name]["outcome"].startswith("refused: ") and expected in ran[name]["outcome"]
    assert ran["agreeing"]["outcome"] == "done", ran["agreeing"]
    repaired = gw.AuditResults(folders["agreeing"])
    assert (repaired.manifest["images"], repaired.manifest["shards"]) == (8, 2)
    assert_same_results(repaired, finished)


def test_a_refused_run_leaves_none_of_the_folders_it_created(tmp_path):
    kept = tmp_path / "kept"
    (kept / "mine.txt").parent.mkdir()
    (kept / "mine.txt").write_text(PRECIOUS)
    before = sorted(tmp_path.rglob("*"))
    for out in (tmp_path / "deep" / "a" / "b" / "out", kept / "new" / "out"):
        with pytest.raises(ValueError, match="unknown layer 'nope'"):  # by the first shard
            quiet_audit("shapes", out, layer="nope")
        assert sorted(tmp_path.rglob("*")) == before  # the folders above out= too


# --- 9: entries that are no regular file, and user files named like the package's ---------


def bounded(call, fifos=(), seconds: float = 120):
    """``call()`` in a thread: its value, or a failure when it still runs after ``seconds``
    (then each FIFO in ``fifos`` is opened for writing and closed, again and again for a
    while, so that a reader blocked on one gets end of file and the thread ends)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - raised below
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            for fifo in fifos:
                with contextlib.suppress(OSError):  # no reader waiting on it just now
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(0.1)
        pytest.fail(f"still running after {seconds} s: it opened a FIFO and waited")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _fifo(path: Path, outside: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _folder(path: Path, outside: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "mine.txt").write_text(PRECIOUS)


def _link_to_a_user_file(path: Path, outside: Path) -> None:
    (outside / "precious.txt").write_text(PRECIOUS)
    path.unlink(missing_ok=True)
    os.symlink(outside / "precious.txt", path)


UNUSUAL = {  # name in the folder, what is put there, whether AuditResults names it
    "lock fifo": (".lock", _fifo, False),
    "lock link": (".lock", _link_to_a_user_file, False),
    "record fifo": ("commits/00001.json", _fifo, True),
    "record folder": ("commits/00001.json", _folder, True),
    "maps fifo": ("maps/00001.npy", _fifo, True),
    "part link": (f"{store.TABLE}/part-00001.parquet", _link_to_a_user_file, True),
}


@pytest.mark.parametrize("case", sorted(UNUSUAL))
def test_entries_that_are_no_regular_file_are_named_never_opened_nor_replaced(
    finished, shapes, tmp_path, case
):
    """A FIFO, a folder or a symbolic link where the store keeps a file: opening the folder
    names it (or reads around it) and never blocks; a run refuses the folder naming it, and
    changes nothing, the user's file behind a link included."""
    name, make, named_on_open = UNUSUAL[case]
    folder = copy_of(finished, tmp_path)
    make(folder / name, tmp_path)
    fifos = [folder / name] if "fifo" in case else []
    if named_on_open:
        with pytest.raises(store.AuditStoreError) as refused:
            bounded(lambda: gw.AuditResults(folder), fifos, seconds=60)
        message = str(refused.value)
        assert "shard 1 damaged" in message and name in message and "\n" not in message
        if name.startswith("commits/"):
            assert f"{name} is not a valid record of shard 1" in message
    else:  # .lock is not read when a folder opens
        assert_same_results(bounded(lambda: gw.AuditResults(folder), fifos, 60), finished)
    store.record_path(folder, 0).unlink()  # a run would write: shard 0 to compute
    before = listing(folder)
    with pytest.raises(ValueError) as refused:  # AuditError, or AuditStoreError for .lock
        bounded(lambda: quiet_audit(shapes, folder), fifos, seconds=60)
    message = str(refused.value)
    assert name in message and "\n" not in message, message
    assert listing(folder) == before
    if (tmp_path / "precious.txt").exists():
        assert (tmp_path / "precious.txt").read_text() == PRECIOUS


def test_a_fifo_named_lock_in_a_new_folder_is_refused_not_waited_on(shapes, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / store.LOCK)
    with pytest.raises(store.AuditStoreError, match=r"\.lock is a FIFO, not a lock file"):
        bounded(lambda: quiet_audit(shapes, out), [out / store.LOCK], seconds=60)
    assert os.listdir(out) == [store.LOCK]


USER_LOCKS = {
    "a pid": b'{"pid": 123}\n',
    "empty": b"",
    "a pid and more": b'{"pid": 1, "host": "h", "since": "2024-01-01T00:00:00Z", "mine": 1}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("case", sorted(USER_LOCKS))
def test_a_users_lock_file_is_not_taken_for_the_packages(shapes, tmp_path, case):
    out = tmp_path / "out"
    for name in (store.TABLE, "maps", "thumbs", ".partial"):
        (out / name).mkdir(parents=True)
    (out / store.LOCK).write_bytes(USER_LOCKS[case])
    before = listing(out)
    with pytest.raises(auditing.AuditError, match=r"not empty and holds no audit \(\.lock\)"):
        quiet_audit(shapes, out)
    assert listing(out) == before
    assert (out / store.LOCK).read_bytes() == USER_LOCKS[case]


def test_the_packages_lock_files_old_and_new_are_its_own(shapes, tmp_path):
    """A lock file left by a run killed before its manifest, in the form written now (marked)
    and in the form versions before the mark wrote: the folder is the package's, and used."""
    old = {"pid": 1, "host": "h", "since": "2024-01-01T00:00:00Z"}
    new = old | {"lock": store.LOCK_MARK}
    for number, content in enumerate((old, new)):
        out = tmp_path / f"out{number}"
        store.prepare(out)
        (out / store.LOCK).write_text(json.dumps(content))
        assert quiet_audit(shapes, out).complete
        assert not (out / store.LOCK).exists()
    with store.lock(tmp_path / "held"):
        written = json.loads((tmp_path / "held" / store.LOCK).read_text())
        assert written["lock"] == store.LOCK_MARK and written["pid"] == os.getpid()


def test_user_files_in_partial_are_never_deleted(finished, shapes, tmp_path):
    """Only the package's own files in ``.partial/`` are removed by a run: named as it names
    them now, or as earlier versions did when they begin as its files do."""
    mine = {  # named as the package once named its files, but the user's
        "manifest.json.123": b"my notes on the manifest\n",
        "part-00001.parquet.77": b"my own table\n",
        "00001.json.5": b"",
    }
    ours = {  # left by killed runs of this version and of an earlier one
        "00001.npy.gw-partial-77-0123abcd": b"\x93NUMPY half written",
        "part-00001.parquet.99": b"PAR1 half written",
        "manifest.json.42": b'{\n  "format": 2,\n  "pa',
    }
    fresh = tmp_path / "fresh"  # no manifest: the user's file is in the way, and named
    store.prepare(fresh)
    (fresh / ".partial" / "manifest.json.123").write_bytes(mine["manifest.json.123"])
    with pytest.raises(auditing.AuditError, match=r"\(\.partial/manifest\.json\.123\)"):
        quiet_audit(shapes, fresh)
    folder = copy_of(finished, tmp_path)
    for name, content in (mine | ours).items():
        (folder / ".partial" / name).write_bytes(content)
    store.record_path(folder, 1).unlink()
    assert quiet_audit(shapes, folder).computed_shards == 1  # writes: .partial is cleaned
    left = {path.name: path.read_bytes() for path in (folder / ".partial").iterdir()}
    assert left == mine
    assert_same_results(gw.AuditResults(folder), finished)
