"""Maps over a whole data set: the run (:mod:`.run`), the Ray runner (:mod:`.ray`), the store
(:mod:`.store`), the folders read (:mod:`.sources`) and the gallery (:mod:`.gallery`).

``gradcam_widget.auditing.X`` still gives what the old module ``auditing`` did."""

from gradcam_widget._aliases import offering

__getattr__ = offering("auditing.run")
