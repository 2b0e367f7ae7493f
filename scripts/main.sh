#!/usr/bin/env bash
# The main job, offline: set up, then Grad-CAM on a generated scene with a small model.
# (Until the shipped shapes model and the widget land, this runs the core end to end.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/python - <<'PY'
import numpy as np
import gradcam_widget as gw
from gradcam_widget._tf import keras

keras.utils.set_random_seed(0)
model = keras.applications.VGG16(weights=None)
image = np.random.default_rng(0).integers(0, 256, (224, 224, 3)).astype(np.uint8)
cap = gw.capture(model, image)
res = cap.cam()
print(f"layer {res.layer}: activations {cap.activations().shape}, raw {res.raw.shape}, "
      f"heatmap {res.heatmap.shape}, model pass {cap.seconds * 1000:.0f} ms")
PY
