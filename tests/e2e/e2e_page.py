"""What a person sees of a CamExplorer in a browser page, read and driven through Playwright.

The same DOM comes out of JupyterLab and Voila (both render ipywidgets with the same
widget manager), so :class:`ExplorerPage` serves both. It reads the page the way the widget's
user would: the panel images that actually loaded, the option labels in the dropdowns, the
text on the page. Every wait is bounded.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser fixture then skips (locally) or fails (CI) with the reason
    PlaywrightTimeout = TimeoutError

if TYPE_CHECKING:
    from playwright.sync_api import Page

PANELS = ("input", "raw-map", "heatmap", "overlay")
DROPDOWNS = ("layer", "pooling", "channels", "order", "class", "score", "colormap")
ERROR_TEXTS = ("Error displaying widget", "model not found")
READY_TEXT = "✓ ready"
CONTROLS_FILE = "jupyterlab_controls.json"  # beside jupyterlab_before.png: the controls it shows
LOADING_TEXT = "Loading widget"
MESSAGE_CHARS = 2000  # of each stderr output quoted in a failure message (its end)
POLL_MS = 500
# Once the notebook has finished running, how long the widgets get to appear before the
# wait gives up early (the front-end renders a widget view a moment after its output).
SETTLE_S = 15.0
# A layer option reads like "block4_conv3 · 28×28×96": name, then height × width × channels.
LAYER_LABEL = re.compile(r"·\s*(\d+)\s*×\s*(\d+)\s*×\s*(\d+)\s*$")


def raw_cell_pixels(height: int, width: int) -> int:
    """Pixels per feature-map cell in the raw panel: an ``n x n`` grid (``n`` the larger
    side) is drawn ``224`` px wide up to ``n = 14``, up to ``448`` px beyond, at least 1 px
    per cell."""
    cells = max(height, width)
    return max(1, (224 if cells <= 14 else 448) // cells)


def layer_grid(label: str) -> tuple[int, int] | None:
    """``(height, width)`` of the feature map named by a layer option label, or ``None`` for
    an option that is not one feature map (such as "fused · conv1+conv2")."""
    match = LAYER_LABEL.search(label)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class PanelImage:
    """One panel ``<img>`` as the browser has it: its URL and whether and how it decoded."""

    src: str
    complete: bool
    natural_width: int
    natural_height: int

    @property
    def rendered(self) -> bool:
        """Loaded and decoded to a real picture (a broken image has natural width 0)."""
        return self.complete and self.natural_width > 0 and self.natural_height > 0


# Evaluated in the page: the state of every panel image, or null for a missing one.
_PANELS_SCRIPT = """(names) => Object.fromEntries(names.map((name) => {
    const image = document.querySelector(`img.gw-panel-${name}`);
    return [name, image === null ? null : {
        src: image.currentSrc || image.src, complete: image.complete,
        naturalWidth: image.naturalWidth, naturalHeight: image.naturalHeight}];
}))"""

# Evaluated in the page: true once panel `name` shows a picture from a new URL, of the
# expected natural width if one is given.
_PANEL_CHANGED_SCRIPT = """([name, oldSrc, width]) => {
    const image = document.querySelector(`img.gw-panel-${name}`);
    return image !== null && image.src !== oldSrc && image.complete && image.naturalWidth > 0
        && (width === null || image.naturalWidth === width);
}"""

# Evaluated in the page: true once the explorer says ready, its four panels decoded, and no
# widget on the page is still loading (a widget whose model cannot be found first shows
# "Loading widget...", then, a few seconds later, "Error displaying widget").
_READY_SCRIPT = """([names, readyText, loadingText]) => {
    const status = document.querySelector(".gw-explorer .gw-status");
    return status !== null && status.textContent.includes(readyText)
        && !(document.body.textContent || "").includes(loadingText)
        && names.every((name) => {
            const image = document.querySelector(`img.gw-panel-${name}`);
            return image !== null && image.complete && image.naturalWidth > 0;
        });
}"""


class ExplorerPage:
    """A page showing one CamExplorer (JupyterLab or Voila).

    Args:
        page: the Playwright page; console errors and uncaught page errors are recorded
            from now on and quoted in failure messages.
    """

    def __init__(self, page: Page):
        self.page = page
        self.console_errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))

    def _on_console(self, message):
        if message.type == "error":
            self.console_errors.append(message.text)

    def diagnostics(self) -> str:
        """Browser-side errors and the explorer's status line, for failure messages."""
        errors = "\n  ".join(self.console_errors[-15:]) or "(none)"
        return f"\nstatus line: {self.status_text()!r}\nbrowser console errors:\n  {errors}"

    # --- reading -----------------------------------------------------------------------

    @property
    def explorer(self):
        return self.page.locator(".gw-explorer").first

    def page_text(self) -> str:
        """All text in the page, rendered or not (JupyterLab may skip painting cells that
        are out of view; their text is still in the document)."""
        return self.page.evaluate("() => document.body.textContent || ''")

    def status_text(self) -> str:
        status = self.page.locator(".gw-status")
        if not status.count():
            return "(no status line)"
        return status.first.text_content() or ""

    def readout_text(self) -> str:
        return self.page.locator(".gw-readout").first.text_content() or ""

    def panels(self, names=PANELS) -> dict[str, PanelImage | None]:
        """Every panel image's state (the four panels, or ``names``), ``None`` for a panel
        that is not in the page."""
        states = self.page.evaluate(_PANELS_SCRIPT, list(names))
        return {
            name: None
            if state is None
            else PanelImage(
                state["src"], state["complete"], state["naturalWidth"], state["naturalHeight"]
            )
            for name, state in states.items()
        }

    def panels_hidden(self, name: str) -> bool:
        """True when panel ``name``'s image is not displayed (it, or a parent, has
        ``display: none``)."""
        return self.page.evaluate(
            """(name) => {
                const image = document.querySelector(`img.gw-panel-${name}`);
                return image === null || image.offsetParent === null;
            }""",
            name,
        )

    def options(self, control: str) -> tuple[list[str], str]:
        """``(option labels, selected label)`` of the ``<select>`` inside ``.gw-<control>``."""
        select = self.page.locator(f".gw-{control} select").first
        labels = [label.strip() for label in select.locator("option").all_text_contents()]
        selected = select.evaluate("(s) => s.selectedIndex >= 0 ? s.options[s.selectedIndex]"
                                   ".textContent : ''")  # fmt: skip
        return labels, selected.strip()

    def stderr_outputs(self) -> list[str]:
        """Text of every error or stderr output in the page (tracebacks, TF logs)."""
        outputs = self.page.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
        return [text.strip()[-MESSAGE_CHARS:] for text in outputs.all_text_contents()]

    # --- waiting and acting ------------------------------------------------------------

    def wait_until_ready(self, timeout_s: float, finished_script: str | None = None):
        """Wait for the explorer, its four loaded panels and '✓ ready' in its status line,
        and for the notebook to have finished running (cells after the explorer's may still
        print errors or show broken widgets).

        Args:
            timeout_s: the longest wait.
            finished_script: JavaScript ``() => bool``, true once the notebook has finished
                running. When it has been true for :data:`SETTLE_S` seconds and the explorer
                is still not ready, waiting longer cannot help, so this fails early.

        Raises:
            AssertionError: on time-out or early failure, saying what was and was not there.
        """
        started = time.monotonic()
        finished_since = None
        while True:
            ready = self.page.evaluate(_READY_SCRIPT, [list(PANELS), READY_TEXT, LOADING_TEXT])
            finished = finished_script is None or self.page.evaluate(finished_script)
            if ready and finished:
                return
            now = time.monotonic()
            finished_since = (finished_since or now) if finished else None
            if finished_since is not None and now - finished_since > SETTLE_S:
                reason = f"the notebook finished running {now - started:.0f} s in"
                break
            if now - started > timeout_s:
                reason = f"{timeout_s:.0f} s passed (notebook finished running: {finished})"
                break
            self.page.wait_for_timeout(POLL_MS)
        errors = [text for text in ERROR_TEXTS if text.lower() in self.page_text().lower()]
        raise AssertionError(
            f"{reason} and the explorer is not ready; error texts on the page: {errors}; "
            f"panels: {self.panels()}; stderr outputs: {self.stderr_outputs()}"
            f"{self.diagnostics()}"
        )

    def choose(self, control: str, label: str):
        """Pick option ``label`` in dropdown ``control``, as a person would."""
        self.page.locator(f".gw-{control} select").first.select_option(label=label)

    def wait_for_new_picture(
        self, panel: str, old_src: str, timeout_s: float, natural_width: int | None = None
    ) -> PanelImage:
        """Wait until ``panel`` shows a decoded picture from a URL other than ``old_src``
        (and ``natural_width`` pixels wide, when given).

        Raises:
            AssertionError: on time-out, with what the panel shows instead.
        """
        try:
            self.page.wait_for_function(
                _PANEL_CHANGED_SCRIPT, arg=[panel, old_src, natural_width], timeout=timeout_s * 1000
            )
        except PlaywrightTimeout:
            now = self.panels([panel])[panel]
            expected = "" if natural_width is None else f" {natural_width} px wide"
            raise AssertionError(
                f"the {panel} panel did not change to a new picture{expected} within "
                f"{timeout_s:.0f} s (same src: {now is not None and now.src == old_src}; "
                f"now {now}){self.diagnostics()}"
            ) from None
        return self.panels([panel])[panel]

    def wait_for_text(self, selector: str, text: str, timeout_s: float):
        """Wait until the first element matching ``selector`` contains ``text``.

        The widget sends its pictures first and its readout right after, as separate
        messages, so a new picture on screen does not yet mean a new readout.

        Raises:
            AssertionError: on time-out, with the element's text.
        """
        try:
            self.page.wait_for_function(
                """([selector, text]) => {
                    const element = document.querySelector(selector);
                    return element !== null && element.textContent.includes(text);
                }""",
                arg=[selector, text],
                timeout=timeout_s * 1000,
            )
        except PlaywrightTimeout:
            now = (
                self.page.locator(selector).first.text_content()
                if self.page.locator(selector).count()
                else None
            )
            raise AssertionError(
                f"{selector} did not say {text!r} within {timeout_s:.0f} s; it says {now!r}"
                f"{self.diagnostics()}"
            ) from None

    # --- checks ------------------------------------------------------------------------

    def assert_healthy(self):
        """Four decoded panels, all dropdowns with options, no widget error text or stderr
        output on the page, and '✓ ready' in the status line."""
        panels = self.panels()
        missing = [name for name, image in panels.items() if image is None]
        assert not missing, f"panel images missing from the page: {missing}{self.diagnostics()}"
        broken = {name: image for name, image in panels.items() if not image.rendered}
        assert not broken, f"panel images that did not render: {broken}{self.diagnostics()}"
        for control in DROPDOWNS:
            labels, selected = self.options(control)
            assert labels and selected, f"dropdown .gw-{control} has no options or selection"
        assert self.page.locator(".gw-class-index input").count() == 1, "no class index box"
        assert self.page.locator(".gw-opacity").count() == 1, "no opacity slider"
        self.assert_no_errors()

    def assert_no_errors(self):
        """No widget error text, no stderr/traceback output, and a ready status line."""
        text = self.page_text().lower()
        found = [error for error in ERROR_TEXTS if error.lower() in text]
        assert not found, f"the page says {found}{self.diagnostics()}"
        stderr = self.stderr_outputs()
        assert not stderr, f"error or stderr output in the page: {stderr}"
        assert READY_TEXT in self.status_text(), f"not ready{self.diagnostics()}"

    def screenshot_failure(self, path: Path) -> str:
        """Save the whole window as it is (for a failure message); never raises.

        Returns:
            A note saying where the screenshot went, or why there is none.
        """
        try:
            self.page.screenshot(path=str(path))
        except Exception as error:  # the page may be gone; the original failure matters
            return f"(no screenshot: {error})"
        return f"(screenshot: {path})"

    def screenshot(self, path: Path):
        """Save what is on screen with the explorer scrolled into view."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.explorer.scroll_into_view_if_needed()
        self.page.screenshot(path=str(path))

    def control_labels(self) -> dict[str, str]:
        """Each control on the page, by its CSS class (``gw-layer``), with the label a person
        reads next to it (a button's own text)."""
        return self.page.evaluate(CONTROL_LABELS)


CONTROL_LABELS = """() => {
  const skip = new Set(["gw-explorer", "gw-readout", "gw-status"]);
  const found = {};
  for (const element of document.querySelectorAll('[class*="gw-"]')) {
    const name = Array.from(element.classList).find((c) => c.startsWith("gw-"));
    if (!name || skip.has(name) || name.startsWith("gw-panel")) continue;
    const label = element.querySelector(".widget-label");
    const holder = label || element.querySelector("button") || element;
    const text = holder.textContent.replace(/^[^\\p{L}\\p{N}]+/u, "").trim();
    if (text) found[name] = text;
  }
  return found;
}"""


def explorer_control_labels() -> dict[str, str]:
    """The explorer's own list of its controls: each widget of a fresh ``CamExplorer`` (shipped
    model, sample image) that has a label, by its CSS class, with that label."""
    import gradcam_widget as gw

    explorer = gw.CamExplorer(gw.models.load("shapes"), gw.data.sample("two_shapes"))
    found = {}
    stack = list(explorer.children)
    while stack:
        widget = stack.pop()
        stack.extend(getattr(widget, "children", ()))
        names = [name for name in widget._dom_classes if name.startswith("gw-")]
        label = getattr(widget, "description", None)
        if names and label:
            found[names[0]] = label
    explorer.close()
    return found


VOILA_FINISHED = '() => document.readyState === "complete"'
PAGE_LOAD_TIMEOUT_MS = 60_000


def open_voila(server, page: Page, timeout_s: float, failure_shot: Path) -> ExplorerPage:
    """Open the Voila app ``server`` serves in ``page`` and wait for a ready explorer (on
    failure: a screenshot at ``failure_shot`` and the server log in the message)."""
    explorer = ExplorerPage(page)
    page.goto(server.url("/"), wait_until="commit", timeout=PAGE_LOAD_TIMEOUT_MS)
    try:
        explorer.wait_until_ready(timeout_s, VOILA_FINISHED)
    except AssertionError as error:
        note = explorer.screenshot_failure(failure_shot)
        raise AssertionError(f"{error} {note}\nserver log:\n{server.log_tail()}") from None
    return explorer
