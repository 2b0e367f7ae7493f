"""What one compiled pass recorded and how to ask it for maps: :class:`Capture` and
:func:`capture` (:mod:`.capturing`), batches (:mod:`.explanations`), targets (:mod:`.targets`).

``gradcam_widget.captures.X`` still gives what the old module ``captures`` did."""

from gradcam_widget._aliases import offering

__getattr__ = offering("captures.capturing")
