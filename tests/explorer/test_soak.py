"""Soak: one CamExplorer on the shipped shapes model through 300 random control changes.

A person exploring a model flips controls for a long while in one kernel. After every
change the view must be consistent with the settings (the map on screen is the one asked
for, the panels show it, nothing went to the status line), and the process memory must
level off: the explorer's caches are bounded, so once everything has run once the resident
set size (RSS) may wobble but must not keep climbing.

First a warm-up tour sets every value of every control once (Score-CAM's first batch of
forward passes alone raises RSS by ~200 MB, for good: the high-water mark of its working
memory), checked like every other change; then 300 changes drawn with
``random.Random(SEED)``, the same in every run. Score is changed too: with 5 classes x 2
scores there are 10 captures to ask for, more than the capture cache keeps (8), so captures
are evicted and re-made (model passes) throughout, and a capture that is never freed shows
in RSS and in the count of live Capture objects (both checked).
"""

from __future__ import annotations

import gc
import random
import time
from pathlib import Path

import numpy as np
import pytest

import gradcam_widget as gw
from gradcam_widget.cam import core, methods
from gradcam_widget.data import render
from gradcam_widget.engine import engine_for
from gradcam_widget.explorer.widget import FUSED

pytestmark = pytest.mark.slow

SEED = 0
CHANGES = 300  # random ones, after the warm-up tour
SAMPLE_EVERY = 10  # changes between two RSS samples
# Memory must level off: the typical RSS over the last 50 random changes (LATE, the median of
# its samples) against that over random changes 50-100 (SETTLED). Medians, as RSS moves in
# steps of ~20 MB either way: one capture of the shapes model is 18 MB (activations and
# gradients of 15 layers at 224x224), and malloc keeps or returns such blocks as it likes.
# Measured (2-core CPU machine, seed 0): LATE - SETTLED = +27 MB on the code before the byte
# budgets (8 captures, 64 results) and +22 MB with them; without the warm-up tour the curve
# stayed within +-50 MB of its level, with no trend, from change ~170 to 900. 60 MB is that
# wobble with room to spare, and less than what a leak adds: every capture kept after
# eviction (18 MB per model pass; at least MIN_PASSES_IN_WINDOW passes run after SETTLED
# starts, checked) measured +203 MB, the four PNG panels kept at every change +66 MB.
SETTLED = (50, 100)
LATE = (250, 300)
MAX_GROWTH_MB = 60
MIN_PASSES_IN_WINDOW = 8
# A compiled model pass costs 3.5-5.5 MB (measured on the shapes model). One per score and set
# of recorded layers is legitimate (at most len(SCORES) x (layers + fused + all)) and is
# allowed for when it first happens late in the soak; more traces than that fail the test.
MB_PER_TRACE = 6
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# How often each control is changed (relative weights): mostly the ones that recompute.
CONTROL_WEIGHTS = {
    "class_index": 4,
    "score": 3,
    "layer": 4,
    "method": 3,
    "pooling": 2,
    "channels": 2,
    "order": 2,
    "colormap": 1,
    "opacity": 1,
}
STATUS = Path("/proc/self/status")


def rss_mb() -> float:
    """This process's resident set size in MB (VmRSS from /proc/self/status)."""
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise AssertionError(f"no VmRSS line in {STATUS}")


def layer_choices(explorer) -> list[str]:
    """What the Layer dropdown offers: every recorded layer, then the fused view when the
    model has more than one grid to fuse."""
    layers = list(explorer.capture.layers)
    if len(explorer.capture.fusion_layers()) > 1:
        layers.append(FUSED)
    return layers


def control_choices(explorer) -> dict[str, list]:
    """The values each control can take."""
    return {
        "class_index": list(range(len(explorer.capture.scores))),
        "score": list(core.SCORES),
        "layer": layer_choices(explorer),
        "method": list(methods.names()),
        "pooling": list(core.POOLINGS),
        "channels": list(core.CHANNELS),
        "order": list(core.ORDERS),
        "colormap": list(render.COLORMAPS),
        "opacity": [step / 20 for step in range(21)],  # the slider's 0.05 steps
    }


def settings_of(explorer) -> dict:
    return {name: getattr(explorer, name) for name in CONTROL_WEIGHTS}


def check_view(explorer, settings: dict):
    """The explorer shows, without error, the map for ``settings``."""
    assert explorer.error is None, explorer.error
    assert settings_of(explorer) == settings, "a control did not keep the value it was set to"
    result, capture = explorer.result, explorer.capture
    method = methods.get(settings["method"])
    fused = settings["layer"] == FUSED
    if fused:
        assert result.layer == "+".join(capture.fusion_layers())
        assert result.method.startswith(f"{settings['method']} fused"), result.method
    else:
        assert result.layer == settings["layer"]
        assert result.method == settings["method"]
        if "pooling" in method.options:
            assert (result.pooling, result.channels) == (settings["pooling"], settings["channels"])
    class_agnostic = not method.uses_gradients and not method.runs_model  # Eigen-CAM
    if not class_agnostic:
        assert result.class_index == settings["class_index"]
        assert result.score == settings["score"]
    assert result.order == settings["order"]

    heatmap = result.heatmap
    assert heatmap.shape == tuple(capture.input_size)
    assert np.isfinite(heatmap).all() and np.isfinite(result.raw).all()
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0, (heatmap.min(), heatmap.max())
    for title in render.PANEL_TITLES:
        png = bytes(explorer.panel_png(title))  # ipywidgets may hand back a memoryview
        assert png.startswith(PNG_SIGNATURE), f"panel {title!r} is not a PNG: {png[:16]!r}"
    # The overlay on screen is this result, in this colormap, at this opacity (not a stale one).
    expected = render.overlay(capture.image, heatmap, settings["colormap"], settings["opacity"])
    assert bytes(explorer.panel_png("overlay")) == render.encode_png(expected), "stale overlay"


def live_captures() -> int:
    """How many Capture objects this process holds (after a garbage collection)."""
    gc.collect()
    return sum(isinstance(thing, gw.Capture) for thing in gc.get_objects())


def median_between(samples: list[float], changes: tuple[int, int]) -> float:
    """The median of the samples taken after ``changes[0]`` .. ``changes[1]`` changes."""
    first, last = (count // SAMPLE_EVERY for count in changes)
    return float(np.median(samples[first : last + 1]))


def warm_up_tour(choices: dict[str, list]) -> list[tuple[str, object]]:
    """Every value of every control once: each method under both scores (Score-CAM's forward
    passes included), then each layer (the fused one with the last method), class, ..."""
    tour = []
    for score in choices["score"]:
        tour.append(("score", score))
        tour.extend(("method", method) for method in choices["method"])
    tour.extend(("layer", layer) for layer in choices["layer"])
    for name in ("class_index", "pooling", "channels", "order", "colormap"):
        tour.extend((name, value) for value in choices[name])
    tour.extend(("opacity", value) for value in (0.0, 1.0, 0.5))
    return tour


def test_explorer_stays_consistent_and_memory_levels_off_over_300_changes():
    if not STATUS.is_file():
        pytest.skip(f"{STATUS} is missing: RSS is read from Linux's /proc")
    started = time.perf_counter()
    engine = engine_for(gw.models.load("shapes"))  # the explorer's: one entry per process
    traces_before = engine.traces
    captures_before = live_captures()
    explorer = gw.CamExplorer("shapes", "two_shapes")
    choices = control_choices(explorer)
    settings = settings_of(explorer)
    check_view(explorer, settings)
    history: list[str] = []

    def change(label: str, name: str, value):
        history.append(f"{label}: {name}={value!r}")
        try:
            setattr(explorer, name, value)
            settings[name] = value
            check_view(explorer, settings)
        except Exception as error:
            recent = "\n  ".join(history[-8:])
            raise AssertionError(
                f"change {label} broke the explorer: {type(error).__name__}: {error}\n"
                f"last changes:\n  {recent}\nsettings now: {settings_of(explorer)}"
            ) from error

    for number, (name, value) in enumerate(warm_up_tour(choices), start=1):
        if value != settings[name]:
            change(f"warm-up {number}", name, value)
    warmed_up = time.perf_counter()

    rng = random.Random(SEED)
    names = list(CONTROL_WEIGHTS)
    weights = [CONTROL_WEIGHTS[name] for name in names]
    # Sampled before the first random change, then after every SAMPLE_EVERY of them.
    gc.collect()
    rss, passes, traces = [rss_mb()], [explorer.model_passes], [engine.traces]
    for step in range(1, CHANGES + 1):
        name = rng.choices(names, weights)[0]
        change(str(step), name, rng.choice([v for v in choices[name] if v != settings[name]]))
        if step % SAMPLE_EVERY == 0:
            gc.collect()
            rss.append(rss_mb())
            passes.append(explorer.model_passes)
            traces.append(engine.traces)
    seconds = time.perf_counter() - started

    settled, late = median_between(rss, SETTLED), median_between(rss, LATE)
    growth = late - settled
    first, last = SETTLED[0] // SAMPLE_EVERY, LATE[1] // SAMPLE_EVERY
    window_passes = passes[last] - passes[first]
    window_traces = traces[last] - traces[first]
    allowed = MAX_GROWTH_MB + MB_PER_TRACE * window_traces
    curve = ", ".join(f"{value:.0f}" for value in rss)
    summary = (
        f"warm-up tour {warmed_up - started:.1f} s, {CHANGES} random changes "
        f"{seconds - (warmed_up - started):.1f} s; {passes[-1] - passes[0]} model passes and "
        f"{traces[-1] - traces[0]} traces in them ({window_passes} and {window_traces} after "
        f"change {SETTLED[0]}); RSS {settled:.0f} MB at changes {SETTLED[0]}-{SETTLED[1]}, "
        f"{late:.0f} MB at {LATE[0]}-{LATE[1]} ({growth:+.0f}, allowed {allowed:.0f}); RSS "
        f"(MB) before them and after every {SAMPLE_EVERY}: {curve}"
    )
    print(f"\nsoak: {summary}")

    max_traces = len(core.SCORES) * (len(choices["layer"]) + 1)
    assert traces[-1] - traces_before <= max_traces, (
        f"the model was traced {traces[-1] - traces_before} times; at most {max_traces} "
        f"compiled passes (one per score and set of recorded layers) can be needed: {summary}"
    )
    assert window_passes >= MIN_PASSES_IN_WINDOW, (
        f"only {window_passes} model passes after change {SETTLED[0]}: the soak no longer "
        f"re-makes captures, so MAX_GROWTH_MB no longer stands for a leak: {summary}"
    )
    assert growth < allowed, f"RSS did not level off: {summary}"
    # Python-side, exactly: the explorer holds its cache (CACHE_SIZE captures at most) plus
    # the capture on screen; anything more is a capture nobody can use again. (The code before
    # the byte budgets failed here: its results cache held on to the captures the maps were
    # made from, 10 of them alive after this soak, up to one per cached result.)
    kept = live_captures() - captures_before
    assert kept <= gw.CamExplorer.CACHE_SIZE + 1, f"{kept} captures alive after the soak"
