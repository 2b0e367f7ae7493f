"""Run an audit's shards on Ray Data actors: ``gw.audit(..., ray=True)``.

>>> results = gw.audit("shapes", "scenes:1000000-1100000", out="results/", ray=True)

:func:`run_shards` turns the shards still to do into a Ray Dataset of shard numbers and maps it
with :class:`AuditActor`: a pool of actors, each loading the model once and keeping one
:class:`~gradcam_widget.auditing.ShardWorker` (so its compiled engine serves every shard it
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

Ray is imported only here, and only when an audit asks for it (``pip install
'gradcam_widget[ray]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

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


# --- Ray ------------------------------------------------------------------------------------


ENV_CONNECT_TIMEOUT = "GW_RAY_CONNECT_TIMEOUT"
"""Seconds to wait for a Ray cluster's address to answer (default
:data:`CONNECT_TIMEOUT`)."""

CONNECT_TIMEOUT = 10.0
MAX_CONNECT_TIMEOUT = 3600.0

_DEFAULT_PORTS = {"ray": 10001, "gcs": 6379}  # Ray Client server, the head's GCS
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""What a gRPC client says first: HTTP/2's connection preface and an empty SETTINGS frame. A
gRPC server (Ray's GCS, Ray Client's server) answers with a SETTINGS frame of its own."""


class RayAddressError(ConnectionError):
    """Nothing that speaks Ray's protocol answered at a Ray address in time."""


def connect_timeout(timeout: float | None = None) -> float:
    """``timeout``, else :data:`ENV_CONNECT_TIMEOUT`, else :data:`CONNECT_TIMEOUT`; > 0."""
    timeout = _setting(timeout, ENV_CONNECT_TIMEOUT, float)
    timeout = CONNECT_TIMEOUT if timeout is None else float(timeout)
    if not 0 < timeout <= MAX_CONNECT_TIMEOUT:  # NaN and inf too
        raise ValueError(
            f"the Ray connect timeout must be > 0 and at most {MAX_CONNECT_TIMEOUT:g} seconds; "
            f"got {timeout}"
        )
    return timeout


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``ray://HOST[:PORT]`` or ``HOST[:PORT]`` address; None for
    ``"auto"`` and ``"local"`` (Ray finds those itself) or a form not understood here.

    Raises:
        RayAddressError: for an address without a host (``ray://``, ``ray://:10001``) or a
            bad port.
    """
    text = address.strip()
    kind = "gcs"
    if text.startswith("ray://"):
        text, kind = text[len("ray://") :], "ray"
    elif "://" in text or text in ("auto", "local", ""):
        return None
    text = text.split("/", 1)[0]
    if text.startswith("["):  # [::1]:6379
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise RayAddressError(f"Ray address {address!r} names no host: e.g. ray://HOST:10001")
    try:
        port = int(port_text) if port_text else _DEFAULT_PORTS[kind]
    except ValueError:
        raise RayAddressError(
            f"Ray address {address!r}: the port {port_text!r} is not a number"
        ) from None
    if not 0 < port < 65536:
        raise RayAddressError(f"Ray address {address!r}: the port {port} is out of range")
    return host, port


def check_address(address, timeout: float | None = None) -> None:
    """Make sure a Ray answers at ``address`` within ``timeout`` seconds, before
    ``ray.init`` (which, pointed at a port where nothing listens, waits for minutes).

    A ``HOST:PORT`` (the head's GCS, port 6379 by default) or ``ray://HOST:PORT`` (Ray
    Client, 10001) address is checked in two steps, both within the timeout: a TCP connection
    that exchanges HTTP/2's opening frames (every gRPC server answers them: a refused
    connection, silence or a server of another protocol fail here), then one call that Ray's
    GCS or Ray Client's server answers (:data:`_PROBES`; a gRPC server that never answers or
    has no such service fails there). ``True``, ``"auto"`` and an address already joined are
    left to Ray.

    Args:
        address: what ``ray=`` was given.
        timeout: seconds (default: :data:`ENV_CONNECT_TIMEOUT`, else 10).

    Raises:
        RayAddressError: one line naming the address and what happened.
    """
    if not isinstance(address, str):
        return
    timeout = connect_timeout(timeout)
    target = _host_port(address)
    if target is None:
        return
    host, port = target
    kind = "ray" if address.strip().startswith("ray://") else "gcs"
    deadline = time.monotonic() + timeout
    what = f"no Ray answered at {address!r} within {timeout:g} s"
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(_HTTP2_PREFACE)
            header = b""
            while len(header) < 9:  # the first frame's header: length, type, flags, stream
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                connection.settimeout(min(left, 0.5))
                try:
                    chunk = connection.recv(9 - len(header))
                except TimeoutError:
                    continue
                if not chunk:
                    raise RayAddressError(f"{what}: the server closed the connection")
                header += chunk
    except RayAddressError:
        raise
    except TimeoutError:
        raise RayAddressError(f"{what}: no answer") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RayAddressError(f"{what}: {reason.lower()}") from None
    if header[3] != 0x4:  # not a SETTINGS frame: something else listens there
        raise RayAddressError(f"{what}: the server there does not speak gRPC")
    _ask_ray(address, host, port, kind, deadline, what)


_PROBES = {
    "gcs": "/ray.rpc.NodeInfoGcsService/GetClusterId",
    "ray": "/ray.rpc.RayletDriver/ClusterInfo",
}
"""A cheap call that Ray's GCS (``HOST:PORT``) and Ray Client's server (``ray://``) answer."""


def _ask_ray(address: str, host: str, port: int, kind: str, deadline: float, what: str):
    """One call of :data:`_PROBES` through gRPC, within the deadline: a server that speaks
    gRPC but never answers, or answers that it has no such service, is not a Ray (``ray.init``
    would wait on it for minutes). Skipped when grpcio (a dependency of Ray) is missing."""
    try:
        import grpc
    except ImportError:
        return
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        call = channel.unary_unary(_PROBES[kind])
        left = max(0.05, deadline - time.monotonic())
        future = call.future(b"", timeout=left)  # an empty message: every field at its default
        while not future.done():  # in short waits, so that SIGINT is taken at once
            try:
                future.result(timeout=0.2)
            except grpc.FutureTimeoutError:
                continue
            except grpc.RpcError:
                break
        error = future.exception()
    finally:
        channel.close()
    if error is None:
        return
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise RayAddressError(f"{what}: a gRPC server is there, but it did not answer")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        service = "Ray Client's" if kind == "ray" else "a Ray head's (GCS)"
        raise RayAddressError(f"{what}: the gRPC server there is not {service}")
    if code == grpc.StatusCode.UNAVAILABLE:
        detail = " ".join(str(error.details() or "").split())[:200]
        raise RayAddressError(f"{what}: unavailable ({detail})")
    # any other status: the service is there and refused an empty request; Ray answered


def check_before_start(address, timeout: float | None = None) -> None:
    """:func:`check_address` for what ``ray=`` was given (``True``: ``RAY_ADDRESS``), unless
    this process has joined a Ray already; without importing Ray. Made before anything is
    written, so a dead address is refused with the folder untouched."""
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return
    if address is True:
        address = os.environ.get("RAY_ADDRESS") or None
    if isinstance(address, str):
        check_address(address, timeout)


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


def _setting(value, variable: str, kind: Callable):
    if value is not None:
        return value
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{variable} must be a number; got {text!r}") from None


def resources(
    pending: int, workers: int | None, num_cpus: float | None, num_gpus: float | None
) -> tuple[int, float, float]:
    """``(actors, cores per actor, GPUs per actor)`` for ``pending`` shards on the cluster
    joined (see the module's *Resources*)."""
    ray = import_ray()
    workers = _setting(workers, ENV_WORKERS, int)
    num_cpus = _setting(num_cpus, ENV_CPUS, float)
    num_gpus = _setting(num_gpus, ENV_GPUS, float)
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


@dataclasses.dataclass(frozen=True, eq=False)
class _Entry:
    """A model with its preprocess, class names and kind of head (what ``unwrap`` reads)."""

    name: str
    model: object
    preprocess: Callable | None = None
    class_names: tuple | None = None
    multi_label: bool = False


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
        shell = _Entry(name, None, preprocess, names, multi_label)
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


def _load_spec(spec: dict):
    from gradcam_widget.data import models
    from gradcam_widget.engine._keras import keras

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
        model_hash: the model's hash on the driver (:func:`gradcam_widget.auditing.model_identity`):
            an actor whose model differs (another version of a shipped model) refuses to run.
        options, batch_size, preprocess: as :class:`~gradcam_widget.auditing.ShardWorker`.
        source: the object ref of the :class:`~gradcam_widget.sources.Source`.
        shard_size: images per shard.
    """

    def __init__(self, model, model_hash, options, source, shard_size, batch_size, preprocess):
        self.worker, self.error = None, None
        try:
            import ray

            from gradcam_widget.auditing import run as auditing

            model = _load_spec(ray.get(model))
            found = auditing.model_identity(model)["hash"]
            if found != model_hash:
                raise ValueError(
                    f"the model loaded on a Ray worker differs from the driver's (hash {found}, "
                    f"driver {model_hash}): install the same gradcam_widget version on every "
                    "node"
                )
            self.source = ray.get(source)
            self.total = len(self.source)
            self.shard_size = shard_size
            self.worker = auditing.ShardWorker(model, options, batch_size, preprocess)
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
        options: the audit's :class:`~gradcam_widget.auditing.Options`.
        source: a :class:`~gradcam_widget.sources.Source` (not a ``tf.data.Dataset``).
        shard_size: images per shard.
        done: numbers of the shards already committed (skipped).
        batch_size, preprocess: as :class:`~gradcam_widget.auditing.ShardWorker`.
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
    from gradcam_widget.auditing import run as auditing

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
                "model_hash": auditing.model_identity(model)["hash"],
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
