"""Tests for gradcam_widget.images: every image a user has, fitting, and the shown picture."""

from __future__ import annotations

import ast
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gradcam_widget.data import images
from gradcam_widget.data import scenes as data

RNG = np.random.default_rng(12)


def read(image):
    """``images.as_rgb_image`` that fails the test on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return images.as_rgb_image(image)


def assert_rgb(result, shape):
    assert result.shape == shape and result.dtype == np.float32
    assert result.flags.c_contiguous and result.flags.writeable


# --- dtype rules ------------------------------------------------------------------------


def test_uint8_is_read_as_is():
    image = RNG.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    result = read(image)
    assert_rgb(result, (5, 7, 3))
    np.testing.assert_array_equal(result, image.astype(np.float32))


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])  # native and big-endian (PIL "I;16B")
def test_uint16_is_scaled_by_1_over_257(dtype):
    image = np.array([[0, 257, 257 * 100, 65535]], dtype=dtype)
    result = read(image)
    assert_rgb(result, (1, 4, 3))
    np.testing.assert_allclose(result[0, :, 0], [0, 1, 100, 255], rtol=1e-6)
    np.testing.assert_array_equal(result[..., 0], result[..., 2])


def test_bool_is_black_and_white():
    image = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(read(image)[..., 1], [[255, 0], [0, 255]])


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint32, np.int8])
def test_other_integers_in_0_255_are_read_as_is(dtype):
    image = np.array([[0, 1, 100, 127]], dtype=dtype)
    np.testing.assert_array_equal(read(image)[0, :, 0], [0, 1, 100, 127])
    np.testing.assert_array_equal(read(np.full((2, 2), 255, dtype=np.int64)), 255)


@pytest.mark.parametrize(("values", "found"), [([0, 300], "0..300"), ([-1, 20], "-1..20")])
def test_integers_outside_0_255_name_the_range_found(values, found):
    with pytest.raises(ValueError, match="0..255") as error:
        images.as_rgb_image(np.array([values], dtype=np.int64))
    assert found in str(error.value) and "int64" in str(error.value)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_in_0_1_is_scaled_with_exactly_one_warning(dtype):
    image = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=dtype)
    with pytest.warns(UserWarning) as record:
        result = images.as_rgb_image(image)
    assert len(record) == 1
    message = str(record[0].message)
    assert message == images.UNIT_FLOAT_WARNING
    assert "0..1" in message and "image * 255" in message
    assert record[0].filename == __file__  # stacklevel=2: the warning points at the caller
    np.testing.assert_allclose(result[0, :, 0], [0.0, 63.75, 127.5, 255.0], rtol=1e-3)


def test_all_zero_float_does_not_warn():
    result = read(np.zeros((4, 4, 3), dtype=np.float32))
    np.testing.assert_array_equal(result, 0.0)


def test_float_in_0_255_is_read_as_is_without_warning():
    image = np.array([[0.0, 1.5, 99.25, 255.0]])
    np.testing.assert_array_equal(read(image)[0, :, 2], image[0].astype(np.float32))


@pytest.mark.parametrize("values", [[-0.5, 0.5], [-120.0, 130.0], [0.0, 255.5], [0.0, 1e40]])
def test_floats_outside_both_ranges_are_refused_with_a_hint(values):
    with pytest.raises(ValueError, match=r"0\.\.1 or 0\.\.255") as error:
        images.as_rgb_image(np.array([values]))
    assert "preprocess=" in str(error.value)


@pytest.mark.parametrize(("bad", "message"), [(np.nan, "NaN"), (np.inf, "infinite")])
def test_nan_and_inf_are_refused(bad, message):
    image = np.full((3, 3, 3), 10.0)
    image[1, 1, 1] = bad
    with pytest.raises(ValueError, match=message):
        images.as_rgb_image(image)


# --- shapes (the rules capture.as_rgb_image had, kept) ----------------------------------


def test_greyscale_and_single_channel_are_repeated_to_rgb():
    grey = RNG.integers(0, 256, (6, 5)).astype(np.uint8)
    for image in (grey, grey[..., None]):
        result = read(image)
        assert_rgb(result, (6, 5, 3))
        for channel in range(3):
            np.testing.assert_array_equal(result[..., channel], grey)


def test_rgba_drops_alpha():
    rgba = RNG.integers(0, 256, (6, 5, 4)).astype(np.uint8)
    np.testing.assert_array_equal(read(rgba), rgba[..., :3])
    float_rgba = np.concatenate([np.full((2, 2, 3), 200.0), np.full((2, 2, 1), 1.0)], axis=-1)
    np.testing.assert_array_equal(read(float_rgba), 200.0)  # alpha 0..1 does not count


def test_array_likes_are_accepted():
    np.testing.assert_array_equal(read([[0, 128], [255, 3]])[..., 0], [[0, 128], [255, 3]])


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((1, 32, 32, 3)), "pass image[0]"),
        (np.zeros((32, 32, 5)), "expected an image of shape (H, W, 3)"),
        (np.zeros((32, 32, 2)), "got shape (32, 32, 2)"),
        (np.zeros((32,)), "expected an image of shape (H, W, 3)"),
        (np.zeros((0, 4, 3)), "got shape (0, 4, 3)"),
        (np.zeros((2, 2, 2, 3)), "got shape (2, 2, 2, 3)"),
        (np.full((32, 32, 3), np.nan), "NaN"),
        (np.array([["a"]]), "dtype"),
        (np.zeros((2, 2, 3), dtype=complex), "dtype complex128"),
        (None, "got a NoneType"),
        ([[1, 2], [3]], "got a list"),
    ],
)
def test_bad_arrays_say_what_was_expected(image, message):
    with pytest.raises(ValueError) as error:
        images.as_rgb_image(image)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "image",
    [
        RNG.integers(0, 256, (8, 9, 3)).astype(np.uint8),
        RNG.uniform(0, 255, (8, 9, 3)).astype(np.float32),  # same dtype as the result
        RNG.uniform(0, 255, (8, 9, 4)).astype(np.float32),  # RGBA: a slice would be a view
        RNG.uniform(0, 1, (8, 9, 3)).astype(np.float32),
        RNG.uniform(0, 255, (8, 9)).astype(np.float32),
        RNG.integers(0, 65536, (8, 9, 3)).astype(np.uint16),
    ],
    ids=["uint8", "float32", "float32-rgba", "float32-unit", "float32-grey", "uint16"],
)
def test_the_caller_array_is_never_modified_nor_shared(image):
    before = image.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = images.as_rgb_image(image)
    np.testing.assert_array_equal(image, before)
    assert not np.shares_memory(result, image)
    result += 1.0  # writing to the result leaves the caller's array alone
    np.testing.assert_array_equal(image, before)


def test_read_only_input_gives_a_writable_result():
    image = data.sample_scene().image  # read-only
    assert not image.flags.writeable
    assert read(image).flags.writeable


# --- PIL images of every mode -----------------------------------------------------------

BLOCKS = (
    np.array([[[200, 30, 60], [10, 220, 90]], [[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    .repeat(3, axis=0)
    .repeat(3, axis=1)
)  # 6 x 6: four 3 x 3 colour blocks
"""A small RGB picture with saturated, dark and white blocks."""


@pytest.fixture
def rgb_pil():
    return Image.fromarray(BLOCKS)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "RGBX"])
def test_pil_rgb_modes_are_exact(rgb_pil, mode):
    np.testing.assert_array_equal(read(rgb_pil.convert(mode)), BLOCKS)


def test_pil_premultiplied_rgba_with_opaque_alpha_is_exact():
    rgba = np.concatenate([BLOCKS, np.full((6, 6, 1), 255, np.uint8)], axis=-1)
    image = Image.frombytes("RGBa", (6, 6), rgba.tobytes())
    np.testing.assert_array_equal(read(image), BLOCKS)


@pytest.mark.parametrize("mode", ["YCbCr", "HSV"])
def test_pil_other_colour_spaces_convert_back_to_rgb(rgb_pil, mode):
    np.testing.assert_allclose(read(rgb_pil.convert(mode)), BLOCKS, atol=4)


def palette_image(transparency: bool) -> Image.Image:
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices).convert("P")
    image.putpalette([250, 10, 20, 30, 240, 40, 50, 60, 230])
    if transparency:
        image.info["transparency"] = 1
    return image


PALETTE_RGB = np.array(
    [
        [[250, 10, 20], [30, 240, 40], [50, 60, 230]],
        [[50, 60, 230], [30, 240, 40], [250, 10, 20]],
    ]
)


@pytest.mark.parametrize("transparency", [False, True])
def test_pil_palette_gives_the_palette_colours_not_the_indices(transparency):
    result = read(palette_image(transparency))  # read(): no Pillow transparency warning
    np.testing.assert_array_equal(result, PALETTE_RGB)


def test_pil_palette_with_alpha():
    np.testing.assert_array_equal(read(palette_image(False).convert("PA")), PALETTE_RGB)


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((0, 255, 255, 0), (255, 0, 0)),  # magenta + yellow = red
        ((255, 0, 0, 0), (0, 255, 255)),  # cyan
        ((0, 0, 0, 255), (0, 0, 0)),  # key (black)
        ((0, 0, 0, 0), (255, 255, 255)),  # paper
        ((0, 0, 255, 128), (127, 127, 0)),  # half-black yellow
    ],
)
def test_pil_cmyk_gives_the_right_rgb(cmyk, rgb):
    result = read(Image.new("CMYK", (3, 2), cmyk))
    np.testing.assert_array_equal(result, np.broadcast_to(rgb, (2, 3, 3)))


@pytest.mark.parametrize(
    ("lab", "rgb"),
    [
        ((255, 0, 0), (255, 255, 255)),  # L* 100: white
        ((0, 0, 0), (0, 0, 0)),
        ((138, 81, 70), (255, 0, 0)),  # sRGB red is L* 54, a* +81, b* +70 (D50)
        ((224, (-79) & 0xFF, 81), (0, 255, 0)),  # green: a* is negative, stored signed
    ],
)
def test_pil_lab_is_converted_by_colour_management(lab, rgb):
    result = read(Image.frombytes("LAB", (2, 2), bytes(lab) * 4))
    np.testing.assert_allclose(result, np.broadcast_to(rgb, (2, 2, 3)), atol=16)


def test_pil_mode_1_is_black_and_white():
    image = Image.new("1", (4, 2))
    image.putpixel((1, 0), 1)
    expected = np.zeros((2, 4, 3))
    expected[0, 1] = 255
    np.testing.assert_array_equal(read(image), expected)


def test_pil_greyscale_modes():
    grey = RNG.integers(0, 256, (4, 5)).astype(np.uint8)
    image = Image.fromarray(grey)
    np.testing.assert_array_equal(read(image)[..., 1], grey)
    np.testing.assert_array_equal(read(image.convert("LA"))[..., 2], grey)
    opaque = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    premultiplied = Image.frombytes("La", (5, 4), opaque.tobytes())
    np.testing.assert_array_equal(read(premultiplied)[..., 0], grey)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_pil_16_bit_modes_are_scaled_like_uint16(mode):
    values = np.array([[0, 257, 257 * 100, 65535]], dtype=np.uint16)
    raw = values.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    if mode == "I;16N":
        raw = values.tobytes()  # native byte order
    image = Image.frombytes(mode, (4, 1), raw)
    np.testing.assert_allclose(read(image)[0, :, 0], [0, 1, 100, 255], rtol=1e-6)


def test_pil_32_bit_integers():
    def mode_i(values):
        image = Image.fromarray(np.array([values], dtype=np.int32))
        assert image.mode == "I"
        return image

    np.testing.assert_array_equal(read(mode_i([0, 100, 255]))[0, :, 0], [0, 100, 255])
    np.testing.assert_allclose(read(mode_i([0, 257, 65535]))[0, :, 0], [0, 1, 255], rtol=1e-6)
    with pytest.raises(ValueError, match=r"0\.\.70000"):
        images.as_rgb_image(mode_i([0, 70000]))
    with pytest.raises(ValueError, match=r"-5\.\.300"):
        images.as_rgb_image(mode_i([-5, 300]))
    with pytest.raises(ValueError, match=r"-5\.\.3"):
        images.as_rgb_image(mode_i([-5, 3]))


def test_pil_float_mode_follows_the_float_rule():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    with pytest.warns(UserWarning, match=r"0\.\.1") as record:
        result = images.as_rgb_image(unit)
    assert len(record) == 1
    np.testing.assert_allclose(result[0, :, 0], [0, 127.5, 255])
    levels = Image.fromarray(np.array([[0.0, 100.5, 255.0]], dtype=np.float32))
    np.testing.assert_array_equal(read(levels)[0, :, 0], [0, 100.5, 255])
    with pytest.raises(ValueError, match="0..1 or 0..255"):
        images.as_rgb_image(Image.fromarray(np.array([[-1.0, 2.0]], dtype=np.float32)))


# --- files and sample names -------------------------------------------------------------


@pytest.mark.parametrize("as_path", [str, Path])
def test_png_file_by_str_and_path(tmp_path, rgb_pil, as_path):
    path = tmp_path / "blocks.png"
    rgb_pil.save(path)
    np.testing.assert_array_equal(read(as_path(path)), BLOCKS)


@pytest.mark.parametrize("as_path", [str, Path])
def test_jpeg_file_by_str_and_path(tmp_path, as_path):
    picture = np.zeros((32, 48, 3), dtype=np.uint8)
    picture[:, :24] = (220, 40, 40)
    picture[:, 24:] = (40, 40, 220)
    path = tmp_path / "photo.jpg"
    Image.fromarray(picture).save(path, quality=95)
    result = read(as_path(path))
    assert_rgb(result, (32, 48, 3))
    np.testing.assert_allclose(result[4:-4, 4:20], np.broadcast_to((220, 40, 40), (24, 16, 3)),
                               atol=12)  # fmt: skip


@pytest.mark.parametrize(("orientation", "top_colour"), [(6, "left"), (8, "right")])
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation, top_colour):
    """Stored 40 wide x 20 high, left half red, right half blue; the tag says rotate.

    Orientation 6: displayed turned 90 degrees clockwise, so the left (red) half is on top.
    Orientation 8: turned counter-clockwise, so the right (blue) half is on top.
    """
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (230, 20, 20)
    stored[:, 20:] = (20, 20, 230)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated_{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    result = read(path)
    assert result.shape == (40, 20, 3)  # portrait now
    top, bottom = result[:16].mean(axis=(0, 1)), result[24:].mean(axis=(0, 1))
    red, blue = (top, bottom) if top_colour == "left" else (bottom, top)
    assert red[0] > 180 and red[2] < 60
    assert blue[2] > 180 and blue[0] < 60


def test_16_bit_png_file(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)).save(path)
    np.testing.assert_allclose(read(path)[0, :, 1], [0, 100, 255], rtol=1e-6)


def test_palette_png_file_with_transparency(tmp_path):
    path = tmp_path / "palette.png"
    palette_image(True).save(path)
    np.testing.assert_array_equal(read(path), PALETTE_RGB)


def test_sample_name_as_str():
    expected = data.sample("two_shapes").astype(np.float32)
    result = read("two_shapes")
    assert_rgb(result, (224, 224, 3))
    np.testing.assert_array_equal(result, expected)


def test_an_existing_file_wins_over_a_sample_name(tmp_path, monkeypatch, rgb_pil):
    monkeypatch.chdir(tmp_path)
    rgb_pil.save(tmp_path / "two_shapes", format="PNG")
    np.testing.assert_array_equal(read("two_shapes"), BLOCKS)


def test_a_path_object_is_never_a_sample_name():
    with pytest.raises(ValueError, match="no image file 'two_shapes'"):
        images.as_rgb_image(Path("two_shapes"))


def test_neither_file_nor_sample_names_both(tmp_path):
    missing = str(tmp_path / "photo.png")
    with pytest.raises(ValueError) as error:
        images.as_rgb_image(missing)
    message = str(error.value)
    assert message == (
        f"no image file {missing!r} and no sample of that name; samples: " + ", ".join(data.SAMPLES)
    )
    with pytest.raises(ValueError, match="no image file 'kitten'"):
        images.as_rgb_image("kitten")


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(ValueError, match="is a folder, not an image file"):
        images.as_rgb_image(tmp_path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"this is text, not pixels", "not a PNG, JPEG, WebP"), (None, "truncated")],
)
def test_an_unreadable_file_is_one_line_naming_the_file(tmp_path, rgb_pil, content, reason):
    path = tmp_path / "broken.png"
    if content is None:
        rgb_pil.resize((64, 64)).save(path)
        content = path.read_bytes()[:80]  # cut inside the pixel data
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        images.as_rgb_image(path)
    message = str(error.value)
    assert message.startswith(f"cannot read image file {str(path)!r}: ")
    assert reason in message and "\n" not in message
    assert error.value.__suppress_context__  # raised "from None": no chained traceback


def test_a_scikit_image_sample_without_scikit_image_is_a_value_error(monkeypatch):
    """``None`` in ``sys.modules`` makes ``import skimage.data`` fail as if not installed."""
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ValueError) as error:
        images.as_rgb_image("cat")
    message = str(error.value)
    assert "sample 'cat'" in message and "pip install scikit-image" in message
    assert "\n" not in message and error.value.__suppress_context__


# --- fit --------------------------------------------------------------------------------


def area_weights(source: int, target: int) -> np.ndarray:
    """``(target, source)`` exact area-averaging weights: row ``i`` holds the overlap of
    each source pixel with target pixel ``i``'s footprint, divided by its length."""
    scale = source / target
    edges = np.arange(source + 1, dtype=np.float64)
    starts = np.arange(target)[:, None] * scale
    overlap = np.minimum(edges[None, 1:], starts + scale) - np.maximum(edges[None, :-1], starts)
    return np.clip(overlap, 0.0, None) / scale


@pytest.mark.parametrize("texture", ["checkerboard", "noise"])
def test_downscale_averages_area_instead_of_aliasing(texture):
    """A 3000 x 4000 photo-sized texture to 224 x 224: against the exact block mean, area
    averaging is off by ~1e-5 grey levels; bilinear (the old resize) by 30-40 levels."""
    height, width = 3000, 4000
    if texture == "checkerboard":  # the finest possible: 1-pixel squares
        grey = (np.add.outer(np.arange(height), np.arange(width)) % 2 * 255).astype(np.float32)
    else:
        grey = np.random.default_rng(0).uniform(0, 255, (height, width)).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    reference = area_weights(height, 224) @ grey.astype(np.float64) @ area_weights(width, 224).T

    fitted = images.fit(rgb, 224, 224)
    assert fitted.shape == (224, 224, 3) and fitted.dtype == np.float32
    area_error = float(np.abs(fitted[..., 0] - reference).mean())
    bilinear = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR)
    bilinear_error = float(np.abs(bilinear[..., 0] - reference).mean())
    assert area_error < 0.01
    assert bilinear_error > 20.0  # measured: 32.5 (checkerboard), 40.5 (noise)
    np.testing.assert_array_equal(fitted[..., 0], fitted[..., 2])


def test_same_size_returns_the_input():
    rgb = RNG.uniform(0, 255, (10, 12, 3)).astype(np.float32)
    assert images.fit(rgb, 10, 12) is rgb
    assert images.fit(rgb, None, None) is rgb
    assert images.fit(rgb, 10, None) is rgb


def test_none_keeps_that_axis():
    rgb = RNG.uniform(0, 255, (10, 12, 3)).astype(np.float32)
    assert images.fit(rgb, None, 6).shape == (10, 6, 3)
    assert images.fit(rgb, 20, None).shape == (20, 12, 3)
    np.testing.assert_allclose(
        images.fit(rgb, None, 6), cv2.resize(rgb, (6, 10), interpolation=cv2.INTER_AREA)
    )


def test_enlarging_both_axes_is_bilinear():
    rgb = RNG.uniform(0, 255, (5, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        images.fit(rgb, 11, 15), cv2.resize(rgb, (15, 11), interpolation=cv2.INTER_LINEAR)
    )


@pytest.mark.parametrize("rows_shrink", [True, False])
def test_mixed_axes_area_average_the_shrinking_one(rows_shrink):
    """1-pixel stripes across the shrinking axis (100 -> 37) and constant along the growing
    one (40 -> 80): the result is the exact area average of the stripes, where a one-step
    bilinear resize aliases them."""
    stripes = (np.arange(100) % 2 * 255).astype(np.float32)
    expected = area_weights(100, 37) @ stripes.astype(np.float64)
    if rows_shrink:
        rgb = np.repeat(np.repeat(stripes[:, None, None], 40, axis=1), 3, axis=2)
        fitted = images.fit(rgb, 37, 80)
        one_step = cv2.resize(rgb, (80, 37), interpolation=cv2.INTER_LINEAR)
        expected = np.broadcast_to(expected[:, None, None], (37, 80, 3))
    else:
        rgb = np.repeat(np.repeat(stripes[None, :, None], 40, axis=0), 3, axis=2)
        fitted = images.fit(rgb, 80, 37)
        one_step = cv2.resize(rgb, (37, 80), interpolation=cv2.INTER_LINEAR)
        expected = np.broadcast_to(expected[None, :, None], (80, 37, 3))
    assert fitted.shape == one_step.shape == expected.shape
    np.testing.assert_allclose(fitted, expected, atol=1e-3)
    assert np.abs(one_step - expected).mean() > 30  # what the stripes did before


@pytest.mark.parametrize("rows_grow", [True, False])
def test_mixed_axes_interpolate_the_growing_one_bilinearly(rows_grow):
    ramp = np.arange(5, dtype=np.float32) * 50  # 0, 50, ..., 200
    expected = cv2.resize(ramp[None, :], (9, 1), interpolation=cv2.INTER_LINEAR)[0]
    if rows_grow:
        rgb = np.repeat(np.repeat(ramp[:, None, None], 60, axis=1), 3, axis=2)  # (5, 60)
        fitted = images.fit(rgb, 9, 30)
        profile = fitted[:, 7, 0]
    else:
        rgb = np.repeat(np.repeat(ramp[None, :, None], 60, axis=0), 3, axis=2)  # (60, 5)
        fitted = images.fit(rgb, 30, 9)
        profile = fitted[7, :, 0]
    np.testing.assert_allclose(profile, expected, atol=1e-4)
    assert len(np.unique(np.round(profile, 3))) == 9  # smooth, not repeated (nearest) steps


@pytest.mark.parametrize("side", [0, -3, 2.5, True, "224"])
def test_fit_refuses_bad_sizes(side):
    rgb = np.zeros((4, 4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="positive integer or None"):
        images.fit(rgb, side, 4)
    with pytest.raises(ValueError, match="positive integer or None"):
        images.fit(rgb, 4, side)


def test_fit_refuses_a_non_image():
    with pytest.raises(ValueError, match=r"got shape \(4, 4\)"):
        images.fit(np.zeros((4, 4), dtype=np.float32), 2, 2)


# --- shown_image ------------------------------------------------------------------------


def test_shown_image_rounds_and_clips_to_uint8():
    rgb = np.array([[[-3.0, 0.4, 0.6], [1.5, 254.6, 300.0]]], dtype=np.float32)
    shown = images.shown_image(rgb)
    assert shown.dtype == np.uint8 and shown.shape == (1, 2, 3)
    np.testing.assert_array_equal(shown, [[[0, 0, 1], [2, 255, 255]]])


def test_read_fit_show_round_trip_of_a_uint8_image():
    image = RNG.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    rgb = images.as_rgb_image(image)
    np.testing.assert_array_equal(images.shown_image(images.fit(rgb, 30, 40)), image)


@pytest.mark.parametrize("module", [images, data], ids=["images", "data"])
def test_module_does_not_import_tensorflow(module):
    source = Path(module.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
            imported.update(alias.name for alias in node.names)
    assert not imported & {"tensorflow", "keras", "_tf", "capture"}
