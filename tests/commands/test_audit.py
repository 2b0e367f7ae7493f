"""``audit`` on the command line (``gradcam_widget.commands.audit``): its flags from the
options table, the interpolation passed to the audit, the accuracy line."""

from __future__ import annotations

import json

import pandas as pd

from gradcam_widget.__main__ import build_parser, main
from gradcam_widget.commands import audit


def test_the_recipe_flags_default_to_the_methods_choice():
    args = build_parser().parse_args(["audit", "scenes:0-4"])
    assert (args.pooling, args.channels, args.order, args.interpolation) == (None,) * 4
    assert (args.method, args.layer, args.score) == ("gradcam", None, "logit")
    args = build_parser().parse_args(["audit", "scenes:0-4", "--interpolation", "nearest"])
    assert args.interpolation == "nearest" and args.run is audit.audit


def test_the_interpolation_reaches_the_audit(tmp_path, capfd):
    out = tmp_path / "results"
    status = main(["audit", "scenes:1000000-1000003", "--out", str(out), "--quiet",
                   "--interpolation", "nearest", "--order", "resize_first"])  # fmt: skip
    captured = capfd.readouterr()
    assert status == 0, captured.err
    assert captured.out.startswith(f"wrote {out}: 3 images, 0 skipped")
    manifest = json.loads((out / "manifest.json").read_text())
    text = json.dumps(manifest)
    assert '"interpolation": "nearest"' in text and '"order": "resize_first"' in text


def test_the_accuracy_line():
    table = pd.DataFrame({"correct": [True, False, None, True], "true_label": [1, 2, None, 3]})
    assert audit.accuracy(table) == (
        "accuracy 66.7% of 3 images with a known class; 1 image had no class"
    )
    unlabelled = pd.DataFrame({"correct": [None, None], "true_label": [None, None]})
    assert audit.accuracy(unlabelled) is None
    unknown = pd.DataFrame({"correct": [None], "true_label": ["zebra"]})
    assert audit.accuracy(unknown) == "accuracy unknown: none of the 1 image has a known class"
