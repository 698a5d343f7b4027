"""Region edits end to end (`--mask`): the source is kept exactly outside the mask, the edit acts inside it, the
mask reaches the sidecar, the side-by-side and the conditions dump, and bad masks are one line before any model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ccedit.cli import main
from ccedit.io import read_image, read_video
from ccedit.io.resize import fit_frames
from ccedit.masks import MaskOptions, load_masks
from tests.conditioning import write_moving_disk_clip

SIZE = ["--height", "64", "--width", "64"]
FAST = ["--model", "tiny", "--steps", "1", "--seed", "3", "structure.cache_dir=null", "output.frames=true"]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return write_moving_disk_clip(tmp_path_factory.mktemp("long"), num_frames=100)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    return write_moving_disk_clip(tmp_path_factory.mktemp("short"), num_frames=8)


def write_box_mask(path, box=(20, 70, 40, 100), size=(96, 128)) -> str:
    """A mask image at the clip's source size: rows box[0]:box[1], columns box[2]:box[3]."""
    mask = np.zeros(size, np.uint8)
    mask[box[0]:box[1], box[2]:box[3]] = 255
    cv2.imwrite(str(path), mask)
    return str(path)


def working_source(folder, num_frames: int) -> tuple[np.ndarray, object]:
    """The clip's frames as an edit at 64x64 (crop) prepares them, and their fit."""
    clip = read_video(folder, num_frames=num_frames)
    return fit_frames(clip.frames, (64, 64), "crop")


def output_frames(out) -> np.ndarray:
    return np.stack([read_image(p) for p in sorted(out.parent.glob(f"{out.stem}_frames/*.png"))])


def test_a_long_clip_in_windows_keeps_every_pixel_outside_the_mask(tmp_path, long_clip):
    mask = write_box_mask(tmp_path / "mask.png")
    out = tmp_path / "o.mp4"
    assert main(["edit", str(long_clip), "--prompt", "a red car", "-o", str(out), *SIZE, *FAST, "--mask", mask,
                 "--window", "24", "--overlap", "6", "mask.feather=2", "--side-by-side", "--dump-conditions"]) == 0
    edited = output_frames(out)
    source, fit = working_source(long_clip, 100)
    masks = load_masks(mask, source, fit, MaskOptions(feather=2))
    outside, inside = masks.soft == 0, masks.hard
    assert edited.shape == source.shape == (100, 64, 64, 3)
    assert outside.any() and inside.any()
    # beyond the feather band every pixel of every frame is the source's, to the level
    assert np.array_equal(edited[outside], source[outside])
    # inside, every frame is edited
    for frame, src, region in zip(edited, source, inside):
        assert np.abs(frame[region].astype(int) - src[region]).mean() > 1
    sidecar = json.loads((tmp_path / "o.mp4.json").read_text())
    assert sidecar["windows"]["per_pass"][0] > 3
    assert sidecar["mask"]["source"] == {"kind": "file", "spec": mask, "path": mask}
    assert sidecar["mask"]["coverage"] == masks.coverage and len(sidecar["mask"]["coverage"]) == 100
    assert sidecar["config"]["mask"]["spec"] == mask


def test_the_side_by_side_and_the_conditions_dump_show_the_mask(tmp_path, short_clip):
    mask = write_box_mask(tmp_path / "mask.png")
    out = tmp_path / "o.mp4"
    assert main(["edit", str(short_clip), "--prompt", "a red car", "-o", str(out), *SIZE, *FAST, "--mask", mask,
                 "--window", "4", "--overlap", "2", "--side-by-side", "--dump-conditions"]) == 0
    source, fit = working_source(short_clip, 8)
    hard = load_masks(mask, source, fit).hard
    side = read_video(tmp_path / "o.side_by_side.mp4").frames.astype(float)
    assert side.shape[2] == 64 * 4  # source | mask | canny | result
    source_panel, mask_panel = side[..., :64, :], side[..., 64:128, :]
    redder = (mask_panel[..., 0] - mask_panel[..., 1]) - (source_panel[..., 0] - source_panel[..., 1])
    assert redder[hard].mean() > 60 and abs(redder[~hard].mean()) < 10  # tinted inside only
    conditions = json.loads((tmp_path / "o.conditions" / "conditions.json").read_text())
    windows = conditions["passes"][0]["windows"]
    assert len(windows) > 1
    for window in windows:
        pngs = sorted((tmp_path / "o.conditions" / window["mask"]["folder"]).glob("*.png"))
        assert len(pngs) == len(window["frames"])
        for png, frame in zip(pngs, window["frames"]):
            latent = read_image(png)[..., 0] > 127
            assert latent.shape == (8, 8)
            # max-pooling: a latent is edited exactly when one of its 8x8 pixels is
            pooled = hard[frame].reshape(8, 8, 8, 8).any(axis=(1, 3))
            assert np.array_equal(latent, pooled)


def edit_short(clip, out, *args) -> int:
    return main(["edit", str(clip), "--prompt", "a red car", "-o", str(out), *SIZE, *FAST, *args])


def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the video model loaded for a refused mask")

    monkeypatch.setattr("ccedit.editing.load_edit_pipeline", refuse)


def refused(capsys, tmp_path, code: int) -> str:
    """The one error line of a refused edit, which wrote nothing."""
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1
    assert not list(tmp_path.glob("o*"))
    return err[0]


@pytest.mark.parametrize("make, words", [
    (lambda folder: "point:x,1", "is not point:K,x,y"),
    (lambda folder: str(folder / "missing.png"), "does not exist"),
    (lambda folder: write_box_mask(folder / "black.png", box=(0, 0, 0, 0)), "is empty"),
    (lambda folder: "point:2,500,50", "outside"),
    (lambda folder: "box:99,1,1,20,20", "frame 99"),
])
def test_a_bad_mask_is_one_line_before_the_model_loads_and_nothing_is_written(tmp_path, short_clip, capsys,
                                                                              monkeypatch, make, words):
    no_model_load(monkeypatch)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    spec = make(inputs)
    line = refused(capsys, tmp_path, edit_short(short_clip, tmp_path / "o.mp4", "--mask", spec,
                                                "mask.tracker=missing/sam2"))
    assert words in line


def test_a_mask_video_with_fewer_frames_is_one_line(tmp_path, short_clip, capsys, monkeypatch):
    no_model_load(monkeypatch)
    folder = tmp_path / "masks"
    folder.mkdir()
    for k in range(3):
        write_box_mask(folder / f"{k:04d}.png")
    line = refused(capsys, tmp_path, edit_short(short_clip, tmp_path / "o.mp4", "--mask", str(folder)))
    assert "3" in line and "8" in line


def test_remove_without_a_region_is_one_line(tmp_path, short_clip, capsys):
    line = refused(capsys, tmp_path, main(["edit", str(short_clip), "-o", str(tmp_path / "o.mp4"), "--remove"]))
    assert "mask.spec" in line and "--mask" in line


def test_a_mask_of_another_size_is_fitted_with_a_warning(tmp_path, short_clip, caplog):
    small = write_box_mask(tmp_path / "small.png", box=(10, 35, 20, 50), size=(48, 64))  # half the source's size
    out = tmp_path / "o.mp4"
    assert edit_short(short_clip, out, "--mask", small) == 0
    assert "64x48" in caplog.text
    coverage = json.loads((tmp_path / "o.mp4.json").read_text())["mask"]["coverage"]
    big = write_box_mask(tmp_path / "big.png", box=(20, 70, 40, 100))  # the same box at the source's size
    source, fit = working_source(short_clip, 8)
    assert coverage == load_masks(big, source, fit).coverage


def test_an_all_white_mask_equals_an_unmasked_edit_and_is_said_once(tmp_path, short_clip, caplog):
    white = write_box_mask(tmp_path / "white.png", box=(0, 96, 0, 128))
    assert edit_short(short_clip, tmp_path / "plain" / "o.mp4") == 0
    with caplog.at_level("WARNING"):
        assert edit_short(short_clip, tmp_path / "masked" / "o.mp4", "--mask", white) == 0
    assert caplog.text.count("equals an unmasked") == 1
    assert np.array_equal(output_frames(tmp_path / "masked" / "o.mp4"), output_frames(tmp_path / "plain" / "o.mp4"))


@pytest.mark.parametrize("model", ["tiny", "animatediff-tiny"])
def test_remove_fills_the_region_and_paints_it_with_the_background_prompt(tmp_path, short_clip, model):
    mask = write_box_mask(tmp_path / "mask.png")
    out = tmp_path / "o.mp4"
    assert main(["edit", str(short_clip), "-o", str(out), *SIZE, *FAST, "--model", model, "--mask", mask,
                 "--remove", "sampling.strength=0.5", "--steps", "2"]) == 0
    sidecar = json.loads((tmp_path / "o.mp4.json").read_text())
    assert sidecar["full_prompt"].endswith(sidecar["config"]["mask"]["background_prompt"])
    source, fit = working_source(short_clip, 8)
    masks = load_masks(mask, source, fit)
    edited = output_frames(out)
    assert np.array_equal(edited[~masks.hard], source[~masks.hard])
    assert not np.array_equal(edited[masks.hard], source[masks.hard])
