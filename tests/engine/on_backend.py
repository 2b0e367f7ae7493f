"""Run a snippet on one Keras backend in a subprocess (the backend is picked at Keras's first
import, so a JAX or PyTorch test cannot run in the TensorFlow test process), and a small
linear model whose gradients are known in closed form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import json, sys
import numpy as np
sys.path.insert(0, "tests/engine")
from on_backend import images, linear_model, squash_heads
from gradcam_widget.engine import engine_for
from gradcam_widget.engine._keras import keras
"""


def linear_model():
    """conv (no activation) -> global average -> dense: d logit k / d conv[n, h, w, c] is
    W[c, k] / (h * w) everywhere."""
    from gradcam_widget.engine._keras import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))


def squash_heads() -> list:
    """Three one-output models: a softmax and a sigmoid inside a Lambda (which cannot be
    bypassed: the engine reads them off what the backend traced) and plain logits."""
    from gradcam_widget.engine._keras import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    logits = keras.layers.Dense(3, name="dense")(keras.layers.GlobalAveragePooling2D()(x))
    heads = [
        keras.layers.Lambda(lambda t: keras.ops.softmax(t), name="soft")(logits),
        keras.layers.Lambda(lambda t: keras.ops.sigmoid(t), name="sig")(logits),
        logits,
    ]
    return [keras.Model(inputs, head) for head in heads]


def images(count: int) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, (count, 8, 8, 3)).astype("float32")


def run_on(backend: str, code: str, timeout: int = 600) -> dict:
    """The JSON object the snippet prints last, run with ``KERAS_BACKEND=backend`` after
    :data:`PRELUDE`'s imports.

    Raises:
        AssertionError: when the snippet fails (its stderr in the message).
    """
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = PRELUDE + "\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
