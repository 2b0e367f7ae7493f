"""Run an audit's shards on Ray Data actors: ``gw.audit(..., ray=True)``.

>>> results = gw.audit("shapes", "scenes:1000000-1100000", out="results/", ray=True)

:func:`run_shards` turns the shards still to do into a Ray Dataset of shard numbers and maps it
with :class:`AuditActor`: a pool of actors, each loading the model once and keeping one
:class:`~gradcam_widget.auditing.worker.ShardWorker` (so its compiled engine serves every shard it
gets). An actor reads its shard's images from the source itself, explains them, and sends the
:class:`~gradcam_widget.store.ShardResult` back pickled. Results stream back as shards finish
(not in shard order), and **the driver writes them**: :func:`gradcam_widget.audit` commits
each result with :func:`gradcam_widget.store.commit`, so the resume guarantee (a shard is done
exactly when its commit record exists and its files match it) is the same as for a local run,
and only the driver needs the ``out`` folder. The driver holds the folder's lock
(:func:`gradcam_widget.store.lock`) from before Ray starts to the end of the run, so a second
audit of the folder, local or on Ray, is refused; Ray's processes never inherit the lock
(Python opens it close-on-exec), so a driver killed by SIGKILL releases it. The results equal
a local run's.

**Which Ray.** ``ray=True`` uses the Ray this process already joined (``ray.init`` called
before), else the cluster ``RAY_ADDRESS`` names, else starts a local Ray on this machine. An
address (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``) joins that cluster, unless
this process already joined one. A Ray started here is **left running** when the audit ends:
a notebook that audits twice does not pay Ray's start-up (about 10 s) twice, and Ray stops
itself when the Python process exits (call ``ray.shutdown()`` to free it sooner). The actors
themselves are ended when the audit ends. A Ray the caller started is never stopped.

**On a cluster.** Start Ray on a head node (``ray start --head``) and on the others
(``ray start --address=HEAD:6379``); install ``gradcam_widget[ray]`` on every node (the
actors import it; the shipped models load by name from its assets). Then point the audit at
it, from any machine that can reach the head: ``RAY_ADDRESS=ray://head:10001`` with
``ray=True``, or ``ray="ray://head:10001"`` (on a node of the cluster: ``ray="auto"``). A
model named as in :data:`gradcam_widget.models.MODEL_NAMES` is loaded by name on each actor;
a ``.keras`` file or an in-memory model is sent as ``.keras`` bytes through the object store
(a model with custom layers needs them importable on every node). The source goes through
the object store too, once: a folder or a list of paths must be readable at the same paths
on every node (a shared file system); arrays and scenes travel as they are. A
``tf.data.Dataset`` cannot be sent: audit it locally, or pass a folder, paths or an array.

**Resources.** On a cluster with GPUs each actor takes one GPU (``num_gpus=1``) and there
are as many actors as GPUs; without GPUs each actor takes ``num_cpus`` cores (default 1),
TensorFlow in it runs that many threads, and there are as many actors as the cluster has
cores for. The keyword arguments of :func:`run_shards`, or the environment variables
:data:`ENV_WORKERS`, :data:`ENV_CPUS` and :data:`ENV_GPUS` (read by ``gw.audit(...,
ray=...)``), change that: e.g. ``GW_RAY_CPUS=8`` for a big model on big CPU nodes (fewer
copies of the model, each with 8 threads), ``GW_RAY_GPUS=0.5`` for two actors per GPU.

**Errors and output.** An actor that fails (a layer the model lacks, a bad option) sends its
exception back as its result, and the driver raises it as it is: the same ``ValueError`` as
a local run, with a note naming the shard, not Ray's wrapper of it. What can be checked
before Ray starts (the source can travel, the layer exists) is. Ray Data's progress bars and
INFO lines are off while an audit runs; the actors' output is not sent to the driver.
Actors keep Ray Data's fault tolerance (an actor lost with its node is restarted and its
shard redone); Ray 2.60 logs one false alarm about that per process ("... has constructor
arguments in the object store and max_restarts > 0", ray-project/ray#57733).

Joining the Ray and checking its address are in :mod:`gradcam_widget.auditing.ray_connect`.
Ray is imported only there and here, and only when an audit asks for it (``pip install
'gradcam_widget[ray]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from gradcam_widget.auditing import worker
from gradcam_widget.auditing.ray_connect import (  # noqa: F401 - re-exported: its old home
    CONNECT_TIMEOUT,
    ENV_CONNECT_TIMEOUT,
    MAX_CONNECT_TIMEOUT,
    RayAddressError,
    check_address,
    check_before_start,
    connect_timeout,
    setting,
)

INSTALL_HINT = "pip install 'gradcam_widget[ray]'"

ENV_WORKERS = "GW_RAY_WORKERS"
"""Environment variable: how many actors (default: as many as the cluster has GPUs, or cores
for ``num_cpus`` each)."""

ENV_CPUS = "GW_RAY_CPUS"
"""Environment variable: cores per actor (default 1), also its TensorFlow thread count."""

ENV_GPUS = "GW_RAY_GPUS"
"""Environment variable: GPUs per actor (default 1 when the cluster has GPUs, else 0)."""

WORKER_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # actors sharing a GPU do not grab all its memory
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}
"""Environment of the actors' processes (besides TensorFlow's thread counts)."""

_QUIET_LOGGERS = {
    "ray": logging.WARNING,
    "ray.data": logging.WARNING,
    "ray.data._internal.progress": logging.ERROR,  # "Progress bars disabled": we did that
}
"""Loggers held at a level while an audit runs on Ray (Ray Data's INFO lines: execution
plans, actor pool states, progress)."""


def import_ray():
    """``ray`` with Ray Data, or one ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"running an audit on Ray (ray=...) needs Ray Data, which is not installed "
            f"({error}): {INSTALL_HINT}"
        ) from None
    return ray


def connect(address=True, timeout: float | None = None) -> bool:
    """Join a Ray unless this process already has; return True when this call started one.

    Args:
        address: ``True`` (the cluster ``RAY_ADDRESS`` names, else a new local Ray) or an
            address for ``ray.init``.
        timeout: seconds an address may take to answer (:func:`check_address`).

    Raises:
        RayAddressError: when nothing answers at the address in time.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is True:
        address = os.environ.get("RAY_ADDRESS") or None
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:  # a new local Ray: no dashboard
        ray.init(include_dashboard=False, **quiet)
    else:
        check_address(str(address), timeout)
        ray.init(address=str(address), **quiet)
    return True


# --- checks made before Ray starts ----------------------------------------------------------


def check(model, options, source) -> None:
    """What can be checked here before any actor starts: the source can travel and the layer
    exists (the same ValueError a local run raises).

    Raises:
        ValueError: for a ``tf.data.Dataset`` source, or a layer the model does not have.
    """
    if not source.distributable:
        raise ValueError(
            "a tf.data.Dataset cannot be sent to Ray workers: audit it locally (ray=None), or "
            "pass a folder, a list of image paths or an array"
        )
    if options.layer is not None:
        _check_layer(model, options.layer)


def _check_layer(model, layer: str) -> None:
    """Resolve ``layer`` among the model's leaf layers with a 4-D output or a token output
    ``(N, T, C)`` (the engine decides which tokens fit a grid; skipped when the model's layers
    have no known output, as for a subclassed model)."""
    from gradcam_widget.engine import layers, unwrap
    from gradcam_widget.engine.tapping import leaf_layers

    keras_model, _, _, _ = unwrap(model)
    outer = {path for path, _ in leaf_layers(keras_model, opened=False)}
    candidates = []
    for path, leaf in leaf_layers(keras_model):
        try:
            rank = len(leaf.output.shape)
        except (AttributeError, ValueError, TypeError):  # never called symbolically
            if path in outer:
                return  # a subclassed model: the engine checks the layer on the actor
            rank = 3  # inside an opened layer (a transformer block): may be tokens
        if rank in (3, 4):
            candidates.append(path)
    if candidates:
        layers.resolve(layer, candidates)


@contextlib.contextmanager
def _quiet_logs():
    """Ray's and Ray Data's INFO lines (execution plans, actor pools) off while we run."""
    saved = []
    for name, level in _QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(max(logger.getEffectiveLevel(), level))
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def resources(
    pending: int, workers: int | None, num_cpus: float | None, num_gpus: float | None
) -> tuple[int, float, float]:
    """``(actors, cores per actor, GPUs per actor)`` for ``pending`` shards on the cluster
    joined (see the module's *Resources*)."""
    ray = import_ray()
    workers = setting(workers, ENV_WORKERS, int)
    num_cpus = setting(num_cpus, ENV_CPUS, float)
    num_gpus = setting(num_gpus, ENV_GPUS, float)
    cluster = ray.cluster_resources()
    if num_gpus is None:
        num_gpus = 1.0 if cluster.get("GPU", 0) >= 1 else 0.0
    if num_cpus is None:
        num_cpus = 1.0
    if num_cpus <= 0 or num_gpus < 0:
        raise ValueError(f"num_cpus must be > 0 and num_gpus >= 0; got {num_cpus}, {num_gpus}")
    if workers is None:
        if num_gpus > 0:
            workers = int(cluster.get("GPU", 0) // num_gpus)
        else:
            workers = int(cluster.get("CPU", 1) // num_cpus)
    if isinstance(workers, bool) or int(workers) < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}")
    return max(1, min(int(workers), pending)), float(num_cpus), float(num_gpus)


# --- the model, shipped ---------------------------------------------------------------------


def model_spec(model, load: str | None) -> dict:
    """How actors get the model: ``{"name"}`` for a shipped name, else ``{"keras": bytes,
    "suffix", "shell"}`` (a ``.keras`` file's bytes; ``shell`` is the entry without its model,
    ``None`` for a bare ``keras.Model``)."""
    from gradcam_widget.data import models
    from gradcam_widget.engine import unwrap

    if load is not None and load in models.MODEL_NAMES:
        return {"name": load}
    keras_model, preprocess, class_names, multi_label = unwrap(model)
    shell = None
    if isinstance(model, models.ModelEntry):
        shell = dataclasses.replace(model, model=None)
    elif model is not keras_model:
        names = None if class_names is None else tuple(class_names)
        name = str(getattr(model, "name", keras_model.name))
        shell = worker.HeadedModel(name, None, preprocess, names, multi_label)
    if load is not None and Path(load).is_file():
        path = Path(load)
        return {"keras": path.read_bytes(), "suffix": path.suffix, "shell": shell}
    with tempfile.TemporaryDirectory(prefix="gw-ray-") as folder:
        path = Path(folder) / "model.keras"
        try:
            keras_model.save(path)
        except Exception as error:  # noqa: BLE001 - any failure to save says the same
            raise ValueError(
                f"this model cannot be sent to Ray workers: saving it as .keras failed ({error}); "
                "audit it locally (ray=None), or pass a model that keras.models.load_model reads"
            ) from None
        return {"keras": path.read_bytes(), "suffix": ".keras", "shell": shell}


def load_spec(spec: dict):
    """The model :func:`model_spec` describes, loaded (on an actor)."""
    from gradcam_widget.data import models
    from gradcam_widget.engine import keras

    if "name" in spec:
        return models.load(spec["name"])
    with tempfile.TemporaryDirectory(prefix="gw-ray-") as folder:
        path = Path(folder) / f"model{spec['suffix']}"
        path.write_bytes(spec["keras"])
        keras_model = keras.models.load_model(path, compile=False)
    shell = spec["shell"]
    return keras_model if shell is None else dataclasses.replace(shell, model=keras_model)


# --- the actor ------------------------------------------------------------------------------


class AuditActor:
    """One Ray Data actor: loads the model once, then explains shard after shard.

    Each output row holds one shard's pickled ``("result", ShardResult)``, or ``("error",
    exception)`` when loading the model or explaining the shard failed: the driver raises
    that exception itself, so the user sees the same error as a local run, not Ray's wrapper
    of it (and a model that cannot load is not retried actor after actor).

    Args:
        model: the object ref of :func:`model_spec`'s dict.
        model_hash: the model's hash on the driver
            (:func:`~gradcam_widget.auditing.worker.model_identity`): an actor whose model
            differs (another version of a shipped model) refuses to run.
        options, batch_size, preprocess: as
            :class:`~gradcam_widget.auditing.worker.ShardWorker`.
        source: the object ref of the :class:`~gradcam_widget.sources.Source`.
        shard_size: images per shard.
    """

    def __init__(self, model, model_hash, options, source, shard_size, batch_size, preprocess):
        self.worker, self.error = None, None
        try:
            import ray

            model = load_spec(ray.get(model))
            found = worker.model_identity(model)["hash"]
            if found != model_hash:
                raise ValueError(
                    f"the model loaded on a Ray worker differs from the driver's (hash {found}, "
                    f"driver {model_hash}): install the same gradcam_widget version on every "
                    "node"
                )
            self.source = ray.get(source)
            self.total = len(self.source)
            self.shard_size = shard_size
            self.worker = worker.ShardWorker(model, options, batch_size, preprocess)
        except Exception as error:  # noqa: BLE001 - sent to the driver, raised there
            self.error = error

    def _explain(self, shard: int) -> tuple:
        if self.error is not None:
            return ("error", self.error), 0
        start = shard * self.shard_size
        items = list(self.source.items(start, min(start + self.shard_size, self.total)))
        try:
            return ("result", self.worker(shard, items)), len(items)
        except Exception as error:  # noqa: BLE001 - sent to the driver, raised there
            return ("error", error), len(items)

    def __call__(self, batch):
        import pyarrow as pa

        shards, payloads, counts = [], [], []
        for shard in batch.column("shard").to_pylist():
            outcome, count = self._explain(shard)
            shards.append(shard)
            payloads.append(_dumps(outcome))
            counts.append(count)
        return pa.table(
            {
                "shard": pa.array(shards, pa.int64()),
                "payload": pa.array(payloads, pa.large_binary()),
                "count": pa.array(counts, pa.int64()),
            }
        )


def _dumps(outcome: tuple) -> bytes:
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
        kind, value = outcome
        return pickle.dumps((kind, RuntimeError(f"{type(value).__name__}: {value}")))


# --- errors ---------------------------------------------------------------------------------


def _cause(error: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (``RayTaskError(ValueError)`` and the like),
    else ``error`` itself (a died actor, a lost node: Ray's own message says it best)."""
    import ray.exceptions

    current = error
    for _ in range(8):
        inner = (
            getattr(current, "cause", None)
            if isinstance(current, ray.exceptions.RayTaskError)
            else None
        )
        if not isinstance(inner, BaseException):
            break
        current = inner
    if isinstance(current, ray.exceptions.RayError):
        return error
    return current


def _raise_cause(error: BaseException):
    cause = _cause(error)
    if cause is error:
        raise error
    raise cause from None


def _remote_error(error: BaseException, shard: int):
    if isinstance(error, ModuleNotFoundError) and "gradcam_widget" in str(error):
        error = ImportError(
            f"a Ray worker cannot import gradcam_widget ({error}): install it on every node "
            f"({INSTALL_HINT})"
        )
    if hasattr(error, "add_note"):
        error.add_note(f"(raised on a Ray worker, shard {shard})")
    raise error.with_traceback(None) from None


# --- the run --------------------------------------------------------------------------------


def run_shards(
    ray,
    model,
    load: str | None,
    options,
    source,
    shard_size: int,
    done,
    batch_size: int = 32,
    preprocess=None,
    *,
    workers: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
) -> Iterator[tuple]:
    """Explain the shards of ``source`` not in ``done`` on Ray Data actors.

    Args:
        ray: ``True`` (the Ray joined, else ``RAY_ADDRESS``'s, else a new local one) or a
            Ray address (see the module's *Which Ray*).
        model: a ``keras.Model`` or :class:`~gradcam_widget.models.ModelEntry`.
        load: what reloads it in another process (a name of
            :data:`~gradcam_widget.models.MODEL_NAMES` or a ``.keras`` path), or ``None``
            for a model that exists only in memory (sent as ``.keras`` bytes).
        options: the audit's :class:`~gradcam_widget.auditing.worker.Options`.
        source: a :class:`~gradcam_widget.sources.Source` (not a ``tf.data.Dataset``).
        shard_size: images per shard.
        done: numbers of the shards already committed (skipped).
        batch_size, preprocess: as :class:`~gradcam_widget.auditing.worker.ShardWorker`.
        workers: how many actors (default: ``GW_RAY_WORKERS``, else one per GPU, or per
            ``num_cpus`` cores, at most one per pending shard).
        num_cpus: cores per actor, and TensorFlow threads in it (default ``GW_RAY_CPUS``,
            else 1).
        num_gpus: GPUs per actor (default ``GW_RAY_GPUS``, else 1 when the cluster has GPUs,
            else 0).

    Returns:
        An iterator of ``(ShardResult, number of source images in the shard)``, in the order
        shards finish. The caller commits them. Stopping it early ends the actors.

    Raises:
        ValueError: at once for a ``tf.data.Dataset`` source or an unknown layer; while
            iterating, the error an actor met (its own exception, not Ray's wrapper).
        ImportError: when Ray Data is not installed.
    """
    check(model, options, source)
    total = len(source)
    done = set(done)
    pending = [shard for shard in range(-(-total // shard_size)) if shard not in done]
    if not pending:
        return iter(())
    ray_module = import_ray()
    with _quiet_logs(), warnings.catch_warnings():
        # Ray Data 2.60 warns about its own defaults when it makes its first DataContext
        warnings.simplefilter("ignore", DeprecationWarning)
        connect(ray)
        actors, cpus, gpus = resources(len(pending), workers, num_cpus, num_gpus)
        threads = str(max(1, math.ceil(cpus)))
        model_ref = ray_module.put(model_spec(model, load))
        source_ref = ray_module.put(source)
        items = _shard_dataset(ray_module, pending)
        context = getattr(items, "context", None) or ray_module.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.enable_operator_progress_bars = False
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        dataset = items.map_batches(
            AuditActor,
            fn_constructor_kwargs={
                "model": model_ref,
                "model_hash": worker.model_identity(model)["hash"],
                "options": options,
                "source": source_ref,
                "shard_size": shard_size,
                "batch_size": batch_size,
                "preprocess": preprocess,
            },
            batch_size=1,
            batch_format="pyarrow",
            zero_copy_batch=True,
            compute=ray_module.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
            num_cpus=cpus,
            num_gpus=gpus,
            runtime_env={
                "env_vars": WORKER_ENV
                | {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads}
            },
        )
    return _stream(dataset, (model_ref, source_ref))


def _shard_dataset(ray, pending: list[int]):
    """A Dataset of one row ``{"shard": k}`` per block (each block is one actor call)."""
    import inspect

    rows = [{"shard": shard} for shard in pending]
    if "override_num_blocks" in inspect.signature(ray.data.from_items).parameters:
        return ray.data.from_items(rows, override_num_blocks=len(rows))
    return ray.data.from_items(rows, parallelism=len(rows))  # Ray < 2.10


def _stream(dataset, refs) -> Iterator[tuple]:
    quiet = _quiet_logs()
    quiet.__enter__()
    batches = iter(
        dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)
    )
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as error:  # noqa: BLE001 - Ray's wrappers, unwrapped
                _raise_cause(error)
            columns = (batch.column(name).to_pylist() for name in ("shard", "payload", "count"))
            for shard, payload, count in zip(*columns, strict=True):
                kind, value = pickle.loads(payload)
                if kind == "error":
                    _remote_error(value, shard)
                yield value, count
    finally:
        if hasattr(batches, "close"):  # a generator: ends the execution and its actors
            batches.close()
        del refs
        quiet.__exit__(None, None, None)
