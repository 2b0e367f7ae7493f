"""Test models shared by several test files, and the docs site (`built_site`).

``make_cnn`` builds the small Conv-Pool-Conv classifier most tests explain (a fresh model per
call, seeded, so a test that counts traces or passes gets an engine of its own); ``shapes`` is
the shipped model, loaded once per session; ``lambda_softmax_model`` is the one head the logit
bypass cannot reach.
"""

from pathlib import Path

import pytest

import gradcam_widget as gw
from gradcam_widget.engine._tf import keras, tf


def _cnn(
    *,
    seed: int = 1,
    input_shape: tuple = (32, 32, 3),
    filters: tuple[int, int] = (8, 12),
    classes: int = 4,
    activation: str | None = "softmax",
    head: str = "gap",
    padding: str = "same",
    rescaling: bool = False,
    name: str | None = None,
):
    """``[Rescaling] -> conv1 -> pool1 -> conv2 -> head -> Dense``, weights seeded.

    Args:
        seed: seeds Keras before the layers are made (same seed, same weights).
        input_shape: ``(H, W, C)``, ``None`` where free.
        filters: channels of ``conv1`` and ``conv2`` (3 x 3, ReLU).
        classes: units of the last ``Dense``, named ``"head"``.
        activation: of the last ``Dense`` (``None``: logits out).
        head: ``"gap"`` (global average pooling, ``"gap"``) or ``"flatten"`` (``pool2`` then
            ``Flatten``, so gradients vary over space: mean and max pooling differ).
        padding: of both convolutions.
        rescaling: start with ``Rescaling(1 / 255)``.
        name: the model's name.

    Returns:
        A ``keras.Model`` (Functional) from ``(N, *input_shape)`` to ``(N, classes)``.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255.0, name="rescaling")(inputs) if rescaling else inputs
    x = keras.layers.Conv2D(filters[0], 3, padding=padding, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(filters[1], 3, padding=padding, activation="relu", name="conv2")(x)
    if head == "gap":
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = keras.layers.Flatten()(keras.layers.MaxPooling2D(name="pool2")(x))
    outputs = keras.layers.Dense(classes, activation=activation, name="head")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="session")
def make_cnn():
    """The factory of the small seeded CNN (see :func:`_cnn` for its keyword options)."""
    return _cnn


@pytest.fixture(scope="session")
def shapes():
    """The shipped ``shapes`` entry (``gw.models.load`` builds it once per process)."""
    return gw.models.load("shapes")


@pytest.fixture
def lambda_softmax_model():
    """A classifier whose softmax sits in a ``Lambda``: the one place the logit bypass cannot
    reach (the capture must say so instead of silently explaining the probability)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="c")(inputs))
    logits = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, keras.layers.Lambda(lambda t: tf.nn.softmax(t))(logits))


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """The docs site, built strictly once per session (tests/docs, tests/e2e read it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gw_site_build", Path(__file__).parent / "docs" / "site_build.py"
    )
    site_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site_build)
    out = tmp_path_factory.mktemp("site") / "html"
    run = site_build.build(out)
    assert run.returncode == 0, (
        f"the docs build failed:\n{run.stdout[-4000:]}\n{run.stderr[-6000:]}"
    )
    assert "WARNING" not in run.stderr, run.stderr[-6000:]
    return out
