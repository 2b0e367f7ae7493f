"""``demo`` and ``saliency`` (``gradcam_widget.commands.pictures``): one capture drawn to a
figure file, run through the command line in this process."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_run import assert_one_error_line, run
from PIL import Image

from gradcam_widget.commands import pictures
from gradcam_widget.data import images, models
from gradcam_widget.data import scenes as data


def assert_four_panels(path):
    picture = cv2.imread(str(path))
    assert picture is not None, path
    height, width, _ = picture.shape
    assert width > 3 * height


@pytest.fixture
def photo(tmp_path):
    """A user's picture: a 300 x 400 PNG (not the model's 224 x 224) of a shape scene."""
    path = tmp_path / "my photo.png"
    Image.fromarray(data.scene(31, n_objects=1, size=(300, 400)).image).save(path)
    return path


def test_slug():
    assert pictures.slug("my photo (1)") == "my-photo-1"
    assert pictures.slug("///") == "image"


def test_demo_writes_the_named_file_and_says_so(tmp_path, capfd):
    out = tmp_path / "view.png"
    status, stdout, err = run(capfd, "demo", "--out", str(out), "--class", "3")
    assert status == 0 and err == []
    assert stdout.startswith(f"wrote {out}: class 3 'star', layer block5_conv3 (14x14 map")
    assert_four_panels(out)


def test_demo_on_the_users_own_picture(photo, tmp_path, capfd):
    out = tmp_path / "mine.pdf"
    status, stdout, err = run(capfd, "demo", "--image", str(photo), "--out", str(out))
    assert status == 0 and err == []
    assert stdout.startswith(f"wrote {out}: ") and out.read_bytes().startswith(b"%PDF")


def test_out_folder_gets_a_file_named_after_model_image_and_class(photo, tmp_path, capfd):
    folder = tmp_path / "results"
    folder.mkdir()
    status, stdout, _ = run(
        capfd, "demo", "--image", str(photo), "--out", str(folder), "--class", "1"
    )
    expected = folder / "gradcam_shapes_my-photo_1-square.png"
    assert status == 0
    assert stdout.startswith(f"wrote {expected}: class 1 'square'")
    assert [path.name for path in folder.iterdir()] == [expected.name]
    assert not (tmp_path / "results.png").exists()  # the old bug: <folder>.png
    assert_four_panels(expected)

    status, stdout, _ = run(capfd, "demo", "--out", str(folder), "--class", "0")
    sample_file = folder / "gradcam_shapes_two_shapes_0-circle.png"
    assert status == 0 and stdout.startswith(f"wrote {sample_file}: ")
    assert sample_file.is_file()


def test_out_without_extension_is_a_png_and_the_line_says_so(tmp_path, capfd):
    status, stdout, _ = run(capfd, "demo", "--out", str(tmp_path / "result"))
    assert status == 0 and stdout.startswith(f"wrote {tmp_path / 'result.png'}: ")
    assert_four_panels(tmp_path / "result.png")


def test_a_float_picture_in_0_1_warns_in_one_line(tmp_path, capfd):
    path = tmp_path / "float.tif"
    unit = data.scene(4).image[..., 0].astype(np.float32) / 255.0
    Image.fromarray(unit).save(path)
    status, _, err = run(capfd, "demo", "--image", str(path), "--out", str(tmp_path / "f.png"))
    assert status == 0
    assert err == [f"warning: {images.UNIT_FLOAT_WARNING}"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--image", "nope.png"], ["no image file 'nope.png' and no sample of that name"]),
        (["--image", "{tmp}/broken.png"], ["cannot read image file", "broken.png"]),
        (["--layer", "nope"], ["unknown layer 'nope'", "block5_conv3"]),
        (["--class", "9"], ["0..4", "9"]),
        (["--class", "-1"], ["0..4"]),
        (["--class", "abc"], ["--class", "invalid int value: 'abc'", "--help"]),
        (["--model", "vgg19"], ["unknown model 'vgg19'", "shapes"]),
        (["--opacity", "2"], ["--opacity must be in 0..1; got 2"]),
        (["--colormap", "nope"], ["unknown colormap 'nope'"]),
        (["--score", "softmax"], ["invalid choice: 'softmax'"]),
        (["--out", "{tmp}/missing/view.png"], ["missing' does not exist"]),
        (["--out", "{tmp}/missing/"], ["does not exist"]),
        (["--out", "{tmp}/view.xyz"], ["does not write .xyz files", ".png"]),
    ],
)
def test_every_error_is_one_line_and_exit_2(tmp_path, capfd, argv, expected):
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "view.png")]
    before = sorted(tmp_path.iterdir())
    assert_one_error_line(*run(capfd, "demo", *argv), *expected)
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_demo_takes_the_recipe_options_from_the_table(tmp_path, capfd):
    """``--interpolation`` (and the other recipe flags) reach the map: nearest on the 14x14
    grid gives a different figure than the default, and the title says so."""
    default, nearest = tmp_path / "bilinear.png", tmp_path / "nearest.png"
    assert run(capfd, "demo", "--out", str(default))[0] == 0
    status, stdout, err = run(capfd, "demo", "--out", str(nearest), "--interpolation",
                              "nearest", "--pooling", "max", "--order", "resize_first")  # fmt: skip
    assert status == 0 and err == [], err
    first, second = cv2.imread(str(default)), cv2.imread(str(nearest))
    assert first.shape == second.shape
    assert float(np.abs(first.astype(float) - second.astype(float)).mean()) > 1.0
    status, _, err = run(capfd, "demo", "--interpolation", "cubic", "--out", str(default))
    assert_one_error_line(status, "", err, "--interpolation", "invalid choice: 'cubic'")


# ---------------------------------------------------------------------------------------
# python -m gradcam_widget saliency: the seed's compute_saliency

SEED_LINE = "\t{name:15s}\t({index})\twith probability {probability:.3f}"


def test_saliency_prints_the_top5_then_writes_the_figure(tmp_path, capfd):
    out = tmp_path / "maps.png"
    status, stdout, err = run(capfd, "saliency", "--model", "shapes", "--image", "two_shapes",
                              "--out", str(out))  # fmt: skip
    assert status == 0 and err == []
    lines = stdout.splitlines()
    assert lines[0] == "Model prediction (sigmoid of the logits):"
    names = [line.split("\t")[1].strip() for line in lines[1:6]]
    indices = [int(line.split("\t")[2].strip("()")) for line in lines[1:6]]
    probabilities = [float(line.rsplit(" ", 1)[1]) for line in lines[1:6]]
    assert names[:2] == ["star", "square"] and sorted(indices) == [0, 1, 2, 3, 4]
    assert probabilities == sorted(probabilities, reverse=True)
    assert lines[1] == SEED_LINE.format(name="star", index=3, probability=probabilities[0])
    assert lines[6] == "explaining class 3 'star' (logit), Grad-CAM at block5_conv3"
    assert lines[7:] == [f"wrote {out}"]
    assert list(tmp_path.iterdir()) == [out]
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] > 2 * picture.shape[0]


def test_saliency_separate_writes_three_more_pngs_into_a_folder(tmp_path, capfd):
    folder = tmp_path / "results"
    folder.mkdir()
    status, stdout, err = run(
        capfd, "saliency", "--out", str(folder), "--class", "1", "--style", "abs", "--separate"
    )
    assert status == 0 and err == []
    stem = folder / "saliency_shapes_two_shapes_1-square"
    expected = [Path(f"{stem}{suffix}.png") for suffix in
                ("", "_gradcam", "_guided_backprop", "_guided_gradcam")]  # fmt: skip
    assert stdout.splitlines()[-4:] == [f"wrote {path}" for path in expected]
    assert "explaining class 1 'square' (logit)" in stdout
    assert sorted(folder.iterdir()) == sorted(expected)
    for path in expected[1:]:
        assert cv2.imread(str(path)).shape == (224, 224, 3)


def test_saliency_pdf_figure_with_png_pictures_and_the_probability_score(tmp_path, capfd):
    out = tmp_path / "maps.pdf"
    status, stdout, _ = run(capfd, "saliency", "--out", str(out), "--score", "probability",
                            "--layer", "block4_conv2", "--separate")  # fmt: skip
    assert status == 0
    assert stdout.startswith("Model prediction (the model's probabilities):\n")
    assert "(probability), Grad-CAM at block4_conv2" in stdout
    assert out.read_bytes().startswith(b"%PDF")
    assert (tmp_path / "maps_guided_gradcam.png").is_file()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--class", "9"], ["class_index must be in 0..4; got 9"]),
        (["--class", "x"], ["--class", "invalid int value: 'x'"]),
        (["--layer", "nope"], ["unknown layer 'nope'"]),
        (["--style", "pretty"], ["invalid choice: 'pretty'"]),
        (["--image", "nope.png"], ["no image file 'nope.png'"]),
        (["--opacity", "-1"], ["--opacity must be in 0..1"]),
        (["--out", "{tmp}/missing/maps.png"], ["missing' does not exist"]),
    ],
)
def test_saliency_errors_are_one_line_and_exit_2(tmp_path, capfd, argv, expected):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "maps.png"), "--separate"]
    assert_one_error_line(*run(capfd, "saliency", *argv), *expected)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_saliency_on_a_network_without_relu_is_one_line(tmp_path, capfd, monkeypatch):
    from gradcam_widget.engine._tf import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(4, 3, activation="swish", name="c")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    entry = models.ModelEntry(
        name="swishy", model=keras.Model(inputs, outputs), preprocess=None,
        class_names=("a", "b", "c"), input_size=(24, 24), multi_label=False,
    )  # fmt: skip
    monkeypatch.setattr(models, "load", lambda name, progress=False: entry)
    result = run(capfd, "saliency", "--out", str(tmp_path / "maps.png"), "--separate")
    assert_one_error_line(
        *result, "error: guided backpropagation is defined for ReLU networks; layer c uses"
    )
    assert list(tmp_path.iterdir()) == []
