"""Canny: edges where the image has them, nothing in flat areas, thresholds in the cache key."""

from __future__ import annotations

import numpy as np
import pytest

from ccedit.annotators import CannyEdges, build_annotator
from ccedit.errors import UserError


def white_square_clip(num_frames: int = 2) -> np.ndarray:
    frames = np.zeros((num_frames, 48, 64, 3), dtype=np.uint8)
    frames[:, 12:36, 20:44] = 255  # a 24x24 white square on black
    return frames


def test_canny_finds_the_square_border_and_nothing_else(check_maps):
    frames = white_square_clip()
    maps = CannyEdges()(frames)
    check_maps(maps, frames)

    edges = maps[0, 0] > 0.5
    assert (maps[:, 0] == maps[:, 1]).all() and (maps[:, 0] == maps[:, 2]).all()
    # Every edge pixel lies within one pixel of the square's border...
    ys, xs = np.nonzero(edges.numpy())
    assert len(ys) > 0
    near_vertical = (np.abs(xs - 19.5) <= 1.5) | (np.abs(xs - 43.5) <= 1.5)
    near_horizontal = (np.abs(ys - 11.5) <= 1.5) | (np.abs(ys - 35.5) <= 1.5)
    assert (near_vertical | near_horizontal).all()
    # ...all four sides are found...
    assert edges[12:36, 18:22].any(dim=1).all() and edges[12:36, 42:46].any(dim=1).all()
    assert edges[10:14, 20:44].any(dim=0).all() and edges[34:38, 20:44].any(dim=0).all()
    # ...and the flat inside and outside stay black.
    assert not edges[16:32, 24:40].any()
    assert not edges[:8].any() and not edges[:, :16].any()


def test_canny_batches_do_not_change_the_maps():
    frames = white_square_clip(num_frames=5)
    frames[3] = 255 - frames[3]
    assert (CannyEdges(batch_size=2)(frames) == CannyEdges(batch_size=5)(frames)).all()


def test_canny_cache_key_follows_thresholds():
    assert CannyEdges().cache_key() == build_annotator("canny").cache_key()
    assert CannyEdges(low_threshold=50).cache_key() != CannyEdges().cache_key()
    assert CannyEdges(high_threshold=250).cache_key() != CannyEdges().cache_key()
    # Speed-only settings do not change the key.
    assert CannyEdges(batch_size=1).cache_key() == CannyEdges(batch_size=16).cache_key()


def test_canny_rejects_inverted_thresholds():
    with pytest.raises(UserError, match="low_threshold <= high_threshold"):
        CannyEdges(low_threshold=200, high_threshold=100)
