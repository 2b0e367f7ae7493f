"""Score every CAM method x {last conv block, the block before, fused} on shape scenes.

For each scene one present object is explained (the class alternates with the seed), with
the shipped ``shapes`` model, and every heatmap is judged by :mod:`gradcam_widget.metrics`:
pointing game, energy pointing game (exact mask), deletion AUC (mean-colour baseline),
insertion AUC (blur baseline), average drop and increase in confidence, and the time to
make it (a fresh ``gw.capture`` restricted to the layers it needs, plus the map). Two
reference rows calibrate the scale: a uniform random map and the ground-truth mask itself.

Writes ``docs/method_scores.md`` (the table), ``docs/method_scores.json`` (the numbers) and
the table between the ``method-scores`` markers in docs/guides/which-method.md. Run::

    .venv/bin/python scripts/evaluate_methods.py            # 200 scenes, ~25 min on 2 cores
    .venv/bin/python scripts/evaluate_methods.py --scenes 10 --no-write   # a quick look

``--model shapes_vit`` scores the shipped vision transformer on the same scenes with the same
metrics (last block = the default layer, block before, fused = its last three blocks) and
writes ``docs/method_scores_vit.md``/``.json``; it also measures, for Grad-CAM, the pointing
game at every block's output, every block's first norm and the final norm (the measurement
behind the default-layer rule for transformers: ``docs/vit_layers.md``). Whenever both
models' numbers exist, ``docs/cnn_vs_vit.md`` and the block between the ``cnn-vs-vit``
markers of docs/guides/vision-transformers.md put the two tables side by side.
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
from gradcam_widget.checks import metrics

ROOT = Path(__file__).resolve().parents[1]
FIRST_SEED = 1_000_000  # the evaluation seeds of scripts/train_shapes.py: never trained on
PLACES = ("last block", "block before", "fused")
REFERENCES = ("random map", "ground-truth mask")
MARKERS = ("<!-- method-scores:start -->", "<!-- method-scores:end -->")
VS_MARKERS = ("<!-- cnn-vs-vit:start -->", "<!-- cnn-vs-vit:end -->")
MARKED_PAGES = {  # the docs page that shows each block
    MARKERS: Path("docs") / "guides" / "which-method.md",
    VS_MARKERS: Path("docs") / "guides" / "vision-transformers.md",
}
OUTPUTS = {"shapes": "method_scores", "shapes_vit": "method_scores_vit"}


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


def layer_report(entry, scenes: int) -> dict:
    """Grad-CAM pointing game (%) at every token layer that ends a block or normalises one
    (``block{i}_out``, ``block{i}_norm1``, ``block{i}_norm2``, ``norm``), same scenes."""
    probe = gw.capture(entry, gw.data.scene(FIRST_SEED).image, layers="all")
    names = [
        path
        for path in probe.layers
        if probe.tokens(path) and re.fullmatch(r"block\d+_(out|norm1|norm2)|norm", path)
    ]
    hits = {name: [] for name in names}
    for index in range(scenes):
        item = gw.data.scene(FIRST_SEED + index)
        label = item.labels[index % len(item.labels)]
        cap = gw.capture(entry, item.image, class_index=label, layers=names)
        for name in names:
            heatmap = cap.cam(name).heatmap
            hits[name].append(float(metrics.pointing_game(heatmap, item.masks[label])))
    return {name: 100.0 * float(np.mean(values)) for name, values in hits.items()}


def evaluate(scenes: int, steps: int, methods, progress=print, model="shapes"):
    entry = gw.models.load(model)
    probe = gw.capture(entry, gw.data.scene(FIRST_SEED).image)
    fused = probe.fusion_layers()
    # the CNN: the last conv of the 28x28 block; the ViT (fused: block3_out, block4_out, norm):
    # the output of block 3, one block before the last
    before = fused[0] if probe.tokens(probe.default_layer) else fused[-2]
    layers = {"last": probe.default_layer, "before": before, "fused": fused}
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


def table(summary, layers, scenes, steps, model="shapes"):
    if model == "shapes_vit":
        last = f"`{layers['last']}` (the default: the final norm after block 4, 14x14 tokens)"
        before = "(14x14 tokens)"
    else:
        last, before = f"`{layers['last']}` (14x14)", "(28x28)"
    lines = [
        f"{scenes} shape scenes (seeds {FIRST_SEED}..{FIRST_SEED + scenes - 1}, never trained "
        f"on), one object explained per scene, shipped `{model}` model. Layers: last block "
        f"{last}, block before `{layers['before']}` {before}, fused = "
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


def replace_block(markers, markdown: str) -> None:
    """Put ``markdown`` between ``markers`` in the docs page that shows it."""
    page = ROOT / MARKED_PAGES[markers]
    text = page.read_text()
    pattern = re.compile(re.escape(markers[0]) + ".*?" + re.escape(markers[1]), re.S)
    if not pattern.search(text):
        sys.exit(f"{page} has no {markers[0]} ... {markers[1]} block to fill")
    block = f"{markers[0]}\n{markdown}{markers[1]}"
    page.write_text(pattern.sub(lambda _: block, text))


def write(markdown: str, summary, layers, scenes, steps, model="shapes", report=None):
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    title = "the shapes CNN" if model == "shapes" else "the shapes ViT"
    (docs / f"{OUTPUTS[model]}.md").write_text(
        f"# CAM methods scored on the shapes scenes: {title}\n\n" + markdown
    )
    payload = {
        "model": model,
        "scenes": scenes,
        "steps": steps,
        "layers": layers,
        "rows": [{"method": m, "layer": p or None, **row} for (m, p), row in summary.items()],
    }
    if report is not None:
        payload["token_layers_pointing"] = report
        (docs / "vit_layers.md").write_text(layer_table(report, scenes))
    (docs / f"{OUTPUTS[model]}.json").write_text(json.dumps(payload, indent=1) + "\n")
    if model == "shapes":
        replace_block(MARKERS, markdown)
    side_by_side = compare()
    if side_by_side is not None:
        (docs / "cnn_vs_vit.md").write_text("# CNN vs ViT on the shapes scenes\n\n" + side_by_side)
        replace_block(VS_MARKERS, side_by_side)


def layer_table(report: dict, scenes: int) -> str:
    lines = [
        "# Where to read a ViT: Grad-CAM pointing game per token layer",
        "",
        f"Shipped `shapes_vit`, {scenes} scenes (seeds {FIRST_SEED}..), one object per scene, "
        "Grad-CAM with default options. `blockN_norm1` is the normalised input of block N (the "
        "output of block N-1 after its norm), `norm` the final norm after the last block.",
        "",
        "| layer | pointing % |",
        "|---|---:|",
    ]
    lines += [f"| `{name}` | {value:.1f} |" for name, value in report.items()]
    return "\n".join(lines) + "\n"


def compare() -> str | None:
    """The CNN and ViT tables side by side, from their JSON files (None until both exist)."""
    docs = ROOT / "docs"
    paths = [docs / f"{OUTPUTS[model]}.json" for model in ("shapes", "shapes_vit")]
    if not all(path.exists() for path in paths):
        return None
    cnn, vit = (json.loads(path.read_text()) for path in paths)
    if (cnn["scenes"], cnn["steps"]) != (vit["scenes"], vit["steps"]):
        return None  # not the same scenes: no comparison
    rows_vit = {(row["method"], row["layer"]): row for row in vit["rows"]}
    lines = [
        f"Same {cnn['scenes']} scenes, metrics and settings as the tables above: `shapes` (CNN, "
        f"last block `{cnn['layers']['last']}`) | `shapes_vit` (ViT, last block "
        f"`{vit['layers']['last']}`). Each cell: CNN / ViT.",
        "",
        "| method | layer | pointing % ↑ | energy pointing % ↑ | deletion AUC ↓ | "
        "insertion AUC ↑ | ms / image |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in cnn["rows"]:
        other = rows_vit.get((row["method"], row["layer"]))
        if other is None:
            continue

        def pair(key, digits, row=row, other=other):
            if key not in row or key not in other:
                return "-"
            return f"{row[key]:.{digits}f} / {other[key]:.{digits}f}"

        lines.append(
            f"| {row['method']} | {row['layer'] or '-'} | {pair('pointing', 1)} | "
            f"{pair('energy', 1)} | {pair('deletion', 3)} | {pair('insertion', 3)} | "
            f"{pair('ms', 0)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    parser.add_argument("--methods", nargs="+", default=list(gw.methods.names()))
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--model", choices=tuple(OUTPUTS), default="shapes")
    args = parser.parse_args(argv)
    if args.scenes < 1 or args.steps < 1:
        parser.error("--scenes and --steps must be at least 1")
    unknown = set(args.methods) - set(gw.methods.names())
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {gw.methods.names()}")
    started = time.perf_counter()
    report = None
    if args.model == "shapes_vit":
        report = layer_report(gw.models.load(args.model), args.scenes)
        print(layer_table(report, args.scenes))
    layers, rows = evaluate(args.scenes, args.steps, args.methods, model=args.model)
    summary = {key: summarise(samples) for key, samples in rows.items()}
    markdown = table(summary, layers, args.scenes, args.steps, args.model)
    print(markdown)
    print(f"done in {time.perf_counter() - started:.0f} s")
    if not args.no_write:
        write(markdown, summary, layers, args.scenes, args.steps, args.model, report)


if __name__ == "__main__":
    main()
