"""What one compiled pass recorded and how to ask it for maps: :func:`capture` and the one-call
wrappers (:mod:`.capturing`), the :class:`Capture` itself (:mod:`.record`), the validation gate
(:mod:`.gate`), the warnings' text (:mod:`.notes`), batches (:mod:`.explanations`), targets
(:mod:`.targets`) and shared parameter lists (:mod:`.signatures`).

``gradcam_widget.captures.X`` still gives what the old module ``captures`` did."""

from gradcam_widget._aliases import offering

__getattr__ = offering("captures.capturing")
