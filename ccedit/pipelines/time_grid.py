"""Pixel frames and latent frames of a causal video VAE that compresses time (Wan's: 4 frames per latent frame,
the first frame alone), and the windows of a clip in latent time. A kind with one latent per frame has factor 1, where
latent and pixel frames are the same."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .windows import Window, default_overlap, plan_passes, sparse_anchors


@dataclass(frozen=True)
class TimeGrid:
    """Pixel frames and latent frames of a causal video VAE with `factor` frames per latent (the first alone)."""

    factor: int

    def fitted(self, frames: int) -> int:
        """The smallest frame count the VAE takes (`factor * k + 1`) that holds `frames`."""
        return frames + (-(frames - 1)) % self.factor

    def latents(self, frames: int) -> int:
        """Latent frames of a clip of `frames` (fitted) pixel frames."""
        return (frames - 1) // self.factor + 1

    def latent_of(self, frame: int) -> int:
        """The latent frame that holds pixel frame `frame`."""
        return (frame + self.factor - 1) // self.factor

    def pixels_of(self, latent: int) -> range:
        """The pixel frames latent frame `latent` holds."""
        return range(0, 1) if latent == 0 else range(self.factor * latent - self.factor + 1, self.factor * latent + 1)

    def windows(self, num_frames: int, length: int | None, overlap: int | None) -> list[Window]:
        """The windows over the latent frames of a clip of `num_frames` pixel frames, for a window of `length`
        pixel frames (None: the whole clip) sharing `overlap` pixel frames (None: the planner's default)."""
        latents = self.latents(self.fitted(num_frames))
        size = latents if length is None else min(self.latents(self.fitted(length)), latents)
        shared = default_overlap(size) if overlap is None else math.ceil(overlap / self.factor)
        return plan_passes(latents, size, max(0, min(shared, size - 1)), hierarchical=False,
                           centre_keyframes=False)[0][1]

    def passes(self, num_frames: int, length: int | None, overlap: int | None, keyframes: Sequence[int] = (),
               hierarchical: bool | None = None, centre_keyframes: bool = True) -> list[tuple[list[int], list[Window]]]:
        """The denoising passes of a clip, per pass the clip frames it denoises and its windows: `plan_passes` in
        pixel frames at factor 1; above it, a latent holds several frames, so no window can centre a frame of its
        own: keyframes act through the context video where the windows hold them (`vace_passes`, in latent time)."""
        if self.factor == 1:
            return plan_passes(num_frames, length, overlap, keyframes, hierarchical, centre_keyframes)
        return vace_passes(num_frames, length, overlap, keyframes, hierarchical, self)


def vace_passes(num_frames: int, length: int | None, overlap: int | None, keyframes, hierarchical: bool | None,
                grid: TimeGrid) -> list[tuple[list[int], list[Window]]]:
    """The passes of an edit whose keyframes act through the context video (kept at their frames): per pass, the
    clip frames it edits and its windows in latent time. One pass over the clip; or, with keyframes on a clip
    longer than a window (`hierarchical` None) or when asked, first a sparse pass over `sparse_anchors` (the
    keyframes, both ends and frames between), whose frames the dense pass over the clip keeps as keyframes."""
    window = num_frames if length is None else min(length, num_frames)
    if hierarchical is None:
        hierarchical = bool(keyframes) and num_frames > window
    passes = []
    if hierarchical and keyframes:
        anchors = sparse_anchors(num_frames, window, overlap, keyframes)
        passes.append((anchors, grid.windows(len(anchors), length, overlap)))
    passes.append((list(range(num_frames)), grid.windows(num_frames, length, overlap)))
    return passes
