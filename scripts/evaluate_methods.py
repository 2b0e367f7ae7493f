"""Score every CAM method x {last conv block, the block before, fused} on shape scenes.

For each scene one present object is explained (the class alternates with the seed), with
the shipped ``shapes`` model, and every heatmap is judged by :mod:`gradcam_widget.metrics`:
pointing game, energy pointing game (exact mask), deletion AUC (mean-colour baseline),
insertion AUC (blur baseline), average drop and increase in confidence, and the time to
make it (a fresh ``gw.capture`` restricted to the layers it needs, plus the map). Two
reference rows calibrate the scale: a uniform random map and the ground-truth mask itself.

Writes ``docs/method_scores.md`` (the table), ``docs/method_scores.json`` (the numbers) and
the table between the ``method-scores`` markers in README.md. Run::

    .venv/bin/python scripts/evaluate_methods.py            # 200 scenes, ~25 min on 2 cores
    .venv/bin/python scripts/evaluate_methods.py --scenes 10 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import gradcam_widget as gw
from gradcam_widget import metrics

ROOT = Path(__file__).resolve().parents[1]
FIRST_SEED = 1_000_000  # the evaluation seeds of scripts/train_shapes.py: never trained on
PLACES = ("last block", "block before", "fused")
REFERENCES = ("random map", "ground-truth mask")
MARKERS = ("<!-- method-scores:start -->", "<!-- method-scores:end -->")


def explain(entry, image, label, method, place, layers):
    """Heatmap of ``method`` at ``place`` and the milliseconds it took from the raw image."""
    last, before, fused = layers["last"], layers["before"], layers["fused"]
    wanted = {"last block": [last], "block before": [before], "fused": list(fused)}[place]
    started = time.perf_counter()
    cap = gw.capture(entry, image, class_index=label, layers=wanted)
    if place == "fused":
        result = cap.fuse(layers=fused, method=method)
    else:
        result = cap.cam(wanted[0], method=method)
    return result.heatmap, 1000.0 * (time.perf_counter() - started)


def judge(entry, item, label, heatmap, steps):
    mask = item.masks[label]
    change = metrics.confidence_change(entry, item.image, heatmap, label)
    return {
        "pointing": float(metrics.pointing_game(heatmap, mask)),
        "energy": metrics.energy_pointing_game(heatmap, mask),
        "deletion": metrics.deletion(entry, item.image, heatmap, label, steps=steps).auc,
        "insertion": metrics.insertion(entry, item.image, heatmap, label, steps=steps).auc,
        "drop": change.average_drop,
        "increase": change.increase,
    }


def evaluate(scenes: int, steps: int, methods, progress=print):
    entry = gw.models.load("shapes")
    probe = gw.capture(entry, gw.data.scene(FIRST_SEED).image)
    fused = probe.fusion_layers()
    layers = {"last": probe.default_layer, "before": fused[-2], "fused": fused}
    rows = {(m, p): [] for m in methods for p in PLACES}
    rows |= {(ref, ""): [] for ref in REFERENCES}
    rng = np.random.default_rng(0)
    warm = gw.data.scene(FIRST_SEED - 1)  # compile every pass once, outside the timings
    for method in methods:
        for place in PLACES:
            explain(entry, warm.image, warm.labels[0], method, place, layers)
    for index in range(scenes):
        item = gw.data.scene(FIRST_SEED + index)
        label = item.labels[index % len(item.labels)]
        for method in methods:
            for place in PLACES:
                heatmap, ms = explain(entry, item.image, label, method, place, layers)
                rows[(method, place)].append(judge(entry, item, label, heatmap, steps) | {"ms": ms})
        noise = rng.uniform(size=item.image.shape[:2]).astype(np.float32)
        rows[("random map", "")].append(judge(entry, item, label, noise, steps))
        truth = item.masks[label].astype(np.float32)
        rows[("ground-truth mask", "")].append(judge(entry, item, label, truth, steps))
        if (index + 1) % 10 == 0:
            progress(f"{index + 1}/{scenes} scenes")
    return layers, rows


def summarise(samples):
    keys = samples[0].keys()
    out = {key: float(np.mean([s[key] for s in samples])) for key in keys if key != "ms"}
    out["pointing"] *= 100
    out["energy"] *= 100
    if "ms" in keys:
        out["ms"] = float(statistics.median(s["ms"] for s in samples))
    return out


def table(summary, layers, scenes, steps):
    lines = [
        f"{scenes} shape scenes (seeds {FIRST_SEED}..{FIRST_SEED + scenes - 1}, never trained "
        f"on), one object explained per scene, shipped `shapes` model. Layers: last block "
        f"`{layers['last']}` (14x14), block before `{layers['before']}` (28x28), fused = "
        f"LayerCAM-style max over `{'`, `'.join(layers['fused'])}` of each method's maps. "
        f"Deletion: mean-colour baseline, insertion: blur baseline, {steps} steps, sigmoid "
        "probability. ms: median time from the raw image (capture of the needed layers + "
        "map), 2 CPU cores.",
        "",
        "| method | layer | pointing % ↑ | energy pointing % ↑ | deletion AUC ↓ | "
        "insertion AUC ↑ | avg drop % ↓ | increase % ↑ | ms / image |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (method, place), row in summary.items():
        ms = f"{row['ms']:.0f}" if "ms" in row else "-"
        lines.append(
            f"| {method} | {place or '-'} | {row['pointing']:.1f} | {row['energy']:.1f} | "
            f"{row['deletion']:.3f} | {row['insertion']:.3f} | {row['drop']:.1f} | "
            f"{row['increase']:.1f} | {ms} |"
        )
    return "\n".join(lines) + "\n"


def write(markdown: str, summary, layers, scenes, steps):
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "method_scores.md").write_text(
        "# CAM methods scored on the shapes scenes\n\n" + markdown
    )
    payload = {
        "scenes": scenes,
        "steps": steps,
        "layers": layers,
        "rows": [{"method": m, "layer": p or None, **row} for (m, p), row in summary.items()],
    }
    (docs / "method_scores.json").write_text(json.dumps(payload, indent=1) + "\n")
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), re.S)
    if not pattern.search(text):
        sys.exit(f"README.md has no {MARKERS[0]} ... {MARKERS[1]} block to fill")
    block = f"{MARKERS[0]}\n{markdown}{MARKERS[1]}"
    readme.write_text(pattern.sub(lambda _: block, text))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    parser.add_argument("--methods", nargs="+", default=list(gw.methods.names()))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.scenes < 1 or args.steps < 1:
        parser.error("--scenes and --steps must be at least 1")
    unknown = set(args.methods) - set(gw.methods.names())
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {gw.methods.names()}")
    started = time.perf_counter()
    layers, rows = evaluate(args.scenes, args.steps, args.methods)
    summary = {key: summarise(samples) for key, samples in rows.items()}
    markdown = table(summary, layers, args.scenes, args.steps)
    print(markdown)
    print(f"done in {time.perf_counter() - started:.0f} s")
    if not args.no_write:
        write(markdown, summary, layers, args.scenes, args.steps)


if __name__ == "__main__":
    main()
