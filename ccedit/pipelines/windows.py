"""Temporal windows over a clip: which frames each model call sees, and how their predictions are fused.

A `Window` lists the clip frame at each of its positions. The planner is pure (frame counts in, windows out) and
the fusion is a weighted sum, so both can later run across processes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One model call's frames.

    Args:
        frames (`tuple[int, ...]`): the clip frame at each position.
        keyframe (`int`, *optional*): the clip keyframe whose appearance residuals go to the window's centre.
    """

    frames: tuple[int, ...]
    keyframe: int | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def centre(self) -> int:
        return len(self.frames) // 2

    def keyframe_frames(self) -> dict[int, int] | None:
        """Clip keyframe -> window frame for the appearance branch, or `None` to take every keyframe inside."""
        return None if self.keyframe is None else {self.keyframe: self.centre}


def whole_clip(num_frames: int) -> list[Window]:
    """One window over the whole clip."""
    return [Window(tuple(range(num_frames)))]
