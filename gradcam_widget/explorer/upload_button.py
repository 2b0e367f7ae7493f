"""The explorer's upload button: :class:`UploadButton`, a file chooser that refuses a file over
its limit in the browser, before any byte is sent.

``ipywidgets.FileUpload`` reads every chosen file into the browser and sends it whole: a file
over the server's websocket limit is then dropped on the way, and the user never learns why
nothing happened. This button (an `anywidget <https://anywidget.dev>`_: a few lines of
JavaScript, no build step, rendered by JupyterLab, Voila and Solara alike) checks the file's
size first. Under :attr:`UploadButton.max_bytes` it sends the file as ``FileUpload`` does
(:attr:`UploadButton.value`, a tuple of one ``{"name", "type", "size", "content"}`` dict, the
content a ``memoryview``); over it, it sends only the file's name and size
(:attr:`UploadButton.refused`), which the explorer says in its status line.
"""

from __future__ import annotations

import anywidget
import traitlets

__all__ = ["UploadButton"]

_ESM = """
function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "jupyter-widgets jupyter-button widget-button";
  button.style.width = "100%";
  const input = document.createElement("input");
  input.type = "file";
  const draw = () => {
    button.textContent = "\\u2b06 " + model.get("description");
    button.title = model.get("tooltip");
    button.disabled = model.get("disabled");
    input.accept = model.get("accept");
  };
  draw();
  for (const name of ["description", "tooltip", "disabled", "accept"]) {
    model.on("change:" + name, draw);
  }
  button.addEventListener("click", () => input.click());
  input.addEventListener("change", async () => {
    const file = input.files[0];
    input.value = "";
    if (!file) return;
    if (file.size > model.get("max_bytes")) {
      model.set("refused", { name: file.name, size: file.size, at: Date.now() });
      model.save_changes();
      return;
    }
    const content = new DataView(await file.arrayBuffer());
    model.set("value", [{ name: file.name, type: file.type, size: file.size, content }]);
    model.save_changes();
  });
  el.appendChild(button);
}
export default { render };
"""


class UploadButton(anywidget.AnyWidget):
    """A one-file upload button that refuses, in the browser, a file over :attr:`max_bytes`.

    Attributes:
        value: ``()`` or a tuple of one dict ``{"name", "type", "size", "content"}`` (the
            content a ``memoryview``), as ``ipywidgets.FileUpload`` gives it; set it to ``()``
            to empty the button.
        refused: ``{"name", "size", "at"}`` of the last file refused in the browser for its
            size (``at``: the browser's time, so the same file refused again is a change).
        max_bytes: the largest file sent.
        accept: the file types the chooser offers (as ``<input accept>``).
        description, tooltip, disabled: as an ipywidgets button's.
    """

    _esm = _ESM
    value = traitlets.Tuple().tag(sync=True)
    refused = traitlets.Dict().tag(sync=True)
    max_bytes = traitlets.Int(0).tag(sync=True)
    accept = traitlets.Unicode("").tag(sync=True)
    description = traitlets.Unicode("Upload").tag(sync=True)
    tooltip = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
