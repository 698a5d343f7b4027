"""Canny edges with OpenCV: white edges on black, no network."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from ccedit.annotators.base import Annotator
from ccedit.errors import UserError


class CannyEdges(Annotator):
    """Canny edge maps (Canny 1986), as used by the SD-1.5 canny ControlNet: edges 1, elsewhere 0.

    OpenCV runs on the RGB frame itself, so it takes the strongest gradient over the three channels and also finds
    edges between colours of equal brightness.

    Args:
        low_threshold (`int`, defaults to 100): Hysteresis threshold below which a gradient is never an edge.
        high_threshold (`int`, defaults to 200): Gradient above which a pixel always starts an edge.
        batch_size (`int`, defaults to 8): Frames per step, for the progress bar only.
        show_progress (`bool`, *optional*): See `Annotator`.
    """

    name = "canny"

    def __init__(
        self,
        low_threshold: int = 100,
        high_threshold: int = 200,
        batch_size: int = 8,
        show_progress: bool | None = None,
    ):
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        if not 0 <= low_threshold <= high_threshold:
            raise UserError(
                f"canny thresholds must satisfy 0 <= low_threshold <= high_threshold, got low_threshold="
                f"{low_threshold} and high_threshold={high_threshold}"
            )
        self.low_threshold = low_threshold
        self.high_threshold = high_threshold

    def _annotate_batch(self, frames: np.ndarray) -> torch.Tensor:
        edges = np.stack([cv2.Canny(frame, self.low_threshold, self.high_threshold) for frame in frames])  # (b, H, W)
        return torch.from_numpy(edges).unsqueeze(1).float() / 255.0

    def _settings(self) -> dict[str, Any]:
        return {"low_threshold": self.low_threshold, "high_threshold": self.high_threshold}
