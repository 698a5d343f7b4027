"""Removing what a region shows (`mask.remove`): the region is first filled from its surroundings.

Each frame's region is filled by OpenCV's Telea inpainting (pixels propagated inward from the region's border), so
the structure maps see no outline of the removed object and SDEdit (`sampling.strength` < 1) starts from the
background's colours; the edit then paints the region with the background prompt. Pixels outside the region are
left as they are.
"""

from __future__ import annotations

import cv2
import numpy as np

# Neighbourhood radius in pixels of the inpainting (OpenCV's suggested value).
FILL_RADIUS = 3


def fill_region(frames: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """uint8 `(frames, H, W, 3)` with each frame's `hard` region (bool `(frames, H, W)`) filled from its border."""
    filled = frames.copy()
    for index, (frame, region) in enumerate(zip(frames, hard)):
        if region.any() and not region.all():
            filled[index] = cv2.inpaint(frame, region.astype(np.uint8), FILL_RADIUS, cv2.INPAINT_TELEA)
    return filled
