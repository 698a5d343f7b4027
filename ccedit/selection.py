"""Which frames of a clip an edit uses, and at what size: from the clip's header and the settings alone.

Free of torch, so the checks that run before any heavy import (`edit_checks.py`) can use it.
"""

from __future__ import annotations

import numpy as np

from .config import EditConfig
from .errors import UserError
from .io.resize import working_size


def clip_working_size(source_size: tuple[int, int], cfg: EditConfig) -> tuple[int, int]:
    """The `(height, width)` an edit of a clip of `source_size` works at, under the settings.

    A side derived from an extreme aspect ratio (a 4x4000 clip) is held to the same bound as --height/--width.
    """
    from .config_checks import MAX_SIDE

    v = cfg.video
    size = working_size(source_size, height=v.height, width=v.width, short_side=cfg.model.short_side,
                        multiple=cfg.model.size_multiple)
    if max(size) > MAX_SIDE:
        raise UserError(
            f"a {source_size[1]}x{source_size[0]} clip would be edited at {size[1]}x{size[0]}, over the "
            f"{MAX_SIDE}-pixel limit of a side: set both video.height and video.width (crop or pad it to another aspect)"
        )
    return size


def selected_frame_count(total: int, source_fps: float, cfg: EditConfig) -> int:
    """How many frames `read_video` will select from a clip of `total` frames at `source_fps` (0: none)."""
    v = cfg.video
    gap = 1 if v.fps is None else max(1, int(np.round(source_fps / v.fps)))
    first = int(np.round(v.start * source_fps))
    available = max(0, -(-(total - first) // gap))
    return available if v.num_frames is None else min(available, v.num_frames)
