"""The audit store's ``manifest.json``: its shape checked before anything reads it
(:func:`check_manifest`), and read from a folder (:func:`read_manifest`)."""

from __future__ import annotations

from pathlib import Path

from gradcam_widget.auditing.store_io import one_line, read_json
from gradcam_widget.auditing.store_layout import MANIFEST, MAX_INPUT_SIDE, AuditStoreError

# --- the manifest ---------------------------------------------------------------------------

_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "true or false"}  # fmt: skip

_MANIFEST_FIELDS = (
    # (dotted key, type, required): optional keys may also be null
    ("format", int, True),
    ("job", dict, True),
    ("job.model", dict, True),
    ("job.model.name", str, True),
    ("job.model.hash", str, True),
    ("job.source", dict, True),
    ("job.source.description", str, True),
    ("job.source.fingerprint", str, True),
    ("job.options", dict, True),
    ("job.options.cam_options", dict, True),
    ("status", str, True),
    ("input_size", list, False),
    ("class_names", list, False),
    ("layer", str, False),
    ("images", int, False),
    ("shards", int, False),
    ("rows", int, False),
    ("skipped", list, False),
)
"""What :func:`read_manifest` requires of a manifest (what this module and the gallery read)."""


def type_name(value) -> str:
    """How a JSON value's type is named in a message (``"an object"``, ``"null"``)."""
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def check_manifest(content, path) -> dict:
    """``content`` if it has the shape of a manifest (:data:`_MANIFEST_FIELDS`).

    Raises:
        AuditStoreError: one line naming ``path``, the key and what was expected.
    """

    def refuse(problem: str):
        raise AuditStoreError(f"{path} is not a valid audit manifest: {problem}")

    if not isinstance(content, dict):
        refuse(f"it holds {type_name(content)}, expected an object with 'job', 'status', ...")
    for key, kind, required in _MANIFEST_FIELDS:
        parent, _, name = key.rpartition(".")
        holder = content
        for step in parent.split(".") if parent else ():
            holder = holder[step]  # checked above: every parent is an object
        if name not in holder or holder[name] is None:
            if required:
                refuse(f"'{key}' is missing (expected {_TYPE_NAMES[kind]})")
            continue
        value = holder[name]
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong:
            refuse(f"'{key}' is {type_name(value)} ({value!r:.40}), expected {_TYPE_NAMES[kind]}")
    if content["status"] not in ("running", "complete"):
        refuse(f"'status' is {content['status']!r}, expected 'running' or 'complete'")
    size = content.get("input_size")
    if size is not None and (
        len(size) != 2 or not all(type(side) is int and 0 < side <= MAX_INPUT_SIDE for side in size)
    ):
        refuse(
            f"'input_size' is {size!r:.60}, expected [height, width], two positive integers "
            f"of at most {MAX_INPUT_SIDE}"
        )
    names = content.get("class_names")
    if names is not None and not all(isinstance(name, str) for name in names):
        refuse("'class_names' holds something other than strings, expected a list of names")
    skipped = content.get("skipped")
    if skipped is not None and not all(isinstance(entry, dict) for entry in skipped):
        refuse("'skipped' holds something other than objects, expected {index, id, error}s")
    _check_counts(content, refuse)
    return content


def _check_counts(content: dict, refuse) -> None:
    """The manifest's counts are plausible: none negative, ``shards`` the shard count of
    ``images`` (in shards of ``job.options.shard_size``; at most ``images`` when that is not
    given), ``rows`` at most ``images``. Compared as numbers, never as ranges."""
    shard_size = content["job"]["options"].get("shard_size")
    if shard_size is not None and (type(shard_size) is not int or shard_size < 1):
        refuse(f"'job.options.shard_size' is {shard_size!r:.40}, expected a positive integer")
    for key in ("images", "shards", "rows"):
        value = content.get(key)
        if value is not None and value < 0:
            refuse(f"'{key}' is {value}, expected a count (0 or more)")
    images, shards, rows = (content.get(key) for key in ("images", "shards", "rows"))
    if images is None:
        return
    if shards is not None:
        if shard_size is not None and shards != -(-images // shard_size):
            refuse(
                f"'shards' is {shards}, expected {-(-images // shard_size)} ('images' "
                f"{images} in shards of {shard_size})"
            )
        if shards > images:
            refuse(f"'shards' is {shards}, more than its {images} images")
    if rows is not None and rows > images:
        refuse(f"'rows' is {rows}, more than its {images} images")


def read_manifest(folder) -> dict | None:
    """The manifest of ``folder``, or ``None`` when there is none.

    Raises:
        AuditStoreError: if it is not a regular file (never opened then: a FIFO would
            block), not JSON (or nested too deeply to read), or not of a manifest's shape
            (:func:`check_manifest`).
    """
    path = Path(folder) / MANIFEST
    try:
        content = read_json(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as error:
        raise AuditStoreError(f"{path} is not a readable manifest ({one_line(error)})") from None
    return check_manifest(content, path)
