"""`--dump-conditions` for the VACE pipeline: what each window of the transformer was conditioned on, in the
`ConditionsRecord` every pipeline fills (`recording.py`), so `conditions_dump` writes it as it writes a trident's.

A VACE window is a run of latent frames; its record holds the pixel frames those latents hold (past the clip's end,
the 4k+1 padding, left out): the context video there as the "structure" VACE took (the maps where it generates, the
kept pictures elsewhere), the mask as VACE took it per pixel (white: generated), and the keyframes kept in the
window with their positions. VACE has no cross-frame anchor: it is recorded as -1.
"""

from __future__ import annotations

import numpy as np
import torch

from .recording import ConditionsRecord
from .time_grid import TimeGrid
from .windows import Window

NO_ANCHOR = -1


def start_vace_pass(record: ConditionsRecord, frames, keyframes: dict[int, np.ndarray]) -> None:
    """Begin a pass over clip `frames`, with `keyframes` (pass position -> uint8 image) kept in its context."""
    record.start_pass(frames)
    current = record.passes[-1]
    current.keyframe_frames = tuple(current.frames[p] for p in keyframes)
    current.keyframe_images = np.stack(list(keyframes.values())) if keyframes else None


def record_vace_windows(record: ConditionsRecord, video: np.ndarray, generate: np.ndarray, windows: list[Window],
                        grid: TimeGrid, num_frames: int, keyframes) -> None:
    """Each window of the current pass: `video` (uint8 `(frames, H, W, 3)`) and `generate` (bool `(frames, H, W)`)
    are the pass's context video and mask, `num_frames` its frames before padding, `keyframes` its kept positions."""
    for index, window in enumerate(windows):
        positions = [p for latent in window.frames for p in grid.pixels_of(latent) if p < num_frames]
        context = torch.from_numpy(video[positions]).permute(3, 0, 1, 2)[None]  # (1, 3, positions, H, W), held
        kept = [(k, positions.index(k)) for k in keyframes if k in positions]
        record.add_window(index, positions, NO_ANCHOR, kept, [context], torch.from_numpy(generate[positions]))
