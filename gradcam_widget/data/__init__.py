"""Data without a model: generated scenes and samples (:mod:`.scenes`), image decoding
(:mod:`.images`), drawing (:mod:`.render`) and the shipped models (:mod:`.models`).

``gradcam_widget.data.X`` still gives what the old module ``data`` did (``data.sample``)."""

from gradcam_widget._aliases import offering

__getattr__ = offering("data.scenes")
