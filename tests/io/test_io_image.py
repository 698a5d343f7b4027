"""read_image / write_image: colour modes, orientation, round trips and errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ccedit.errors import UserError
from ccedit.io import read_image, write_image


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(24, 40, 3), dtype=np.uint8)


def test_png_round_trip_is_exact(tmp_path, pixels):
    path = write_image(tmp_path / "sub" / "key.png", pixels)
    assert path.is_file()
    back = read_image(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, pixels)


def test_jpg_round_trip_is_close(tmp_path):
    smooth = np.linspace(0, 255, 48 * 64 * 3).reshape(48, 64, 3).astype(np.uint8)
    back = read_image(write_image(tmp_path / "key.jpg", smooth))
    assert back.shape == smooth.shape
    assert np.abs(back.astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA"])
def test_other_modes_become_rgb(tmp_path, mode, pixels):
    image = Image.fromarray(pixels).convert(mode)
    image.save(tmp_path / "in.png")
    back = read_image(tmp_path / "in.png")
    assert back.shape == (24, 40, 3)
    if mode in ("L", "LA"):
        np.testing.assert_array_equal(back[..., 0], back[..., 2])
    if mode == "RGBA":
        np.testing.assert_array_equal(back, pixels)  # alpha dropped, colour untouched


def test_exif_orientation_is_applied(tmp_path, pixels):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif)
    assert read_image(tmp_path / "phone.jpg").shape == (40, 24, 3)


def test_missing_empty_and_corrupt(tmp_path, pixels):
    with pytest.raises(UserError, match=r"nowhere\.png does not exist"):
        read_image(tmp_path / "nowhere.png")
    (tmp_path / "empty.png").touch()
    with pytest.raises(UserError, match=r"empty\.png is empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(UserError, match=r"noise\.png could not be decoded"):
        read_image(tmp_path / "noise.png")
    data = (write_image(tmp_path / "full.png", pixels)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.png could not be decoded") as info:
        read_image(tmp_path / "cut.png")
    assert "\n" not in str(info.value)


def test_write_rejects_bad_input_and_leaves_nothing(tmp_path, pixels):
    with pytest.raises(UserError, match=r"\.png"):
        write_image(tmp_path / "key.tiff", pixels)
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "key.png", pixels.astype(np.float32))
    assert list(tmp_path.iterdir()) == []


def _sixteen_bit(height=24, width=40):
    """A 16-bit ramp over the full 0..65535 range and its exact 8-bit scaling."""
    ramp = np.linspace(0, 65535, height * width).reshape(height, width).round().astype(np.uint16)
    return ramp, np.round(ramp / 257.0).astype(np.uint8)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    import cv2

    ramp, expected = _sixteen_bit()
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), ramp)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    back = read_image(path)
    assert back.dtype == np.uint8 and back.shape == (24, 40, 3)
    np.testing.assert_array_equal(back, np.repeat(expected[..., None], 3, axis=-1))


@pytest.mark.parametrize("alpha", [False, True])
def test_sixteen_bit_colour_png_is_scaled(tmp_path, alpha):
    import cv2

    ramp, expected = _sixteen_bit()
    rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 65535 // 3)], axis=-1)
    bgr = rgb[..., ::-1]
    if alpha:
        bgr = np.concatenate([bgr, np.full_like(ramp, 65535)[..., None]], axis=-1)
    path = tmp_path / "colour16.png"
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))
    back = read_image(path).astype(int)
    exact = np.stack([expected, expected[::-1], np.full_like(expected, round(65535 // 3 / 257))], axis=-1)
    assert np.abs(back - exact).max() <= 1  # the high byte of each sample: at most one level below rounding


def test_palette_png_keeps_its_colours(tmp_path):
    colours = np.array([[255, 0, 0], [0, 128, 255], [20, 200, 40], [250, 250, 250]], dtype=np.uint8)
    indices = np.random.default_rng(1).integers(0, len(colours), size=(24, 40)).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(colours.flatten().tolist())
    image.info["transparency"] = 3  # a transparent palette entry keeps its colour once alpha is dropped
    image.save(tmp_path / "palette.png", transparency=3)
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), colours[indices])
