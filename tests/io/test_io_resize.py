"""working_size and fit_frames: aspect ratio, orientation and exact crop/pad geometry."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from ccedit.errors import UserError
from ccedit.io import fit_frames, fit_image, read_video, working_size
from tests.conftest import VIDEOS


@pytest.mark.parametrize(
    ("source_hw", "kwargs", "expected"),
    [
        ((480, 480), {}, (512, 512)),
        ((512, 288), {}, (896, 512)),  # ballet-portrait: 512 * 512 / 288 = 910 -> 896
        ((288, 512), {}, (512, 896)),  # sailboat
        ((720, 1280), {"short_side": 384}, (384, 704)),  # 682.7 -> 704
        ((480, 480), {"short_side": 500}, (512, 512)),  # short side rounded to the multiple too
        ((288, 512), {"height": 256}, (256, 448)),  # 455 -> 448
        ((288, 512), {"width": 640}, (384, 640)),  # 360 -> 384
        ((512, 288), {"height": 768, "width": 768}, (768, 768)),  # both given: aspect ratio not enforced
        ((100, 2000), {}, (512, 10240)),
        ((2000, 10), {"width": 64}, (12800, 64)),
        ((10, 2000), {"width": 64}, (64, 64)),  # never below one multiple
        ((480, 480), {"multiple": 8, "short_side": 300}, (304, 304)),  # 37.5 multiples: half to even, 38
    ],
)
def test_working_size(source_hw, kwargs, expected):
    assert working_size(source_hw, **kwargs) == expected


@pytest.mark.parametrize(("kwargs", "size"), [({"height": 500}, (512, 512)), ({"width": 30}, (64, 64)),
                                             ({"height": 470, "width": 130}, (448, 128))])
def test_working_size_fits_non_multiples_with_a_warning(kwargs, size, caplog):
    assert working_size((480, 480), **kwargs) == size
    assert "is not a multiple of 64" in caplog.text


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"height": -64}])
def test_working_size_rejects_sides_that_are_not_positive(kwargs):
    with pytest.raises(UserError, match="must be positive"):
        working_size((480, 480), **kwargs)


def _three_bands(height: int, width: int) -> np.ndarray:
    """One frame: red left quarter, green middle half, blue right quarter."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, : width // 4, 0] = 255
    frame[:, width // 4 : 3 * width // 4, 1] = 255
    frame[:, 3 * width // 4 :, 2] = 255
    return frame[None]


def test_crop_covers_and_cuts_the_centre():
    out, record = fit_frames(_three_bands(100, 200), (64, 64), mode="crop")
    assert out.shape == (1, 64, 64, 3)
    assert record.scale == pytest.approx(0.64)
    assert record.resized_size == (64, 128)
    assert record.crop_box == (0, 32, 64, 64) and record.pad_box is None
    # The kept window is exactly the green middle half of the source.
    np.testing.assert_array_equal(out[0, :, :, 1], 255)
    assert out[0, :, :, [0, 2]].max() == 0


def test_pad_fits_inside_with_black_bars():
    out, record = fit_frames(_three_bands(100, 200), (64, 64), mode="pad")
    assert out.shape == (1, 64, 64, 3)
    assert record.scale == pytest.approx(0.32)
    assert record.resized_size == (32, 64)
    assert record.pad_box == (16, 0, 32, 64) and record.crop_box is None
    assert out[0, :16].max() == 0 and out[0, 48:].max() == 0
    # All three bands survive, in order.
    np.testing.assert_array_equal(out[0, 32, 2], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 32, 32], [0, 255, 0])
    np.testing.assert_array_equal(out[0, 32, 61], [0, 0, 255])


def test_enlarging_and_identity():
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 20, 30, 3), dtype=np.uint8)
    out, record = fit_frames(frames, (40, 60), mode="crop")
    assert out.shape == (3, 40, 60, 3) and record.scale == 2.0 and record.crop_box == (0, 0, 40, 60)
    same, record = fit_frames(frames, (20, 30), mode="pad")
    np.testing.assert_array_equal(same, frames)  # no resampling when nothing changes
    assert record.pad_box == (0, 0, 20, 30)


@pytest.mark.parametrize(("name", "portrait"), [("ballet-portrait.mp4", True), ("sailboat.mp4", False)])
@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_orientation_survives_working_size_and_fit(name, portrait, mode):
    clip = read_video(VIDEOS / name, num_frames=2)
    size = working_size(clip.source_size)
    out, record = fit_frames(clip.frames, size, mode=mode)
    height, width = out.shape[1:3]
    assert (height, width) == size and height % 64 == 0 and width % 64 == 0
    assert (height > width) is portrait
    assert min(height, width) == 512
    # The record is what gets saved next to the output.
    restored = json.loads(json.dumps(asdict(record)))
    assert restored["source_size"] == list(clip.source_size) and restored["mode"] == mode
    # Aspect ratios differ by < 2 %, so little is cut or padded.
    box = record.crop_box or record.pad_box
    assert abs(box[2] * box[3] - height * width) < 0.02 * height * width


def test_fit_image_and_bad_input():
    image, record = fit_image(_three_bands(100, 200)[0], (64, 128), mode="crop")
    assert image.shape == (64, 128, 3) and record.target_size == (64, 128)
    with pytest.raises(ValueError, match="uint8"):
        fit_frames(np.zeros((2, 8, 8, 3), np.float32), (8, 8))
    with pytest.raises(ValueError, match="mode"):
        fit_frames(np.zeros((2, 8, 8, 3), np.uint8), (8, 8), mode="stretch")
