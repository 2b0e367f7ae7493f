"""Repository-wide pytest set-up: notebooks that need a download are skipped, visibly."""

import pytest

DOWNLOAD_NOTEBOOKS = {"03_imagenet_vgg16.ipynb": "vgg16"}


def pytest_collection_modifyitems(config, items):
    needed = {
        item.path.name
        for item in items
        if item.path.suffix == ".ipynb" and item.path.name in DOWNLOAD_NOTEBOOKS
    }
    if not needed:
        return
    from gradcam_widget import models

    for item in items:
        model_name = DOWNLOAD_NOTEBOOKS.get(item.path.name)
        if model_name and not models.weights_cached(model_name):
            item.add_marker(
                pytest.mark.skip(
                    reason=f"{item.path.name}: the {model_name} ImageNet weights are not in the "
                    f"Keras cache ({models.keras_cache_dir()}) and this machine is offline"
                )
            )
