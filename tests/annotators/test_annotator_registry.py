"""The name registry, the base-class contract and its input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccedit.annotators import ANNOTATORS, Annotator, CannyEdges, build_annotator
from ccedit.errors import UserError


def test_registry_names():
    assert set(ANNOTATORS) == {"canny", "depth_dpt", "midas", "zoe", "lineart", "softedge"}
    for name, cls in ANNOTATORS.items():
        assert issubclass(cls, Annotator) and cls.name == name


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UserError) as info:
        build_annotator("depht")
    message = str(info.value)
    assert "\n" not in message and "'depht'" in message
    for name in ANNOTATORS:
        assert name in message


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(UserError) as info:
        build_annotator("canny", low=10)
    message = str(info.value)
    assert "\n" not in message and "low" in message and "low_threshold" in message


def test_build_passes_options():
    annotator = build_annotator("canny", low_threshold=10, high_threshold=20)
    assert isinstance(annotator, CannyEdges) and (annotator.low_threshold, annotator.high_threshold) == (10, 20)


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((8, 8, 3), np.uint8),  # one image, no frame axis
        np.zeros((2, 8, 8, 4), np.uint8),  # RGBA
        np.zeros((0, 8, 8, 3), np.uint8),  # empty clip
        np.zeros((2, 8, 8, 3), np.float32),  # not uint8
        torch.zeros(2, 8, 8, 3, dtype=torch.uint8),  # not numpy
    ],
)
def test_bad_frames_raise(frames):
    with pytest.raises(ValueError, match="frames"):
        CannyEdges()(frames)


def test_progress_bar_goes_to_stderr_for_long_clips(capsys):
    frames = np.zeros((5, 16, 16, 3), np.uint8)
    CannyEdges(batch_size=2)(frames)
    captured = capsys.readouterr()
    assert captured.out == "" and "canny" in captured.err
    CannyEdges(batch_size=8)(frames)
    assert capsys.readouterr().err == ""


def test_to_records_device_and_dtype():
    annotator = CannyEdges().to("cpu", torch.float64)
    assert annotator.device == torch.device("cpu") and annotator.dtype == torch.float64
    with pytest.raises(ValueError, match="floating point"):
        annotator.to(dtype=torch.int64)
