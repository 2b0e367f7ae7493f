"""The models of the classroom app, loaded once and shared by every tab: :class:`SharedModels`.

A tab asks for an explorer of a menu value (:meth:`SharedModels.explorer`); the model behind it
is loaded on first use only, under a lock (two tabs asking at once load it once), and every
explorer of it gets the same :class:`~gradcam_widget.captures.passes.PassQueue`. The
explorers' caches are bounded per tab (:data:`CACHE_BYTES`, :data:`RESULT_BYTES`), so the
memory of N tabs is bounded by N times :data:`SESSION_BYTES` over the shared runtime.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading

from gradcam_widget.captures.passes import PassQueue
from gradcam_widget.explorer.app import app_model, load_app_model

__all__ = [
    "CACHE_BYTES",
    "RESULT_BYTES",
    "SESSION_BYTES",
    "SharedModels",
    "default_sessions",
    "give_back_memory",
]

CACHE_BYTES = 24 * 2**20
"""Bytes of captures one tab keeps (a notebook explorer keeps 256 MiB)."""

RESULT_BYTES = 8 * 2**20
"""Bytes of maps one tab keeps."""

SESSION_BYTES = 64 * 2**20
"""What one tab may hold at most, for the default session bound: its caches, its widgets'
pictures and an upload in flight."""

RUNTIME_BYTES = 2**30
"""What the server holds before any tab: Python, TensorFlow, the models (measured ~0.6 GiB
with the shapes model and its ViT, rounded up)."""


def default_sessions(total_bytes: int | None = None) -> int:
    """How many tabs the app serves at most by default: half the machine's memory, less the
    runtime, in :data:`SESSION_BYTES` per tab; at least 4, at most 200.

    Args:
        total_bytes: the machine's memory (default: read from the system).
    """
    if total_bytes is None:
        try:
            total_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # no sysconf: assume 8 GB
            total_bytes = 8 * 10**9
    return max(4, min(200, (total_bytes // 2 - RUNTIME_BYTES) // SESSION_BYTES))


ARENAS = 2
"""glibc malloc arenas the server uses (:func:`bound_arenas`): by default every thread that
allocates gets one (up to 8 per core), and each session's thread leaves its arena's pages
behind after its tab closes."""


def bound_arenas(arenas: int = ARENAS) -> bool:
    """Bound glibc's malloc arenas (``mallopt(M_ARENA_MAX)``) before the sessions' threads
    start, so the memory of closed tabs returns to a few shared arenas that
    :func:`give_back_memory` can trim. Whether it applied (``False`` off glibc)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def give_back_memory() -> None:
    """Collect what the closed tabs left and hand free heap pages back to the system
    (glibc's ``malloc_trim``; nothing elsewhere), so the server's resident memory falls."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class SharedModels:
    """The app's models, each loaded once, and their pass queues.

    Args:
        initial: the first model of every tab (a value :func:`app_model` accepts; checked).
    """

    def __init__(self, initial: str = "shapes"):
        self.initial = app_model(initial)
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._models: dict[str, object] = {}
        self._queues: dict[str, PassQueue] = {}

    def model(self, value: str):
        """The model of menu value ``value``, loaded on first use (once, whoever asks)."""
        with self._lock:
            if value in self._models:
                return self._models[value]
            loading = self._loading.setdefault(value, threading.Lock())
        with loading:
            with self._lock:
                if value in self._models:
                    return self._models[value]
            model = load_app_model(value)
            with self._lock:
                self._models[value] = model
                self._queues[value] = PassQueue()
            return model

    def queue(self, value: str) -> PassQueue:
        """The pass queue of ``value``'s model (after :meth:`model`)."""
        self.model(value)
        with self._lock:
            return self._queues[value]

    def loaded(self) -> tuple[str, ...]:
        """The menu values whose models are loaded."""
        with self._lock:
            return tuple(self._models)

    def explorer(self, value: str):
        """A new explorer of ``value``'s model: the shared model and queue, the tab's bounded
        caches (what :func:`~gradcam_widget.explorer.app.app_view` calls per model choice)."""
        from gradcam_widget.explorer.widget import CamExplorer

        return CamExplorer(self.model(value), passes=self.queue(value),
                           cache_bytes=CACHE_BYTES, result_bytes=RESULT_BYTES)  # fmt: skip
