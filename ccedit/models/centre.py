"""The one rule for a window's centre: where CCEdit trained its keyframe, and the cross-frame anchor by default."""

from __future__ import annotations

from collections.abc import Sequence


def centre_frame(num_frames: int) -> int:
    """The centre of `num_frames` frames, `num_frames // 2` (the later of the two middle frames of an even count)."""
    return num_frames // 2


def nearest_centre(positions: Sequence[int], num_frames: int) -> int:
    """Of `positions` in a window of `num_frames`, the one nearest its centre (the first, on a tie)."""
    return min(positions, key=lambda position: abs(position - centre_frame(num_frames)))
