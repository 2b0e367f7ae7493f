"""The ``gw-settings`` directive: the explorer's settable properties as a table, read from the
table the widget itself uses (``gradcam_widget.explorer.settings.SETTINGS``, its controls'
labels and tooltips, and ``gradcam_widget.options``), so the page cannot disagree with it."""

from __future__ import annotations

from docutils import nodes
from docutils.parsers.rst import Parser
from docutils.utils import new_document
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


class SettingsTable(SphinxDirective):
    """``gw-settings``: a table of the explorer's settable properties, one row each."""

    def run(self) -> list[nodes.Node]:
        from gradcam_widget import options
        from gradcam_widget.explorer.readout import GUIDED_LABELS
        from gradcam_widget.explorer.settings import SETTINGS, make_controls

        controls = make_controls()  # the labels a person reads next to each control

        choices = dict(CHOICES_FROM)
        choices["guided"] = ", ".join(f"``{value!r}``" for _, value in GUIDED_LABELS)

        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 14 14 40 14 18",
            "",
            "   * - property",
            "     - control",
            "     - what it sets",
            "     - default",
            "     - values",
        ]
        for name in SETTINGS:
            row = options.TABLE.get(name)
            label = controls[name].description if name in controls else name
            tooltip = getattr(controls.get(name), "tooltip", None)
            help_text = row.help if row else EXTRA_HELP.get(name, tooltip or "")
            if row:
                default = repr(row.default)
            else:  # a setting outside the options table starts where its control starts
                default = EXTRA_DEFAULT.get(name) or repr(controls[name].value)
            values = ", ".join(f"``{value!r}``" for value, _ in row.choices) if row else ""
            if not values:
                values = choices.get(name, "")
            lines += [
                f"   * - ``{name}``",
                f"     - {label}",
                f"     - {help_text}",
                f"     - ``{default}``" if default else "     -",
                f"     - {values}",
            ]
        for control in controls.values():
            control.close()
        # parsed as reStructuredText whatever the page's own markup (a MyST page would read
        # the list-table as Markdown)
        document = new_document("gw-settings", self.state.document.settings)
        Parser().parse("\n".join(lines), document)
        return list(document.children)


EXTRA_HELP = {  # where the control's own tooltip does not say what the property sets
    "class_index": "the class explained (the Class menu's top-5, or any index in the box)",
}
EXTRA_DEFAULT = {"class_index": "None"}  # its control shows 0 until a capture picks the class
CHOICES_FROM = {
    "method": "the method registry (``gw.cam.methods.names()``)",
    "layer": "the model's feature layers, and ``'fused'``",
    "class_index": "``0`` .. classes - 1; ``None``: the top class",
    "randomize": "``0`` .. the model's blocks",
    "opacity": "``0.0`` .. ``1.0``",
}


def setup(app: Sphinx) -> dict:
    app.add_directive("gw-settings", SettingsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
