"""Fixtures for the annotator tests: no hub traffic, synthetic clips."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Every model in these tests is built locally; a hub id must fail fast instead of reaching for the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def clip() -> np.ndarray:
    """Three 40x56 frames of smooth random colour, different per frame (uint8, (T, H, W, 3))."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(3, 5, 7, 3)).astype(np.float32)
    frames = coarse.repeat(8, axis=1).repeat(8, axis=2)  # (3, 40, 56, 3)
    return frames.astype(np.uint8)


def assert_map_contract(maps, frames: np.ndarray) -> None:
    """Maps are float32 (T, 3, H, W) in [0, 1] at the frames' resolution."""
    num_frames, height, width = frames.shape[:3]
    assert maps.shape == (num_frames, 3, height, width)
    assert maps.dtype.is_floating_point and str(maps.dtype) == "torch.float32"
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


@pytest.fixture
def check_maps():
    """The map contract check, as a fixture so that test modules need not import this conftest."""
    return assert_map_contract
