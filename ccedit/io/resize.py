"""Working size and aspect-preserving fitting (crop or pad) of frames to it.

The networks need sides that are multiples of 64 (the VAE downsamples by 8 and the UNet by another 8), while real
clips rarely have such sides. `working_size` picks a size that keeps the source's aspect ratio, and `fit_frames`
brings frames to it; its `FitRecord` says exactly what was done so it can be saved next to the output.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from ccedit.errors import UserError

logger = logging.getLogger(__name__)

FitMode = Literal["crop", "pad"]


def _fitted_side(name: str, value: int, multiple: int) -> int:
    """`value` if it is a multiple of `multiple`, else the nearest positive one (said once per process)."""
    if value <= 0:
        raise UserError(f"video.{name}={value} must be positive")
    if value % multiple == 0:
        return value
    fitted = max(multiple, _round_to(value, multiple))
    _warn_fitted(name, value, fitted, multiple)
    return fitted


@functools.lru_cache(maxsize=None)
def _warn_fitted(name: str, value: int, fitted: int, multiple: int) -> None:
    logger.warning("video.%s=%d is not a multiple of %d (the model's size multiple): working at %d", name, value,
                   multiple, fitted)


def working_size(
    source_hw: tuple[int, int],
    *,
    height: int | None = None,
    width: int | None = None,
    short_side: int = 512,
    multiple: int = 64,
) -> tuple[int, int]:
    """Choose the `(height, width)` frames are edited at.

    Unless both `height` and `width` are given, the size follows the source's aspect ratio: with neither given,
    the short side is `short_side` (rounded to a multiple of `multiple`) and the long side the aspect-preserving
    length rounded to the nearest multiple; with one given, the other is derived the same way. A 288x512 (w x h)
    portrait clip therefore becomes 512 wide and 896 high.

    Args:
        source_hw (`tuple[int, int]`):
            Source `(height, width)` in pixels.
        height (`int`, *optional*):
            Requested height; fitted to the nearest positive multiple of `multiple`.
        width (`int`, *optional*):
            Requested width; fitted to the nearest positive multiple of `multiple`.
        short_side (`int`, defaults to 512):
            Length of the short side when neither `height` nor `width` is given; SD-1.5 was trained at 512.
        multiple (`int`, defaults to 64):
            Every side is a multiple of this.

    Returns:
        `tuple[int, int]`: `(height, width)`, both positive multiples of `multiple`.

    Raises:
        `UserError`: `height` or `width` is not positive. A side that is not a multiple of `multiple` is
        fitted to the nearest one, with a warning.
    """
    src_h, src_w = (int(v) for v in source_hw)
    if src_h <= 0 or src_w <= 0:
        raise ValueError(f"`source_hw` must be positive, got {source_hw}")
    if multiple <= 0:
        raise ValueError(f"`multiple` must be positive, got {multiple}")
    height = None if height is None else _fitted_side("height", height, multiple)
    width = None if width is None else _fitted_side("width", width, multiple)

    if height is not None and width is not None:
        return height, width
    if height is not None:
        return height, _round_to(height * src_w / src_h, multiple)
    if width is not None:
        return _round_to(width * src_h / src_w, multiple), width

    short = _round_to(short_side, multiple)
    if src_h <= src_w:
        return short, _round_to(short * src_w / src_h, multiple)
    return _round_to(short * src_h / src_w, multiple), short


@dataclass
class FitRecord:
    """How `fit_frames` mapped source frames onto the working size; `dataclasses.asdict` gives a JSON-ready dict.

    Sizes are `(height, width)` and boxes `(top, left, height, width)` in pixels.

    Args:
        mode (`str`):
            `"crop"` (cover the target, cut the overflow) or `"pad"` (fit inside the target, fill with black).
        source_size (`tuple[int, int]`):
            Size of the input frames.
        target_size (`tuple[int, int]`):
            Size of the output frames.
        scale (`float`):
            Resize factor applied to the source before cropping or padding.
        resized_size (`tuple[int, int]`):
            Size of the source after resizing.
        crop_box (`tuple[int, int, int, int]`, *optional*):
            For `"crop"`: the kept window inside the resized frame.
        pad_box (`tuple[int, int, int, int]`, *optional*):
            For `"pad"`: where the resized frame sits inside the output; the rest is black.
    """

    mode: str
    source_size: tuple[int, int]
    target_size: tuple[int, int]
    scale: float
    resized_size: tuple[int, int]
    crop_box: tuple[int, int, int, int] | None = None
    pad_box: tuple[int, int, int, int] | None = None


def fit_frames(
    frames: np.ndarray, size_hw: tuple[int, int], mode: FitMode = "crop"
) -> tuple[np.ndarray, FitRecord]:
    """Resize frames to exactly `size_hw`, keeping their aspect ratio, then centre-crop or pad.

    Shrinking uses area interpolation (no aliasing), enlarging bicubic.

    Args:
        frames (`np.ndarray`):
            `uint8` array of shape `(frames, height, width, 3)`.
        size_hw (`tuple[int, int]`):
            Target `(height, width)`.
        mode (`str`, defaults to `"crop"`):
            `"crop"` scales so the target is covered and cuts the centred overflow; `"pad"` scales so the frame
            fits inside and pads the remainder with black.

    Returns:
        `tuple[np.ndarray, FitRecord]`: frames of shape `(frames, size_hw[0], size_hw[1], 3)` and what was done.
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        is_array = isinstance(frames, np.ndarray)
        got = f"{frames.dtype} array of shape {frames.shape}" if is_array else type(frames).__name__
        raise ValueError(f"`frames` must be a uint8 array of shape (frames, height, width, 3), got {got}")
    if mode not in ("crop", "pad"):
        raise ValueError(f"`mode` must be 'crop' or 'pad', got {mode!r}")
    dst_h, dst_w = (int(v) for v in size_hw)
    if dst_h <= 0 or dst_w <= 0:
        raise ValueError(f"`size_hw` must be positive, got {size_hw}")
    src_h, src_w = frames.shape[1:3]

    # 1. Scale: cover the target for crop, fit inside it for pad.
    pick = max if mode == "crop" else min
    scale = pick(dst_h / src_h, dst_w / src_w)
    res_h, res_w = round(src_h * scale), round(src_w * scale)
    # Rounding must not leave a crop short of the target or a pad larger than it.
    if mode == "crop":
        res_h, res_w = max(res_h, dst_h), max(res_w, dst_w)
    else:
        res_h, res_w = max(1, min(res_h, dst_h)), max(1, min(res_w, dst_w))

    # 2. Resize each frame.
    if (res_h, res_w) == (src_h, src_w):
        resized = frames
    else:
        interpolation = cv2.INTER_AREA if res_h * res_w < src_h * src_w else cv2.INTER_CUBIC
        resized = np.stack([cv2.resize(f, (res_w, res_h), interpolation=interpolation) for f in frames])

    # 3. Crop or pad, centred.
    record = FitRecord(
        mode=mode, source_size=(src_h, src_w), target_size=(dst_h, dst_w), scale=scale, resized_size=(res_h, res_w)
    )
    if mode == "crop":
        top, left = (res_h - dst_h) // 2, (res_w - dst_w) // 2
        out = resized[:, top : top + dst_h, left : left + dst_w]
        record.crop_box = (top, left, dst_h, dst_w)
    else:
        top, left = (dst_h - res_h) // 2, (dst_w - res_w) // 2
        out = np.zeros((frames.shape[0], dst_h, dst_w, 3), dtype=np.uint8)
        out[:, top : top + res_h, left : left + res_w] = resized
        record.pad_box = (top, left, res_h, res_w)
    return np.ascontiguousarray(out), record


def fit_image(image: np.ndarray, size_hw: tuple[int, int], mode: FitMode = "crop") -> tuple[np.ndarray, FitRecord]:
    """`fit_frames` for one `uint8` `(height, width, 3)` image, e.g. an edited key frame."""
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        got = f"shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"`image` must be a uint8 array of shape (height, width, 3), got {got}")
    frames, record = fit_frames(image[None], size_hw, mode)
    return frames[0], record


def _round_to(value: float, multiple: int) -> int:
    """Nearest multiple of `multiple` (numpy rounding), at least `multiple`."""
    return max(multiple, int(np.round(value / multiple)) * multiple)
