"""Temporal windows over a clip: which frames each model call sees, and how their predictions are fused.

A clip longer than the model's native length is denoised in overlapping windows whose noise predictions are fused
at every step, before one scheduler step on the whole latent (the MultiDiffusion / FreeNoise scheme): every frame
belongs to one latent, so windows never drift apart and memory is bounded by the window, not the clip.

For CCEdit's appearance encoder, keyframes sit at the centre of their own window, where it was trained; near the
clip's edges the window is reflect-padded (frames `2 1 0 1 2` around frame 0). The rest of the clip is tiled with
plain windows that overlap every neighbour by at least `overlap` frames. An appearance branch that takes keyframes
at any position (SparseCtrl) gets the plain windows alone, each keyframe acting in the windows that contain it.

The planner is pure (frame counts in, windows out) and the fusion is a weighted sum, so both can later run across
processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config_checks import check_window, default_overlap  # noqa: F401 - the window settings' rules, re-exported
from ..models.centre import centre_frame


@dataclass(frozen=True)
class Window:
    """One model call's frames.

    Args:
        frames (`tuple[int, ...]`): the clip frame at each position (a reflect-padded window repeats frames).
        keyframe (`int`, *optional*): the clip keyframe whose appearance residuals go to the window's centre.
    """

    frames: tuple[int, ...]
    keyframe: int | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def centre(self) -> int:
        return centre_frame(len(self.frames))

    def keyframe_frames(self) -> dict[int, int] | None:
        """Clip keyframe -> window frame for the appearance branch, or `None` to take every keyframe inside."""
        return None if self.keyframe is None else {self.keyframe: self.centre}


def whole_clip(num_frames: int) -> list[Window]:
    """One window over the whole clip."""
    return [Window(tuple(range(num_frames)))]


def reflect(index: int, num_frames: int) -> int:
    """`index` mirrored into `[0, num_frames)` at both ends (`-2 -> 2`, `T + 1 -> T - 3`), without repeating the edge."""
    if num_frames == 1:
        return 0
    period = 2 * (num_frames - 1)
    index %= period
    return period - index if index >= num_frames else index


def centred_window(centre: int, length: int, num_frames: int) -> tuple[int, ...]:
    """`length` frames with `centre` at the window's centre position (`centre_frame`), reflect-padded at the
    clip's edges."""
    return tuple(reflect(centre - centre_frame(length) + p, num_frames) for p in range(length))


def plan_windows(
    num_frames: int, length: int | None = None, overlap: int | None = None, keyframes: Sequence[int] = ()
) -> list[Window]:
    """Plan the windows that cover a clip.

    Args:
        num_frames (`int`): frames in the clip.
        length (`int`, *optional*): frames per window; default (or longer than the clip): the whole clip.
        overlap (`int`, *optional*): frames that neighbouring windows share at least; default `length // 4`.
        keyframes (`Sequence[int]`): clip frames that must each sit at the centre of a window of their own.

    Returns:
        `list[Window]`: keyframe windows first (in keyframe order), then plain windows left to right. Without
        keyframes, a clip no longer than `length` is one window over the whole clip.
    """
    check_window(length, overlap)
    length = num_frames if length is None else min(length, num_frames)
    overlap = default_overlap(length) if overlap is None else min(overlap, length - 1)
    windows = [Window(centred_window(k, length, num_frames), keyframe=k) for k in keyframes]
    # The frames each keyframe window covers form an interval (reflection adds no new frames).
    covered = sorted((min(w.frames), max(w.frames)) for w in windows)
    # Regions to tile with plain windows: every gap between covered intervals, widened so that the plain windows
    # overlap their keyframe neighbours by `overlap` frames; likewise between intervals that overlap too little.
    regions: list[tuple[int, int]] = []
    previous_end = None
    for start, end in covered:
        if previous_end is None:
            if start > 0:
                regions.append((0, min(num_frames - 1, start + overlap - 1)))
        elif start > previous_end - overlap + 1:
            regions.append((max(0, previous_end - overlap + 1), min(num_frames - 1, start + overlap - 1)))
        previous_end = end if previous_end is None else max(previous_end, end)
    if previous_end is None:
        regions.append((0, num_frames - 1))
    elif previous_end < num_frames - 1:
        regions.append((max(0, previous_end - overlap + 1), num_frames - 1))
    for first, last in regions:
        windows += [Window(tuple(range(s, s + length))) for s in _tile(first, last, length, overlap, num_frames)]
    return windows


def sparse_anchors(num_frames: int, length: int, overlap: int | None = None, keyframes: Sequence[int] = ()) -> list[int]:
    """The frames of a hierarchical edit's first pass: the keyframes, both ends, and frames between them.

    Neighbouring anchors are at most `length - overlap` frames apart, so that windows centred on each anchor (the
    second pass) cover the clip with at least `overlap` frames shared between neighbours.
    """
    length = min(length, num_frames)
    overlap = default_overlap(length) if overlap is None else min(overlap, length - 1)
    stride = max(1, length - overlap)
    required = sorted({0, num_frames - 1, *keyframes})
    anchors = []
    for first, last in zip(required, required[1:]):
        pieces = -(-(last - first) // stride)
        anchors += [first + round((last - first) * i / pieces) for i in range(pieces)]
    return anchors + [required[-1]]


def _tile(first: int, last: int, length: int, overlap: int, num_frames: int) -> list[int]:
    """Start frames of plain windows covering `[first, last]`, neighbours sharing at least `overlap` frames."""
    span = last - first + 1
    if span <= length:
        return [min(max(0, first - (length - span) // 2), num_frames - length)]
    stride = length - overlap
    starts = list(range(first, last - length + 1, stride))
    if not starts or starts[-1] + length - 1 < last:
        starts.append(last - length + 1)
    return starts


def fusion_weights(windows: Sequence[Window], num_frames: int) -> list[torch.Tensor]:
    """Per window, the weight of each position's prediction; for every frame they sum to one over all windows.

    Positions weigh by their distance to the window's edges (a tent, `min(p + 1, length - p)`), so a frame's
    prediction comes mostly from the windows in which it sits deep inside, and blends linearly across overlaps
    instead of switching at a seam.
    """
    raw = [torch.tensor([min(p + 1, len(w) - p) for p in range(len(w))], dtype=torch.float64) for w in windows]
    total = torch.zeros(num_frames, dtype=torch.float64)
    for window, weight in zip(windows, raw):
        total.index_add_(0, torch.tensor(window.frames), weight)
    if (total == 0).any():
        missing = (total == 0).nonzero().flatten().tolist()
        raise ValueError(f"the windows leave frames {missing[:5]} uncovered")
    return [(weight / total[list(window.frames)]).float() for window, weight in zip(windows, raw)]


WINDOW_NOISE = ("independent", "repeat")


def repeat_window_noise(noise: torch.Tensor, length: int) -> torch.Tensor:
    """FreeNoise's noise rescheduling: after the first `length` frames, each block of `length` frames reuses the
    first block's noise in a shuffled order, so that every window starts from correlated noise.

    The shuffles are fixed (seeded by the block's position): the draw's randomness is all in `noise`.
    """
    num_frames = noise.shape[2]
    out = noise.clone()
    for start in range(length, num_frames, length):
        stop = min(start + length, num_frames)
        order = torch.randperm(length, generator=torch.Generator().manual_seed(start))[: stop - start]
        out[:, :, start:stop] = noise[:, :, order.to(noise.device)]
    return out


def plan_passes(
    num_frames: int,
    length: int | None = None,
    overlap: int | None = None,
    keyframes: Sequence[int] = (),
    hierarchical: bool | None = None,
    centre_keyframes: bool = True,
) -> list[tuple[list[int], list[Window]]]:
    """The denoising passes of an edit: per pass, the clip frames it denoises and its windows over them.

    One pass of windows over the clip; or, with keyframes on a clip longer than a window (`hierarchical` None),
    or when asked, a sparse pass over `sparse_anchors` whose results anchor a dense pass over the whole clip.
    `keyframes` are the keyframes that act (the appearance branch runs for them). With `centre_keyframes` (the
    appearance branch's `TridentModel.centres_keyframes`) each keyframe, and in a dense pass each anchor, gets a
    window centred on it; otherwise the plain windows carry them where they are.
    """
    length = num_frames if length is None else min(length, num_frames)
    if hierarchical is None:
        hierarchical = bool(keyframes) and num_frames > length

    def windows(count: int, centred: Sequence[int]) -> list[Window]:
        return plan_windows(count, length, overlap, centred if centre_keyframes else ())

    if hierarchical and keyframes:
        anchors = sparse_anchors(num_frames, length, overlap, keyframes)
        positions = [anchors.index(k) for k in keyframes]
        return [(anchors, windows(len(anchors), positions)), (list(range(num_frames)), windows(num_frames, anchors))]
    return [(list(range(num_frames)), windows(num_frames, keyframes))]
