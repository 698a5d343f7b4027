"""`load_masks` and its parts: spec parsing, mask files fitted like the frames, clicks mapped through the fit,
shaping, the one-line refusals, and the tracked-mask cache."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from ccedit.errors import UserError
from ccedit.io.resize import fit_frames
from ccedit.masks import MaskOptions, Sam2VideoTracker, load_masks, parse_mask_spec
from ccedit.masks.geometry import point_to_working
from ccedit.masks.shaping import shape


def write_mask(path, mask: np.ndarray, channels: int = 1) -> str:
    pixels = mask.astype(np.uint8) * 255
    cv2.imwrite(str(path), pixels if channels == 1 else np.repeat(pixels[..., None], channels, axis=-1))
    return str(path)


def square(size=(512, 512), box=(100, 200, 300, 400)) -> np.ndarray:
    """A bool mask with rows box[0]:box[1] and columns box[2]:box[3] set."""
    mask = np.zeros(size, bool)
    mask[box[0]:box[1], box[2]:box[3]] = True
    return mask


@pytest.mark.parametrize("text, kind, fields", [
    ("masks/dog.mp4", "file", {"path": "masks/dog.mp4"}),
    ("dog.png@3", "image_at", {"path": "dog.png", "frame": 3}),
    ("text:  a brown   dog", "text", {"prompt": "a brown dog"}),
    ("point:2,10.5,20", "point", {"frame": 2, "coordinates": (10.5, 20.0)}),
    ("box:0,1,2,30,40", "box", {"frame": 0, "coordinates": (1.0, 2.0, 30.0, 40.0)}),
])
def test_each_spec_form_parses(text, kind, fields):
    spec = parse_mask_spec(text)
    assert spec.kind == kind and all(getattr(spec, k) == v for k, v in fields.items())


@pytest.mark.parametrize("text, words", [
    ("", "empty"), ("text:  ", "no concept"), ("point:1,2", "point:K,x,y"), ("point:a,1,2", "point:K,x,y"),
    ("box:0,1,2,3", "box:K"), ("box:0,30,2,10,40", "x0 < x1"), ("dog.png@-1", "negative"),
])
def test_a_bad_spec_is_one_line(text, words):
    with pytest.raises(UserError) as error:
        parse_mask_spec(text)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_mask_image_of_any_channel_count_is_thresholded_at_half_and_cropped_like_the_frames(tmp_path, fitted):
    frames, fit = fitted
    grey = square().astype(np.uint8) * 127  # just below half: outside
    grey[square(box=(100, 200, 300, 400))] = 128  # at half: inside
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), grey)
    masks = load_masks(str(path), frames, fit)
    expected, _ = fit_frames(np.repeat(square()[None, ..., None].astype(np.uint8) * 255, 3, -1), (48, 64), "crop")
    np.testing.assert_array_equal(masks.hard[0], expected[0, ..., 0] >= 128)
    assert masks.hard.shape == (10, 48, 64) and (masks.hard == masks.hard[0]).all()
    rgba = load_masks(write_mask(tmp_path / "rgba.png", square(), channels=4), frames, fit)
    np.testing.assert_array_equal(rgba.hard, masks.hard)
    assert masks.record["source"] == {"kind": "file", "spec": str(path), "path": str(path)}
    assert masks.record["coverage"] == [round(float(masks.hard[0].mean()), 6)] * 10


def test_a_mask_of_another_size_is_fitted_with_a_warning(tmp_path, fitted, caplog):
    frames, fit = fitted
    same = load_masks(write_mask(tmp_path / "full.png", square()), frames, fit)
    with caplog.at_level(logging.WARNING):
        half = load_masks(write_mask(tmp_path / "half.png", square((256, 256), (50, 100, 150, 200))), frames, fit)
    assert "256x256" in caplog.text and "512x512" in caplog.text
    np.testing.assert_array_equal(half.hard, same.hard)


def test_a_mask_video_shorter_than_the_clip_is_one_line(tmp_path, fitted):
    frames, fit = fitted
    folder = tmp_path / "mask-frames"
    folder.mkdir()
    for index in range(4):
        write_mask(folder / f"{index}.png", square())
    with pytest.raises(UserError, match="has 4 frames but the clip has 10"):
        load_masks(str(folder), frames, fit)


def test_a_mask_folder_gives_each_frame_its_own_mask(tmp_path, fitted):
    frames, fit = fitted
    folder = tmp_path / "mask-frames"
    folder.mkdir()
    for index in range(10):
        write_mask(folder / f"{index}.png", square(box=(0, 512, 0, 40 * (index + 1))))
    coverage = load_masks(str(folder), frames, fit).record["coverage"]
    assert coverage == sorted(coverage) and coverage[0] < coverage[-1]


def test_an_empty_mask_is_one_line_and_an_all_white_one_is_said_once(tmp_path, fitted, caplog):
    frames, fit = fitted
    with pytest.raises(UserError, match="is empty"):
        load_masks(write_mask(tmp_path / "empty.png", np.zeros((512, 512), bool)), frames, fit)
    with caplog.at_level(logging.INFO, logger="ccedit.masks"):
        masks = load_masks(write_mask(tmp_path / "white.png", np.ones((512, 512), bool)), frames, fit)
    assert masks.hard.all() and caplog.text.count("equals an unmasked") == 1
    with pytest.raises(UserError, match="inverted leaves nothing"):
        load_masks(str(tmp_path / "white.png"), frames, fit, MaskOptions(invert=True))


def test_clicks_map_through_the_crop_and_outside_ones_are_one_line(fitted):
    _, fit = fitted  # 512x512 -> 64x64, rows 8:56 kept
    assert point_to_working(fit, "point:0,256,256", 256, 256) == (32.0, 24.0)
    with pytest.raises(UserError, match="outside the 512x512 frame"):
        point_to_working(fit, "point:0,600,10", 600, 10)
    with pytest.raises(UserError, match="cropped away"):
        point_to_working(fit, "point:0,10,20", 10, 20)  # row 20 of 512 -> 2.5, above the kept rows
    padded = fit_frames(np.zeros((1, 512, 512, 3), np.uint8), (48, 64), "pad")[1]  # 48x48 picture at column 8
    assert point_to_working(padded, "point:0,0,0", 0, 0) == (8.0, 0.0)


def test_a_frame_outside_the_clip_is_refused_before_the_tracker_loads(fitted, tmp_path):
    frames, fit = fitted
    options = MaskOptions(tracker=str(tmp_path / "never-read"))
    with pytest.raises(UserError, match="names frame 10, but the clip has 10 frames"):
        load_masks("point:10,256,256", frames, fit, options)
    with pytest.raises(UserError, match="outside the 512x512 frame"):
        load_masks("point:1,256,900", frames, fit, options)


def test_shaping_inverts_then_dilates_then_feathers_outside_the_hard_mask():
    hard = np.zeros((1, 21, 21), bool)
    hard[0, 10, 10] = True
    dilated, soft = shape(hard, invert=False, dilate_pixels=2, feather_pixels=3)
    rows, cols = np.mgrid[:21, :21]
    distance = np.hypot(rows - 10, cols - 10)
    assert dilated[0][distance <= 2].all() and not dilated[0][distance > 2.5].any()  # a disc of radius 2
    assert (soft[dilated] == 1).all()
    row = soft[0, 10, 12:18]  # from the disc's edge outwards: 1, then 3/4, 2/4, 1/4, then 0
    np.testing.assert_allclose(row, [1, 0.75, 0.5, 0.25, 0, 0], atol=1e-6)
    inverted, _ = shape(hard, invert=True, dilate_pixels=0, feather_pixels=0)
    assert inverted.sum() == 21 * 21 - 1


def test_tracked_masks_are_cached_and_reused_without_the_tracker(tiny_sam2, fitted, tmp_path, monkeypatch):
    frames, fit = fitted
    calls = []
    track = Sam2VideoTracker.track
    monkeypatch.setattr(Sam2VideoTracker, "track", lambda self, *a: calls.append(1) or track(self, *a))
    options = MaskOptions(tracker=tiny_sam2, chunk_frames=4)
    first = load_masks("point:4,256,256", frames, fit, options, cache_dir=tmp_path)
    assert len(calls) == 1 and first.hard.shape == (10, 48, 64)
    assert first.record["source"] == {"kind": "point", "spec": "point:4,256,256", "frame": 4,
                                      "click": [256.0, 256.0], "model": tiny_sam2}
    assert list((tmp_path / "masks").glob("*.safetensors"))
    feathered = load_masks("point:4,256,256", frames, fit, MaskOptions(tracker=tiny_sam2, feather=2), tmp_path)
    assert len(calls) == 1  # shaping is applied after the cache
    np.testing.assert_array_equal(feathered.hard, first.hard)
    assert ((feathered.soft > 0) & (feathered.soft < 1)).any()
    load_masks("point:5,256,256", frames, fit, options, cache_dir=tmp_path)
    assert len(calls) == 2  # another spec is another entry
