"""A hard mask shaped for an edit: inverted, dilated, and given a soft band for compositing.

The order is fixed: invert first (so `dilate` grows the region that is edited, whichever it is), then dilate, then
feather. The soft mask is 1 on the hard mask and falls linearly to 0 over `feather` pixels outside it (Euclidean
distance), so compositing `soft * edit + (1 - soft) * source` keeps the hard mask fully edited and changes nothing
farther than `feather` pixels from it.
"""

from __future__ import annotations

import cv2
import numpy as np


def dilate(hard: np.ndarray, pixels: int) -> np.ndarray:
    """Bool masks `(frames, height, width)` grown by `pixels` (a disc of that radius)."""
    if pixels == 0:
        return hard
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return np.stack([cv2.dilate(frame.astype(np.uint8), kernel) > 0 for frame in hard])


def feather(hard: np.ndarray, pixels: int) -> np.ndarray:
    """Soft masks `(frames, height, width)` float32 in [0, 1]: 1 on `hard`, falling linearly to 0 over `pixels`."""
    if pixels == 0:
        return hard.astype(np.float32)
    soft = np.empty(hard.shape, dtype=np.float32)
    for index, frame in enumerate(hard):
        if not frame.any():
            soft[index] = 0
            continue
        # distance of every pixel outside the mask to the nearest mask pixel (0 on the mask)
        distance = cv2.distanceTransform((~frame).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        soft[index] = np.clip(1 - distance / (pixels + 1), 0, 1)
    return soft


def shape(hard: np.ndarray, *, invert: bool, dilate_pixels: int, feather_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """The shaped hard mask and its soft mask (module docstring: invert, dilate, feather)."""
    hard = ~hard if invert else hard
    hard = dilate(hard, dilate_pixels)
    return hard, feather(hard, feather_pixels)
