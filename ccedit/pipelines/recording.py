"""What each network of the trident received, recorded during an edit (`CCEditPipeline(..., record_conditions=True)`).

The record is taken where the networks are called (`ClipDenoiser`), on the first evaluation of each window of
each pass: the frames the window shows, each ControlNet's maps as it took them (after every resize, pad and range
mapping, one slice per window), the keyframes acting there and the window frame each goes to (appearance encoder
or SparseCtrl), and the cross-frame anchor. The pipeline adds the keyframes' latents as the appearance branch
received them (decoded to images at the end of the call), the source frames SDEdit encoded and the anchor prior.
`ccedit.conditions_dump` writes it beside an edit's outputs; it is what a user needs to debug a bad edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..annotators.maps import hold, is_held


@dataclass
class WindowRecord:
    """One window of one pass, as its network call saw it.

    Args:
        pass_index, window_index: which pass (0 unless hierarchical) and which window of it.
        frames: the clip frame at each window position (a reflect-padded window repeats frames).
        anchor: the window position every frame attends to in cross-frame attention.
        keyframes: `(clip frame, window position)` of each keyframe acting in the window.
        structure: per ControlNet, the maps it took, held (uint8 `(positions, 3, H, W)`: value * 255).
        structure_ranges: per ControlNet, `(min, max)` of the maps as the network took them (unit form).
        mask: a region edit's latent mask of the window, bool `(positions, h, w)` (None without a region).
    """

    pass_index: int
    window_index: int
    frames: tuple[int, ...]
    anchor: int
    keyframes: tuple[tuple[int, int], ...]
    structure: list[torch.Tensor]
    structure_ranges: list[tuple[float, float]]
    mask: torch.Tensor | None = None


@dataclass
class PassRecord:
    """One denoising pass: the clip frames it edits and the keyframes its windows draw on.

    Args:
        frames: clip frames of the pass (all of them, but for a hierarchical edit's sparse pass).
        keyframe_frames: clip frame of each keyframe latent available to the pass (the user's keyframes in the
            first pass; the sparse pass's edited frames in the dense pass of a hierarchical edit).
        keyframe_latents: those latents as the appearance branch received them, `(keyframes, 4, h, w)` on the CPU.
        keyframe_images: the latents decoded by the VAE, uint8 `(keyframes, H, W, 3)` (filled at the end of the call).
    """

    frames: tuple[int, ...]
    keyframe_frames: tuple[int, ...] = ()
    keyframe_latents: torch.Tensor | None = None
    keyframe_images: np.ndarray | None = None
    windows: list[WindowRecord] = field(default_factory=list)


@dataclass
class ConditionsRecord:
    """Everything the networks were conditioned on in one pipeline call (the first sample of a batch)."""

    structure_scales: tuple[float, ...] = ()
    appearance_scale: float = 1.0
    appearance_acts: bool = False
    prior: str = "none"
    prior_coefficient: float = 0.0
    strength: float = 1.0
    sdedit_first_timestep: float | None = None
    sdedit_frames: np.ndarray | None = None  # uint8 (T, H, W, 3): the source frames SDEdit encoded
    passes: list[PassRecord] = field(default_factory=list)

    def start_pass(self, frames, keyframes=None, acting: bool = False) -> None:
        """Begin a pass over clip `frames`; `keyframes` (a `Keyframes`) are recorded when the appearance acts."""
        record = PassRecord(tuple(int(f) for f in frames))
        if keyframes is not None and acting:
            latents = keyframes.latents[0] if keyframes.per_sample else keyframes.latents
            record.keyframe_frames = tuple(record.frames[k] for k in keyframes.indices)
            record.keyframe_latents = latents.detach().float().cpu()
        self.passes.append(record)

    def window_seen(self, window_index: int) -> bool:
        return any(w.window_index == window_index for w in self.passes[-1].windows)

    def add_window(self, window_index: int, frames, anchor: int, keyframes, maps: list[torch.Tensor],
                   mask: torch.Tensor | None = None) -> None:
        """Record the current pass's window `window_index`: `maps` per ControlNet `(1, 3, positions, H, W)` as the
        network took them, `keyframes` as `(frame, window position)` pairs, a region's latent `mask`. `frames` and the keyframes' frames count
        along the pass's frames (a sparse pass edits a sub-clip); the record holds clip frames."""
        clip_frame = self.passes[-1].frames
        held, ranges = [], []
        for m in maps:
            m = m[0].transpose(0, 1).detach().cpu()  # (positions, 3, H, W)
            ranges.append((float(m.min()), float(m.max())) if m.numel() else (0.0, 0.0))
            held.append(m if is_held(m) else hold(m))
        self.passes[-1].windows.append(WindowRecord(
            len(self.passes) - 1, window_index, tuple(clip_frame[int(f)] for f in frames), int(anchor),
            tuple((clip_frame[int(k)], int(p)) for k, p in keyframes), held, ranges,
            None if mask is None else mask.detach().cpu().clone(),
        ))

    def decode_keyframes(self, decode) -> None:
        """Fill each pass's `keyframe_images` with `decode(latents (1, 4, k, h, w)) -> uint8 (1, k, H, W, 3)`."""
        for record in self.passes:
            if record.keyframe_latents is not None and len(record.keyframe_latents):
                latents = record.keyframe_latents.transpose(0, 1)[None]
                record.keyframe_images = np.asarray(decode(latents)[0])
