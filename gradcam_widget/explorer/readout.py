"""What the explorer writes: its panels, their titles, the readout's lines, and why a control
is disabled.

Pure functions of a capture and a result (and the explorer's settings) that return text or
widgets; :class:`~gradcam_widget.widget.CamExplorer` puts them on screen.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np

from gradcam_widget import options as recipe
from gradcam_widget.cam import core, methods
from gradcam_widget.captures.capturing import Capture
from gradcam_widget.data import render
from gradcam_widget.engine import layers
from gradcam_widget.explorer.session import FUSED, RANDOM_SEED, SMOOTHGRAD, ExplorerSession, Step

GUIDED_LABELS = (
    ("off", "off"),
    ("Guided Backprop", "guided_backprop"),
    ("Guided Grad-CAM", "guided_gradcam"),
    (f"SmoothGrad (guided, {SMOOTHGRAD['smooth']} copies)", "smoothgrad"),
)
GUIDED_PANEL = "guided"
PANELS = (*render.PANEL_TITLES, GUIDED_PANEL)  # every panel's title, the Guided one last
PANEL_WIDTH = "224px"
CLASS_CONTROLS = ("class", "class_index")  # hidden when the explorer explains a target


def make_panels() -> tuple[dict[str, widgets.HTML], dict[str, widgets.Image]]:
    """``(titles, panels)``: an HTML title and a PNG image per panel, keyed by title
    (:data:`PANELS`)."""
    titles = {title: widgets.HTML() for title in PANELS}
    panels = {
        title: widgets.Image(format="png", layout=widgets.Layout(width=PANEL_WIDTH, height="auto"))
        for title in PANELS
    }
    for title, panel in panels.items():
        panel.add_class(f"gw-panel-{title.replace(' ', '-')}")
    return titles, panels


def layer_options(cap: Capture) -> list[tuple[str, str]]:
    """The Layer dropdown's entries for ``cap``: each layer with its grid, then the fusion."""
    options = []
    for path in cap.layers:
        h, w, c = cap.shape(path)
        tokens = cap.tokens(path)
        if tokens is None:
            options.append((f"{path} · {h}×{w}×{c}", path))
        else:  # a transformer's token layer: say which tokens make the grid
            grid = layers.describe_tokens(tokens, times="×")
            options.append((f"{path} · {grid} ×{c}", path))
    fused = cap.fusion_layers()
    if len(fused) > 1:
        options.append((f"{FUSED} · {'+'.join(fused)}", FUSED))
    return options


def disabled_reasons(method: methods.Method, target) -> dict[str, str | None]:
    """Why each control that ``method`` or ``target`` may ignore is disabled (``None``: it
    applies), in the words its tooltip shows."""
    reasons: dict[str, str | None] = {
        name: None if name in method.options else
        f"{method.label} computes its own channel weights: {name} does not apply"
        for name in recipe.method_keywords()
    }  # fmt: skip
    class_agnostic = not method.uses_gradients and not method.runs_model
    for name in (*CLASS_CONTROLS, "score"):
        why = None
        if class_agnostic:
            why = f"{method.label} is class-agnostic: it uses the activations only"
        elif name == "score" and target is not None and not target.uses_score:
            why = f"{target.label} explains the model's value: it has no probability"
        reasons[name] = why
    return reasons


def panel_titles(cap: Capture, result: core.CamResult, opacity: float) -> dict[str, str]:
    """The text above each panel: sizes, the raw map's signed range, the opacity."""
    h, w = result.raw.shape
    H, W = result.heatmap.shape
    return {
        "input": f"input {cap.image.shape[0]}×{cap.image.shape[1]}",
        "raw map": f"raw map {h}×{w} (signed, ±{np.abs(result.raw).max():.3g})",
        "heatmap": f"heatmap {H}×{W}",
        "overlay": f"overlay · opacity {opacity:.2f}",
    }


def tensor_lines(cap: Capture, result: core.CamResult, method_label: str) -> list[str]:
    """The readout's first lines: each layer's tensors, then the method's arrays."""
    lines = []
    for path in result.layer.split("+"):
        h, w, c = cap.shape(path)
        lines.append(
            f"<b>{html.escape(path)}</b> ({cap.layer_class(path)}) · activations "
            f"(1, {h}, {w}, {c}) · gradients (1, {h}, {w}, {c})"
        )
    lines.append(
        f"{html.escape(method_label)} · weights {result.weights.shape} · raw {result.raw.shape}"
        f" · heatmap {result.heatmap.shape} · top channel #{result.top_channel} weight "
        f"{result.top_weight:.4g}"
    )
    return lines


def explained_line(cap: Capture, target, class_name: str | None) -> str:
    """What the map explains: the class (named ``class_name``) and its score, or the target
    (the explorer's ``target``, ``None`` for classes) and its value."""
    score_name = "logit" if cap.score == "logit" else "probability"
    if target is None:
        return (
            f"class {cap.class_index} <b>{html.escape(class_name)}</b> · {score_name} "
            f"{cap.scores[cap.class_index]:.4g}"
        )
    target = cap.target if cap.target is not None else target
    value_name = score_name if target.uses_score else "value"
    return f"target <b>{html.escape(target.label)}</b> · {value_name} {cap.value:.4g}"


def layers_line(cap: Capture, filled_now: bool) -> str | None:
    """How the layers not on screen are (or will be) filled in, if any are missing."""
    if cap.fill_ins:
        when = "just now" if filled_now else "once, cached"
        return f"other layers: filled in by one more pass, {1000 * cap.fill_ins[0]:.0f} ms ({when})"
    if len(cap.held_layers) < len(cap.layers):
        return "other layers: one more pass on first use"
    return None


def guided_title(cap: Capture, mode: str, layer: str) -> str:
    """The text above the Guided panel: which map, of which size (and layer)."""
    size = f"{cap.input_size[0]}×{cap.input_size[1]}"
    label = guided_label(mode)
    if mode == "guided_gradcam":
        return f"{label} {size} · × heatmap of {layer}"
    return f"{label} {size}"


def guided_line(gradients: np.ndarray, mode: str, ran_now: bool) -> str:
    """The readout's line for the Guided panel: the map, and the pass it took."""
    label = guided_label(mode)
    when = "just now" if ran_now else "once, cached"
    what = "one batched pass to the input" if mode == "smoothgrad" else "one pass to the input"
    times = " × the heatmap (numpy)" if mode == "guided_gradcam" else ""
    return (
        f"{html.escape(label)} · input gradients {gradients.shape}{times} · {what} ({when}); "
        "rendered as the seed does (grey is zero)"
    )


def randomized_line(names: tuple[str, ...]) -> str:
    """The readout's line while the view comes from a randomised copy of the model."""
    blocks = ", ".join(html.escape(name) for name in names)
    return (
        f"<b>randomised</b>: the top {len(names)} block{'s' if len(names) != 1 else ''} "
        f"({blocks}) re-initialised on a copy of the model (seed {RANDOM_SEED}); the model "
        "itself is unchanged"
    )


def warning_html(note: str) -> str:
    return f"<span style='color:#a05a00'>⚠ {html.escape(note)}</span>"


def guided_label(mode: str) -> str:
    """The Guided control's label of ``mode`` (one of the session's guided modes)."""
    return dict((value, label) for label, value in GUIDED_LABELS)[mode]


def draw(
    panels: dict[str, widgets.Image],
    titles: dict[str, widgets.HTML],
    cap: Capture,
    result: core.CamResult,
    values: dict,
    *,
    restyle_only: bool,
    guided: np.ndarray | None,
    new_input: bool,
) -> None:
    """Put ``result`` on the panels and their titles (only the pictures that changed).

    Args:
        panels: the PNG image per panel title (:data:`PANELS`).
        titles: the HTML title per panel title.
        cap: the capture of the view.
        result: its map on screen.
        values: the explorer's settings (``colormap``, ``opacity``, ``guided``).
        restyle_only: only the colours changed: the heatmap and overlay are redrawn.
        guided: the Guided panel's map (``None``: the panel is emptied).
        new_input: the input panel shows another image than ``cap``'s.
    """
    colormap, alpha = values["colormap"], values["opacity"]
    pictures = {
        "heatmap": render.colorize(result.heatmap, colormap),
        "overlay": render.overlay(cap.image, result.heatmap, colormap, alpha),
    }
    texts = panel_titles(cap, result, alpha)
    if not restyle_only:
        pictures["raw map"] = render.raw_panel(result.raw)[0]
        if new_input:
            pictures["input"] = cap.image
        if guided is not None:
            pictures[GUIDED_PANEL] = render.saliency_image(guided)
            texts[GUIDED_PANEL] = guided_title(cap, values["guided"], result.layer)
    encoded = {title: render.encode_png(rgb) for title, rgb in pictures.items()}
    if not restyle_only and guided is None:
        encoded[GUIDED_PANEL], texts[GUIDED_PANEL] = b"", ""  # off: hidden and emptied
    for title, png in encoded.items():
        if panels[title].value != png:
            panels[title].value = png
    for title, text in texts.items():
        titles[title].value = f"<b>{html.escape(text)}</b>" if text else ""


def readout_html(
    session: ExplorerSession,
    cap: Capture,
    result: core.CamResult,
    step: Step,
    *,
    image_line: str | None,
    method_label: str,
    guided: tuple[np.ndarray | None, str],
    render_ms: float,
) -> str:
    """The readout under the panels: the image, the tensors, what is explained, the passes
    and caches, the layers, the Guided map, the randomised copy and the capture's warnings.

    Args:
        session: the explorer's session (its caches, class names, blocks).
        cap: the capture of the view.
        result: its map on screen.
        step: what the session did for the view (which passes ran just now).
        image_line: the line naming the image, if known.
        method_label: the method's label.
        guided: ``(the Guided panel's map or None, the guided mode)``.
        render_ms: how long the view took, in ms.

    Returns:
        HTML, one line per ``<br>``.
    """
    captures, (gradients, mode) = session.captures, guided
    target = session.target
    name = None if target is not None else session.class_name(cap, cap.class_index)
    pass_note = "just now" if step.captured else "once, cached"
    layers_note = layers_line(cap, step.filled_in)
    blocks = session.blocks_of(cap)
    lines = [
        *([image_line] if image_line else []),
        *tensor_lines(cap, result, method_label),
        explained_line(cap, target, name),
        f"model pass {cap.seconds * 1000:.0f} ms ({pass_note}; {len(captures)} "
        f"captures cached, {session.cached_bytes / 2**20:.1f} of "
        f"{captures.budget / 2**20:.0f} MB) · this view {render_ms:.1f} ms",
        *([layers_note] if layers_note else []),
        *([guided_line(gradients, mode, step.guided_pass)] if gradients is not None else []),
        *([randomized_line(session.block_names[:blocks])] if blocks > 0 else []),
        *(warning_html(note) for note in cap.warnings),
    ]
    return "<br>".join(lines)
