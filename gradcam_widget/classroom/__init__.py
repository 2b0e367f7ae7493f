"""The classroom app, ``gradcam-widget app``: one process serving an explorer per browser tab.

Every tab gets its own :func:`~gradcam_widget.explorer.app.app_view` (own image, settings and
upload) in a Solara virtual kernel of one server process; TensorFlow and each model are loaded
once (:mod:`.shared`) and the tabs' model passes go through one queue per model
(:class:`~gradcam_widget.captures.passes.PassQueue`). :mod:`.guard` admits only the app's own
Host names and bounds the sessions; :mod:`.server` runs it (:func:`~.server.serve`);
:mod:`.page` is the page of one tab.
"""
