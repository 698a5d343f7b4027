"""Variable frame rates: detected from the frames' timestamps, and read as a constant-rate clip by time.

A container declares one average rate, but phones and screen recorders write frames at irregular times. Reading
such a clip frame by frame at the declared rate replays it in uneven slow or fast motion; reading it by time
(the frame nearest each tick of a constant-rate clock) keeps the motion's speed.
"""

from __future__ import annotations

import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

# Frame durations within this ratio of each other are timestamp rounding (33 and 34 ms at 29.97 fps, 120 and
# 130 ms in GIFs), not a variable rate.
CONSTANT_RATE_TOLERANCE = 1.5


def variable_rate(path: str | os.PathLike, starts: np.ndarray, end: float) -> float | None:
    """The mean frame rate of a clip whose frame durations vary, with a warning saying how it will be read.

    Args:
        path (`str` or `os.PathLike`): The clip, for the warning.
        starts (`np.ndarray`): Start time in seconds of each frame, in display order.
        end (`float`): When the last frame ends (replaced by a typical duration when not after its start).

    Returns:
        `float` or `None`: frames over the clip's duration, or `None` for a constant-rate clip.
    """
    starts = np.asarray(starts, dtype=np.float64)
    durations = np.diff(starts)
    if len(starts) < 3 or not np.all(durations > 0) or durations.max() <= CONSTANT_RATE_TOLERANCE * durations.min():
        return None
    if not end > starts[-1]:
        end = starts[-1] + float(np.median(durations))
    fps = len(starts) / float(end - starts[0])
    logger.warning(
        "%s has a variable frame rate (%.3g to %.3g fps): taking frames by their timestamps on a constant %.3g fps "
        "grid, repeating or skipping frames so that motion keeps its speed; set video.fps to choose the rate",
        path, 1.0 / durations.max(), 1.0 / durations.min(), fps,
    )  # fmt: skip
    return fps


def frames_nearest(starts: np.ndarray, fps: float, positions: list[int]) -> list[int]:
    """The frame nearest in time to each position of a constant-rate grid at `fps` (position `i`: `i / fps` s in).

    Args:
        starts (`np.ndarray`): Start time in seconds of each frame, increasing.
        fps (`float`): The grid's rate.
        positions (`list[int]`): Grid positions.
    """
    targets = starts[0] + np.asarray(positions, dtype=np.float64) / fps
    after = np.clip(np.searchsorted(starts, targets), 1, len(starts) - 1)
    nearer_before = targets - starts[after - 1] <= starts[after] - targets
    return [int(i) for i in np.where(nearer_before, after - 1, after)]
