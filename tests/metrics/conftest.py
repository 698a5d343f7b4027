"""Fixtures for the metric tests: real clips from the shared data, tiny random metric models saved like released."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ccedit.io import read_video
from ccedit.metrics.tiny import save_tiny_clip, save_tiny_raft
from tests.conftest import VIDEOS


def _small(frames: np.ndarray, width: int) -> np.ndarray:
    height = round(frames.shape[1] * width / frames.shape[2])
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


@pytest.fixture(scope="session")
def sailboat() -> np.ndarray:
    """Four consecutive real 16:9 frames (a tracking shot, so the content moves), full size 288x512."""
    return read_video(VIDEOS / "sailboat.mp4", num_frames=4).frames


@pytest.fixture(scope="session")
def kitten() -> np.ndarray:
    """Four real square frames of another scene, 128x128."""
    return _small(read_video(VIDEOS / "kitten.mp4", num_frames=4).frames, 128)


@pytest.fixture(scope="session")
def boat(sailboat) -> np.ndarray:
    """The central squares of the sailboat frames at 128x128, to mix with the kitten frames."""
    left = (sailboat.shape[2] - sailboat.shape[1]) // 2
    return _small(sailboat[:, :, left : left + sailboat.shape[1]], 128)


@pytest.fixture(scope="session")
def small_sailboat(sailboat) -> np.ndarray:
    """The sailboat frames at 63x112, small enough for RAFT on a CPU."""
    return _small(sailboat, 112)


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory):
    """The tiny random CLIP written by save_pretrained, so tests load it the way a released model is loaded."""
    return str(save_tiny_clip(tmp_path_factory.mktemp("tiny_clip")))


@pytest.fixture(scope="session")
def raft_folder(tmp_path_factory):
    return str(save_tiny_raft(tmp_path_factory.mktemp("tiny_raft")))
