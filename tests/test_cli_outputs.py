"""What an edit writes: pad mode keeps the source's framing and no letterbox edges, and the side-by-side shows every
structure map and keyframe, labelled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ccedit.annotators import build_annotator
from ccedit.cli import main
from ccedit.config import load_edit_config
from ccedit.annotators.maps import hold
from ccedit.outputs import comparison_panels
from ccedit.preparation import compute_structure, padded_content, prepare_clip
from ccedit.io import side_by_side, video_info, write_image
from tests.conftest import VIDEOS

FAST = ["--model", "tiny", "--frames", "4", "--steps", "1", "structure.cache_dir=null"]


@pytest.fixture
def kitten():
    return str(VIDEOS / "kitten.mp4")


def _edge_fraction(maps: torch.Tensor, column: int) -> float:
    return float((maps[:, 0, :, column] > 0).float().mean())


def test_pad_mode_maps_see_the_picture_not_the_letterbox(kitten):
    # The square kitten letterboxed into 128x64: the picture is the middle 64 columns.
    cfg = load_edit_config(overrides={"video": {"num_frames": 4, "height": 64, "width": 128, "resize_mode": "pad"}})
    prepared = prepare_clip(kitten, cfg)
    top, left, height, width = padded_content(prepared.fit)
    assert (top, left, height, width) == (0, 32, 64, 64)
    canny = build_annotator("canny")
    letterboxed = hold(canny(prepared.frames))
    # Without the fix the bars' borders are solid edges down the whole frame.
    assert max(_edge_fraction(letterboxed, left - 1), _edge_fraction(letterboxed, left)) > 0.5
    (maps,) = compute_structure(prepared.frames, [canny], None, content=padded_content(prepared.fit))
    assert maps.shape == letterboxed.shape and maps.dtype == torch.uint8
    assert maps[..., :left].max() == 0 and maps[..., left + width :].max() == 0  # neutral: no edges in the bars
    picture = np.ascontiguousarray(prepared.frames[:, :, left : left + width])
    assert torch.equal(maps[..., left : left + width], hold(canny(picture)))
    assert max(_edge_fraction(maps, left - 1), _edge_fraction(maps, left)) < 0.5


def test_pad_mode_output_keeps_the_source_framing(tmp_path, kitten):
    out = tmp_path / "o.mp4"
    args = ["edit", kitten, "--prompt", "x", "-o", str(out), *FAST, "--height", "64", "--width", "128",
            "video.resize_mode=pad", "--side-by-side"]  # fmt: skip
    assert main(args) == 0
    assert video_info(out)[2] == (64, 64)  # the square source, without the bars
    sidecar = json.loads((tmp_path / "o.mp4.json").read_text())
    assert sidecar["video"]["working_size"] == [64, 128] and sidecar["video"]["output_size"] == [64, 64]
    assert video_info(tmp_path / "o.side_by_side.mp4")[2] == (64, 3 * 64)


def test_side_by_side_labels_every_panel():
    black = np.zeros((2, 64, 96, 3), np.uint8)
    maps = [("canny", torch.zeros(2, 3, 64, 96, dtype=torch.uint8)), ("depth", torch.zeros(2, 3, 64, 96, dtype=torch.uint8))]
    panels, labels = comparison_panels(black, maps, [(1, black[0])], black)
    assert labels == ["source", "canny", "depth", "keyframe 1", "result"]
    video = side_by_side(*panels, labels=labels)
    assert video.shape == (2, 64, 5 * 96, 3)
    for i in range(len(panels)):
        band = video[:, :20, i * 96 : (i + 1) * 96]  # the label sits in each panel's top-left corner
        assert band.max() > 0, labels[i]
        assert video[:, 40:, i * 96 : (i + 1) * 96].max() == 0  # and nowhere else


def test_side_by_side_grows_with_the_maps_and_keyframes(tmp_path, kitten):
    keyframe = tmp_path / "key.png"
    write_image(keyframe, np.full((64, 64, 3), 200, np.uint8))
    base = ["edit", kitten, "--prompt", "x", *FAST, "--height", "64", "--side-by-side"]
    assert main([*base, "-o", str(tmp_path / "one.mp4")]) == 0
    two_maps = ["--structure", "canny,canny", "structure.controlnets=[null,second]", "--keyframe", f"{keyframe}@1"]
    assert main([*base, "-o", str(tmp_path / "two.mp4"), *two_maps]) == 0
    assert video_info(tmp_path / "one.side_by_side.mp4")[2] == (64, 3 * 64)  # source | canny | result
    assert video_info(tmp_path / "two.side_by_side.mp4")[2] == (64, 5 * 64)  # source | canny | canny | keyframe | result


def test_each_long_stage_shows_a_bar_and_denoising_counts_steps_and_evaluations(tmp_path, kitten, capsys):
    args = ["edit", kitten, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), *FAST, "--height", "64", "--steps", "2",
            "sampling.scheduler=dpmpp_2s_ancestral", "--window", "4"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "decoding frames" in err and "canny maps" in err
    # DPM++(2S) evaluates the network twice per step but once at the last; one window covers the 4 frames.
    assert "denoising: 2 steps, 3 network evaluations x 1 windows" in err, err
    assert main([*args[:-2], "--overwrite", "--window", "2", "--overlap", "0", "sampling.scheduler=euler"]) == 0
    assert "denoising: 2 steps, 2 network evaluations x 2 windows" in capsys.readouterr().err
