"""One queue of model passes per model, shared by many callers: :class:`PassQueue`.

Many explorers on one model (the classroom app: one per browser tab) each ask for captures of
their own image. Run one by one, thirty clicks are thirty passes interleaved on the same cores.
A :class:`PassQueue` runs one pass at a time per model, and a pass takes every request waiting
that it can share: the images of all of them go through the model as one batch (the engine
compiles one pass for any batch size) and each caller gets the :class:`~.record.Capture` of its
own image, equal to what :func:`~.capturing.capture` gives for it alone.

>>> queue = PassQueue()
>>> cap = queue.capture(model, image, class_index=3, layers=["block5_conv3"])

Requests share a pass when they ask for the same model, preprocess, score and layers; each has
its own image and class (``None``: its top class). A request with a target, or a batch that
fails as a whole, runs alone, so one caller's bad input is its own error only. The caller's
thread reads and fits its image and issues its warnings; the pass runs in the thread of one of
the waiting callers (no thread of its own).
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from gradcam_widget.cam import core
from gradcam_widget.captures import targets
from gradcam_widget.captures.capturing import capture
from gradcam_widget.captures.gate import check_request, checked_pass
from gradcam_widget.captures.notes import gradient_notes, score_warnings
from gradcam_widget.captures.record import Capture, capture_of
from gradcam_widget.engine import inputs

__all__ = ["MAX_BATCH", "PassQueue"]

MAX_BATCH = 32
"""Images in one shared pass at most (the rest wait for the next)."""


@dataclass(eq=False)
class _Ticket:
    """One caller's request, waiting for its pass."""

    key: tuple
    model: object
    class_index: int | None
    score: str
    preprocess: Callable | None
    layers: object
    shown: np.ndarray
    batch: np.ndarray
    notes: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    result: Capture | None = None
    error: BaseException | None = None


class PassQueue:
    """Runs the captures of many callers, one pass at a time per model, batched.

    Args:
        max_batch: images in one pass at most.

    Attributes:
        passes: model passes run so far (a shared pass counts once).
        captures: captures returned so far.
    """

    def __init__(self, max_batch: int = MAX_BATCH):
        self.max_batch = core.check_int("max_batch", max_batch)
        self._waiting: list[_Ticket] = []
        self._lock = threading.Lock()  # guards _waiting and the counters
        self._running = weakref.WeakKeyDictionary()  # keras model -> its pass lock (freed with it)
        self.passes = 0
        self.captures = 0

    def capture(
        self,
        model,
        image,
        class_index: int | None = None,
        score: str = "logit",
        preprocess: Callable | None = None,
        layers: str | Iterable[str] = "all",
        target=None,
    ) -> Capture:
        """What :func:`gradcam_widget.capture` returns for these arguments, from a pass that
        may also serve other callers waiting on the same model.

        Raises:
            ValueError: as :func:`gradcam_widget.capture` does, for this caller's request only.
        """
        if target is not None:  # a target brings its own data: it runs alone
            return capture(model, image, class_index, score, preprocess, layers, target)
        request = check_request(model, None, score, preprocess, class_index)
        layers = layers if isinstance(layers, str) else tuple(layers)
        shown, batch, notes = inputs.prepare(image, request.engine.input_size, request.preprocess)
        ticket = _Ticket(
            key=(
                id(request.model),
                id(request.preprocess),
                request.multi_label,
                request.class_names,
                score,
                layers,
                batch.shape[1:],
            ),  # fmt: skip
            model=model,
            class_index=class_index,
            score=score,
            preprocess=preprocess,
            layers=layers,
            shown=shown,
            batch=batch,
            notes=notes,
        )
        with self._lock:
            self._waiting.append(ticket)
            running = self._running.setdefault(request.model, threading.Lock())
        with running:  # one pass at a time on this model
            if not ticket.done.is_set():
                self._run(self._take(ticket), request)
        if ticket.error is not None:
            raise ticket.error
        for note in ticket.result.warnings:
            warnings.warn(note, UserWarning, stacklevel=2)
        return ticket.result

    def _take(self, ticket: _Ticket) -> list[_Ticket]:
        """``ticket`` and the others waiting that can share its pass, oldest first."""
        with self._lock:
            chosen = [waiting for waiting in self._waiting if waiting.key == ticket.key]
            chosen = chosen[: self.max_batch]
            if ticket not in chosen:
                chosen[-1:] = [ticket]
            self._waiting = [waiting for waiting in self._waiting if waiting not in chosen]
        return chosen

    def _run(self, tickets: list[_Ticket], request) -> None:
        """One pass for ``tickets``; one each when the shared pass fails (so each caller gets
        its own error)."""
        try:
            try:
                self._pass(tickets, request)
            except Exception:
                if len(tickets) == 1:
                    raise
                for ticket in tickets:  # someone's image fails the batch: each alone
                    try:
                        self._pass([ticket], request)
                    except Exception as error:
                        ticket.error = error
        except Exception as error:
            tickets[0].error = error
        finally:
            for ticket in tickets:
                if ticket.result is None and ticket.error is None:
                    ticket.error = RuntimeError("the shared model pass stopped before this image")
                ticket.done.set()

    def _pass(self, tickets: list[_Ticket], request) -> None:
        """The pass of ``tickets``' images, one batch: each its own capture."""
        step = check_request(
            tickets[0].model, targets.Class([ticket.class_index for ticket in tickets]),
            request.score, tickets[0].preprocess,
        )  # fmt: skip
        batch = np.concatenate([ticket.batch for ticket in tickets])
        with self._lock:
            self.passes += 1
        layer_names = tickets[0].layers
        facts, default, result = checked_pass(
            step, batch, layer_names if isinstance(layer_names, str) else list(layer_names)
        )
        engine = step.engine
        reaching = engine.reaching_tokens(batch.shape) if result.tokens else None
        complete = result.layers == result.candidates
        for index, ticket in enumerate(tickets):
            own = targets.Class(ticket.class_index)  # labelled as gw.capture labels it
            alone = _alone(result, index)  # this image's own arrays: no view of the batch
            notes = ticket.notes + score_warnings(
                facts, own, step.score, engine.head, alone.scores[0], engine.output_names
            )
            notes += gradient_notes(own, step.score, alone, default, reaching)
            ticket.result = capture_of(replace(step, target=step.target.subset(index, index + 1)),
                                       alone, index=0, shown=ticket.shown, inputs=ticket.batch,
                                       default=default, notes=notes, complete=complete)  # fmt: skip
        self._count(len(tickets))

    def _count(self, captures: int) -> None:
        with self._lock:
            self.captures += captures


def _alone(result, index: int):
    """The pass's result for image ``index`` alone, copied (a capture kept by one caller holds
    its own arrays, not a view that keeps the whole batch alive)."""

    def own(array):
        return None if array is None else np.array(array[index : index + 1])

    return replace(
        result,
        scores=own(result.scores),
        values=own(result.values),
        class_indices=own(result.class_indices),
        activations={path: own(array) for path, array in result.activations.items()},
        gradients={path: own(array) for path, array in result.gradients.items()},
        input_gradients=own(result.input_gradients),
    )
