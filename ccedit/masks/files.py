"""Masks read from files, made binary and fitted to the working size exactly as the clip's frames were.

A mask file may be a video, a folder of frames or one image; any pixel type and channel count the readers of
`ccedit.io` accept (they give uint8 RGB: grey, palette and 16-bit images are expanded and scaled, alpha dropped).
A pixel is inside the mask when its brightest channel is at least half the range (128 of 255), so a white, grey or
coloured mask on black all work, and compression noise in a mask video does not.

Fitting reuses `ccedit.io.resize.fit_frames` with the frames' own `FitRecord` (target size and crop or pad), so the
mask's crop or letterbox is the frames'. A mask of another size than the source is fitted the same way, with a
warning: it is only right when it shows the same picture at another resolution.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ccedit.errors import UserError
from ccedit.io.image import read_image
from ccedit.io.resize import FitRecord, fit_frames
from ccedit.io.video import read_video

logger = logging.getLogger(__name__)

# The mask's half range: pixels at or above it are inside.
HALF = 128
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def binarize(pixels: np.ndarray) -> np.ndarray:
    """`(..., channels)` uint8 or bool pixels -> a bool mask `(...)`: brightest channel at or above half the range."""
    if pixels.dtype == bool:
        return pixels.any(axis=-1)
    return pixels.max(axis=-1) >= HALF


def fit_mask(mask: np.ndarray, fit: FitRecord, what: str, warn: bool = True) -> np.ndarray:
    """Bool masks `(frames, height, width)` at the source size -> bool masks at `fit.target_size`, cropped or padded
    as the frames were (padding is outside the mask). `what` names the mask in the size warning (given once per
    mask: `warn=False` for its later chunks)."""
    height, width = mask.shape[1:3]
    if (height, width) == tuple(fit.target_size) and tuple(fit.source_size) == tuple(fit.target_size):
        return mask
    if warn and (height, width) != tuple(fit.source_size):
        logger.warning(
            "%s is %dx%d but the clip is %dx%d: fitting it to the edited frames the same way; check that it shows "
            "the same picture", what, width, height, fit.source_size[1], fit.source_size[0],
        )
    pixels = np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=-1)
    fitted, _ = fit_frames(pixels, fit.target_size, fit.mode)
    return binarize(fitted)


def read_mask_image(path: str | Path, fit: FitRecord) -> np.ndarray:
    """One mask image -> a bool mask `(height, width)` at the working size."""
    return fit_mask(binarize(read_image(path))[None], fit, f"mask {path}")[0]


def read_mask_frames(path: str | Path, num_frames: int, fit: FitRecord) -> np.ndarray:
    """A mask for every clip frame -> bool masks `(num_frames, height, width)` at the working size.

    An image file is used for every frame; a video or folder gives frame i's mask as its frame i (its first
    `num_frames`, decoded and fitted chunk by chunk, so a long mask video is never held at its own size).

    Raises:
        `UserError`: the path is missing or unreadable, or a video or folder has fewer frames than the clip.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"mask {path} does not exist: give a mask video, a folder of mask frames or one mask image")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        mask = read_mask_image(path, fit)
        return np.broadcast_to(mask, (num_frames, *mask.shape)).copy()
    chunks_fitted = []

    def fit_chunk(chunk: np.ndarray) -> np.ndarray:
        chunks_fitted.append(len(chunk))
        return fit_mask(binarize(chunk), fit, f"mask {path}", warn=len(chunks_fitted) == 1)

    clip = read_video(path, max_frames=num_frames, frame_transform=fit_chunk)
    if clip.num_frames < num_frames:
        raise UserError(
            f"mask {path} has {clip.num_frames} frames but the clip has {num_frames}: give a mask for every edited "
            "frame, or one image for all of them"
        )
    return clip.frames

