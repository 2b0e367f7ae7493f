"""Grad-CAM written out longhand (numpy + cv2, no gradcam_widget code): the reference the
capture tests and the backend matrix (``backend_worker.py``, any Keras backend) compare with."""

import itertools

import cv2
import numpy as np

OPTIONS = list(
    itertools.product(("mean", "max"), ("weighted", "top"), ("relu_first", "resize_first"))
)
"""Every ``(pooling, channels, order)``."""


def reference_cam(activations, gradients, size, options):
    """Grad-CAM written out longhand: numpy + cv2, no gradcam_widget code.

    ``options`` is ``(pooling, channels, order)``, as in :data:`OPTIONS`."""
    pooling, channels, order = options
    pool = np.mean if pooling == "mean" else np.max
    weights = pool(gradients, axis=(0, 1))
    if channels == "top":
        keep = np.zeros_like(weights)
        keep[np.argmax(weights)] = 1.0
        weights = weights * keep
    raw = np.tensordot(activations, weights, axes=([2], [0]))
    height, width = size
    if order == "relu_first":
        cam = cv2.resize(np.maximum(raw, 0).astype(np.float32), (width, height))
    else:
        cam = np.maximum(cv2.resize(raw.astype(np.float32), (width, height)), 0)
    heatmap = cam / cam.max() if cam.max() > 0 else np.zeros_like(cam)
    return raw, heatmap, weights
