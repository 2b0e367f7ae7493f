"""Sanity checks of every map on the shipped ``shapes`` model (Adebayo et al. 2018).

Model randomisation, cascading from the top: the shipped model's blocks are re-initialised
one after another (``logits``, then ``block5`` ... ``block1``), and after each step every map
is recomputed on held-out scenes (the evaluation seeds of ``scripts/evaluate_methods.py``)
for the class the trained model predicted, and compared with the trained model's map:
Spearman rank correlation of the absolute and of the signed map, SSIM, HOG similarity
(:mod:`gradcam_widget.sanity`). Data randomisation, when the shipped ``shapes_permuted`` model
(the same network trained on permuted labels) exists: each model's map of its own top class,
and of the true label, compared.

Writes ``docs/sanity.md`` (settings, tables, what they show) and ``docs/sanity_cascade.png``
(one scene: rows are the methods, columns the input, the original map and the map after each
cascade step). Every number is seeded. Run::

    .venv/bin/python scripts/sanity_checks.py                   # 50 scenes
    .venv/bin/python scripts/sanity_checks.py --scenes 4 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import gradcam_widget as gw
from gradcam_widget.checks import sanity
from gradcam_widget.data import render

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from evaluate_methods import FIRST_SEED  # noqa: E402  (the held-out seeds: never trained on)

LEADING = ("gradcam", "guided", "guided_gradcam", "vanilla", "smoothgrad")
LABELS = {
    "gradcam": "Grad-CAM",
    "guided": "Guided Backprop",
    "guided_gradcam": "Guided Grad-CAM",
    "vanilla": "Gradient",
    "smoothgrad": "SmoothGrad",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "Eigen-CAM",
    "scorecam": "Score-CAM",
}


def method_order() -> tuple[str, ...]:
    """Grad-CAM, the four input-gradient maps, then the other CAM methods."""
    others = tuple(name for name in gw.methods.names() if name not in LEADING)
    return LEADING + others


def label(name: str) -> str:
    return LABELS.get(name, name)


def cell(mean: float, std: float) -> str:
    return "–" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def cascade_tables(results: dict, order) -> str:
    """One markdown table per metric: methods x cascade steps, mean ± sd over scenes."""
    steps = next(iter(results.values())).steps[1:]
    parts = []
    for metric in sanity.METRICS:
        lines = [
            f"**{sanity.METRIC_LABELS[metric]}** with the trained model's map (mean ± sd over "
            "scenes; a column randomises that block and every block above it)",
            "",
            "| method | " + " | ".join(f"+{step}" for step in steps) + " |",
            "|---|" + "---:|" * len(steps),
        ]
        for name in order:
            rows = results[name].table()[1:]
            cells = [cell(row[metric], row[f"{metric}_std"]) for row in rows]
            lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    flat = {
        name: [int(count) for count in results[name].flat[1:].sum(axis=1)]
        for name in order
        if results[name].flat[1:].any()
    }
    if flat:
        lines = [
            "**Maps that became constant** (all zero: rank and HOG correlations undefined, left "
            "out of the means above), scenes per step",
            "",
            "| method | " + " | ".join(f"+{step}" for step in steps) + " |",
            "|---|" + "---:|" * len(steps),
        ]
        lines += [f"| {label(n)} | " + " | ".join(map(str, c)) + " |" for n, c in flat.items()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def data_table(results: dict, order, which: str) -> str:
    lines = [
        "| method | " + " | ".join(sanity.METRIC_LABELS[m] for m in sanity.METRICS) + " |",
        "|---|" + "---:|" * len(sanity.METRICS),
    ]
    for name in order:
        row = next(r for r in results[name].table() if r["compared"] == which)
        cells = [cell(row[m], row[f"{m}_std"]) for m in sanity.METRICS]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(results: dict, order, data=None) -> str:
    """What the tables show, read off the numbers (no claim is written in advance)."""
    steps = next(iter(results.values())).steps[1:]

    def mean(name, metric, step):
        return results[name].table()[1 + step][metric]

    sentences = []
    first = {name: mean(name, "spearman_abs", 0) for name in order}
    ranked = sorted(order, key=lambda name: -first[name])
    sentences.append(
        f"Randomising only the output layer (`{steps[0]}`) leaves the maps of "
        + ", ".join(f"{label(n)} ({first[n]:.2f})" for n in ranked[:3])
        + " most alike (mean Spearman rank correlation of |map| with the trained model's map), "
        "and changes those of "
        + ", ".join(f"{label(n)} ({first[n]:.2f})" for n in ranked[-3:][::-1])
        + " most."
    )
    last = {name: mean(name, "spearman_abs", len(steps) - 1) for name in order}
    ssim_last = {name: mean(name, "ssim", len(steps) - 1) for name in order}
    hog_last = {name: mean(name, "hog", len(steps) - 1) for name in order}
    top = max(order, key=lambda name: hog_last[name])
    sentences.append(
        f"With every block random, the Spearman |map| correlation ranges from "
        f"{min(last.values()):.2f} ({label(min(last, key=last.get))}) to "
        f"{max(last.values()):.2f} ({label(max(last, key=last.get))}), SSIM from "
        f"{min(ssim_last.values()):.2f} to {max(ssim_last.values()):.2f}, and the HOG "
        f"similarity is highest for {label(top)} ({hog_last[top]:.2f})."
    )
    if "guided" in order and "gradcam" in order:
        g = [mean("guided", "spearman_abs", s) for s in range(len(steps))]
        c = [mean("gradcam", "spearman_abs", s) for s in range(len(steps))]
        above = sum(a > b for a, b in zip(g, c, strict=True))
        sentences.append(
            f"Guided Backprop stays closer to its trained map than Grad-CAM at {above} of "
            f"{len(steps)} cascade steps (Spearman |map| {g[0]:.2f} vs {c[0]:.2f} after "
            f"`{steps[0]}`, {g[-1]:.2f} vs {c[-1]:.2f} with every block random)."
        )
    unchanged = [name for name in order if mean(name, "spearman_abs", 0) > 0.999]
    if unchanged:
        verb = "does" if len(unchanged) == 1 else "do"
        sentences.append(
            f"{', '.join(label(n) for n in unchanged)} {verb} not change at all when the output "
            "layer is randomised: the map does not read the class score."
        )
    if data is not None:
        rows = {name: {row["compared"]: row for row in data[name].table()} for name in order}
        closest = max(order, key=lambda n: rows[n]["own top class"]["spearman_abs"])
        farthest = min(order, key=lambda n: rows[n]["own top class"]["spearman_abs"])
        sentences.append(
            "Between the trained model and the one trained on permuted labels, the maps of each "
            "model's own top class have a mean Spearman |map| correlation from "
            f"{rows[farthest]['own top class']['spearman_abs']:.2f} ({label(farthest)}) to "
            f"{rows[closest]['own top class']['spearman_abs']:.2f} ({label(closest)}); for the "
            "true label: "
            + ", ".join(f"{label(n)} {rows[n]['true label']['spearman_abs']:.2f}" for n in LEADING)
            + "."
        )
    return " ".join(sentences)


def cascade_figure(result_by_method: dict, order, image: np.ndarray, path: Path, title: str):
    """Rows: methods; columns: the input, the original map, then each cascade step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = next(iter(result_by_method.values())).steps
    columns = 1 + len(steps)
    fig, axes = plt.subplots(
        len(order), columns, figsize=(1.25 * columns, 1.3 * len(order) + 0.4), squeeze=False
    )
    for row, name in enumerate(order):
        maps = result_by_method[name].maps[:, 0]
        for col in range(columns):
            axis = axes[row, col]
            axis.set_xticks([])
            axis.set_yticks([])
            if col == 0:
                axis.imshow(image)
            elif name in gw.methods.names():
                axis.imshow(render.colorize(maps[col - 1]))
            else:
                axis.imshow(render.saliency_image(maps[col - 1][..., None], style="abs"))
            if row == 0:
                axis.set_title(
                    "input" if col == 0 else ("original" if col == 1 else f"+{steps[col - 1]}"),
                    fontsize=8,
                )
            if col == 0:
                axis.set_ylabel(label(name), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.975))
    fig.savefig(path, dpi=72)
    plt.close(fig)


def permuted_available() -> str | None:
    """None when ``shapes_permuted`` loads, else why not."""
    try:
        gw.models.load("shapes_permuted")
    except (FileNotFoundError, ValueError, OSError) as error:
        return str(error)
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=50, help="held-out scenes (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="re-initialisation and noise seed")
    parser.add_argument("--smooth", type=int, default=16, help="SmoothGrad copies (default 16)")
    parser.add_argument("--sigma", type=float, default=0.15, help="SmoothGrad noise, of range")
    parser.add_argument(
        "--scorecam-channels",
        type=int,
        default=32,
        help="Score-CAM max_channels (default 32, the package's 64 halved: Score-CAM's forward "
        "passes are most of the run's time)",
    )
    parser.add_argument("--figure-scene", type=int, default=0, help="scene index of the figure")
    parser.add_argument("--no-data", action="store_true", help="skip data randomisation")
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    args = parser.parse_args(argv)

    entry = gw.models.load("shapes")
    order = method_order()
    options = {"smooth": args.smooth, "sigma": args.sigma, "max_channels": args.scorecam_channels}
    scenes = [gw.data.scene(FIRST_SEED + index) for index in range(args.scenes)]
    images = [scene.image for scene in scenes]
    began = started = time.perf_counter()
    results = sanity.model_randomization(
        entry, images, method=order, seed=args.seed, keep_maps=False, **options
    )
    cascade_seconds = time.perf_counter() - started
    print(f"cascade: {args.scenes} scenes in {cascade_seconds:.0f} s", file=sys.stderr)

    data = None
    missing = "skipped (--no-data)" if args.no_data else permuted_available()
    if missing is None:
        started = time.perf_counter()
        labels = [scene.labels[index % len(scene.labels)] for index, scene in enumerate(scenes)]
        data = sanity.data_randomization(
            images, method=order, labels=labels, seed=args.seed, keep_maps=False, **options
        )
        print(f"data randomisation in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    figure_scene = scenes[args.figure_scene]
    shown = sanity.model_randomization(
        entry, [figure_scene.image], method=order, seed=args.seed, **options
    )
    layer = results["gradcam"].layer
    settings = (
        f"Shipped `shapes` model, {args.scenes} held-out scenes (seeds {FIRST_SEED}.."
        f"{FIRST_SEED + args.scenes - 1}, never trained on), each explained for the class the "
        f'trained model predicts, with `score="logit"`. CAM maps at `{layer}`; SmoothGrad '
        f"{args.smooth} copies, sigma {args.sigma} of the input range; Score-CAM "
        f"max_channels={args.scorecam_channels}. Cascade: blocks re-initialised top first with "
        f"their own initializers, seed {args.seed}. Maps compared at 224×224: Spearman of |map| "
        "(CAM: the heatmap as shown; gradients: max |gradient| over RGB) and of the signed map "
        "(CAM: the raw map before ReLU; gradients: the sum over RGB), SSIM and HOG similarity "
        "of the |maps| scaled to [0, 1]. Produced by `scripts/sanity_checks.py` "
        f"(`gradcam_widget.sanity`); wall time {{total:.0f}} s in all, model randomisation "
        f"{cascade_seconds:.0f} s, on 2 CPU cores shared with other work."
    )
    tables = cascade_tables(results, order)
    data_text = f"Data randomisation: not run — {missing}."
    if data is not None:
        permuted = gw.models.load("shapes_permuted")
        hits = np.mean(
            [int(c) in s.labels for c, s in zip(data[order[0]].class_indices, scenes, strict=True)]
        )
        hits_permuted = np.mean(
            [
                int(c) in s.labels
                for c, s in zip(data[order[0]].randomized_class_indices, scenes, strict=True)
            ]
        )
        data_text = (
            f"Data randomisation: the shipped `shapes` model against `{permuted.name}` (the same "
            "network, same script, trained on permuted labels). Top class present in the scene: "
            f"{hits:.0%} (`shapes`) vs {hits_permuted:.0%} (`{permuted.name}`).\n\n"
            "Each model's map of its own top class:\n\n"
            + data_table(data, order, "own top class")
            + "\n\nBoth models' maps of the true label (one object per scene):\n\n"
            + data_table(data, order, "true label")
        )
    paragraph = findings(results, order, data)
    print(tables)
    print()
    print(data_text)
    print()
    print(paragraph)

    settings = settings.format(total=time.perf_counter() - began)
    print(f"total {time.perf_counter() - began:.0f} s", file=sys.stderr)
    if not args.no_write:
        figure_path = ROOT / "docs" / "sanity_cascade.png"
        cascade_figure(
            shown,
            order,
            figure_scene.image,
            figure_path,
            f"scene {figure_scene.seed}, explained class "
            f"{gw.data.CLASS_NAMES[int(shown['gradcam'].class_indices[0])]}: cascade from the top",
        )
        text = "\n\n".join(
            [
                "# Sanity checks (Adebayo et al. 2018) on the shipped shapes model",
                settings,
                "## Model randomisation, cascading from the top",
                tables,
                "![cascade](sanity_cascade.png)",
                "## Data randomisation",
                data_text,
                "## What it shows",
                paragraph,
            ]
        )
        (ROOT / "docs" / "sanity.md").write_text(text + "\n")
        print(f"wrote docs/sanity.md and {figure_path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
