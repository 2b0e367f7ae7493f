"""Audit a whole data set: explain every image, measure every map, keep it all on disk.

>>> results = gw.audit("shapes", "scenes:1000000-1000500", out="results/")
>>> results.table.sort_values("object_share").head(50)   # where the model looks away

:func:`audit` cuts the source into shards of consecutive images, explains each shard with
:func:`gradcam_widget.iter_explain` (one compiled pass per batch), measures each map
(:func:`map_statistics`, and against the object's mask when the source has masks) and
commits the shard to the store (:mod:`gradcam_widget.store`): a row per image, the raw maps,
overlay thumbnails. Killed at any moment and run again with the same arguments, it resumes
at the first unfinished shard (and recomputes a shard damaged since it was written); run on a
finished store it does nothing and says so; run with another model (by its weights and head,
not its name), source or option against the same folder, into a folder holding files it did
not write, or while another run writes the folder, it refuses before writing anything.

The same :class:`ShardWorker` runs locally or inside Ray Data actors
(:mod:`gradcam_widget.auditing.ray`): the results are the same; both take it from
:mod:`gradcam_widget.auditing.worker`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gradcam_widget import options as recipe
from gradcam_widget._text import shown as _shown
from gradcam_widget.auditing import ray as distributed
from gradcam_widget.auditing import sources, store
from gradcam_widget.auditing.measures import (  # noqa: F401 - re-exported: its old home
    THUMBNAIL_QUALITY,
    THUMBNAIL_SIDE,
    map_statistics,
    mask_statistics,
    thumbnail,
)
from gradcam_widget.auditing.worker import (  # noqa: F401 - re-exported: its old home
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SHARD_SIZE,
    HeadedModel,
    Options,
    ShardWorker,
    input_size,
    model_head,
    model_identity,
)
from gradcam_widget.cam import core
from gradcam_widget.data import models
from gradcam_widget.data.models import load_model  # noqa: F401 - re-exported: its old home

TARGETS = ("predicted", "true")
"""Named targets: each image's top class, or its true class (the source must know it)."""


SHARED_OPTIONS = recipe.map_keywords()
"""Options of :data:`gradcam_widget.options.TABLE` that every method takes (how the raw map
becomes a heatmap): recorded in the job with the method's own, defaults filled in."""


class AuditError(ValueError):
    """An audit that cannot run as asked (another job's folder, a target without labels)."""


def _with_stored_head(model, identity: dict, manifest: dict | None):
    """``model``, or, when it is a bare ``keras.Model`` (a ``.keras`` file carries no class
    names) with the weights of the audit in ``manifest``, that model with the stored
    audit's head, so that resuming gives the rows the audit began with."""
    from gradcam_widget.engine import keras

    if manifest is None or not isinstance(model, keras.Model):
        return model
    stored = manifest["job"]["model"]
    head = stored.get("head")
    if stored["hash"] != identity["hash"] or not isinstance(head, dict):
        return model
    if head.get("preprocess") is not None:  # not in the file: the job check names it
        return model
    names = head.get("class_names")
    names = None if names is None else tuple(names)
    return HeadedModel(model.name, model, None, names, bool(head.get("multi_label")))


def _check_targets(targets, source: sources.Source, class_names) -> str | int:
    if isinstance(targets, str) and targets in TARGETS:
        if targets == "true" and not source.has_labels:
            raise AuditError(
                "targets='true' needs the true classes: this source has none (a folder "
                "gives them with labels='folders', arrays and paths with labels=[...])"
            )
        return targets
    if isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        return int(targets)
    if isinstance(targets, str) and class_names and targets in class_names:
        return list(class_names).index(targets)
    raise AuditError(
        f"targets must be 'predicted', 'true', a class index or a class name; got {targets!r}"
    )


def _job(model_id: dict, load: str | None, source: sources.Source, options: Options,
         head: dict | None = None) -> dict:  # fmt: skip
    return {
        "model": model_id | {"load": load} | ({} if head is None else {"head": head}),
        "source": {
            "description": source.description,
            "fingerprint": source.fingerprint(),
            "reopen": reopen_spec(source),
        },
        "options": options.as_dict(),
    }


def reopen_spec(source: sources.Source) -> dict | None:
    """How to open ``source`` again (for the gallery), or ``None`` (arrays, datasets)."""
    if isinstance(source, sources.Scenes):
        return {"kind": "scenes", "spec": f"{source.kind}:{source.start}-{source.stop}",
                "n_objects": source.n_objects}  # fmt: skip
    if isinstance(source, sources.Folder):
        labels = "folders" if source.has_labels else None
        return {"kind": "folder", "path": str(source.root.resolve()), "labels": labels}
    if isinstance(source, sources.Paths):
        return {"kind": "paths", "root": None if source.root is None else str(source.root)}
    return None


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if prefix == "model." and (key == "name" or (key == "head" and before is None)):
            continue  # models are compared by weights and head; a format-1 job has no head
        if isinstance(before, dict) and isinstance(after, dict):
            lines += _differences(before, after, f"{prefix}{key}.")
        elif before != after and key not in ("description", "reopen", "load"):
            lines.append(f"{prefix}{key}: stored {before!r}, now {after!r}")
    return lines


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def _progress_bar(total: int | None, done: int, quiet: bool):
    """A bar with images/s and ETA: tqdm's notebook bar in a notebook, else the console's."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="img", desc="audit", dynamic_ncols=True,
                smoothing=0.1)  # fmt: skip


def audit(
    model,
    source,
    out="results",
    *,
    layer: str | None = None,
    method: str = recipe.TABLE["method"].default,
    targets: str | int = "predicted",
    batch_size: int = 32,
    shard_size: int = DEFAULT_SHARD_SIZE,
    score: str = recipe.TABLE["score"].default,
    labels=None,
    preprocess: Callable | None = None,
    image_size: tuple[int, int] | None = None,
    progress: bool = True,
    ray=None,
    interpolation: str = recipe.TABLE["interpolation"].default,
    **cam_options,
) -> store.AuditResults:
    """Explain every image of ``source`` and write the results to ``out``, resumably.

    Args:
        model: a model name (``"shapes"``), a ``.keras`` path, a
            :class:`~gradcam_widget.models.ModelEntry` or a ``keras.Model``.
        source: a folder of images (recursive), a list of image paths, an ``(N, H, W, C)``
            array or list of arrays, a ``tf.data.Dataset`` (of images, ``(image, label)``
            pairs or batches), shape scenes ``"scenes:START-STOP"`` /
            ``"shortcut:START-STOP"``, or a :class:`gradcam_widget.sources.Source`.
        out: the results folder (see :mod:`gradcam_widget.store`).
        layer, method, score, preprocess: as :func:`gradcam_widget.explain`.
        **cam_options: as :func:`gradcam_widget.explain`.
        targets: ``"predicted"`` (each image's top class), ``"true"`` (its true class), a
            class index or a class name (the same class for all).
        batch_size: images per compiled pass.
        shard_size: images per committed shard.
        labels: the source's labels (``"folders"`` for a folder; a list for paths or arrays;
            ``True`` for a dataset of ``(image, label)`` pairs).
        image_size: ``(H, W)`` to fit images to when the model takes any size (default
            224 x 224).
        progress: a progress bar with images/s and ETA, and a line when there is nothing to
            do (``False``: silent).
        ray: ``None`` runs here; ``True`` (a local Ray, or the cluster ``RAY_ADDRESS`` names)
            or an address runs the shards on Ray Data actors (``pip install
            'gradcam_widget[ray]'``).
        interpolation: how each raw map is resized to the image (``"bilinear"``,
            ``"nearest"`` or ``"bicubic"``: ``gradcam_widget.options.TABLE["interpolation"]``),
            recorded in the job like ``order`` and the method's options: a rerun with another
            one into the same folder is refused like one with another ``pooling``.

    Returns:
        The :class:`~gradcam_widget.store.AuditResults` of ``out``.

    Raises:
        AuditError: if ``out`` holds another job's results (the message lists what differs),
            holds files this package did not write, is the source folder, or for targets the
            source cannot give.
        AuditStoreError: if another run is writing ``out`` (the message names it: pid, host,
            since when), or its manifest is not of a manifest's shape.
        ValueError: for a bad source, model, layer, method or option, before anything is
            written (a bad layer or class is found by the first shard's pass).
    """
    from gradcam_widget._version import __version__
    from gradcam_widget.engine import unwrap

    started = time.time()
    batch_size = core.check_int("batch_size", batch_size)
    shard_size = core.check_int("shard_size", shard_size)
    core.check_option("score", score, recipe.SCORES)
    ray = _check_ray(ray)
    source = sources.as_source(source, labels)
    try:
        model, load = models.load_model(model)
    except models.UnknownModelError as error:
        raise AuditError(str(error)) from None
    folder = Path(os.path.expanduser(os.fspath(out)))
    if folder.exists() and not folder.is_dir():
        raise AuditError(f"out={str(folder)!r} is a file: name a folder for the results")
    _check_not_the_source(folder, source)
    identity = model_identity(model)
    model = _with_stored_head(model, identity, store.read_manifest(folder))
    _, _, class_names, _ = unwrap(model)
    source.set_class_names(class_names)
    options = Options(
        layer=layer,
        method=method,
        targets=_check_targets(targets, source, class_names),
        score=score,
        shard_size=shard_size,
        image_size=_check_image_size(image_size),
        cam_options=_normalised_options(method, cam_options | {"interpolation": interpolation}),
        preprocess=_preprocess_name(preprocess),
    )
    size = input_size(model, options)
    source.set_size(size)  # images are fitted as they are read: a shard of photos stays small
    job = json.loads(json.dumps(_job(identity, load, source, options, model_head(model))))
    if ray is not None:
        distributed.check(model, options, source)
    # Everything is checked before anything is written: the lock (who holds it), then the
    # folder (empty, or this job's); the same again once the lock is held, in case another
    # run wrote in between.
    store.check_unlocked(folder)
    manifest = _check_folder(folder, job)
    with store.lock(folder):
        if store.read_manifest(folder) != manifest:
            manifest = _check_folder(folder, job)
        if manifest is not None and manifest["job"]["model"]["name"] != job["model"]["name"]:
            _say(
                f"{_shown(folder)}: the stored audit's model is named "
                f"{manifest['job']['model']['name']!r}, this one {job['model']['name']!r}; "
                f"their weights are the same (hash {job['model']['hash']}): resuming",
                not progress,
            )
        total = _length(source)
        shard_count = _shard_count(total, shard_size, manifest)
        done, damaged = store.check_shards(folder, shard_count)
        if manifest is not None:
            store.adopt_legacy(folder, done)  # a folder of format 1: records for its parts
        for shard, problem in sorted(damaged.items()):
            _say(f"{_shown(folder)}: shard {shard} was damaged since written ({problem}): "
                 "recomputing it", not progress)  # fmt: skip
        if (
            manifest is not None
            and manifest.get("status") == "complete"
            and shard_count is not None
            and len(done) == shard_count  # done: numbers below shard_count (never a range)
            and manifest.get("shards") == shard_count
            and (total is None or manifest.get("images") == total)
        ):
            _say(f"{_shown(folder)} already holds this audit, complete: nothing to do",
                 not progress)  # fmt: skip
            return store.AuditResults(folder, computed_shards=0)
        manifest = {
            "format": store.FORMAT_VERSION,
            "package": {"name": "gradcam_widget", "version": __version__},
            "job": job,
            "class_names": None if class_names is None else list(class_names),
            "input_size": list(size),
            "layer": (manifest or {}).get("layer"),
            "status": "running",
            "images": total,
            "shards": shard_count,
            "run": {"batch_size": batch_size, "ray": None if ray is None else str(ray)},
            "created": (manifest or {}).get("created", _now()),
        }
        computed = _run(folder, manifest, model, load, options, source, done, batch_size,
                        preprocess, ray, progress)  # fmt: skip
        return _finish(folder, manifest, source, shard_size, computed, started)


def _check_not_the_source(folder: Path, source: sources.Source) -> None:
    root = getattr(source, "root", None) if isinstance(source, sources.Folder) else None
    if root is not None and folder.exists() and folder.resolve() == Path(root).resolve():
        raise AuditError(
            f"out={str(folder)!r} is the folder of images being audited: name another folder "
            "for the results"
        )


def _check_folder(folder: Path, job: dict) -> dict | None:
    """The manifest of ``folder`` when it holds this job (``None``: it is empty, or holds only
    what a run killed before its manifest leaves); writes nothing.

    Raises:
        AuditError: if ``folder`` holds files the package did not write and no audit, or
            another job's audit (the message lists what differs).
        AuditStoreError: if its manifest is not of a manifest's shape.
    """
    manifest = store.read_manifest(folder)
    if manifest is None:
        foreign = store.foreign_entries(folder)
        if foreign:
            raise AuditError(
                f"{folder} is not empty and holds no audit ({_listed(foreign)}): choose "
                "another out= (a new or empty folder)"
            )
        return None
    unusual = store.unusual_entries(folder)
    if unusual:  # a FIFO would block the run, a folder or a link would be replaced
        raise AuditError(
            f"{folder} holds {_listed(unusual)} where this package keeps its own files (it "
            "writes regular files there, never reads anything else): move "
            f"{'it' if len(unusual) == 1 else 'them'} away, or choose another out="
        )
    differences = _differences(manifest["job"], job)
    if manifest["job"]["model"].get("head") is None:  # format 1: its class names, at least
        stored, now = manifest.get("class_names"), job["model"]["head"]["class_names"]
        if stored != now:
            differences.append(f"class_names: stored {stored!r}, now {now!r}")
    if differences:
        raise AuditError(
            f"{folder} holds another audit ({'; '.join(differences)}): pass another out= or "
            "delete that folder"
        )
    return manifest


def _listed(names: list[str]) -> str:
    """The first three of ``names`` (printable), and how many more."""
    shown = ", ".join(_shown(name) for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _run(folder, manifest, model, load, options, source, done, batch_size, preprocess, ray,
         progress) -> int:  # fmt: skip
    """Compute and commit every shard not in ``done``; the number computed."""
    shard_size, total = options.shard_size, manifest["images"]
    opened = False

    def commit(result: store.ShardResult) -> None:
        # Nothing is written before the first shard is computed, so a job that fails on it
        # (a bad layer, a model that fails) leaves no folder behind. The manifest goes first:
        # a folder killed at any moment after that is this job's, and resumes.
        nonlocal opened
        if not opened or (result.layer and manifest["layer"] != result.layer):
            manifest["layer"] = result.layer or manifest["layer"]
            store.write_json(folder, store.MANIFEST, manifest)
            store.prepare(folder)
            opened = True
        store.commit(folder, result)

    if done:
        count = manifest["shards"] or "?"
        _say(f"{_shown(folder)}: resuming, {len(done)} of {count} shards done", not progress)
    bar = _progress_bar(total, _rows_done(done, shard_size, total), not progress)
    computed = 0
    try:
        if ray is None:
            worker = ShardWorker(model, options, batch_size=batch_size, preprocess=preprocess)
            shards = ((worker(shard, items), len(items))
                      for shard, items in source.shards(shard_size, skip=done))  # fmt: skip
        else:
            shards = distributed.run_shards(
                ray, model, load, options, source, shard_size, done, batch_size, preprocess
            )
        for result, count in shards:
            commit(result)
            computed += 1
            if bar is not None:
                bar.update(count)
    finally:
        if bar is not None:
            bar.close()
    if not opened:  # every shard was already done (a run killed before it could finish)
        store.write_json(folder, store.MANIFEST, manifest)
    return computed


def _check_ray(ray):
    if ray is None or ray is False:
        return None
    if ray is True or (isinstance(ray, str) and ray):
        distributed.check_before_start(ray)  # a dead address: refused before any write
        return ray
    raise ValueError(f"ray must be None, True or a Ray address string; got {ray!r}")


def _check_image_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    try:
        height, width = (core.check_int("image_size", side) for side in image_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"image_size must be (height, width), two positive integers; got {image_size!r}"
        ) from None
    return height, width


def _plain(value):
    """A numpy scalar as the Python number it holds (for the JSON manifest)."""
    return value.item() if isinstance(value, np.generic) else value


def _normalised_options(method: str, cam_options: dict) -> tuple:
    """The method's options as it uses them, defaults filled in, so that passing a default
    explicitly is the same job as leaving it out."""
    from gradcam_widget.cam import methods

    given = {name: _plain(value) for name, value in cam_options.items()}
    shared = {}
    for name in SHARED_OPTIONS:
        row = recipe.TABLE[name]
        shared[name] = given.pop(name, row.default)
        core.check_option(name, shared[name], row.values)
    used = methods.get(method).bind(**given)
    return tuple(sorted((used | shared).items()))


def _preprocess_name(preprocess) -> str | None:
    """A name for a ``preprocess=`` function in the job (``None``: the model's own)."""
    if preprocess is None:
        return None
    module = getattr(preprocess, "__module__", None) or type(preprocess).__module__
    name = getattr(preprocess, "__qualname__", None) or type(preprocess).__qualname__
    return f"{module}.{name}"


def _shard_count(total: int | None, shard_size: int, manifest: dict | None) -> int | None:
    if total is not None:
        return -(-total // shard_size)
    return None if manifest is None else manifest.get("shards")


def _length(source: sources.Source) -> int | None:
    if isinstance(source, sources.DatasetSource):
        return source.length
    return len(source)


def _rows_done(done: set[int], shard_size: int, total: int | None) -> int:
    if total is None:
        return len(done) * shard_size
    return sum(min(shard_size, total - shard * shard_size) for shard in done)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _finish(folder, manifest, source, shard_size, computed, started) -> store.AuditResults:
    total = _length(source)
    if total is None:
        total = manifest["images"]
    shard_count = -(-total // shard_size)
    # only the shards checked against their records, numbered below the count: a stray
    # record, part or map file copied in under another number is never read
    done, damaged = store.check_shards(folder, shard_count)
    if damaged:  # pragma: no cover - changed while this run held the folder
        raise store.AuditStoreError(store.damage_message(folder, damaged))
    first, missing = store.missing_shards(done, shard_count)
    if missing:  # pragma: no cover - every shard is computed above; a guard, not a path
        raise AuditError(f"{folder}: shard {first} ({missing} in all) missing after the run")
    skipped, rows = [], 0
    for shard in sorted(done):
        metadata = store.part_metadata(folder, shard)
        skipped += metadata.get("skipped", [])
        rows += store.part_rows(folder, shard)
    manifest |= {
        "status": "complete",
        "images": total,
        "shards": shard_count,
        "rows": rows,
        "skipped": skipped,
        "finished": _now(),
        "seconds_this_run": round(time.time() - started, 1),
    }
    store.write_json(folder, store.MANIFEST, manifest)
    return store.AuditResults(folder, computed_shards=computed)
